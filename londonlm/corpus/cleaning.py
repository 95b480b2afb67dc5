"""Text normalisation shared by every source.

Each step is a small pure function so sources can compose them; ``clean_text`` is the
default chain for plain text and ``clean_text(..., ocr=True)`` adds the OCR-only steps
(page numbers, running heads) for scanned books.

Principle: a historian must be able to trust the output, so every repair is local and
justified by the document itself. There are no global OCR substitutions (rn->m, ii->n,
0->O): those damage valid words ("modern", "skiing", years). Hyphenated line breaks are
joined only when the joined word is attested elsewhere in the same document.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Callable

# --- Project Gutenberg boilerplate -------------------------------------------------------
# START markers vary with the age of the file:
#   "*** START OF THIS PROJECT GUTENBERG EBOOK X ***", "***START OF THE PROJECT GUTENBERG EBOOK X***",
#   "*** START OF THE PROJECT GUTENBERG EBOOK, X ***", and the 1990s licence block that
#   precedes the text and ends with "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*".
_PG_START = re.compile(
    r"^[ \t]*\*{3}[ \t]*START OF (?:THIS|THE) PROJECT GUTENBERG E-?(?:BOOK|TEXT)[^\n]*(?:\n[^\n]*\*{3}[ \t]*$)?"
    r"|^[ \t]*\*END\*?[ \t]*THE SMALL PRINT![^\n]*$",
    re.IGNORECASE | re.MULTILINE,
)
# END markers: the "*** END OF ..." line and the friendlier "End of the Project Gutenberg
# EBook of X" / "End of Project Gutenberg's X" line that usually precedes it, and the old
# licence block when it follows the text ("***START**THE SMALL PRINT!**...").
_PG_END = re.compile(
    r"^[ \t]*\*{3}[ \t]*END OF (?:THIS|THE) PROJECT GUTENBERG E-?(?:BOOK|TEXT)"
    r"|^[ \t]*End of (?:the |this )?Project Gutenberg(?:'s|’s)?\b"
    r"|^[ \t]*\*{3}[ \t]*START\*{1,2}[ \t]*THE SMALL PRINT!",
    re.IGNORECASE | re.MULTILINE,
)
# Editorial paragraphs that mention Project Gutenberg itself ("Project Gutenberg has the other
# volume", "In this Project Gutenberg edition ...") are not part of the historical text.
# A URL never belongs to a pre-1900 text either: its paragraph is an editor's or a
# digitiser's note ("Images of the original pages are available through Internet Archive").
_PG_MENTION = re.compile(r"Project Gutenberg|gutenberg\.(?:org|net)|pglaf\.org|pgdp\.net|https?://\S", re.IGNORECASE)
_MENTION_NEEDLES = ("utenberg", "UTENBERG", "http", "pglaf", "pgdp", "HTTP")
_PRODUCED_BY = re.compile(
    r"^[ \t]*(?:Produced by|E-?text prepared by|This e-?text was prepared by|Prepared by|"
    r"Transcribed from the|Transcribed by|Scanned by|Updated editions? will replace)\b",
    re.IGNORECASE,
)

# --- transcriber notes and bracketed editorial markers ---------------------------------------
_BRACKET_NOTE = re.compile(
    r"\[[ \t]*(?:Original\s+)?Transcribers?[’'`]?s?\s+notes?\b[^\]]{0,5000}\]",
    re.IGNORECASE,
)
# "[Illustration]", "[Illustration: caption ...]" (captions may span lines and nest one "[...]"),
# "[Music: ...]", "[Image ...]", "[Decoration]", "[Frontispiece]", "[Plate ...]", "[Portrait ...]".
_MARKER = re.compile(
    r"\[[ \t]*(?:Illustrations?|Music|Images?|Decorations?|Frontispiece|Plates?|Portrait|Map|"
    r"Picture|Engraving|Woodcut|Vignette)\b(?:[^\[\]]|\[[^\[\]]{0,500}\]){0,3000}\]",
    re.IGNORECASE,
)
_NOTE_HEADING = re.compile(
    r"^[ \t]*[*\[]?[ \t]*(?:Original[ \t]+)?Transcribers?[’'`]?s?[ \t]+(?:notes?|errata|corrections?)\b"
    r"|^[ \t]*Errata[ \t]+noted[ \t]+by[ \t]+transcriber",
    re.IGNORECASE,
)
_SECTION_RULE = re.compile(r"^[ \t]*(?:(?:\*[ \t]*){3,}|-{5,}|_{5,}|={5,})[ \t]*$")

# --- OCR page furniture -----------------------------------------------------------------------
_PAGE_NUMBER = re.compile(
    r"^[ \t]*(?:\[?(?:page|p\.)?[ \t]*\d{1,4}[ \t]*\]?|[-–—][ \t]*\d{1,4}[ \t]*[-–—]|"
    r"\[?[ivxlcdm]{1,7}\]?\.?)[ \t]*$",
    re.IGNORECASE,
)
# UTF-8 decoded as cp1252/Latin-1 turns every multi-byte character into a lead char (Â-ô)
# followed by a continuation byte shown as a Latin-1 or cp1252 character.
_MOJIBAKE_HINT = re.compile(
    "[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc"
    "\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]"
)
_WORD = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")
# a digitiser's stamp, never period text: "Digitized by Google" (its logo read as "VjOOQlC" and the
# like), "Digitized by the Internet Archive in 2008 with funding from ...", "Original from ..."
_STAMP = re.compile(
    r"Digiti[sz]ed[ \t]+by[ \t]+(?:the[ \t]+Internet[ \t]+Archive\b[^\n]*|[A-Za-z0-9]{4,12}\b\.?[ \t]*)"
    r"|^[ \t]*(?:Original[ \t]+from[ \t]+[A-Z][^\n]{0,80}|Generated[ \t]+(?:on|for)[ \t][^\n]{0,120}GMT[^\n]*"
    r"|Public[ \t]+Domain,?[ \t]+Google-digitized[^\n]*)[ \t]*$",
    re.MULTILINE)  # stamps are set with capitals; "digitized by hand" in a sentence is no stamp

# Lines longer than this are wrapped at a space so that later line-based steps stay linear
# and no output line is unreadable; nothing is dropped.
MAX_LINE_CHARS = 20_000


def strip_bom(text: str) -> str:
    return text[1:] if text.startswith("\ufeff") else text


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def nfc(text: str) -> str:
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


_SOFT_HYPHEN_BREAK = re.compile("\u00ad[ \t]*\n[ \t]*(?=\\w)")


def drop_soft_hyphens(text: str) -> str:
    """A soft hyphen (U+00AD) marks where a word may break and is no part of it: one at a line's
    end is a word broken there, joined (``co\\u00ad\\noperate`` is "cooperate"); any other is
    invisible, dropped, where the tokenizer would have seen "co" and "operate" as two pieces."""
    if "\u00ad" not in text:
        return text
    return _SOFT_HYPHEN_BREAK.sub("", text).replace("\u00ad", "")


def fix_mojibake(text: str) -> str:
    """Repair UTF-8-read-as-cp1252 mojibake ("â€™" -> "’") with ftfy.

    Curly quotes, ligatures and the long s are left alone: they are part of the historical
    text, not encoding damage. Pure ASCII cannot contain mojibake, so it skips ftfy (fast path)."""
    if text.isascii() or not _MOJIBAKE_HINT.search(text):
        return text
    import ftfy

    cfg = ftfy.TextFixerConfig(
        unescape_html=False, remove_terminal_escapes=True, fix_encoding=True, restore_byte_a0=True,
        replace_lossy_sequences=True, decode_inconsistent_utf8=True, fix_c1_controls=True,
        fix_latin_ligatures=False, fix_character_width=False, uncurl_quotes=False,
        fix_line_breaks=False, fix_surrogates=True, remove_control_chars=True, normalization="NFC",
        max_decode_length=1_000_000, explain=False,
    )
    # ftfy is slow (~3 MB/s), so only the lines that show a mojibake signature go through it.
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if _MOJIBAKE_HINT.search(line):
            lines[i] = ftfy.fix_text(line, config=cfg)
    return "\n".join(lines)


def wrap_long_lines(text: str, limit: int = MAX_LINE_CHARS) -> str:
    """Break lines longer than ``limit`` at the last space before the limit (no text dropped)."""
    if "\n" in text and max((len(x) for x in text.split("\n")), default=0) <= limit:
        return text
    out: list[str] = []
    for line in text.split("\n"):
        while len(line) > limit:
            cut = line.rfind(" ", 0, limit)
            if cut <= 0:
                cut = limit
                out.append(line[:cut])
                line = line[cut:]
            else:
                out.append(line[:cut])
                line = line[cut + 1:]
        out.append(line)
    return "\n".join(out)


def strip_gutenberg_boilerplate(text: str) -> str:
    """Keep only the text between the last START marker and the first END marker after it,
    and so for each book of a file that holds several (volumes joined into one file: all but
    the first were dropped, with the licences between them).

    Files without markers are returned unchanged (local scans, the embedded sample)."""
    books, pos = [], 0
    while True:
        starts = list(_PG_START.finditer(text, pos))
        if not starts and books:  # what follows the last book's END is its licence
            return "\n\n".join(books)
        begin = pos if pos or starts else _header_end(text)
        if starts:
            # the old licence block may sit *after* the text too ("*END THE SMALL PRINT" following
            # the END marker), so the usable START is the last one before the first END.
            first_end = _PG_END.search(text, starts[0].end())
            # (with no END, the old licence's own "*END*" line after the text is no START of a book)
            limit = first_end.start() if first_end else _licence_start(text, starts[0].end())
            begin = max(m.end() for m in starts if m.start() < limit)
        end = _PG_END.search(text, begin)
        books.append(text[begin: end.start() if end else _licence_start(text, begin)])
        if not end or not starts:
            return "\n\n".join(books)
        pos = end.end()


# A file cut short of its END marker still holds the licence, from one of its standard openers on
# (Oliver Twist's: 4 KB of it, as period text); a "Produced by" credit just before it goes too.
_PG_LICENCE = re.compile(
    r"^[ \t]*(?:\*{3}[ \t]*START:?[ \t]*FULL[ \t]+LICEN[CS]E|THE[ \t]+FULL[ \t]+PROJECT[ \t]+GUTENBERG"
    r"|Why[ \t]+is[ \t]+this[ \t]+\"Small[ \t]+Print!?\"|\*BEFORE!\*[ \t]*YOU[ \t]+USE[ \t]+OR[ \t]+READ"
    r"|Updated[ \t]+editions[ \t]+will[ \t]+replace[ \t]+the[ \t]+previous[ \t]+one"
    r"|(?:\*+[ \t]*)?This[ \t]+file[ \t]+should[ \t]+be[ \t]+named[ \t]+\S+\.(?:txt|zip)\b)",
    re.IGNORECASE | re.MULTILINE)
# A file cut before its START marker keeps the header's fields ("Release Date: May 2004 [EBook #1]"),
# whose stamp no text of the period carries; the header ends at the first line after them that is no field.
_PG_STAMP = re.compile(r"^[ \t]*(?:Release|Posting)[ \t]+Date:[^\n]*\[E-?(?:Book|text)[ \t]*#\d+\]",
                       re.IGNORECASE | re.MULTILINE)
_PG_FIELD = re.compile(
    r"[ \t]*(?:Title|Authors?|Editors?|Illustrators?|Translators?|Commentator|Contributor|Release[ \t]+Date"
    r"|Posting[ \t]+Date|Last[ \t]+Updated|First[ \t]+Posted|Most[ \t]+recently[ \t]+updated|Edition|Language"
    r"|Character[ \t]+set[ \t]+encoding)[ \t]*:|[ \t]*\[[^\n]*\][ \t]*$", re.IGNORECASE)


def _header_end(text: str, head_chars: int = 10_000) -> int:
    """Where the text starts in a Gutenberg file with no START marker: after its header's field
    block (0 when the head holds no field line stamped with an ebook number)."""
    stamp = _PG_STAMP.search(text, 0, head_chars)
    if not stamp:
        return 0
    pos, in_field = stamp.start(), False
    while pos < len(text):
        nl = text.find("\n", pos)
        line = text[pos: len(text) if nl < 0 else nl]
        if line.strip() and not _PG_FIELD.match(line) and not in_field:
            return pos  # the first line that is no field, no field's continuation, no blank
        in_field = bool(line.strip())
        pos = len(text) if nl < 0 else nl + 1
    return len(text)


def _licence_start(text: str, begin: int) -> int:
    """Where a book with no END marker ends: at the licence's first standard line (and the
    "Produced by" credit paragraph just before it), or the end of the text."""
    m = _PG_LICENCE.search(text, begin)
    if not m:
        return len(text)
    cut = m.start()
    before = text.rfind("\n\n", begin, len(text[:cut].rstrip()))  # the paragraph before the licence
    return before + 2 if before >= 0 and _PRODUCED_BY.match(text, before + 2) else cut


def _para_bounds(text: str, pos: int) -> tuple[int, int]:
    """Start and end of the blank-line-delimited paragraph containing ``pos``."""
    a = text.rfind("\n\n", 0, pos)
    b = text.find("\n\n", pos)
    return (0 if a < 0 else a + 2), (len(text) if b < 0 else b)


def strip_gutenberg_mentions(text: str, max_chars: int = 2000, head_chars: int = 3000) -> str:
    """Drop short editorial paragraphs that mention Project Gutenberg or carry a URL, and
    the "Produced by" credit paragraph at the head of the text."""
    cuts: list[tuple[int, int]] = []
    # cheap literal pre-scan (C speed); the regex then checks only the candidate paragraphs
    for needle in _MENTION_NEEDLES:
        pos = text.find(needle)
        while pos >= 0:
            a, b = _para_bounds(text, pos)
            if b - a <= max_chars and _PG_MENTION.search(text, a, b):
                cuts.append((a, b))
            pos = text.find(needle, b)
    head = text[:head_chars]
    for m in re.finditer(r"(?:^|\n)([^\n]*)", head):
        if _PRODUCED_BY.match(m.group(1)):
            cuts.append(_para_bounds(text, m.start(1)))
            break
    if not cuts:
        return text
    out, pos = [], 0
    for a, b in sorted(set(cuts)):
        if a < pos:
            a = pos
        if a >= b:
            continue
        out.append(text[pos:a])
        pos = b
    out.append(text[pos:])
    return "".join(out)


def strip_transcriber_notes(text: str) -> str:
    """Remove transcriber notes: bracketed notes anywhere, note paragraphs, and note sections.

    A heading alone on its line ("Transcriber's Note") starts a section that ends at a section
    rule, three blank lines, or (in the last 15% of the text) the end of the text. A heading
    followed by text on the same line removes only its own paragraph."""
    text = _BRACKET_NOTE.sub("", text)
    if not re.search(r"transcriber", text, re.IGNORECASE):
        return text
    lines = text.split("\n")
    n = len(lines)
    keep = [True] * n
    # character offset of each line: "the end of the book" is measured in text, not lines
    offsets, pos = [], 0
    for line in lines:
        offsets.append(pos)
        pos += len(line) + 1
    i = 0
    while i < n:
        line = lines[i]
        m = _NOTE_HEADING.match(line)
        if not m:
            i += 1
            continue
        rest = line[m.end():].strip(" \t:.-*]")
        if rest:  # paragraph mode
            j = i
            while j < n and lines[j].strip():
                keep[j] = False
                j += 1
            i = j
            continue
        tail = offsets[i] >= 0.85 * pos
        j = i
        blanks = 0
        limit = n if tail else min(n, i + 120)
        while j < limit:
            if _SECTION_RULE.match(lines[j]) and j > i:
                break
            if not lines[j].strip():
                blanks += 1
                if blanks >= 3 and not tail:
                    break
            else:
                blanks = 0
            keep[j] = False
            j += 1
        i = j
    return "\n".join(line for line, k in zip(lines, keep) if k)


_UNCLOSED_MARKER = re.compile(
    r"^[ \t]*\[[ \t]*(?:Illustrations?|Music|Images?|Decorations?|Frontispiece|Plates?|Portrait)\b[^\n]*"
    r"(?:\n(?![ \t]*\n)[^\n]*)*",
    re.IGNORECASE | re.MULTILINE,
)


def strip_markers(text: str) -> str:
    """Remove ``[Illustration: ...]``-style editorial markers (captions included); a marker
    whose bracket never closes (it happens in transcriptions) is removed up to its paragraph end."""
    return _UNCLOSED_MARKER.sub("", _MARKER.sub("", text))


_TRAILING_WORD = re.compile(r"(?<![A-Za-z])([A-Za-z]+)$")
# the tail's marks ("lotments, near") stay with the joined word: the line break goes after them
_LEADING_WORD = re.compile(r"^[ \t]*([a-z]+)(?![A-Za-z])([^\sA-Za-z]*)[ \t]?")


def join_hyphenation(text: str, known: Callable[[str], bool] | None = None) -> str:
    """Join "exam-\\nple" into "example" only when the document itself uses "example"
    (or keep "to-morrow" when the document writes "to-morrow"); otherwise leave it alone.

    ``known`` (a period lexicon's test, for OCR) is further evidence: the joined word is
    joined when the period knows it and a half is no word of its own ("exam"), while two
    words ("to" and "morrow") keep their hyphen, as the period may have printed them."""
    if "-\n" not in text:
        return text
    pieces = text.split("-\n")
    cands = []  # (index, head word, tail word, tail match length)
    for i in range(len(pieces) - 1):
        mh = _TRAILING_WORD.search(pieces[i][-60:])
        mt = _LEADING_WORD.match(pieces[i + 1])
        if mh and mt:
            cands.append((i, mh.group(1), mt.group(1), mt.end()))
    if not cands:
        return text
    # vocabulary of the document without the broken halves themselves
    vocab = set(re.split(r"[^a-z\-]+", "\n".join(pieces).lower()))
    joins: dict[int, tuple[str, int]] = {}
    for i, a, b, tail_len in cands:
        if (a + b).lower() in vocab:
            joins[i] = (a + b, tail_len)
        elif f"{a}-{b}".lower() in vocab:
            joins[i] = (f"{a}-{b}", tail_len)
        elif known is not None and known(a + b) and not (known(a) and known(b)):
            joins[i] = (a + b, tail_len)
    if not joins:
        return text
    out = [pieces[0]]
    for i in range(len(pieces) - 1):
        nxt = pieces[i + 1]
        if i in joins:
            word, tail_len = joins[i]
            head_len = len(_TRAILING_WORD.search(out[-1][-60:]).group(1))
            rest = nxt[tail_len:]  # (a line the word ended already ends: no blank line made)
            out[-1] = out[-1][:-head_len] + word + _LEADING_WORD.match(nxt).group(2) + \
                ("\n" if rest and rest[0] != "\n" else "")
            out.append(rest)
        else:
            out[-1] = out[-1] + "-\n"
            out.append(nxt)
    return "".join(out)


def strip_scan_stamps(text: str) -> str:
    """OCR only: drop digitisers' stamps ("Digitized by Google", "Original from ...")."""
    if "igiti" not in text and "riginal" not in text and "enerated" not in text and "oogle" not in text:
        return text
    return _STAMP.sub("", text)


def strip_page_furniture(text: str, min_repeats: int = 3, max_head_chars: int = 60) -> str:
    """OCR only: drop page-number lines, running heads and catchwords.

    A running head is a short line that recurs on many pages (digits ignored, so "LONDON. 23"
    and "LONDON. 24" count together) and carries no sentence punctuation at its end. A
    catchword is the word alone on a page's last line that repeats the next page's first word."""
    lines = text.split("\n")
    # each line read as a page number once (three tests a line read it three times)
    numbered = [_PAGE_NUMBER.match(x) is not None and bool(x.strip()) for x in lines]
    lines, numbered = _strip_catchwords(lines, numbered)
    # each short line's key once (the OCR stage strips every row: this ran twice a line)
    keys = _head_keys(lines, max_head_chars)
    counts = Counter(k for k in keys if k is not None)
    pages = max(1, sum(numbered) or text.count("\f"))
    threshold = max(min_repeats, int(0.2 * pages))
    out = []
    for line, key, number in zip(lines, keys, numbered):
        s = line.strip()
        if number and len(s) <= 12:
            continue
        if key is not None and counts[key] >= threshold and _A_LETTER.search(s) \
                and (_mostly_upper(s) or not s.endswith((".", "?", "!", '"', "”"))):
            continue
        out.append(line)
    return "\n".join(out).replace("\f", "\n")


_DIGIT_RUN = re.compile(r"\d+")
_A_LETTER = re.compile(r"[A-Za-z]")


def _head_key(line: str) -> str:
    """A line as a running head recurs: digits as one mark ("LONDON. 23" and "LONDON. 24" alike),
    each run of white space one space (``str.split``'s white space is ``\\s``'s; a substitution
    of every space by a space took twice as long)."""
    return " ".join(_DIGIT_RUN.sub("#", line.strip().lower()).split())


def _head_keys(lines: list[str], max_chars: int) -> list[str | None]:
    """``_head_key`` of each line of 1 to ``max_chars`` characters stripped (None for the others),
    of them all at once: one ``lower`` and one substitution over the lines joined by a NUL, not
    two calls a line (a newspaper row's 50 lines: two thirds of this step). Nothing crosses a
    NUL: neither run (it is no digit, no space) nor lower case's one rule that reads a neighbour
    (the final sigma: a NUL is neither a cased nor a case-ignorable character). A line that holds
    a NUL itself is keyed line by line."""
    stripped = [x.strip() for x in lines]
    short = [x for x in stripped if 0 < len(x) <= max_chars]
    joined = "\0".join(short)
    if joined.count("\0") != max(0, len(short) - 1):
        return [_head_key(x) if 0 < len(x) <= max_chars else None for x in stripped]
    keys = iter(" ".join(x.split()) for x in _DIGIT_RUN.sub("#", joined.lower()).split("\0"))
    return [next(keys) if 0 < len(x) <= max_chars else None for x in stripped]


def _strip_catchwords(lines: list[str], numbered: list[bool]) -> tuple[list[str], list[bool]]:
    """Lines without the catchwords: a page ends at a form feed or a page-number line
    (``numbered``: whether each line is one); and ``numbered`` of the lines kept."""
    def first_word(j: int, step: int) -> tuple[int, str]:
        while 0 <= j < len(lines) and not lines[j].strip(" \t\f"):
            j += step
        return (j, lines[j].strip(" \t\f")) if 0 <= j < len(lines) else (-1, "")

    drop = set()
    for i, line in enumerate(lines):
        if not (numbered[i] or "\f" in line):
            continue
        j, last = first_word(i - 1, -1)
        k, nxt = first_word(i + 1, 1)
        if j < 0 or k < 0 or " " in last or not re.fullmatch(r"[A-Za-zſ'’-]{1,20}[,.;:]?", last):
            continue
        head = nxt.split()[0] if nxt.split() else ""
        if head.rstrip(",.;:").lower() == last.rstrip(",.;:-").lower() or \
                (last.endswith("-") and head.lower().startswith(last[:-1].lower())):
            drop.add(j)
    if not drop:
        return lines, numbered
    kept = [n for n in range(len(lines)) if n not in drop]
    return [lines[n] for n in kept], [numbered[n] for n in kept]


def _mostly_upper(s: str) -> bool:
    letters = [c for c in s if c.isalpha()]
    return bool(letters) and sum(c.isupper() for c in letters) >= 0.8 * len(letters)


def collapse_blank_lines(text: str) -> str:
    """At most one blank line in a row; trailing spaces dropped; ends with one newline."""
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n") + "\n" if text.strip() else ""


def clean_text(text: str, ocr: bool = False, gutenberg: bool | None = None) -> str:
    """The default cleaning chain; ``ocr=True`` adds page-number and running-head removal.

    ``gutenberg=None`` applies the Gutenberg steps when a Gutenberg marker is present."""
    text = strip_bom(text)
    text = normalize_newlines(text)
    text = wrap_long_lines(text)
    text = fix_mojibake(text)
    text = nfc(text)
    text = drop_soft_hyphens(text)
    if gutenberg is None:
        # (a header's stamped date is one too: a file cut of both its markers kept header and licence)
        gutenberg = bool(_PG_START.search(text) or _PG_END.search(text) or _PG_STAMP.search(text, 0, 10_000))
    if gutenberg:
        text = strip_gutenberg_boilerplate(text)
        text = strip_gutenberg_mentions(text)
    text = strip_transcriber_notes(text)
    text = strip_markers(text)
    if ocr:
        text = strip_scan_stamps(text)
        text = strip_page_furniture(text)
    text = join_hyphenation(text)
    return collapse_blank_lines(text)
