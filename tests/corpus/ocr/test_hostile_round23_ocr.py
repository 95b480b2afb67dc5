"""Round 23: OCR repair through the collector (``--ocr``) and under failure: a worker process
killed mid-run (the out-of-memory killer, ``kill -9`` of one worker) in ``repair_ocr.py`` and in
the collection, and a period lexicon rebuilt in place under the same name."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from proc_tree import alive as _alive, kill_all, started_children
from conftest import REPO
from ocr_fixtures import OCR, period_lexicon

from londonlm.corpus import collect
from londonlm.corpus.collect import CollectionOptions, run_collection
from londonlm.corpus.manifest import read_jsonl
from londonlm.corpus.ocr import WorkerDied
from londonlm.corpus.ocr.lexicon import build_lexicon
from londonlm.corpus.ocr.step import DocumentRepair, OcrOptions

SCRIPT = REPO / "02_data_collection" / "repair_ocr.py"






def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


def _slow_rows(path: Path, n: int = 2000) -> None:
    """Rows of words the period never used (each searched anew): a few seconds on two workers."""
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            words = ("".join(rng.choice("abcdefghiklmnoprstuw") for _ in range(rng.randint(4, 9))) for _ in range(60))
            f.write(json.dumps({"id": i, "text": " ".join(words)}) + "\n")


def test_a_repair_worker_killed_mid_run_is_one_error_line_and_the_next_run_works(tmp_path):
    """``kill -9`` of one of ``--workers 2`` (what the out-of-memory killer does): the pool's
    ``BrokenProcessPool`` was a traceback, exit 1. Now one line, exit 2, the other worker gone, the
    earlier output and report as they were, no temporary file; the rerun repairs the input."""
    lexicon = period_lexicon().save(tmp_path / "lexicon.json.gz")
    _slow_rows(tmp_path / "in.jsonl")
    (tmp_path / "out.jsonl").write_text("earlier output\n")
    (tmp_path / "report.jsonl").write_text("earlier report\n")
    args = [sys.executable, str(SCRIPT), "--input", "in.jsonl", "--output", "out.jsonl", "--report", "report.jsonl",
            "--period_corpus", str(lexicon), "--workers", "2", "--no_adapt"]
    proc = subprocess.Popen(args + ["--thorough"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    workers: list[int] = []
    try:
        workers = started_children(proc, 2, lambda: bool(_temps(tmp_path)))
        assert proc.poll() is None and len(workers) >= 2, "the run ended or never started"
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        kill_all(proc, workers)
    errors = [x for x in err.splitlines() if x.startswith("error:")]
    assert proc.returncode == 2 and "Traceback" not in err and len(errors) == 1, err[-3000:]
    assert "worker process died" in errors[0] and "out-of-memory" in errors[0]
    assert not any(map(_alive, workers)), "a worker outlived the run"
    assert not _temps(tmp_path)
    assert (tmp_path / "out.jsonl").read_text() == "earlier output\n"
    assert (tmp_path / "report.jsonl").read_text() == "earlier report\n"
    (tmp_path / "in.jsonl").write_text('{"id": "a", "text": "tbe Court of Aldermen"}\n')
    res = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    out = [json.loads(x)["text"] for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert out == ["the Court of Aldermen"]


# ---------------------------------------------------------------- the collection
KILL_MARK = "Pretender"  # (a word of OCR's last line: the document whose repair "runs out of memory")


def _scans(tmp_path: Path) -> Path:
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "gazette_1744.txt").write_text(OCR, encoding="utf-8")
    for i in range(6):  # (more documents than the two workers hold, some staged before the kill)
        (scans / f"report{i}_1745.txt").write_text(OCR.replace(KILL_MARK, f"Sailor {i}"), encoding="utf-8")
    return scans


def _options(logs: list[str], **ocr) -> CollectionOptions:
    return CollectionOptions(offline=True, workers=2, log=logs.append, ocr=OcrOptions(min_quality=0.0, **ocr))


def test_a_collection_worker_killed_mid_repair_is_one_error_and_the_rerun_goes_on(tmp_path, monkeypatch):
    """A cleaning worker killed (SIGKILL, as by the out-of-memory killer) while it repairs an OCR
    document: ``BrokenProcessPool`` was a traceback. Now a :class:`WorkerDied` (one ``error:`` line,
    exit 2) saying the staged documents are kept; the same command then goes on from them."""
    monkeypatch.setattr(collect, "bounded_workers", lambda n: 2)  # (forked workers, whatever the CPUs)
    real = DocumentRepair.__call__

    def dies_on_one(self, text, year=None):
        if KILL_MARK in text and os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, text, year)

    parent = os.getpid()
    monkeypatch.setattr(DocumentRepair, "__call__", dies_on_one)
    scans, logs = _scans(tmp_path), []
    entry = {"id": "scans", "kind": "local", "path": str(scans), "ocr": True}
    with pytest.raises(WorkerDied, match="worker process died .* documents staged before it are kept"):
        run_collection([entry], tmp_path / "dl", tmp_path / "p", tmp_path / "m", _options(logs))
    assert not (tmp_path / "p" / "manifest.jsonl").exists()
    monkeypatch.setattr(DocumentRepair, "__call__", real)
    logs.clear()
    run_collection([entry], tmp_path / "dl", tmp_path / "p", tmp_path / "m", _options(logs))
    assert any("resumed" in m for m in logs), logs
    rows = {r["id"]: r for r in read_jsonl(tmp_path / "p" / "manifest.jsonl")}
    assert rows["gazette_1744"]["ocr_repairs"] > 0


def test_a_period_lexicon_rebuilt_in_place_makes_the_collection_stale(tmp_path):
    """``--period_corpus lexicon.json.gz`` rebuilt under the same name: the corpus was "current"
    and, with ``--overwrite``, repaired with the collection's kept copy of the old lexicon (its key
    was the name). Now its bytes are an input: the corpus is rebuilt with the new words."""
    scans, logs = _scans(tmp_path), []
    lexicon = period_lexicon().save(tmp_path / "lexicon.json.gz")
    entry = {"id": "scans", "kind": "local", "path": str(scans), "ocr": True}

    def gazette() -> dict:
        run_collection([entry], tmp_path / "dl", tmp_path / "p", tmp_path / "m",
                       _options(logs, period_corpus=str(lexicon)))
        return {r["id"]: r for r in read_jsonl(tmp_path / "p" / "manifest.jsonl")}["gazette_1744"]

    first = gazette()["ocr_repairs"]
    build_lexicon(["nothing of the period here " * 40], made_from={"test": "other"}).save(lexicon)
    logs.clear()
    assert gazette()["ocr_repairs"] < first, logs
    assert any(f"words from {lexicon} ->" in m for m in logs), logs
    assert not any("outputs are current" in m or "is current" in m for m in logs), logs
    logs.clear()
    gazette()
    assert any("outputs are current" in m for m in logs), logs  # (and current again once rebuilt)
