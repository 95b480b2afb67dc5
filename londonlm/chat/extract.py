"""Old Bailey TEI -> question/answer exchanges, grouped into one conversation per witness
examination, with the speaker of every turn.

The Proceedings print examinations in three house styles over the years; all three are read:

- 1750s: ``<p>Q. to G. Keith. Is this the sword?</p><p>G. Keith. It is the same.</p>`` (the
  question alone in a paragraph, the answer in the next one, headed by the witness's name);
- 1780s: ``Court. Was this pipe fixed to your house? - It was fixed up with wall hooks.``;
- 1810s-1850s: ``Cross-examined by MR. ALLEY. Q. Where do you live - A. In Fleet-street.``

A line that opens a witness's evidence ("ROBERT LITTLE. I am a money-taker...", "JONAS
HOLMES sworn.") starts a new examination; so does an answer by someone else. Exchanges are
returned raw (nothing dropped here): :mod:`londonlm.chat.filters` decides what is kept.
The XML is parsed with :mod:`londonlm.corpus.sources.old_bailey`'s reader (recovery mode included).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator

from lxml import etree

from ..corpus import TEI_SKIP_TAGS, tei_interp, parse_tei, format_date

PLACE = "Old Bailey, London"
ROLES = ("court", "counsel", "prisoner", "jury", "witness", "unknown")

_WS = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"(?<=[\w)\]]) +(?=[,.;:!?](?:\s|$))")
# A printed name: optional title, then up to four capitalised words or initials ("G. Keith").
_WORD = r"(?:[A-Z]\.\s?)?[A-Z][A-Za-z'’\-]+"
_NAME = rf"(?:(?:Mr|Mrs|Miss|Dr|Capt|Serjeant)\.?\s)?{_WORD}(?:\s+{_WORD}){{0,3}}"
_SPEAKER_LINE = re.compile(
    rf"^(?P<name>{_NAME})\s*(?:\((?:in continuation|continued)\))?\.\s+(?P<text>\S.*)$")
_SWORN = re.compile(rf"^(?:-\s*)?(?P<name>{_NAME}|-\s*[A-Z]+)\s+sworn\.?$")
_REEXAMINED = re.compile(rf"^(?P<name>{_NAME})\s+(?:re-examined|(?:\()?in continuation(?:\))?)\.?$", re.I)
_Q = re.compile(r"(?:^|(?<=[\s.)]))Q\.\s*")
_A = re.compile(r"(?:(?<=\?)|(?<=\s)|(?<=-))\s*[-—–]?\s*A\.\s*(?=\S)")
_CHAIN = re.compile(r"\?\s*[-—–]\s*")          # "question? - answer" (1780s) / "question?—answer"
_TO = re.compile(rf"^(?P<dir>[Tt]o|[Ff]rom)\s+(?P<who>the\s+\w+|[a-z]+|{_NAME})\.\s*")
# Paragraph openings that are headings or outcomes, not a speaker's name.
_NOT_NAMES = {"guilty", "acquitted", "not guilty", "death", "transported", "whipped", "q", "a",
              "mr", "mrs", "the prisoner", "prisoner's defence", "for the prisoner", "confined",
              "no evidence", "cross-examined", "re-examined", "cross-examination", "fined",
              "imprisoned", "pleaded guilty", "verdict", "recommended", "judgment respited"}


@dataclass
class Exchange:
    question: str
    answer: str
    questioner: str            # one of ROLES
    questioner_name: str
    answerer: str              # one of ROLES
    answerer_name: str
    cut_short: bool = False    # its text runs to where the file stops (a truncated download)


@dataclass
class Conversation:
    """One witness's examination in one trial: consecutive exchanges with the same answerer."""
    trial_id: str
    date: str                  # ISO yyyy-mm-dd ("" when the session has no date)
    year: int | None
    witness: str
    witness_role: str
    index: int                 # 0-based position of this examination in the trial
    exchanges: list[Exchange] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.trial_id}-c{self.index}"


# --------------------------------------------------------------------------- XML -> paragraphs

def _para_text(p) -> str:
    """Text of one ``<p>``: markup dropped; ``<lb/>`` joins (the print's line-end hyphen is
    not transcribed: ``cus<lb/>tody`` is "custody")."""
    out: list[str] = []
    # depth first with a stack of its own, not the call stack (as the corpus's TEI reader): markup
    # nested a few thousand deep in a paragraph raised RecursionError and ended the whole build.
    # A node's tail is pushed before its children, so it comes out after them
    stack: list = [(p, True)]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        node, top = item
        tag = node.tag if isinstance(node.tag, str) else ""
        if tag not in TEI_SKIP_TAGS and node.text:
            out.append(node.text)
        if not top and node.tail:
            stack.append(node.tail)
        if tag not in TEI_SKIP_TAGS:
            stack.extend((child, False) for child in reversed(node))
    text = _WS.sub(" ", "".join(out)).strip()
    return _SPACE_BEFORE_PUNCT.sub("", text)


def _join_page_splits(paras: list[str], vocabulary: set[str]) -> list[str]:
    """Rejoin paragraphs that a page break cut in two ("...taken into cus" / "tody? A. Yes"):
    the first ends without punctuation and the next starts in lower case. The halves of a
    split word are glued when the whole word occurs elsewhere in the session, else spaced."""
    out: list[str] = []
    for p in paras:
        if out and p[:1].islower() and out[-1][-1:].isalnum():
            head = re.search(r"(\w+)$", out[-1]).group(1)
            tail = re.match(r"\w*", p).group(0)
            glue = "" if (head + tail).lower() in vocabulary else " "
            out[-1] = out[-1] + glue + p
        else:
            out.append(p)
    return out


def cut_paragraph_in_last_trial(root, data: bytes) -> bool:
    """Whether the file stops inside a paragraph of its last trial: it parsed only in recovery
    mode, its root element never closes (a truncated download), its bytes end after a ``<p``
    that no ``</p>`` closes, and that paragraph, the last the parser recovered, lies in a trial
    and holds text. It then stops mid-text."""
    tail = data.rstrip()
    name = re.escape(etree.QName(root).localname.encode())
    if re.search(rb"</(?:[\w.-]+:)?" + name + rb"\s*>", tail[-4096:]):
        return False
    if max(tail.rfind(b"<p" + c) for c in (b">", b" ", b"\n", b"\t")) < tail.rfind(b"</p>"):
        return False
    paragraphs = list(root.iter("p"))
    paragraph = paragraphs[-1] if paragraphs else None
    return paragraph is not None and bool(_para_text(paragraph)) and any(
        e.tag == "div1" and e.get("type") == "trialAccount" for e in paragraph.iterancestors())


def trial_paragraphs(root) -> Iterator[tuple[str, str, list[str], dict[str, set[str]]]]:
    """(trial id, yyyymmdd, paragraphs, defendants) for each trial of a parsed sessions paper;
    defendants maps a surname to the initials of the given names it goes with."""
    session = next(iter(root.iter("div0")), root)
    session_date = re.sub(r"\D", "", session.get("id") or tei_interp(session, "date") or "")[:8]
    trials = [d for d in root.iter("div1") if d.get("type") == "trialAccount"]
    raw = {id(t): [x for x in (_para_text(p) for p in t.iter("p")) if x] for t in trials}
    vocabulary = {w.lower() for ps in raw.values() for p in ps for w in re.findall(r"\w+", p)}
    seen: set[str] = set()
    for n, t in enumerate(trials, 1):
        date = re.sub(r"\D", "", tei_interp(t, "date") or session_date)[:8]
        defendants: dict[str, set[str]] = {}
        for pn in t.iter("persName"):
            if pn.get("type") == "defendantName":
                parts = {i.get("type"): (i.get("value") or "") for i in pn.iter("interp")}
                if parts.get("surname"):
                    defendants.setdefault(parts["surname"].lower(), set()).add(parts.get("given", "")[:1].lower())
        # a trial without an id, or with one an earlier trial of the file has, is one of its own by
        # its place in the file: all of them as "" (or "t1" twice) were one trial to the split and
        # gave their conversations one id ("-c0")
        trial_id = (t.get("id") or "").strip() or f"trial-{n}"
        trial_id = f"{trial_id}#{n}" if trial_id in seen else trial_id
        seen.add(trial_id)
        yield trial_id, date, _join_page_splits(raw[id(t)], vocabulary), defendants


def iso_date(yyyymmdd: str) -> str:
    return f"{yyyymmdd[:4]}-{yyyymmdd[4:6]}-{yyyymmdd[6:8]}" if format_date(yyyymmdd) else ""


# --------------------------------------------------------------------------- speakers

def name_key(name: str) -> str:
    """Who a name refers to within a trial: its surname, lower case ("J. Keith" = "John Keith")."""
    words = re.findall(r"[A-Za-z'’\-]+", name)
    return words[-1].lower().strip("'’-") if words else ""


def questioner_of(prefix: str) -> tuple[str, str, str]:
    """(role, name, addressee) from the words before a question ("COURT to JOHN SMITH.",
    "Cross-examined by MR. ALLEY.", "Prisoner.", "To the Prosecutor.")."""
    p = prefix.strip().rstrip(".").strip()
    low = p.lower()
    addressee = ""
    m = re.search(r"\bto\s+(.+)$", p, re.I)
    if m and not low.startswith(("cross", "re-")):
        addressee = m.group(1).strip()
        p = p[:m.start()].strip()
        low = p.lower()
    if not p:
        return "unknown", "", addressee
    by = re.search(r"\bby\s+((?:mr|mister|serjeant|sir)\b.*)$", p, re.I)
    if by:
        return "counsel", by.group(1), addressee
    if "counsel" in low or re.match(r"^(mr|serjeant)\.? ", low):
        return "counsel", p, addressee
    if low in ("court", "the court", "recorder", "the recorder") or "judge" in low or "lord" in low \
            or "baron" in low or low.startswith(("court", "the court")):
        return "court", p, addressee
    if low.startswith("prisoner"):
        return "prisoner", p, addressee
    if low.startswith(("jury", "juror", "a juror", "the jury")):
        return "jury", p, addressee
    if low.startswith(("cross-exam", "re-exam", "examined")):
        return "counsel", "", addressee
    return "unknown", p, addressee


def _speaker_line(text: str) -> tuple[str, str] | None:
    """("JOHN SMITH", "I am a taylor...") when a paragraph opens with a speaker's name."""
    m = _SPEAKER_LINE.match(text)
    if not m or m.group("name").lower() in _NOT_NAMES or len(m.group("name")) < 2:
        return None
    return m.group("name"), m.group("text")


# --------------------------------------------------------------------------- exchanges

@dataclass
class _Turn:
    """A parsed paragraph: an exchange, a lone question, a witness change, or narrative."""
    kind: str                     # "qa", "q", "witness", "other"
    question: str = ""
    answer: str = ""
    prefix: str = ""
    name: str = ""


def _split_question(rest: str) -> tuple[str, str, str]:
    """(addressee, asker, question): "to G. Keith. Is this..." (1750s "Q. to G. Keith.") ->
    ("G. Keith", "", "Is this..."); "from Prisoner. Did..." -> ("", "Prisoner", "Did...")."""
    m = _TO.match(rest)
    if not m:
        return "", "", rest
    to = m.group("dir").lower() == "to"
    return (m.group("who") if to else ""), ("" if to else m.group("who")), rest[m.end():]


def _q_turns(text: str) -> list[_Turn] | None:
    """Paragraphs using ``Q.`` (and ``A.``); several exchanges may share one paragraph."""
    starts = list(_Q.finditer(text))
    if not starts or starts[0].start() > 90:
        return None
    prefix = text[:starts[0].start()].strip()
    turns = []
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        body = text[m.end():end].strip()
        a = _A.search(body)
        q, ans = (body[:a.start()], body[a.end():]) if a else (body, "")
        turns.append(_Turn("qa" if a else "q", q.strip(" -—–"), ans.strip(), prefix if i == 0 else ""))
    return turns


_SENTENCE_CUT = re.compile(r"(?<=[.!;])\s+(?=[A-Z])")


def _is_speaker_label(prefix: str) -> bool:
    """Whether the words before a question name who asks or who answers."""
    if not prefix:
        return True
    return len(prefix) <= 80 and (questioner_of(prefix)[0] != "unknown" or
                                  prefix.lower().startswith("to ") or bool(_REEXAMINED.match(prefix)))


def _chain_turns(text: str) -> list[_Turn] | None:
    """``[Speaker.] question? - answer`` (chains of several in one paragraph too): each
    question is the last sentence before its ``? -``. A paragraph whose first question is
    preceded by narrative rather than a speaker label is not read as an examination."""
    pieces = _CHAIN.split(text)
    if len(pieces) < 2:
        return None
    cuts = list(_SENTENCE_CUT.finditer(pieces[0]))
    prefix, question = (pieces[0][:cuts[-1].start()], pieces[0][cuts[-1].end():]) if cuts else ("", pieces[0])
    if not _is_speaker_label(prefix.strip()):
        return None
    turns = []
    for i, piece in enumerate(pieces[1:], start=1):
        if i + 1 < len(pieces):
            cut = list(_SENTENCE_CUT.finditer(piece))
            if not cut:  # no sentence boundary: where the answer ends is unknown, stop here
                break
            answer, nxt = piece[:cut[-1].start()], piece[cut[-1].end():]
        else:
            answer, nxt = piece, ""
        turns.append(_Turn("qa", question.strip() + "?", answer.strip(), prefix.strip() if i == 1 else ""))
        question = nxt
    return turns or None


def parse_paragraph(text: str) -> list[_Turn]:
    """What one paragraph contributes to the examination being read."""
    m = _SWORN.match(text) or _REEXAMINED.match(text)
    if m:
        return [_Turn("witness", name=m.group("name").strip(" -"))]
    q = _q_turns(text)
    if q is not None:
        return q
    chain = _chain_turns(text)
    if chain is not None:
        return chain
    speaker = _speaker_line(text)
    if speaker:
        return [_Turn("other", answer=speaker[1], name=speaker[0])]
    return [_Turn("other", answer=text)]


class _Examination:
    """Accumulates one trial's conversations as paragraphs are read."""

    def __init__(self, trial_id: str, date: str, defendants: dict[str, set[str]]):
        self.trial_id, self.defendants = trial_id, defendants
        self.date = iso_date(date)
        self.year = int(date[:4]) if self.date else None
        self.conversations: list[Conversation] = []
        self.witness = ""
        self.fresh = True                     # the next exchange opens a new conversation
        self.pending: _Turn | None = None      # a question awaiting its answer paragraph
        self.missing: list[tuple[str, str]] = []  # (question, witness) never answered

    def role_of(self, name: str) -> str:
        """A defendant answers as the prisoner: "Prisoner", or a defendant's surname with no
        given name or the same initial (a witness may share the prisoner's surname)."""
        if "prisoner" in name.lower():
            return "prisoner"
        initials = self.defendants.get(name_key(name))
        words = re.findall(r"[A-Za-z]+", re.sub(r"^(?:Mr|Mrs|Miss|Dr|Capt)\.?\s", "", name))
        if initials is not None and (len(words) < 2 or words[0][:1].lower() in initials or "" in initials):
            return "prisoner"
        return "witness"

    def add(self, turn: _Turn, prefix: str, answerer: str) -> None:
        role, qname, addressee = questioner_of(prefix)
        who = answerer or addressee or self.witness or "unknown"
        if addressee.lower().startswith(("the prosecut", "prosecut")) and self.witness:
            who = self.witness
        conv = self.conversations[-1] if self.conversations else None
        if conv is None or self.fresh or name_key(conv.witness) != name_key(who):
            conv = Conversation(self.trial_id, self.date, self.year, who, self.role_of(who),
                                len(self.conversations))
            self.conversations.append(conv)
            self.fresh = False
        conv.exchanges.append(Exchange(turn.question, turn.answer, role, qname,
                                       self.role_of(who), who))
        self.witness = who  # unprefixed questions that follow go to the same person

    def read(self, text: str) -> None:
        for turn in parse_paragraph(text):
            if self.pending is not None:
                self._answer_pending(turn)
                if turn.kind == "other":
                    continue
            if turn.kind == "witness":
                self.witness = turn.name
                self._break()
            elif turn.kind == "qa":
                role_prefix, _, answerer = self._prefix_witness(turn.prefix)
                addressee, asker, question = _split_question(turn.question)
                self.add(_Turn("qa", question, turn.answer), asker or role_prefix, answerer or addressee)
            elif turn.kind == "q":
                self.pending = turn
            elif turn.name and self.role_of(turn.name) != "prisoner":
                self.witness = turn.name  # a named statement opens that witness's evidence
                self._break()

    def _prefix_witness(self, prefix: str) -> tuple[str, str, str]:
        """A prefix naming the witness ("WILLIAM GULLEN (in continuation).") switches to them."""
        m = _REEXAMINED.match(prefix.strip())
        if m:
            self.witness = m.group("name")
            return "", "", m.group("name")
        return prefix, "", ""

    def _answer_pending(self, turn: _Turn) -> None:
        q, self.pending = self.pending, None
        addressee, asker, question = _split_question(q.question)
        if turn.kind == "other" and turn.name:
            self.add(_Turn("qa", question, turn.answer), asker or q.prefix, turn.name)
        elif turn.kind == "other" and re.match(r"^A\.\s*", turn.answer):
            self.add(_Turn("qa", question, re.sub(r"^A\.\s*", "", turn.answer)), asker or q.prefix,
                     addressee)
        else:
            self.missing.append((question, addressee or self.witness))

    def _break(self) -> None:
        """The next exchange starts a new conversation even with the same witness name."""
        self.fresh = True

    def finish(self) -> list[Conversation]:
        if self.pending is not None:
            self.missing.append((self.pending.question, self.witness))
        return self.conversations


def extract_conversations(data: bytes) -> tuple[list[Conversation], list[dict]]:
    """Every examination in a sessions paper, and the questions that found no answer
    (``{"trial_id", "question", "witness"}``: the filters count them as ``missing_answer``).
    In a file cut short, the exchanges its last paragraph made are marked ``cut_short``: that
    paragraph stops mid-text, so an answer in it would be kept ending mid-word."""
    root, repairs = parse_tei(data)
    cut = "xml_recovered" in repairs and cut_paragraph_in_last_trial(root, data)
    trials = list(trial_paragraphs(root))
    conversations, unanswered = [], []
    for n, (trial_id, date, paras, defendants) in enumerate(trials, 1):
        ex = _Examination(trial_id, date, defendants)
        last = cut and n == len(trials)
        for p in paras[:-1] if last else paras:
            ex.read(p)
        if last and paras:
            whole = {id(x) for c in ex.conversations for x in c.exchanges}
            ex.read(paras[-1])
            for x in (x for c in ex.conversations for x in c.exchanges if id(x) not in whole):
                x.cut_short = True
        conversations.extend(ex.finish())
        unanswered.extend({"trial_id": trial_id, "question": q, "witness": w} for q, w in ex.missing)
    return conversations, unanswered
