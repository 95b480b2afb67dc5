"""repair_ocr.py, hostile round 21 (round 20's "Not changed"): two runs into one output at once, a
row over --max_row_mb passed through without being held whole, an earlier run's reason kept, an
output among a token cache's splits."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from conftest import REPO
from ocr_fixtures import period_lexicon

from londonlm.corpus.ocr import jsonl
from londonlm.corpus.ocr.confusions import load_confusions
from londonlm.corpus.ocr.files import output_lock

SCRIPT = REPO / "02_data_collection" / "repair_ocr.py"
ROWS = b'{"id": "a", "text": "tbe Court of Aldermen"}\n{"id": "b", "text": "tbe Lord Mayor"}\n'


@pytest.fixture(scope="module")
def lexicon(tmp_path_factory) -> Path:
    return period_lexicon().save(tmp_path_factory.mktemp("lex") / "lexicon.json.gz")


@pytest.fixture(scope="module")
def repair():
    return jsonl.DocumentRepair(period_lexicon(), load_confusions())


def script(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_a_second_run_into_a_busy_output_is_refused_and_the_first_runs_files_stay(tmp_path, lexicon):
    """Was: no lock. Two runs into one --output/--report each wrote theirs whole, but the last
    report renamed could be the other run's, beside this run's rows (exit 0 both). Now the second
    is one line, exit 2, before any work, and nothing of the first run's is touched; another
    output in the same folder is free, and the lock file goes with its run."""
    (tmp_path / "in.jsonl").write_bytes(ROWS)
    (tmp_path / "out.jsonl").write_text("first run's rows\n")
    (tmp_path / "report.jsonl").write_text("first run's report\n")
    base = ["--input", "in.jsonl", "--period_corpus", lexicon, "--root", tmp_path, "--workers", "1", "--no_adapt"]
    for held, extra in (("out.jsonl", ["--output", "out.jsonl"]),
                        ("report.jsonl", ["--output", "other.jsonl", "--report", "report.jsonl"]),
                        ("out.jsonl", ["--output", "other.jsonl", "--report", "out.jsonl"])):
        with output_lock("--output", tmp_path / held):  # (the first run, writing)
            res = script(*base, *extra, cwd=tmp_path)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and "being written by another run" in lines[0], res.stderr
        assert (tmp_path / "out.jsonl").read_text() == "first run's rows\n"
        assert (tmp_path / "report.jsonl").read_text() == "first run's report\n"
        assert not (tmp_path / "other.jsonl").exists()
    with output_lock("--output", tmp_path / "out.jsonl"):  # another output in that folder: free
        res = script(*base, "--output", "free.jsonl", "--report", "free_report.jsonl", cwd=tmp_path)
    assert res.returncode == 0 and len(_rows(tmp_path / "free.jsonl")) == 2, res.stderr
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".lock")]


def test_a_lock_left_by_a_killed_run_does_not_block_the_next(tmp_path, repair):
    """A run killed with kill -9 leaves its lock file (the lock goes with the process): the next
    run takes it, writes, and removes it."""
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_bytes(ROWS)
    (tmp_path / ".out.jsonl.lock").write_text("")
    jsonl.repair_jsonl(src, out, repair, options=jsonl.JsonlOptions(workers=1))
    assert [r["id"] for r in _rows(out)] == ["a", "b"] and not (tmp_path / ".out.jsonl.lock").exists()


def _big_rows(tmp_path: Path, size: int) -> tuple[Path, list[bytes]]:
    text = "tbe Court of Aldermen met at Guildhall, " * (size // 40)
    lines = [json.dumps({"id": "big", "text": text, "year": 1750}).encode(),
             b'{"id": "s", "text": "tbe Lord Mayor"}',
             b"not json at all, " * (size // 17),  # no row at all: passed through as its raw text
             b'{"id": "latin", "text": "caf\xe9 ' + b"x" * size + b'"}',  # a byte that is no UTF-8
             b'{"line": 3, "raw": "' + b"y" * size + b'", "ocr_repair_error": "bad_json"}']  # an earlier run's
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    return src, lines


def test_a_row_over_max_row_mb_is_passed_through_in_bounded_memory(tmp_path, repair):
    """Was: a row over --max_row_mb read whole, decoded and parsed to be written back: about 5.5x
    its size in memory (848 MB for a 155 MB line). Now it is streamed from the input, in the
    format the whole-row pass-through wrote (the row plus its reason; a line that is no object as
    its raw text; an earlier run's reason kept), with its id and cp1252 bytes in the report."""
    size = 12 * 1024 * 1024
    src, lines = _big_rows(tmp_path, size)
    out, report = tmp_path / "out.jsonl", tmp_path / "report.jsonl"
    options = jsonl.JsonlOptions(max_row_bytes=256 * 1024, workers=1)
    tracemalloc.start()
    try:
        summary = jsonl.repair_jsonl(src, out, repair, report, options)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < size // 2, f"peak {peak / 2**20:.1f} MiB for a {size / 2**20:.0f} MiB row"
    assert summary["errors"] == {"too_large": 4} and summary["repaired"] == 1
    rows = _rows(out)
    assert rows[0] == {**json.loads(lines[0]), "ocr_repair_error": "too_large"}
    assert rows[1]["text"] == "the Lord Mayor"
    assert rows[2] == {"line": 3, "raw": lines[2].decode(), "ocr_repair_error": "too_large"}
    assert rows[3] == {**json.loads(lines[3].decode("cp1252")), "ocr_repair_error": "too_large"}
    assert rows[4] == json.loads(lines[4])  # its first reason kept
    entries = _rows(report)
    assert [e.get("id") for e in entries[:-1]] == ["big", "s", None, "latin", None]
    assert entries[3]["encoding"] == "decoded_cp1252" and entries[3]["cp1252_bytes"] == [len(b'{"id": "latin", "text": "caf')]


def test_a_too_large_row_comes_out_as_the_whole_row_pass_through_wrote_it(tmp_path, repair):
    """The streamed pass-through against the whole-row one (a stream: read whole, as before) on
    rows of every shape: objects nested, empty, with numbers JSON holds and one it does not
    (1e999), arrays, broken rows, CRLF line ends: the same rows out."""
    cases = [b'{"id": 1, "a": [1, 2, {"b": [3e5, true, null, "s\\"x\\u00e9"]}], "text": "' + b"z" * 300 + b'"}',
             b'  {  "pad": "' + b" " * 300 + b'"  }  \r', b'{"a": 1e999, "p": "' + b"q" * 300 + b'"}',
             b'[' + b",".join([b"1"] * 200) + b']', b'{"a": "' + b"r" * 300 + b'",}',
             b'{"ocr_repair_error": 5, "p": "' + b"s" * 300 + b'"}',
             b'{"o": {' + b",".join(b'"k%d": %d' % (i, i) for i in range(100)) + b'}}']
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(cases) + b"\n")
    options = jsonl.JsonlOptions(max_row_bytes=200, workers=1)
    jsonl.repair_jsonl(src, tmp_path / "streamed.jsonl", repair, options=options)
    whole = [jsonl.repair_row(n, raw, options)[0] for n, raw in enumerate((c + b"\n" for c in cases), 1)]
    assert [json.loads(x) for x in whole] == _rows(tmp_path / "streamed.jsonl")


def test_a_bad_json_row_an_earlier_run_passed_through_keeps_its_reason(tmp_path, lexicon):
    """Was: a line an earlier run passed through as bad_json ({"line", "raw", ...}) came out of
    the next run as no_text: the line's own fault was overwritten."""
    (tmp_path / "in.jsonl").write_bytes(b'{"id": "a", "text": "tbe Court"\n' + ROWS)
    base = ["--period_corpus", lexicon, "--root", tmp_path, "--workers", "1", "--no_adapt"]
    assert script("--input", "in.jsonl", "--output", "once.jsonl", *base, cwd=tmp_path).returncode == 0
    res = script("--input", "once.jsonl", "--output", "twice.jsonl", *base, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert [r.get("ocr_repair_error") for r in _rows(tmp_path / "twice.jsonl")] == ["bad_json", None, None]
    assert _rows(tmp_path / "twice.jsonl")[0] == _rows(tmp_path / "once.jsonl")[0]


def test_an_output_among_a_token_caches_splits_is_refused(tmp_path, lexicon):
    """Was: --output pretokenized_data/train.bin (or a file beside it) accepted, exit 0: the
    token cache has no config.json or sidecar.json, so its folder was no artifact's."""
    cache = tmp_path / "run" / "pretokenized_data"
    cache.mkdir(parents=True)
    (cache / "train.bin").write_bytes(b"\x00\x01" * 8)
    (tmp_path / "in.jsonl").write_bytes(ROWS)
    base = ["--input", "in.jsonl", "--period_corpus", lexicon, "--root", tmp_path, "--workers", "1", "--no_adapt"]
    for out in ("run/pretokenized_data/train.bin", "run/pretokenized_data/rows.jsonl"):
        res = script(*base, "--output", out, cwd=tmp_path)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and "token cache" in lines[0], res.stderr
    assert sorted(os.listdir(cache)) == ["train.bin"] and (cache / "train.bin").read_bytes() == b"\x00\x01" * 8


def test_a_too_large_line_of_white_space_is_skipped_as_a_blank_line(tmp_path, repair):
    # was: a line of spaces over --max_row_mb came out as {"line": 2, "raw": "   ...",
    # "ocr_repair_error": "too_large"}, where a short one is skipped as blank
    src = tmp_path / "in.jsonl"
    src.write_bytes(ROWS.splitlines(keepends=True)[0] + b" \t" * 400 + b"\r\n" + ROWS.splitlines(keepends=True)[1])
    summary = jsonl.repair_jsonl(src, tmp_path / "out.jsonl", repair,
                                 options=jsonl.JsonlOptions(max_row_bytes=200, workers=1))
    assert [r["id"] for r in _rows(tmp_path / "out.jsonl")] == ["a", "b"]
    assert summary["rows"] == 2
