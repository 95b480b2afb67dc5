"""Any source folder the chat dataset builder reads, not only the ones a test thought of:
hypothesis fills a folder with Old Bailey sessions papers made of the fixtures' paragraphs and of
damaged or varied ones (empty, no sentence, no question mark, dashes of every kind, a huge answer,
period spellings, entities, markup nested deep, paragraphs inside paragraphs), with any date and
trial id, in UTF-8, Latin-1 (declared or not), UTF-16, gzip, cut at any point or random bytes,
under odd names and sub-folders, with or without a ``MANIFEST.tsv``. The build either writes a
dataset whose every row is well-formed (a system line naming the row's year, then user and
assistant turns in turn, none empty, each within the filters' rules, ids unique, no trial on both
sides) and agrees with its statistics, or stops with one LondonLMError (the stage's one
``error:`` line, exit 2); any other exception is a defect."""
from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import OLD_BAILEY_1756, OLD_BAILEY_1818, REPO
from londonlm.chat.dataset import ChatDatasetOptions, build_chat_dataset, load_chat_dataset
from londonlm.chat.filters import ExchangeRules, letter_share
from londonlm.core import LondonLMError

# examples per run; LONDONLM_FUZZ_EXAMPLES=300 searches longer (minutes)
EXAMPLES = int(os.environ.get("LONDONLM_FUZZ_EXAMPLES", 25))
SCRIPT = REPO / "07_finetuning" / "build_chat_dataset.py"
RULES = ExchangeRules()

FIXTURE_PARAS = re.findall(r"<p>.*?</p>", OLD_BAILEY_1818 + OLD_BAILEY_1756, re.S)
HOSTILE_PARAS = [
    "<p></p>", "<p/>", "<p>Q.</p>", "<p>Q. - A.</p>", "<p>Q. ? - A. ?</p>", "<p>? - ? - ?</p>", "<p>A. Yes.</p>",
    "<p>Q. Where do you live —A. In the Strand.</p>", "<p>Court. Where? – There.</p>",
    "<p>Q. Is it ſo - A. It is ſo.</p>",
    "<p>Q. Did you &amp;c. - A. I did, &amp;c.</p>", "<p>Q. What is it &#x2014; A. A &#163;5 note.</p>",
    "<p>Q. <![CDATA[Was it you]]> - A. It was.</p>", "<p>Q. Was it you - A. " + "It was I, my lord. " * 200 + "</p>",
    "<p>Q. " + "Why " * 300 + "- A. Because.</p>", "<p>Q. Was it you <p>- A. It was.</p></p>",
    "<p>Q. Was it <hi>" * 1 + "you" + "</hi>" * 1 + " - A. Yes.</p>",
    "<p>" + "<hi>" * 3000 + "Q. Was it you - A. Yes." + "</hi>" * 3000 + "</p>",
    "<p>JOHN SMITH sworn.</p>", "<p>- SMITH sworn.</p>", "<p>JOHN SMITH (in continuation).</p>",
    "<p>Q. to . Is it - A. No.</p>", "<p>Q. from . Did you - A. No.</p>", "<p>Prisoner's Defence. I never did.</p>",
    "<p>Q. Was it you\u2028 - A. It was\u00a0I.</p>", "<p>Q. ¿Qué? - A. Sí.</p>",
    "<p>Q. Was it 3l. 5s. - A. 3l. 5s. 3d.</p>",
    "<p>the rest of a page-split answer</p>", "<p>Q. Was it you - A. (Produced.)</p>", "<p>Q. Was it you - A. No</p>",
    "<p>Q. Where is it? - A. Here. Q. And that? - A. There.</p>", "<p>Q. x - A. y</p>",
]
DATES = st.one_of(st.sampled_from(["17561020", "18181028", "", "0000", "abcd", "17560230", "99999999", "1756",
                                   "1756-10-20"]), st.text(max_size=10))
IDS = st.one_of(st.sampled_from(["t17561020-4", "t1", "", "t 1"]), st.text(max_size=12))
para = st.one_of(st.sampled_from(FIXTURE_PARAS), st.sampled_from(FIXTURE_PARAS), st.sampled_from(HOSTILE_PARAS),
                 st.builds(lambda t: f"<p>Q. {t} - A. {t}</p>", st.text(max_size=40)),
                 st.builds(lambda t: f"<p>{t}</p>", st.text(max_size=60)))


def _attr(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


@st.composite
def trial(draw) -> str:
    tid, date = _attr(draw(IDS)), _attr(draw(DATES))
    id_attr = "" if draw(st.integers(0, 5)) == 0 else f' id="{tid}"'
    date_interp = f'<interp inst="{tid}" type="date" value="{date}"/>' if draw(st.booleans()) else ""
    defendant = ('<p><persName type="defendantName">John <interp type="given" value="John"/>Smith'
                 '<interp type="surname" value="Smith"/></persName> was indicted.</p>') if draw(st.booleans()) else ""
    paras = "\n".join(draw(st.lists(para, max_size=10)))
    return f'<div1 type="trialAccount"{id_attr}>{date_interp}{defendant}\n{paras}</div1>'


@st.composite
def sessions_paper(draw) -> bytes:
    session = _attr(draw(DATES))
    body = "\n".join(draw(st.lists(trial(), min_size=1, max_size=3)))
    text = (f'<TEI.2><text><body><div0 type="sessionsPaper" id="{session}">'
            f'<interp inst="{session}" type="date" value="{session}"/>{body}</div0></body></text></TEI.2>\n')
    how = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "declared latin-1", "latin-1", "utf-16", "cut", "bytes"]))
    if how == "declared latin-1":
        return ('<?xml version="1.0" encoding="ISO-8859-1"?>\n' + text).encode("latin-1", errors="replace")
    if how == "latin-1":
        return ('<?xml version="1.0" encoding="UTF-8"?>\n' + text).encode("latin-1", errors="replace")
    if how == "utf-16":
        return ('<?xml version="1.0" encoding="UTF-16"?>\n' + text).encode("utf-16")
    data = ('<?xml version="1.0" encoding="UTF-8"?>\n' + text).encode("utf-8", errors="surrogatepass")
    if how == "cut":
        return data[:draw(st.integers(0, len(data)))]
    if how == "bytes":
        return draw(st.binary(max_size=300)) + b'type="trialAccount"' + draw(st.binary(max_size=100))
    return data


NAMES = st.sampled_from(["oldbailey_proceedings_1818-10-28", "x", "é ü", "sub/deeper/a", ".hidden", "a b", "-n"])
# a folder's MANIFEST.tsv ({name}: the first file's), its rows short of cells, long of them, or odd
MANIFEST = st.one_of(st.none(), st.sampled_from([
    "file\ttitle\tlicense\n{name}\tA title\tCC BY 4.0\n",
    "file\ttitle\tnotes\n{name}\n",
    "file\ttitle\tlicense\n{name}\n",
    "file\ttitle\tnotes\tlicense\n{name}\tT\tCC BY-SA 2.0 notes\t\n",
    "file\ttitle\n{name}\tT\textra\tcolumns\n",
    "file\n{name}\n{name}\n",
    "\ufefffile\ttitle\n{name}\t\"quoted\ttitle\"\n",
]))


@st.composite
def folders(draw) -> tuple[list[tuple[str, bytes]], str | None]:
    files = {}
    for _ in range(draw(st.integers(1, 3))):
        name, data = draw(NAMES) + f"_{draw(st.integers(0, 9))}.xml", draw(sessions_paper())
        if draw(st.integers(0, 4)) == 0:
            name, data = name + ".gz", gzip.compress(data)
        files[name] = data
    manifest = draw(MANIFEST)
    return sorted(files.items()), manifest and manifest.format(name=sorted(files)[0]), draw(ODD_ENTRIES)


# names the folder's search finds that are no plain file (or a second name for one)
ODD_ENTRIES = st.lists(st.sampled_from(["a dangling link", "a pipe", "a folder", "a link to a file", "a loop"]),
                       unique=True, max_size=2)


def check_dataset(out: Path, stats: dict, options: ChatDatasetOptions) -> None:
    """What a finished build promises of every row, read back as a user would."""
    data = load_chat_dataset(out)
    rows = {s: list(data[s]) for s in ("train", "validation")}
    every = rows["train"] + rows["validation"]
    assert len(every) == stats["conversations"] and sum(r["n_exchanges"] for r in every) == stats["exchanges"]
    assert len({r["id"] for r in every}) == len(every), "two rows with one id"
    trials = {s: {r["trial_id"] for r in v} for s, v in rows.items()}
    assert not trials["train"] & trials["validation"], "a trial on both sides"
    for r in every:
        m = r["messages"]
        assert m[0]["role"] == "system" and m[0]["content"] == (
            f"{options.place}, {r['year']}." if r["year"] else f"{options.place}."), m[0]
        assert [t["role"] for t in m[1:]] == ["user", "assistant"] * r["n_exchanges"], m
        assert r["n_exchanges"] >= options.min_exchanges
        for t in m[1:]:
            text = t["content"]
            assert text == text.strip() and len(text) >= RULES.min_chars, t
            limit = RULES.max_question_chars if t["role"] == "user" else RULES.max_answer_chars
            assert len(text) <= limit and re.search(r"[^\W\d_]", text), t
            assert len(text.replace(" ", "")) < 20 or letter_share(text) >= RULES.min_letter_share, t


def _write(src: Path, files: list[tuple[str, bytes]], manifest: str | None, odd: list[str]) -> None:
    for name, data in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    if manifest is not None:
        (src / "MANIFEST.tsv").write_text(manifest, encoding="utf-8")
    for entry in odd:
        if entry == "a dangling link":
            (src / "gone.xml").symlink_to(src / "nowhere.xml")
        elif entry == "a pipe":
            os.mkfifo(src / "pipe.xml")
        elif entry == "a folder":
            (src / "folder.xml").mkdir()
        elif entry == "a link to a file":
            (src / "again.xml").symlink_to(src / files[0][0])
        else:
            (src / "loop").symlink_to(src)


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(folder=folders(), validation=st.sampled_from([0.0, 10.0, 50.0, 100.0]))
def test_any_source_folder_builds_well_formed_rows_or_says_why_in_one_error(folder, validation):
    files, manifest, odd = folder
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "chat"
        src.mkdir()
        _write(src, files, manifest, odd)
        options = ChatDatasetOptions(validation_percent=validation)
        try:
            stats = build_chat_dataset(src, out, options, log=lambda *_: None)
        except LondonLMError:
            assert not out.exists(), "a failed build left a dataset"
            return
        check_dataset(out, stats, options)
        assert all(src.joinpath(name).read_bytes() == data for name, data in files), "a source was changed"


@settings(max_examples=max(2, EXAMPLES // 10), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(folder=folders())
def test_the_command_builds_or_says_why_in_one_line(folder):
    """The same through the stage script: exit 0, or exit 2 with one ``error:`` line last on stderr."""
    files, manifest, odd = folder
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        _write(src, files, manifest, odd)
        p = subprocess.run([sys.executable, str(SCRIPT), "--source_dir", str(src), "--root", tmp],
                           capture_output=True, text=True, timeout=300, cwd=tmp)
        lines = p.stderr.strip().splitlines()
        if p.returncode != 0:
            assert p.returncode == 2 and lines and lines[-1].startswith("error: "), p.stderr
            assert sum(line.startswith("error:") for line in lines) == 1 and "Traceback" not in p.stderr
            return
        assert "Traceback" not in p.stderr, p.stderr
        out = Path(tmp) / "data" / "london_historical" / "chat"
        check_dataset(out, load_stats(out), ChatDatasetOptions())


def load_stats(out: Path) -> dict:
    import json

    from londonlm.core.layout import CHAT_STATS

    return json.loads((out / CHAT_STATS).read_text(encoding="utf-8"))


# ---------------------------------------------------------------- what the net found (round 5)
QUIET = dict(log=lambda *_: None)


def _one_trial(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "oldbailey_proceedings_1818-10-28.xml").write_text(OLD_BAILEY_1818, encoding="utf-8")
    return folder


def test_a_split_left_empty_is_written_and_read_back(tmp_path):
    """One trial (its hash puts it in train), or --validation_percent 0 or 100, leaves a split
    empty: ``Dataset.from_list([])`` raised ValueError (a traceback, nothing written), and an
    empty split saved as no shard could not be loaded. Now both splits are there, one of no rows."""
    src = _one_trial(tmp_path / "src")
    for percent, empty in ((10.0, "validation"), (0.0, "validation"), (100.0, "train")):
        out = tmp_path / f"chat{percent}"
        stats = build_chat_dataset(src, out, ChatDatasetOptions(validation_percent=percent), **QUIET)
        data = load_chat_dataset(out)
        assert len(data[empty]) == 0 and len(data["train"]) + len(data["validation"]) == stats["conversations"] == 2
        assert data[empty].features == data["train" if empty == "validation" else "validation"].features


def test_markup_nested_thousands_deep_in_a_paragraph(tmp_path):
    """A paragraph's markup nested 1,500 deep (past Python's recursion limit, within lxml's)
    raised RecursionError: the whole build gone."""
    deep = "<p>" + "<hi>" * 1500 + "Q. Was it you - A. It was not I, my lord." + "</hi>" * 1500 + "</p>"
    src = _one_trial(tmp_path / "src")
    (src / "deep.xml").write_text(OLD_BAILEY_1818.replace("<p>GUILTY.", deep + "<p>GUILTY."), encoding="utf-8")
    stats = build_chat_dataset(src, tmp_path / "chat", ChatDatasetOptions(validation_percent=0.0), **QUIET)
    answers = [m["content"] for r in load_chat_dataset(tmp_path / "chat")["train"] for m in r["messages"]]
    assert "It was not I, my lord." in answers, answers
    assert stats["files"]["deep.xml"]["exchanges"] == 6  # (the file's 5 and the deep one; the other file's: duplicates)


def test_trials_without_an_id_or_with_one_twice_keep_their_rows_apart(tmp_path):
    """Trials without an id were all trial "" (one trial to the split, their rows one id "-c0");
    the same trial id in two files (a paper as .xml and .xml.gz) gave two rows one id too."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.xml").write_text(OLD_BAILEY_1818, encoding="utf-8")
    (src / "b.xml.gz").write_bytes(gzip.compress(OLD_BAILEY_1818.replace("A. ", "A. Truly, ").encode()))
    noid = OLD_BAILEY_1818.replace('<div1 type="trialAccount" id="t18181028-1">', '<div1 type="trialAccount">')
    noid = noid.replace("A. ", "A. Indeed, ")
    trial = noid[noid.index("<div1"):noid.index("</div1>") + 7]
    (src / "noid.xml").write_text(noid.replace("</div1>", "</div1>" + trial.replace("Indeed", "Surely")),
                                  encoding="utf-8")
    build_chat_dataset(src, tmp_path / "chat", ChatDatasetOptions(validation_percent=0.0), **QUIET)
    rows = list(load_chat_dataset(tmp_path / "chat")["train"])
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), ids
    trials = {name: {r["trial_id"] for r in rows if r["source_file"] == name}
              for name in ("a.xml", "b.xml.gz", "noid.xml")}
    # (files are read in name order: the second with the trial's id has it qualified by its name)
    assert trials == {"a.xml": {"t18181028-1"}, "b.xml.gz": {"b.xml.gz:t18181028-1"},
                      "noid.xml": {"trial-1", "trial-2"}}


def test_a_manifest_row_short_of_cells(tmp_path):
    """A MANIFEST.tsv row with fewer cells than its header (``notes`` then None): TypeError."""
    src = _one_trial(tmp_path / "src")
    (src / "MANIFEST.tsv").write_text("file\ttitle\tnotes\noldbailey_proceedings_1818-10-28.xml\n", encoding="utf-8")
    stats = build_chat_dataset(src, tmp_path / "chat", ChatDatasetOptions(validation_percent=0.0), **QUIET)
    assert "CC BY-NC 4.0" in stats["files"]["oldbailey_proceedings_1818-10-28.xml"]["license"]


def test_names_that_are_no_file_are_skipped_and_said(tmp_path):
    """A dangling ``x.xml`` link (FileNotFoundError) or a folder named ``d.xml`` (IsADirectoryError)
    ended the build; a named pipe ``p.xml`` was read for ever. Now each is skipped, and the log says so."""
    import threading
    import time

    src = _one_trial(tmp_path / "src")
    (src / "gone.xml").symlink_to(tmp_path / "nowhere.xml")
    (src / "d.xml").mkdir()
    os.mkfifo(src / "p.xml")
    # a writer that would end a read of the pipe after 5 s (an old build then went on): the build must not wait
    threading.Thread(target=lambda: open(src / "p.xml", "wb").close(), daemon=True).start()
    logs, t0 = [], time.monotonic()
    build_chat_dataset(src, tmp_path / "chat", ChatDatasetOptions(validation_percent=0.0), log=logs.append)
    assert time.monotonic() - t0 < 4 and "3 *.xml name(s) that are no file skipped" in logs[0]
    os.close(os.open(src / "p.xml", os.O_RDONLY | os.O_NONBLOCK))  # (the writer let go)
    assert len(load_chat_dataset(tmp_path / "chat")["train"]) == 2
