"""repair_ocr.py against hostile input, round 4 (issue 60): files that are one file under two
names, outputs that are links, devices or pipes, rows with broken Unicode, a byte-order mark,
years that are not numbers, a row that is one endless word, thousands of workers, and a run
killed mid-way. One error line where refused, the right output where not, nothing lost."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
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
    # a folder, or a pipe for the gzip lexicon: one line, nothing written
    (tmp_path / "folder").mkdir()
    assert refused(script("--input", src, "--output", tmp_path / "folder", "--period_corpus", lexicon), "is a folder")
    assert refused(script("--input", src, "--output", tmp_path / "o.jsonl", "--save_lexicon", fifo,
                          "--period_corpus", lexicon), "a device or a pipe")
    assert not (tmp_path / "o.jsonl").exists() and fifo.is_fifo()
