"""repair_ocr.py end to end, as a user runs it: rows out in order with their keys, text
repaired, a report of what changed and why; and hostile input (empty, binary, cp1252, a huge
row, malformed JSONL, rows without text, the output over the input, no period corpus): one
error line, or the row passed through with its reason; every input row comes out."""
from __future__ import annotations

import json
import stat
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path

import pytest
from conftest import REPO
from ocr_fixtures import OCR, period_lexicon

from londonlm.core.artifacts import current_umask

SCRIPT = REPO / "02_data_collection" / "repair_ocr.py"


@pytest.fixture(scope="module")
def lexicon(tmp_path_factory) -> Path:
    return period_lexicon().save(tmp_path_factory.mktemp("lex") / "lexicon.json.gz")


def run(tmp_path: Path, lexicon: Path, lines: list[bytes] | bytes, *extra: str):
    src = tmp_path / "in.jsonl"
    src.write_bytes(lines if isinstance(lines, bytes) else b"".join(x + b"\n" for x in lines))
    res = subprocess.run([sys.executable, str(SCRIPT), "--input", str(src), "--output", str(tmp_path / "out.jsonl"),
                          "--report", str(tmp_path / "report.jsonl"), "--period_corpus", str(lexicon),
                          "--root", str(tmp_path), *extra], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    out = tmp_path / "out.jsonl"
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()] if out.exists() else None
    return res, rows


def row(**kw) -> bytes:
    return json.dumps(kw, ensure_ascii=False).encode("utf-8")


def test_rows_out_in_order_text_repaired_keys_kept_and_a_report(tmp_path, lexicon):
    lines = [row(id="a", text=OCR, year=1744, source="gazette"), row(id="b", text="tbe Court of Aldermen", n=[1])]
    res, rows = run(tmp_path, lexicon, lines)
    assert res.returncode == 0, res.stderr
    assert [r["id"] for r in rows] == ["a", "b"] and rows[0]["source"] == "gazette" and rows[1]["n"] == [1]
    assert rows[0]["text"].startswith("Yeſterday the Lords of the Admiralty") and rows[1]["text"] == "the Court of Aldermen"
    report = [json.loads(x) for x in (tmp_path / "report.jsonl").read_text().splitlines()]
    first = report[0]["changes"][0]
    assert first == {"at": 0, "from": "Yefterday", "to": "Yeſterday", "kind": "word", "gain": first["gain"],
                     "channel": first["channel"]}
    assert report[0]["ocr_quality"] > report[0]["ocr_quality_before"]
    assert report[-1]["summary"]["rows"] == 2 and "2 rows" in res.stdout
    # one repair process per CPU it may use, unless --workers says fewer
    from londonlm.corpus.ocr import usable_cpus
    assert report[-1]["summary"]["workers"] == usable_cpus()
    # artifacts take the mode open() would give (0666 less the umask), not a temporary file's 0600
    umask = current_umask()  # the script inherits this process's
    assert {stat.S_IMODE((tmp_path / f).stat().st_mode) for f in ("out.jsonl", "report.jsonl")} == {0o666 & ~umask}
    # two processes give the same rows
    res2, rows2 = run(tmp_path, lexicon, lines, "--workers", "2", "--long_s", "modern", "--thorough")
    assert [r["id"] for r in rows2] == ["a", "b"] and rows2[0]["text"].startswith("Yesterday the Lords")
    # which walk the search runs, said once by the command (its workers, forked after, say nothing)
    assert res2.stderr.count("OCR search:") == 1 and "OCR search: compiled walk" in res2.stderr.splitlines()[0]


def test_sums_are_repaired_unless_the_user_keeps_them(tmp_path, lexicon):
    lines = [row(id="a", text="tbe Merchants will attend with £1 Is. 6d. and tbe Bread")]
    res, rows = run(tmp_path, lexicon, lines)
    assert res.returncode == 0, res.stderr
    assert rows[0]["text"] == "the Merchants will attend with £1 1s. 6d. and the Bread"
    report = json.loads((tmp_path / "report.jsonl").read_text().splitlines()[0])
    assert {c["kind"] for c in report["changes"]} == {"word", "sum"}
    res, rows = run(tmp_path, lexicon, lines, "--keep_sums")
    assert res.returncode == 0, res.stderr
    assert rows[0]["text"] == "the Merchants will attend with £1 Is. 6d. and the Bread"


def test_printed_lines_stay_unless_the_user_joins_broken_words(tmp_path, lexicon):
    lines = [row(id="a", text="the Lords of tbe Admi-\nralty, and the Mer-\nchants\nmet")]
    res, rows = run(tmp_path, lexicon, lines)
    assert res.returncode == 0, res.stderr
    assert rows[0]["text"] == "the Lords of the Admi-\nralty, and the Mer-\nchants\nmet"  # as the page set it
    res, rows = run(tmp_path, lexicon, lines, "--join_hyphens")
    assert res.returncode == 0, res.stderr
    # the marks after the word stay with it; a line the word ended adds no blank line
    assert rows[0]["text"] == "the Lords of the Admiralty,\nand the Merchants\nmet"


def test_numbers_json_cannot_hold_pass_through_as_text_and_the_output_stays_json(tmp_path, lexicon):
    """1e999 and NaN are read by Python as inf and nan and written back as Infinity and NaN,
    which no other JSON reader takes: such a row passes through as its text."""
    lines = [b'{"id": "a", "text": "tbe Court", "year": 1e999}', b'{"id": "b", "text": "tbe", "year": NaN}',
             row(id="c", text="tbe Court", year=1744.0)]
    res, rows = run(tmp_path, lexicon, lines)
    assert res.returncode == 0, res.stderr
    strict = [json.loads(x, parse_constant=lambda c: pytest.fail(f"{c} written"))
              for x in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r.get("ocr_repair_error") for r in strict] == ["bad_json", "bad_json", None]
    assert strict[0]["raw"] == lines[0].decode() and strict[2]["text"] == "the Court"


def test_bad_rows_pass_through_with_their_reason_and_nothing_is_lost(tmp_path, lexicon):
    big = row(id="big", text="tbe " * 400_000)  # 1.6 MB, over --max_row_mb 1
    deep = b"[" * 100_000 + b"]" * 100_000  # nested past the JSON parser's depth
    lines = [row(id="ok", text="tbe Court"), b"{not json", row(id="no text"), b"[1, 2]",
             row(id="n", text=5), b'{"id": "cp", "text": "caf\xe9 tbe Court"}', big, row(id="last", text="tbe"), deep]
    res, rows = run(tmp_path, lexicon, lines, "--max_row_mb", "1")
    assert res.returncode == 0, res.stderr
    assert len(rows) == len(lines)
    errors = [r.get("ocr_repair_error") for r in rows]
    assert errors == [None, "bad_json", "no_text", "not_an_object", "no_text", None, "too_large", None, "bad_json"]
    assert rows[1] == {"line": 2, "raw": "{not json", "ocr_repair_error": "bad_json"}
    assert rows[5]["text"] == "café the Court"     # read as cp1252, and said so
    assert rows[6]["text"] == json.loads(big)["text"]  # passed through whole
    assert "read as cp1252" in res.stdout and "passed through unrepaired" in res.stdout


@pytest.mark.parametrize("content,why", [(b"", "empty"), (b"\n \n", "only blank lines"),
                                         (b"\x00\x01binary\x00" * 50, "binary")])
def test_an_input_with_no_rows_is_refused_in_one_line(tmp_path, lexicon, content, why):
    res, rows = run(tmp_path, lexicon, content)
    assert res.returncode == 2 and res.stderr.startswith("error:") and why in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and rows is None


def test_refusals_before_any_work(tmp_path, lexicon):
    src = tmp_path / "in.jsonl"
    src.write_bytes(row(id="a", text="tbe") + b"\n")
    over = subprocess.run([sys.executable, str(SCRIPT), "--input", str(src), "--output", str(src),
                           "--period_corpus", str(lexicon)], capture_output=True, text=True, timeout=300)
    assert over.returncode == 2 and "is the input" in over.stderr and src.read_bytes() == row(id="a", text="tbe") + b"\n"
    # (no --period_corpus and nothing collected is no refusal: the shipped lexicon repairs, test_shipped_lexicon.py)


@pytest.mark.parametrize("sizes, batch, tasks_cap, bytes_cap, most_tasks, most_bytes", [
    ([10] * 200, 1, 32, 10 ** 9, 32, 320),          # small rows: at most BATCHES_IN_FLIGHT a worker
    ([1000] * 50, 1, 10 ** 6, 6500, 6, 6000),       # past two a worker, their bytes bound what is in flight
    ([50_000] * 10, 1, 10 ** 6, 2500, 4, 200_000),  # two a worker go whatever their size (as before)
    ([10] * 200, 25, 32, 10 ** 9, 32, 960),         # rows sent three at a time: 30 bytes a batch
    ([10, 10, 50_000, 10] * 5, 25, 4, 10 ** 9, 4, 100_080),  # a big row ends its batch: 50,020, 30, 50,000, 30
])
def test_batches_in_flight_are_bounded_in_number_and_bytes_and_come_back_in_order(
        monkeypatch, sizes, batch, tasks_cap, bytes_cap, most_tasks, most_bytes):
    """Rows go to the workers in batches of about ``BATCH_BYTES``. The output is written in input
    order, so a worker that finished waits on the oldest batch: many batches in flight keep the
    workers busy; a cap on their bytes keeps memory bounded."""
    import londonlm.corpus.ocr.jsonl as jsonl

    outstanding: list[int] = []   # bytes of the batches submitted and not yet taken
    most = {"tasks": 0, "bytes": 0}

    class Later(Future):  # (finished as far as waiting goes; its rows made when taken)
        def __init__(self, fn, args):
            super().__init__()
            self.set_result(None)
            self.fn, self.args, self.size = fn, args, sum(len(raw) for _, raw in args[0])

        def result(self, timeout=None):
            outstanding.remove(self.size)
            return self.fn(*self.args)

    class Pool:
        def __init__(self, workers, initializer, initargs):
            initializer(initargs[0])

        def submit(self, fn, *args):
            later = Later(fn, args)
            outstanding.append(later.size)
            most["tasks"] = max(most["tasks"], len(outstanding))
            most["bytes"] = max(most["bytes"], sum(outstanding))
            return later

        def shutdown(self, *a, **k):
            pass

    monkeypatch.setattr(jsonl, "ProcessPoolExecutor", Pool)
    monkeypatch.setattr(jsonl, "bounded_workers", lambda n: 2)
    monkeypatch.setattr(jsonl, "BATCH_BYTES", batch)
    monkeypatch.setattr(jsonl, "BATCHES_IN_FLIGHT", tasks_cap // 2)
    monkeypatch.setattr(jsonl, "BYTES_IN_FLIGHT", bytes_cap // 2)
    monkeypatch.setattr(jsonl, "repair_row", lambda n, raw, o, reported: (str(n), {"line": n}))
    items = [(n, b"x" * size) for n, size in enumerate(sizes)]
    got = list(jsonl._ordered(iter(items), jsonl.JsonlOptions(workers=2), repair=jsonl.DocumentRepair(None)))
    assert [line for line, _ in got] == [str(n) for n in range(len(sizes))]
    assert (most["tasks"], most["bytes"]) == (most_tasks, most_bytes)


def test_changes_are_listed_for_a_report_only_and_counted_the_same_without(tmp_path, monkeypatch):
    """Each change is listed in its row's report entry, with the quality before and after, when a
    report is written; without one neither is made (nor sent back from a worker), and the summary
    counts the same changes."""
    from londonlm.corpus.ocr import jsonl
    from londonlm.corpus.ocr.confusions import load_confusions

    src = tmp_path / "in.jsonl"
    src.write_bytes(row(id="a", text=OCR) + b"\n" + row(id="b", text="tbe Court") + b"\n")
    repair = jsonl.DocumentRepair(period_lexicon(), load_confusions())
    entries, real = [], jsonl.repair_row

    def kept(*args):
        line, entry = real(*args)
        entries.append(entry)
        return line, entry

    monkeypatch.setattr(jsonl, "repair_row", kept)
    with_report = jsonl.repair_jsonl(src, tmp_path / "o1.jsonl", repair, tmp_path / "r.jsonl")
    listed = [e["changes"] for e in entries]
    entries.clear()
    without = jsonl.repair_jsonl(src, tmp_path / "o2.jsonl", repair)
    assert with_report["changes"] == without["changes"] == sum(map(len, listed)) > 5
    assert all("changes" not in e and e["ocr_repairs"] for e in entries)
    assert all("ocr_quality" not in e and "ocr_quality_before" not in e for e in entries)
    report = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()[:-1]]
    assert all(0 < e["ocr_quality_before"] < e["ocr_quality"] <= 1 for e in report)
    assert (tmp_path / "o1.jsonl").read_bytes() == (tmp_path / "o2.jsonl").read_bytes()
