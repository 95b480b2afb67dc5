"""repair_ocr.py against hostile input, round 4 (issue 60): files that are one file under two
names, outputs that are links, devices or pipes, rows with broken Unicode, a byte-order mark,
years that are not numbers, a row that is one endless word, thousands of workers, and a run
killed mid-way. One error line where refused, the right output where not, nothing lost."""
from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from proc_tree import alive as _alive, kill_all, started_children
from conftest import REPO
from ocr_fixtures import period_lexicon

SCRIPT = REPO / "02_data_collection" / "repair_ocr.py"
ROWS = b'{"id": "a", "text": "tbe Court of Aldermen"}\n{"id": "b", "text": "Lefe\\u0300vre"}\n'


@pytest.fixture(scope="module")
def lexicon(tmp_path_factory) -> Path:
    return period_lexicon().save(tmp_path_factory.mktemp("lex") / "lexicon.json.gz")


def script(*args, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def refused(res: subprocess.CompletedProcess, why: str) -> bool:
    lines = res.stderr.strip().splitlines()
    return res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and why in lines[0]


def rows_of(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------- 1. one file under two names
def test_a_side_file_over_an_input_or_output_is_refused_before_anything_is_written(tmp_path, lexicon):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_bytes(ROWS)
    out.write_text("old output\n")
    os.symlink(src, tmp_path / "link.jsonl")
    os.link(out, tmp_path / "hard.jsonl")
    lex_copy = tmp_path / "lex.json.gz"
    lex_copy.write_bytes(lexicon.read_bytes())
    base = ["--input", src, "--output", out, "--period_corpus", lex_copy, "--root", tmp_path]
    cases = [(["--report", src], "is the input"),
             (["--report", "./in.jsonl"], "is the input"),               # another spelling
             (["--report", tmp_path / "link.jsonl"], "is the input"),    # a symbolic link to it
             (["--report", out], "the same file as --output"),
             (["--report", tmp_path / "hard.jsonl"], "the same file as --output"),  # a hard link
             (["--save_lexicon", src], "is the input"),
             (["--save_lexicon", out], "the same file as --output"),
             (["--save_lexicon", lex_copy], "the same file as --period_corpus"),
             (["--report", tmp_path / "r.jsonl", "--save_lexicon", tmp_path / "r.jsonl"], "the same file as --report")]
    for extra, why in cases:
        res = script(*base, *extra, cwd=tmp_path)
        assert refused(res, why), (extra, res.stderr)
        assert src.read_bytes() == ROWS and out.read_text() == "old output\n" and lex_copy.read_bytes() == lexicon.read_bytes()
        assert not (tmp_path / "r.jsonl").exists()
    over = script("--input", src, "--output", tmp_path / "link.jsonl", "--period_corpus", lexicon, cwd=tmp_path)
    assert refused(over, "is the input") and src.read_bytes() == ROWS


def test_an_output_inside_the_period_folder_or_the_corpus_folder_is_refused(tmp_path, lexicon):
    """Was: exit 0, a text of the --period_corpus folder, or of the root's collected corpus
    (processed/texts/, whose folder has no sidecar of its own), replaced by JSONL rows."""
    src, texts = tmp_path / "in.jsonl", tmp_path / "period"
    src.write_bytes(ROWS)
    texts.mkdir()
    (texts / "a.txt").write_text("The Court of Aldermen sat at Guildhall. " * 20)
    corpus = tmp_path / "root" / "data" / "london_historical" / "processed"
    (corpus / "texts").mkdir(parents=True)
    (corpus / "texts" / "b.txt").write_text("A text of the corpus.")
    os.symlink(texts, tmp_path / "elsewhere")
    fast = ["--input", src, "--root", tmp_path / "root", "--no_adapt", "--workers", "1"]
    for extra, what in [(["--period_corpus", texts, "--output", tmp_path / "elsewhere" / "a.txt"],
                         "--period_corpus folder"),
                        (["--period_corpus", lexicon, "--output", "out.jsonl", "--report", corpus / "texts" / "b.txt"],
                         "corpus folder")]:
        res = script(*fast, *extra, cwd=tmp_path)
        assert refused(res, f"lies inside the {what}"), (extra, res.stderr)
    assert (texts / "a.txt").read_text().startswith("The Court") and (corpus / "texts" / "b.txt").read_text() == \
        "A text of the corpus." and not (tmp_path / "out.jsonl").exists()


# ---------------------------------------------------------------- 2. links, devices and pipes
def test_an_output_through_a_symlink_writes_its_target_and_keeps_the_link(tmp_path, lexicon):
    src = tmp_path / "in.jsonl"
    src.write_bytes(ROWS)
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "out.jsonl"
    target.write_text("old\n")
    link, dangling = tmp_path / "out.jsonl", tmp_path / "rep.jsonl"
    os.symlink(target, link)
    os.symlink(tmp_path / "real" / "report.jsonl", dangling)  # a link to a file not yet made
    os.symlink(tmp_path / "real" / "lex.json.gz", tmp_path / "lexlink.json.gz")
    res = script("--input", src, "--output", link, "--report", dangling, "--period_corpus", lexicon,
                 "--save_lexicon", tmp_path / "lexlink.json.gz", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert link.is_symlink() and dangling.is_symlink() and (tmp_path / "lexlink.json.gz").is_symlink()
    assert gzip.decompress((tmp_path / "real" / "lex.json.gz").read_bytes())
    assert [r["id"] for r in rows_of(target)] == ["a", "b"] and rows_of(target)[0]["text"] == "the Court of Aldermen"
    assert rows_of(tmp_path / "real" / "report.jsonl")[-1]["summary"]["rows"] == 2
    assert not [p for p in (tmp_path / "real").iterdir() if p.name.endswith(".tmp")]


def test_a_device_or_a_pipe_is_written_as_it_is_never_replaced(tmp_path, lexicon):
    # (FIFOs made here, never the system's devices: without the fix a run as root replaces them)
    src = tmp_path / "in.jsonl"
    src.write_bytes(ROWS)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for extra in ([], ["--report", fifo]):  # a pipe for both outputs: named twice, nothing lost
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # held open across both writers (small: fits its buffer)
        try:
            res = script("--input", src, "--output", fifo, "--period_corpus", lexicon, *extra, cwd=tmp_path)
            streamed = os.read(reader, 1 << 20).decode() if res.returncode == 0 else ""
        finally:
            os.close(reader)
        assert res.returncode == 0, res.stderr
        assert fifo.is_fifo() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        lines = [json.loads(x) for x in streamed.splitlines()]
        assert [r.get("id") for r in lines][:2] == ["a", "b"] and len(lines) == (2 if not extra else 5)
    # a path to an open descriptor (what /dev/stdout is; this process's own, never the system's
    # node): a pipe streamed into, a file the shell opened to append (>> log) appended to, not
    # replaced; the messages go to stderr, the rows alone to standard output
    piped = subprocess.run([sys.executable, str(SCRIPT), "--input", str(src), "--output", "/dev/fd/1",
                            "--period_corpus", str(lexicon)], capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert [json.loads(x)["id"] for x in piped.stdout.splitlines()] == ["a", "b"] and "2 rows" in piped.stderr
    log = tmp_path / "log.jsonl"
    log.write_text("previous\n")
    with open(log, "a") as out:
        res = subprocess.run([sys.executable, str(SCRIPT), "--input", str(src), "--output", "/proc/self/fd/1",
                              "--period_corpus", str(lexicon)], stdout=out, stderr=subprocess.PIPE, text=True,
                             timeout=120)
    assert res.returncode == 0, res.stderr
    assert log.read_text().splitlines()[0] == "previous" and [json.loads(x)["id"] for x in log.read_text().splitlines()[1:]] == ["a", "b"]
    # a folder, or a pipe for the gzip lexicon: one line, nothing written
    (tmp_path / "folder").mkdir()
    assert refused(script("--input", src, "--output", tmp_path / "folder", "--period_corpus", lexicon), "is a folder")
    assert refused(script("--input", src, "--output", tmp_path / "o.jsonl", "--save_lexicon", fifo,
                          "--period_corpus", lexicon), "a device, a pipe")
    assert not (tmp_path / "o.jsonl").exists() and fifo.is_fifo()


# ---------------------------------------------------------------- 3, 4, 6, 10: rows
LONG_S_TEXT = ("Yefterday the Lords of the Admiralty ordered all the small Vessels off for the Service of the "
               "Channel, for the Soldier was taken Care of")


def run_rows(tmp_path: Path, lexicon: Path, data: bytes) -> tuple[subprocess.CompletedProcess, list, list]:
    src, out, rep = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "report.jsonl"
    src.write_bytes(data)
    res = script("--input", src, "--output", out, "--report", rep, "--period_corpus", lexicon, cwd=tmp_path)
    return res, (rows_of(out) if out.exists() else None), (rows_of(rep) if rep.exists() else None)


def test_a_lone_surrogate_passes_its_row_through_and_the_rest_are_repaired(tmp_path, lexicon):
    data = b'{"id": "a", "text": "tbe Court"}\n{"id": "s", "text": "tbe \\ud800 Court"}\n' \
           b'{"id": "k\\udc00", "text": "tbe Court"}\n'
    res, rows, report = run_rows(tmp_path, lexicon, data)
    assert res.returncode == 0, res.stderr
    assert [r.get("ocr_repair_error") for r in rows] == [None, "lone_surrogate", None]
    assert rows[1]["text"] == "tbe \ud800 Court"  # as it came (written escaped)
    assert "\\ud800" in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()[1]
    assert rows[0]["text"] == rows[2]["text"] == "the Court" and rows[2]["id"] == "k\udc00"
    assert report[2]["id"] == "k\udc00" and report[-1]["summary"]["errors"] == {"lone_surrogate": 1}


def test_a_stray_latin1_byte_keeps_the_lines_utf8_and_is_marked(tmp_path, lexicon):
    line = '{"id": "l", "text": "M. Lefèvre tbe Court, '.encode() + b'caf\xe9"}\n'
    res, rows, report = run_rows(tmp_path, lexicon, line + b'{"id": "w", "text": "caf\xe9 tbe Court \x81"}\n')
    assert res.returncode == 0, res.stderr
    assert rows[0]["text"] == "M. Lefèvre the Court, café"   # the UTF-8 kept, the stray byte read as cp1252
    assert rows[1]["text"] == "café the Court \x81"            # a byte cp1252 lacks: kept (latin-1), not replaced
    assert report[0]["encoding"] == "decoded_cp1252" and report[0]["cp1252_bytes"] == [line.index(b"\xe9")]
    assert "2 read as cp1252" in res.stdout


def test_a_utf8_byte_order_mark_is_skipped_and_utf16_refused(tmp_path, lexicon):
    res, rows, _ = run_rows(tmp_path, lexicon, b"\xef\xbb\xbf" + ROWS)
    assert res.returncode == 0, res.stderr
    assert [r.get("ocr_repair_error") for r in rows] == [None, None] and rows[0]["text"] == "the Court of Aldermen"
    (tmp_path / "u16").mkdir()
    res, rows, _ = run_rows(tmp_path / "u16", lexicon, ROWS.decode().encode("utf-16"))
    assert refused(res, "UTF-16") and rows is None, res.stderr


def test_a_year_as_text_is_read_and_one_that_is_no_year_ignored_with_a_reason(tmp_path, lexicon):
    # a year before 1800 lets one long-s word ("Yefterday") decide the long s; without a year it takes three
    lines = [json.dumps({"id": i, "text": LONG_S_TEXT, "year": y}).encode() for i, y in
             enumerate([1744, "1744", " 1744 ", True, "c. 1744", 1744.0, None])]
    res, rows, report = run_rows(tmp_path, lexicon, b"\n".join(lines) + b"\n")
    assert res.returncode == 0, res.stderr
    firsts = [r["text"].split()[0] for r in rows]
    assert firsts == ["Yeſterday"] * 3 + ["Yesterday"] * 4
    assert [e.get("year_ignored") for e in report[:-1]] == [None] * 3 + ["not_a_year"] * 3 + [None]
    assert [r["year"] for r in rows] == [1744, "1744", " 1744 ", True, "c. 1744", 1744.0, None]  # kept as they came
    assert report[-1]["summary"]["years_ignored"] == 3 and "3 with a year that is no year" in res.stdout


# ---------------------------------------------------------------- 7. one endless word
def test_a_row_of_letters_without_spaces_takes_time_linear_in_its_length(tmp_path, lexicon):
    # 600,000 letters run together: before, the quality score's look-ahead and the split search
    # were quadratic in the word (9,000 letters 1.8 s, 90,000 116 s); now well under a second
    # of repair (the limit below is the process's start and a slow shared machine, not a measure)
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    text = "tbe" * 200_000
    src.write_text(json.dumps({"id": "w", "text": text}) + "\n" + json.dumps({"id": "x", "text": "tbe Court"}) + "\n")
    res = script("--input", src, "--output", out, "--period_corpus", lexicon, timeout=30)
    assert res.returncode == 0, res.stderr
    assert [r["text"] for r in rows_of(out)] == [text, "the Court"]  # no word: left as it is


# ---------------------------------------------------------------- 8, 9: workers, signals
def test_workers_are_bounded_by_the_cpus_with_a_line_saying_so(tmp_path, lexicon):
    src, rep = tmp_path / "in.jsonl", tmp_path / "report.jsonl"
    src.write_bytes(ROWS)
    # (64, not 10,000: the unfixed code would start them all, on a machine others share)
    res = script("--input", src, "--output", tmp_path / "out.jsonl", "--report", rep, "--period_corpus", lexicon,
                 "--workers", "64")
    assert res.returncode == 0, res.stderr
    cpus = len(os.sched_getaffinity(0))
    assert rows_of(rep)[-1]["summary"]["workers"] == min(64, cpus)
    assert cpus >= 64 or f"--workers 64 is more than the {cpus} CPUs" in res.stdout


def _slow_input(path: Path) -> None:
    """Rows of words the period never used (each searched anew): over ten seconds with --thorough."""
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(3000):
            words = ("".join(rng.choice("abcdefghiklmnoprstuw") for _ in range(rng.randint(4, 9))) for _ in range(60))
            f.write(json.dumps({"id": i, "text": " ".join(words)}) + "\n")






def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".out.jsonl.") and p.name.endswith(".tmp")]


@pytest.fixture
def busy_run(tmp_path, lexicon):
    """repair_ocr.py with two workers, well into a run of several seconds: (process, its workers)."""
    _slow_input(tmp_path / "in.jsonl")
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--input", "in.jsonl", "--output", "out.jsonl",
                             "--period_corpus", str(lexicon), "--workers", "2", "--thorough"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = started_children(proc, 2, lambda: bool(_temps(tmp_path)))
    assert proc.poll() is None and len(workers) >= 2 and _temps(tmp_path), "the run ended or never started"
    try:
        yield proc, workers
    finally:
        kill_all(proc, workers)


def _gone(pids: list[int], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and any(map(_alive, pids)):
        time.sleep(0.05)
    return not any(map(_alive, pids))


def test_kill_9_takes_the_workers_with_it_and_the_next_run_removes_its_temporary_file(tmp_path, lexicon, busy_run):
    proc, workers = busy_run
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _gone(workers, 2.0), "workers outlived their parent"
    assert _temps(tmp_path)  # what kill -9 leaves: nothing can clean up after it
    (tmp_path / "small.jsonl").write_bytes(ROWS)
    res = script("--input", "small.jsonl", "--output", "out.jsonl", "--period_corpus", lexicon, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert not _temps(tmp_path) and [r["id"] for r in rows_of(tmp_path / "out.jsonl")] == ["a", "b"]


def test_sigterm_ends_the_run_with_one_line_and_leaves_nothing(tmp_path, busy_run):
    proc, workers = busy_run
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    errors = [x for x in err.splitlines() if x.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "SIGTERM" in errors[0] and "Traceback" not in err, err
    assert not _temps(tmp_path) and not (tmp_path / "out.jsonl").exists()
    assert _gone(workers, 2.0)


@pytest.mark.parametrize("nth", [1, 2])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl_c"])
def test_a_stop_as_the_pool_forks_a_worker_leaves_no_worker_behind(tmp_path, monkeypatch, nth, signum):
    """SIGTERM or Ctrl-C landing just after a worker's fork, before the pool has listed it: the
    run ends with Terminated (KeyboardInterrupt) and every worker it forked is gone (one was
    left running, unknown to the pool, and the command hung at exit joining it)."""
    import multiprocessing
    from multiprocessing.process import BaseProcess

    from londonlm.corpus.ocr import jsonl
    from londonlm.corpus.ocr.confusions import load_confusions
    from londonlm.corpus.ocr.processes import Terminated

    started, real_start = [], BaseProcess.start

    def start(self):
        real_start(self)
        started.append(self)
        if len(started) == nth:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(BaseProcess, "start", start)
    monkeypatch.setattr(jsonl, "bounded_workers", lambda n: 2)
    (tmp_path / "in.jsonl").write_bytes(ROWS * 20)
    repair = jsonl.DocumentRepair(period_lexicon(), load_confusions())
    try:
        with pytest.raises(Terminated if signum == signal.SIGTERM else KeyboardInterrupt):
            jsonl.repair_jsonl(tmp_path / "in.jsonl", tmp_path / "out.jsonl", repair,
                               options=jsonl.JsonlOptions(workers=2))
        assert len(started) == 2 or nth == 1
        assert _gone([p.pid for p in started], 5.0), "a forked worker outlived the stopped run"
        assert not _temps(tmp_path) and not (tmp_path / "out.jsonl").exists()
    finally:
        for p in started:
            p.kill()
        multiprocessing.active_children()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl_c"])
def test_a_stop_as_the_adaptation_pool_forks_a_worker_leaves_no_worker_behind(monkeypatch, signum):
    """The adaptation's pool (``forked_map``, before any output is opened) the same."""
    import multiprocessing
    import operator
    from multiprocessing.process import BaseProcess

    from londonlm.corpus.ocr import processes

    started, real_start = [], BaseProcess.start

    def start(self):
        real_start(self)
        started.append(self)
        if len(started) == 2:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(BaseProcess, "start", start)
    monkeypatch.setattr(processes, "bounded_workers", lambda n: 2)
    try:
        with pytest.raises(processes.Terminated if signum == signal.SIGTERM else KeyboardInterrupt):
            processes.forked_map(operator.add, 0, range(8), 2)
        assert _gone([p.pid for p in started], 5.0), "a forked worker outlived the stopped run"
    finally:
        for p in started:
            p.kill()
        multiprocessing.active_children()
