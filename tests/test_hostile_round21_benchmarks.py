"""Round 21: the benchmark scripts' input handling and what they write (BENCHMARKS.md's blocks,
the race's JSON, its data record): bad flags, hostile or damaged JSON, a BENCHMARKS.md whose
markers do not pair. Each refusal is one ``error:`` line and exit 2, and leaves the user's file
as it was."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RACE = REPO / "benchmarks" / "gpu_race.py"
ACCEPTANCE = REPO / "benchmarks" / "gpu_acceptance.py"
if str(REPO / "benchmarks") not in sys.path:
    sys.path.append(str(REPO / "benchmarks"))  # appended: benchmarks/ never shadows a package

from gpu import report as gpu_report  # noqa: E402
from race import data as race_data, report  # noqa: E402
from test_gpu_race import SLM_BEGIN, SLM_END, _results  # noqa: E402


def run(script: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120,
                          cwd=str(cwd or "/"))


def one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("error: "), r.stderr
    return r.stderr.strip()


@pytest.fixture
def race_json(tmp_path) -> Path:
    res = _results(3.0, 3.5)
    report.compare(res)
    path = tmp_path / "lease" / "gpu_race.json"
    path.parent.mkdir()
    path.write_text(json.dumps(res))
    return path


BROKEN = {  # BENCHMARKS.md as a hand edit or a merge leaves it
    "no_end": f"# B\n\n{SLM_BEGIN}\nold\n\n## Later\nkeep me\n",
    "end_before_begin": f"# B\n{SLM_END}\nmid\n{SLM_BEGIN}\nold\n\n## Later\nkeep me\n",
    "twice": f"# B\n{SLM_BEGIN}\nA\n{SLM_END}\nmid\n{SLM_BEGIN}\nstale\n{SLM_END}\nkeep me\n",
    "end_alone": f"# B\n\nkeep me\n{SLM_END}\n",
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_block_whose_markers_do_not_pair_is_refused_and_the_file_kept(tmp_path, race_json, case):
    """Before: no end marker (or one before the begin) was a ValueError traceback; a block
    there twice had its first replaced and the second, stale, kept as if current."""
    md = tmp_path / "BENCHMARKS.md"
    md.write_text(BROKEN[case])
    r = run(RACE, "--from_json", str(race_json), "--bench_md", str(md), "--plot", str(tmp_path / "p.png"))
    line = one_error_line(r)
    assert "cannot write the block" in line and str(md) in line and "mend the file by hand" in line
    assert md.read_text() == BROKEN[case]


def test_a_benchmarks_md_that_is_not_utf8_is_one_line_and_kept(tmp_path, race_json):
    md = tmp_path / "BENCHMARKS.md"
    md.write_bytes(b"# Benchmarks \xff\xfe Latin-1 caf\xe9\n")
    r = run(RACE, "--from_json", str(race_json), "--bench_md", str(md), "--plot", str(tmp_path / "p.png"))
    assert "not UTF-8" in one_error_line(r)
    assert md.read_bytes() == b"# Benchmarks \xff\xfe Latin-1 caf\xe9\n"


def test_a_json_whose_text_cannot_be_written_leaves_benchmarks_md_whole(tmp_path, race_json):
    """Before: the file was opened (emptied) and then the write failed on a lone surrogate (a
    JSON escape ``\\ud800``): BENCHMARKS.md lost everything it held, with a traceback."""
    res = json.loads(race_json.read_text())
    res["ours"]["summary"] = "\ud800"
    race_json.write_text(json.dumps(res))  # ensure_ascii: written as the escape, valid JSON
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nevery figure so far\n")
    r = run(RACE, "--from_json", str(race_json), "--bench_md", str(md), "--plot", str(tmp_path / "p.png"))
    assert "cannot write the block" in one_error_line(r)
    assert md.read_text() == "# Benchmarks\n\nevery figure so far\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_a_block_whose_own_text_holds_its_end_marker_is_refused(tmp_path, race_json):
    """Before: written as it was, so the next write ended the block at the marker inside it and
    left the rest of the old block behind it."""
    res = json.loads(race_json.read_text())
    res["ours"]["summary"] = f"x {SLM_END} y"
    race_json.write_text(json.dumps(res))
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n")
    r = run(RACE, "--from_json", str(race_json), "--bench_md", str(md), "--plot", str(tmp_path / "p.png"))
    assert "holds its marker" in one_error_line(r)
    assert md.read_text() == "# Benchmarks\n"


def test_a_json_nested_past_the_decoders_depth_is_one_line(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert "cannot read" in one_error_line(run(RACE, "--from_json", str(deep)))


@pytest.mark.parametrize("flags", [("--seconds", "nan"), ("--seconds", "inf"), ("--variant_seconds", "nan"),
                                   ("--deadline", "nan"), ("--first_pass_seconds", "0"),
                                   ("--first_pass_seconds", "-3"), ("--source_mb", "nan"), ("--source_mb", "-1")])
def test_seconds_and_sizes_that_are_not_positive_finite_numbers_are_refused(flags):
    """Before: nan passed every ``<= 0`` test (a dry run planned a race of nan seconds; nan MB of
    sources a traceback), --first_pass_seconds was not checked at all, and a negative
    --source_mb took three files whatever their size."""
    r = run(RACE, "--dry_run", *flags, "--variant", "a=--dropout 0")
    assert r.returncode == 2 and flags[0] in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("same", ["plot_is_the_json_read", "plot_is_the_json", "json_is_bench_md"])
def test_two_of_the_calls_files_that_are_one_file_are_refused(tmp_path, race_json, same):
    """Before: --plot naming the JSON read (``--from_json X --plot X``) or written (``--json
    race.png``, whose default picture is itself) wrote one over the other."""
    before = race_json.read_bytes()
    args = {"plot_is_the_json_read": ["--from_json", str(race_json), "--plot", str(race_json)],
            "plot_is_the_json": ["--dry_run", "--json", str(tmp_path / "race.png")],
            "json_is_bench_md": ["--dry_run", "--json", str(tmp_path / "B.md"), "--bench_md", str(tmp_path / "B.md")]}
    r = run(RACE, *args[same])
    assert r.returncode == 2 and "name one file" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert race_json.read_bytes() == before


def test_the_block_is_checked_before_the_race_runs(tmp_path):
    """Before: a race of several minutes (a lease's) ran first, then failed to write its block
    with a traceback."""
    md = tmp_path / "BENCHMARKS.md"
    md.write_text(BROKEN["twice"])
    r = run(RACE, "--device", "cpu", "--data", str(tmp_path / "none"), "--work", str(tmp_path / "w"),
            "--bench_md", str(md))
    line = one_error_line(r)
    assert line.startswith(f"error: --bench_md {md}") and "keep one block" in line
    assert md.read_text() == BROKEN["twice"] and not (tmp_path / "w").exists()


def test_the_acceptance_checks_its_block_before_any_step(tmp_path):
    """Before: the steps ran (a whole lease) and the block's write was a traceback at the end;
    on a machine without CUDA the refusal named the GPU, not the file."""
    md = tmp_path / "BENCHMARKS.md"
    text = f"# B\n{gpu_report.BEGIN}\nno end\n"
    md.write_text(text)
    r = run(ACCEPTANCE, "--bench_md", str(md), "--out", str(tmp_path / "out"))
    line = one_error_line(r)
    assert line.startswith(f"error: --bench_md {md}") and "without" in line
    assert md.read_text() == text and not (tmp_path / "out").exists()


def test_the_acceptance_reports_are_written_whole(tmp_path):
    """gpu_acceptance.md is rewritten after every step: before, it was emptied and then a write
    that failed (a lone surrogate in a step's text) left it empty."""
    out = tmp_path / "out"
    results = {"command": "c", "date": "d", "machine": {}, "steps": {}}
    gpu_report.write_reports(results, out)
    before = (out / "gpu_acceptance.md").read_text()
    results["steps"]["x"] = {"status": "passed", "seconds": 1.0, "title": "\ud800"}  # cannot be encoded
    with pytest.raises(UnicodeEncodeError):
        gpu_report.write_reports(results, out)
    assert (out / "gpu_acceptance.md").read_text() == before


WRITE_PAST_LIMIT = """
import resource, signal, sys
from pathlib import Path
sys.path.append(sys.argv[1])
from race import report
from test_gpu_race import _results
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as a full disk's does
resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
res = _results()
res["ours"]["summary"] = "x" * 20000
try:
    {"json": report.write_json, "md": report.write_block}[sys.argv[3]](res, Path(sys.argv[2]))
except OSError as e:
    print("refused:", e.errno)
"""


@pytest.mark.parametrize("what", ["json", "md"])
def test_a_write_cut_short_leaves_the_earlier_file_whole(tmp_path, what):
    """A full disk (here: a file-size limit) mid-write: before, the race's JSON and BENCHMARKS.md
    were cut short where the write stopped, everything after it lost; now each is written
    through a temporary file, and the earlier one stays."""
    path = tmp_path / ("gpu_race.json" if what == "json" else "BENCHMARKS.md")
    earlier = ('{"ours": {"bpb": 3.0}}\n' if what == "json"
               else "# Benchmarks\n\n" + "every figure so far\n" * 200 + "## Later\n")
    path.write_text(earlier)
    r = subprocess.run([sys.executable, "-c", WRITE_PAST_LIMIT, str(REPO / "benchmarks"), str(path), what],
                       capture_output=True, text=True, timeout=60, cwd=str(REPO / "tests"))
    assert "refused: 27" in r.stdout, r.stdout + r.stderr  # EFBIG
    assert path.read_text() == earlier
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


@pytest.mark.parametrize("record", ['{"format": 2, "pres', "[1]", "", "\xff"])
def test_a_damaged_race_data_record_says_to_prepare_again(tmp_path, record):
    """Before: a JSONDecodeError or AttributeError traceback from --data and --prepare alike."""
    (tmp_path / race_data.RECORD).write_text(record, encoding="latin-1")
    with pytest.raises(race_data.RaceDataError, match="prepare it again"):
        race_data.load(tmp_path)
    r = run(RACE, "--device", "cpu", "--data", str(tmp_path), "--work", str(tmp_path / "w"))
    assert "prepare it again" in one_error_line(r)


def test_a_benchmarks_md_in_a_folder_the_user_cannot_write_is_refused_before_the_race(tmp_path):
    from unprivileged import make_readable, reachable_dir, run_unprivileged

    root = reachable_dir()
    try:
        (root / "ro").mkdir()
        (root / "ro" / "BENCHMARKS.md").write_text("# B\n")
        make_readable(root)
        r = run_unprivileged([str(RACE), "--device", "cpu", "--data", str(root / "none"), "--work",
                              str(root / "home" / "w"), "--bench_md", str(root / "ro" / "BENCHMARKS.md")],
                             root / "home")
        assert "not writable" in one_error_line(r)
        assert (root / "ro" / "BENCHMARKS.md").read_text() == "# B\n"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_benchmarks_md_that_is_a_link_is_edited_where_it_leads(tmp_path):
    """Written whole now (a temporary file renamed): the rename must not replace a link with a
    file, leaving the file it led to without the block."""
    target = tmp_path / "elsewhere" / "BENCHMARKS.md"
    target.parent.mkdir()
    target.write_text("# Benchmarks\n")
    link = tmp_path / "BENCHMARKS.md"
    link.symlink_to(target)
    res = _results()
    report.compare(res)
    report.write_block(res, link)
    assert link.is_symlink() and SLM_BEGIN in target.read_text() and target.read_text().startswith("# Benchmarks")


@pytest.mark.parametrize("given, budget", [("0300", "200"), ("0299", "199"), ("99999999999999999999", None)])
def test_the_lease_reads_the_seconds_left_in_base_10(tmp_path, given, budget):
    """Before: bash read 0300 as octal (a 92-s budget for 300 s left), 0299 was bash's own
    error, and 20 digits wrapped past 2^63 into a budget of garbage."""
    from test_gpu_race import lease

    r = lease(tmp_path, "throughput", given)
    if budget is None:
        assert r.returncode == 2 and r.stderr.startswith("error: throughput needs"), r.stderr
    else:
        assert r.returncode == 0 and f"--throughput_seconds {budget} " in r.stdout, r.stdout + r.stderr


def test_a_benchmarks_scratch_root_is_never_a_projects_own(tmp_path, monkeypatch, capsys):
    """train_throughput.py and budget_race.py build a corpus and a tokenizer in --work as a project
    root: before, ``--work .`` in the repository (or any project's root) replaced its collected
    corpus and its london_historical_bpe tokenizer with the benchmark's six files'."""
    import argparse

    import train_throughput

    prepared = []
    monkeypatch.setattr(train_throughput, "prepare", lambda work, *a, **k: prepared.append(work) or {})
    files = [tmp_path / "a.txt"]
    files[0].write_text("text")
    project = tmp_path / "project"
    (project / "data" / "london_historical" / "processed").mkdir(parents=True)
    (project / "data" / "london_historical" / "processed" / "manifest.jsonl").write_text("{}\n")
    args = lambda work: argparse.Namespace(work=work, out=None, files=files, vocab=300, context=64)  # noqa: E731
    with pytest.raises(SystemExit) as stop:
        train_throughput.setup(args(project), "results")
    assert stop.value.code == 2 and not prepared
    err = capsys.readouterr().err
    assert err.startswith(f"error: --work {project} holds other files") and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in project.iterdir()) == ["data"]
    for work in (tmp_path / "new", tmp_path / "new"):  # a new folder, then the same one again (its own mark)
        train_throughput.setup(args(work), "results")
    earlier = tmp_path / "earlier"  # an earlier run's, from before the mark: src/ holds links to the files
    (earlier / "src").mkdir(parents=True)
    (earlier / "src" / "a.txt").symlink_to(files[0])
    (earlier / "09_models").mkdir()
    train_throughput.setup(args(earlier), "results")
    assert prepared == [tmp_path / "new", tmp_path / "new", earlier]


def test_tokenizer_quality_refuses_in_one_line(tmp_path):
    """Before: a missing --corpus was the collector's error line and then a CalledProcessError
    traceback; a --vocab_size the stage refuses, its UsageError as a traceback; 0, the default
    read silently."""
    from conftest import write_micro_source

    script = REPO / "benchmarks" / "tokenizer_quality.py"
    r = run(script, "--work", str(tmp_path / "w"), "--corpus", str(tmp_path / "absent"))
    assert "--corpus" in r.stderr.strip().splitlines()[-1] and r.returncode == 2 and "Traceback" not in r.stderr
    r = run(script, "--work", str(tmp_path / "w"), "--corpus", str(tmp_path), "--vocab_size", "0")
    assert r.returncode == 2 and "--vocab_size must be positive" in r.stderr and "Traceback" not in r.stderr
    src = write_micro_source(tmp_path / "src", n_docs=3, chars=2000)
    r = run(script, "--work", str(tmp_path / "w"), "--corpus", str(src), "--vocab_size", "100")
    assert "smaller than the tokens" in one_error_line(r)


@pytest.mark.parametrize("steps", [",", ""])
def test_the_acceptance_refuses_a_steps_list_naming_none(steps):
    """Before: ``--steps ,`` planned 0 steps and, on a GPU, wrote that empty run's report as the
    full run's block (its part's name is empty), erasing the full acceptance's figures."""
    r = run(ACCEPTANCE, "--steps", steps, "--dry_run")
    assert r.returncode == 2 and "name at least one step" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert gpu_report.part_name([], ["a", "b"]) == ""  # what made it the full run's block
