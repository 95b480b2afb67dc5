"""Any input the OCR repair stage accepts, not only the ones a test thought of: hypothesis writes a
JSONL file of rows (OCR prose cut anywhere, hostile characters: NUL, lone surrogates escaped, CR
and CRLF inside a text, form feeds, zero-width and combining marks, long s; years of every JSON
kind; keys it does not know), damaged lines (random bytes, Latin-1, not JSON, not an object, a
huge line), the whole file in UTF-8, UTF-8 with a BOM, UTF-16 or Latin-1, with LF, CRLF or CR line
ends, or empty; with any of the stage's flags, an output that is a new file, the input itself, a
link to it, a path under it, a folder or a file in a missing folder. The run (``repair_ocr.py``'s
``main`` under ``run_main``, in-process; a few as a subprocess) either exits 0 having lost nothing
(one output row per input row, in order, every key kept, each repaired text with its line count
where the lines are kept, the input untouched), or exits 2 with exactly one ``error:`` line, last
on stderr: never a traceback, never exit 1, never a hang. The files it learns from get the same
net: a lexicon file (gzip of JSON shaped as one, with counts of every kind, or not gzip), a folder
of period texts (any bytes and encodings, sub-folders, a MANIFEST.tsv, dangling links, a link to
itself) and a confusion model (JSON shaped as one, with rules of every kind)."""
from __future__ import annotations

import contextlib
import gzip
import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import REPO
from ocr_fixtures import OCR, PERIOD, period_lexicon

# examples per run; LONDONLM_FUZZ_EXAMPLES=300 searches longer (minutes)
EXAMPLES = int(os.environ.get("LONDONLM_FUZZ_EXAMPLES", 30))
SCRIPT = REPO / "02_data_collection" / "repair_ocr.py"

OCR_LINES = (OCR + PERIOD).splitlines()
HOSTILE = ["\x00", "\ud800", "\udfff", "\r\n", "\r", "\n", "\n\n", "\f", "\u200b", "\u00ad", "\ufeff",
           "e\u0301", "ſ", "\u2028", "\x85", "\t", "-\n", "£1 Is. 6d.", "12", "Digitized by Google",
           "LONDON. 23\n", "tbe" * 40, "«»", "\\", "\"", "  ", "I", "1 am", "\U0001f600", "\x7f"]
YEARS = st.one_of(st.none(), st.integers(-10**20, 10**20), st.integers(1400, 1900), st.booleans(),
                  st.floats(allow_nan=False), st.sampled_from(["1750", " 1750 ", "c. 1750", "", "١٧٥٠", [1750]]))
piece = st.one_of(st.sampled_from(OCR_LINES), st.sampled_from(OCR_LINES), st.sampled_from(HOSTILE),
                  st.text(max_size=30))
ocr_text = st.builds("".join, st.lists(piece, max_size=12)) | st.builds(lambda s, n: s * n, st.sampled_from(OCR_LINES),
                                                                         st.integers(1, 400))


@st.composite
def rows(draw) -> bytes:
    """One input line (its end not included)."""
    kind = draw(st.sampled_from(["row", "row", "row", "row", "bytes", "latin-1", "not json", "not an object",
                                 "no text", "deep"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200)).replace(b"\n", b" ").replace(b"\x00", b"")  # (NUL: "nul" below)
    if kind == "not json":
        return draw(st.text(max_size=60)).replace("\n", " ").encode("utf-8", "surrogatepass")
    if kind == "not an object":
        return json.dumps(draw(st.one_of(st.integers(), st.text(max_size=20), st.lists(st.integers())))).encode()
    if kind == "deep":
        return b"[" * 3000 + b"]" * 3000
    row = {"id": draw(st.text(max_size=10)), "text": draw(ocr_text)}
    if draw(st.booleans()):
        row["year"] = draw(YEARS)
    if kind == "no text":
        row["text"] = draw(st.one_of(st.none(), st.integers(), st.lists(st.text(max_size=3))))
    if draw(st.booleans()):
        row[draw(st.text(max_size=8))] = draw(st.one_of(st.text(max_size=10), st.integers(), st.none()))
    line = json.dumps(row, ensure_ascii=draw(st.booleans()))
    if kind == "latin-1":
        return line.encode("latin-1", errors="replace")
    return line.encode("utf-8", errors="surrogatepass")


@st.composite
def input_files(draw) -> bytes:
    lines = draw(st.lists(rows(), min_size=1, max_size=6))
    end = draw(st.sampled_from([b"\n", b"\n", b"\r\n", b"\r"]))
    data = end.join(lines) + (end if draw(st.booleans()) else b"")
    how = draw(st.sampled_from(["utf-8"] * 8 + ["bom", "utf-16", "blank", "empty", "nul"]))
    if how == "bom":
        data = b"\xef\xbb\xbf" + data
    elif how == "utf-16":
        data = data.decode("utf-8", errors="replace").encode("utf-16")
    elif how == "blank":
        data = b" \n\r\n\t\n"
    elif how == "empty":
        data = b""
    elif how == "nul":
        data = data + b"\x00\x00"
    return data


FLAGS = st.lists(st.sampled_from(["--no_furniture", "--join_hyphens", "--no_adapt", "--no_adapt", "--keep_sums",
                                  "--long_s=modern", "--report", "--max_row_mb=1", "--text_key=body",
                                  "--year_key=text", "--shipped_lexicon", "--shipped_lexicon"]),
                 unique=True, max_size=6)
OUTPUTS = st.sampled_from(["new"] * 8 + ["in a new folder", "the input", "a link to the input",
                           "under the input", "a folder", "a dangling link"])


@pytest.fixture(scope="module")
def lexicon_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lexicon") / "period.json.gz"
    period_lexicon().save(path)
    return path


@pytest.fixture(scope="module")
def stage():
    spec = importlib.util.spec_from_file_location("repair_ocr_fuzz_stage", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _output_path(tmp: Path, src: Path, where: str) -> Path:
    if where == "in a new folder":
        return tmp / "new" / "out.jsonl"
    if where == "the input":
        return src
    if where == "a link to the input":
        (tmp / "link.jsonl").symlink_to(src)
        return tmp / "link.jsonl"
    if where == "under the input":
        return src / "out.jsonl"
    if where == "a folder":
        (tmp / "folder").mkdir()
        return tmp / "folder"
    if where == "a dangling link":
        (tmp / "dangling.jsonl").symlink_to(tmp / "nowhere" / "x.jsonl")
        return tmp / "dangling.jsonl"
    return tmp / "out.jsonl"


def _input_lines(data: bytes) -> list[bytes]:
    """The rows the stage reads: lines split at LF, blank ones skipped, a UTF-8 BOM dropped."""
    return [line for line in data.removeprefix(b"\xef\xbb\xbf").split(b"\n") if line.strip()]


def check_outputs(data: bytes, out: Path, flags: list[str]) -> None:
    """What a finished run promises: every input row out, in order, its keys kept; a repaired text
    keeps its lines where neither the furniture nor line-end hyphens are taken out."""
    text_key = next((f.split("=")[1] for f in flags if f.startswith("--text_key")), "text")
    lines_kept = "--no_furniture" in flags and "--join_hyphens" not in flags
    got = out.read_text(encoding="utf-8").split("\n")
    assert got[-1] == "", "the output does not end with a line end"
    got = [json.loads(line) for line in got[:-1]]
    read = _input_lines(data)
    assert len(got) == len(read), (len(got), len(read))
    for n, (raw, row) in enumerate(zip(read, got), 1):
        assert isinstance(row, dict), row
        if "ocr_repair_error" in row:
            continue
        try:
            before = json.loads(raw.rstrip(b"\r").decode("utf-8"))
        except (UnicodeDecodeError, ValueError):  # read byte by byte as cp1252: the keys still kept
            continue
        assert set(before) == set(row), (n, before, row)
        assert {k: v for k, v in before.items() if k != text_key} == {k: v for k, v in row.items() if k != text_key}
        if lines_kept:
            assert row[text_key].count("\n") == before[text_key].count("\n"), (before[text_key], row[text_key])


def check_report(data: bytes, out: Path, report: Path, flags: list[str]) -> None:
    """The report says what changed: a line per row and the summary; where the text is repaired
    as it came (no furniture taken out, no line-end word joined), its changes, applied at their
    offsets to the input's text, make the output's."""
    text_key = next((f.split("=")[1] for f in flags if f.startswith("--text_key")), "text")
    entries = [json.loads(line) for line in report.read_text(encoding="utf-8").split("\n")[:-1]]
    assert len(entries) == len(_input_lines(data)) + 1 and "summary" in entries[-1]
    if "--no_furniture" not in flags or "--join_hyphens" in flags:
        return
    got = [json.loads(line) for line in Path(os.path.realpath(out)).read_text(encoding="utf-8").split("\n")[:-1]]
    for raw, row, entry in zip(_input_lines(data), got, entries):
        if "error" in entry or "changes_not_listed" in entry or "encoding" in entry:
            continue
        text, pos, made = json.loads(raw.rstrip(b"\r").decode("utf-8"))[text_key], 0, []
        for c in entry["changes"]:
            assert c["at"] >= pos and text[c["at"]:c["at"] + len(c["from"])] == c["from"], (text, c)
            made += [text[pos:c["at"]], c["to"]]
            pos = c["at"] + len(c["from"])
        assert "".join(made) + text[pos:] == row[text_key], (text, entry["changes"], row[text_key])


def run_stage(stage, argv: list[str]) -> tuple[int, str]:
    """(exit code, stderr) of the stage's ``main`` under ``run_main``, as the command runs it."""
    from londonlm.core.errors import run_main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            run_main(stage.main, argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, err.getvalue()


def check_refusal(code: int, err: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and lines and lines[-1].startswith("error: "), (code, err)
    assert sum(line.startswith("error:") for line in lines) == 1 and "Traceback" not in err, err


def _argv(tmp: Path, src: Path, out: Path, flags: list[str], lexicon_file: Path) -> list[str]:
    argv = ["--input", str(src), "--output", str(out), "--workers", "1", "--root", str(tmp / "root")]
    for f in flags:
        argv += ["--report", str(tmp / "report.jsonl")] if f == "--report" else [] if f == "--shipped_lexicon" else [f]
    if "--shipped_lexicon" not in flags:  # (the test's small lexicon: the shipped one where none is named)
        argv += ["--period_corpus", str(lexicon_file)]
    return argv


def _placed(tmp: str, data: bytes, where) -> tuple[Path, Path, Path]:
    """(the folder, the input written there, the output path ``where`` names)."""
    tmp = Path(tmp)
    src = tmp / "scans.jsonl"
    src.write_bytes(data)
    return tmp, src, _output_path(tmp, src, where)


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=input_files(), flags=FLAGS, where=OUTPUTS)
def test_any_input_is_repaired_whole_or_refused_in_one_line(stage, lexicon_file, data, flags, where):
    with tempfile.TemporaryDirectory() as tmp:
        tmp, src, out = _placed(tmp, data, where)
        code, err = run_stage(stage, _argv(tmp, src, out, flags, lexicon_file))
        event(f"exit {code}")  # (--hypothesis-show-statistics: how many runs got past the refusals)
        assert src.read_bytes() == data, "the input was changed"
        if code != 0:
            check_refusal(code, err)
            return
        assert "Traceback" not in err
        check_outputs(data, Path(os.path.realpath(out)), flags)
        if "--report" in flags:
            check_report(data, out, tmp / "report.jsonl", flags)


@settings(max_examples=max(3, EXAMPLES // 10), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=input_files(), flags=FLAGS, where=OUTPUTS, workers=st.sampled_from(["1", "2"]))
def test_the_command_repairs_whole_or_says_why_in_one_line(lexicon_file, data, flags, where, workers):
    """The same as a process of its own (its exit code, its stderr as the shell sees them)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp, src, out = _placed(tmp, data, where)
        argv = _argv(tmp, src, out, flags, lexicon_file)
        argv[argv.index("--workers") + 1] = workers
        p = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=120,
                           cwd=tmp)
        assert src.read_bytes() == data, "the input was changed"
        if p.returncode != 0:
            check_refusal(p.returncode, p.stderr)
            return
        assert not p.stderr.strip() or "Traceback" not in p.stderr, p.stderr
        check_outputs(data, Path(os.path.realpath(out)), flags)


# ---------------------------------------------------------------- the files it learns from
COUNTS = st.dictionaries(st.one_of(st.sampled_from(["the", "he", "be", "ſuch", "such", "", " ", "a b", "\x00"]),
                                   st.text(max_size=6)),
                         st.one_of(st.integers(1, 10**6), st.integers(1, 10**6), st.integers(-2, 10**6),
                                   st.sampled_from([10**30, 0.5, 1e308, "3", "x", None, True, [1], {}])),
                         max_size=6)
LEXICON = st.fixed_dictionaries({"format": st.sampled_from([1, 1, 1, 2, "1"]), "unigrams": COUNTS},
                                optional={"bigrams": st.one_of(COUNTS, st.sampled_from([None, [], "x"])),
                                          "capitals": COUNTS, "marks": COUNTS,
                                          "made_from": st.one_of(st.none(), st.dictionaries(st.text(max_size=5),
                                                                                            st.integers()), st.text())})
ALTERNATIVES = st.lists(st.one_of(st.tuples(st.sampled_from(["h", "s", "ſ", "", "rn", "\x00"]),
                                            st.one_of(st.floats(-30, 0), st.sampled_from([0.0, 5.0, -1e308]))),
                                  st.sampled_from([[], ["h"], "x", None, [1, 2, 3]])), max_size=3)
CONFUSIONS = st.fixed_dictionaries({"format": st.sampled_from([1, 1, 1, 2]),
                                    "rules": st.dictionaries(st.sampled_from(["b", "f", "li", "", "tb", "\x00"]),
                                                             ALTERNATIVES, max_size=4)},
                                   optional={"split": st.one_of(st.floats(-30, 0), st.sampled_from(["x", None, 5])),
                                             "join": st.floats(-30, 0), "hyphen": st.floats(-30, 0),
                                             "words": st.dictionaries(st.sampled_from(["tbe", "bo", ""]), ALTERNATIVES,
                                                                      max_size=2),
                                             "debris": st.one_of(st.dictionaries(st.sampled_from([".", ",", "'", ""]),
                                                                                 st.floats(-30, 0), max_size=2),
                                                                 st.sampled_from([None, [], "x"]))})
CORPUS_FILE = st.tuples(st.sampled_from(["a.txt", "b.xml", "c.html", "d.txt.gz", "sub/e.txt", "é ü.txt", ".h.txt",
                                         "MANIFEST.tsv"]),
                        st.one_of(st.sampled_from([PERIOD.encode(), PERIOD.encode("utf-16"), b"", b"\x00" * 10,
                                                   PERIOD.encode("latin-1", "replace") + b"\xe9"]),
                                  st.binary(max_size=200), st.text(max_size=200).map(str.encode)))


@st.composite
def learned_from(draw) -> dict:
    """The files the stage learns from: a lexicon file (gzip of JSON shaped as one, or not gzip), a
    folder of period texts (any bytes, links), a confusion model (JSON shaped as one)."""
    how = draw(st.sampled_from(["lexicon", "lexicon", "folder", "folder", "none"]))
    got: dict = {"how": how, "confusions": draw(st.one_of(st.none(), st.none(), st.none(), CONFUSIONS,
                                                          st.binary(max_size=40)))}
    if how == "lexicon":
        lexicon = draw(st.one_of(LEXICON, st.binary(max_size=40), st.sampled_from([[1], "x", None])))
        got["lexicon"] = lexicon if isinstance(lexicon, bytes) else gzip.compress(json.dumps(lexicon).encode())
    elif how == "folder":
        got["files"] = draw(st.lists(CORPUS_FILE, max_size=4, unique_by=lambda f: f[0]))
        got["links"] = draw(st.lists(st.sampled_from(["to a file", "dangling", "to the folder"]), max_size=2))
    return got


def _learn_argv(tmp: Path, got: dict) -> list[str]:
    argv = []
    if got["how"] == "lexicon":
        (tmp / "lexicon.json.gz").write_bytes(got["lexicon"])
        argv += ["--period_corpus", str(tmp / "lexicon.json.gz")]
    elif got["how"] == "folder":
        corpus = tmp / "period"
        corpus.mkdir()
        for name, content in got["files"]:
            (corpus / name).parent.mkdir(parents=True, exist_ok=True)
            (corpus / name).write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
        for n, link in enumerate(got["links"]):
            target = {"to a file": tmp / "scans.jsonl", "dangling": tmp / "nowhere", "to the folder": corpus}[link]
            (corpus / f"link{n}.txt").symlink_to(target)
        argv += ["--period_corpus", str(corpus)]
    if got["confusions"] is not None:
        raw = got["confusions"]
        (tmp / "confusions.json").write_bytes(raw if isinstance(raw, bytes) else json.dumps(raw).encode())
        argv += ["--confusions", str(tmp / "confusions.json")]
    return argv


@settings(max_examples=max(3, EXAMPLES // 2), deadline=None, database=None,  # (~1 s each: a lexicon learned)
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(got=learned_from(), text=ocr_text,
       flags=st.lists(st.sampled_from(["--no_adapt", "--thorough", "--no_furniture"]), unique=True))
def test_any_lexicon_period_folder_or_confusion_model_repairs_or_is_refused_in_one_line(stage, got, text, flags):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = (json.dumps({"id": "a", "text": text}) + "\n" + json.dumps({"id": "b", "text": OCR}) + "\n").encode()
        src = tmp / "scans.jsonl"
        src.write_bytes(data)
        argv = ["--input", str(src), "--output", str(tmp / "out.jsonl"), "--workers", "1", "--root", str(tmp / "root"),
                "--save_lexicon", str(tmp / "saved.json.gz"), *flags, *_learn_argv(tmp, got)]
        code, err = run_stage(stage, argv)
        event(f"exit {code}" + (" " + err.strip().splitlines()[-1].replace(str(tmp), "")[:40] if code else ""))
        assert src.read_bytes() == data, "the input was changed"
        if code != 0:
            check_refusal(code, err)
            return
        check_outputs(data, tmp / "out.jsonl", flags)
