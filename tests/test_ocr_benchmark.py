"""benchmarks/ocr_repair.py's tables for BENCHMARKS.md, from a results.json (no ../shared needed)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "benchmarks") not in sys.path:
    sys.path.append(str(REPO / "benchmarks"))

import ocr_repair as bench  # noqa: E402


def row(year, n, rb, ra, lb, la, changes=1):
    return {"year": year, "gold_chars": n, "raw_before": rb, "raw_after": ra, "letters_before": lb,
            "letters_after": la, "changes": changes, "long_s": False}


FILES = {"10.txt": row(1744, 1000, 80, 60, 70, 50), "2.txt": row(1748, 1000, 40, 30, 30, 20, 7),
         "3.txt": row(1845, 2000, 20, 20, 10, 10)}


def test_by_decade_sums_errors_over_the_files_held_out_part_first():
    lines = bench.decade_table(FILES, held={"2.txt"})
    assert lines[2] == "| 1740s | held-out | 1 | 4.00% → 3.00% (25.0%) | 3.00% → 2.00% (33.3%) |"
    assert lines[3] == "| 1740s | tuning | 1 | 8.00% → 6.00% (25.0%) | 7.00% → 5.00% (28.6%) |"
    assert lines[4] == "| 1840s | tuning | 1 | 1.00% → 1.00% (0.0%) | 0.50% → 0.50% (0.0%) |"


def test_per_file_in_file_number_order():
    lines = bench.file_table(FILES, held={"2.txt"})
    assert [ln.split(" | ")[0] for ln in lines[2:]] == ["| 2.txt", "| 3.txt", "| 10.txt"]
    assert lines[2] == "| 2.txt | 1748 | held-out | 1,000 | 7 | 4.00 → 3.00 | 3.00 → 2.00 |"


def test_an_example_is_the_first_use_as_a_whole_token():
    texts = {"2.txt": "one two tbe, three", "1.txt": "nothing tbex here"}
    assert bench.first_use("tbe", texts, {"1.txt": 1800, "2.txt": 1744}, width=1) == '"two **tbe,** three" (2.txt, 1744)'
    assert bench.first_use("absent", texts, {}) == ""


def test_tables_without_results_names_the_measure_command(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "ocr_repair.py"), "tables", "--work", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "measure" in r.stderr


def test_tables_of_a_mode_not_measured_or_a_damaged_file_name_the_measure_command(tmp_path):
    tables = [sys.executable, str(REPO / "benchmarks" / "ocr_repair.py"), "tables", "--work", str(tmp_path)]
    (tmp_path / "results.json").write_text(json.dumps({"meta": {"held_out": []}, "default": {"files": {}}}))
    r = subprocess.run([*tables, "--mode", "thorough"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "--modes thorough" in r.stderr
    assert "Traceback" not in r.stderr
    (tmp_path / "results.json").write_text("{not json")
    r = subprocess.run(tables, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr


def test_tables_from_a_results_file(tmp_path):
    top = [{"from": "tbe", "to": "the", "count": 3, "right": 3, "wrong": 0, "neutral": 0}]
    (tmp_path / "results.json").write_text(json.dumps({"meta": {"held_out": ["2.txt"]},
                                                       "default": {"files": FILES, "top_corrections": top}}))
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "ocr_repair.py"), "tables", "--work", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "| 1740s | held-out | 1 |" in r.stdout and "| 10.txt | 1744 | tuning |" in r.stdout
    assert "| tbe | the | 3 | 3 | 0 | 0 |" in r.stdout


def test_the_cross_archive_table_names_each_direction_with_overproofs_own_beside():
    rows = {"icdar -> smh": {"gold_chars": 1000, "cer_before": 0.08, "cer_after": 0.06, "lower_by_percent": 25.0,
                             "overproof_lower_by_percent": 33.1},
            "icdar -> icdar held-out (in-split)": {"gold_chars": 2000, "cer_before": 0.04, "cer_after": 0.03,
                                                   "lower_by_percent": 25.0}}
    lines = bench.cross_table(rows)
    assert lines[2] == "| icdar -> smh | 1,000 | 8.00% -> 6.00% | **25.0%** | 33.1% |"
    assert lines[3].endswith("| **25.0%** |  |")


def test_overproof_halves_are_fixed_by_the_ids_hash():
    folds = [bench.overproof_fold(str(i)) for i in range(200)]
    assert folds == [bench.overproof_fold(str(i)) for i in range(200)] and 80 < sum(folds) < 120


# the benchmark end to end (~12 s on 2 cores, the suite's budget): run with -m slow when benchmarks/ changes
@pytest.mark.slow
def test_the_whole_commands_speed_alternated_with_another_checkout(tmp_path):
    """``command`` runs repair_ocr.py as a user does, each round this checkout's and then the other
    one's (here the same: the logic, not the figures), and writes the medians and their ratio."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": str(n), "text": "tbe Court met at tbe Hall"}) + "\n" for n in range(3)))
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "ocr_repair.py"), "command", "--work",
                          str(tmp_path / "w"), "--input", str(src), "--rounds", "2", "--against", str(REPO),
                          "--extra", "--workers", "1"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    got = json.loads((tmp_path / "w" / "command_speed.json").read_text())
    assert len(got["this"]["wall_s"]) == len(got["against"]["wall_s"]) == 2 and got["extra"] == ["--workers", "1"]
    assert got["mb"] == round(src.stat().st_size / 1e6, 3) and got["ratio"] > 0 and got["this"]["median_cpu_s"] > 0
    assert [x.split(":")[0] for x in res.stdout.splitlines()[:4]] == ["round 1 this", "round 1 against",
                                                                     "round 2 this", "round 2 against"]
    assert json.loads((tmp_path / "w" / "out.jsonl").read_text().splitlines()[0])["text"] == "the Court met at the Hall"
    # each checkout's lexicon tables in a cache of its own, written before the timed runs
    assert got["lexicon_cache"] == "warm"
    assert [len(list((tmp_path / "w" / "cache" / k).rglob("*.pickle"))) for k in ("this", "against")] == [1, 1]
    copy = next((tmp_path / "w" / "cache" / "this").rglob("*.pickle"))
    copy.write_bytes(b"stale")  # (a first run removes the cache: this never read, the tables written again)
    first = subprocess.run([sys.executable, str(REPO / "benchmarks" / "ocr_repair.py"), "command", "--work",
                            str(tmp_path / "w"), "--input", str(src), "--rounds", "1", "--first_run",
                            "--extra", "--workers", "1"], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert json.loads((tmp_path / "w" / "command_speed.json").read_text())["lexicon_cache"] == "first run"
    assert copy.read_bytes() != b"stale" and "warning" not in first.stderr


def test_the_commands_speed_names_what_is_missing_or_failed(tmp_path):
    """A missing input or checkout, or a command that fails, is one line naming it, not a traceback."""
    bench_cmd = [sys.executable, str(REPO / "benchmarks" / "ocr_repair.py"), "command", "--work", str(tmp_path / "w"),
                 "--rounds", "1"]
    gone = subprocess.run([*bench_cmd, "--input", str(tmp_path / "none.jsonl")], capture_output=True, text=True)
    assert gone.returncode == 1 and "none.jsonl not found" in gone.stderr and "Traceback" not in gone.stderr
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "a", "text": "tbe Court"}) + "\n")
    other = subprocess.run([*bench_cmd, "--input", str(src), "--against", str(tmp_path)], capture_output=True, text=True)
    assert other.returncode == 1 and "repair_ocr.py not found" in other.stderr
    failed = subprocess.run([*bench_cmd, "--input", str(src), "--extra", "--workers", "0"], capture_output=True,
                            text=True, timeout=300)
    assert failed.returncode == 1 and "repair_ocr.py exited 2: " in failed.stderr and "Traceback" not in failed.stderr
