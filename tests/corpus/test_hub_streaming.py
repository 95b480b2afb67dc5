"""``bl_books`` streamed from the Hub for real: the collector, as a user runs it, against a loopback
Hub (``tests/fake_hub_datasets.py``) serving a parquet fixture in the layout of
``biglam/blbooks-parquet``, reached through ``HF_ENDPOINT`` as ``datasets`` and ``huggingface_hub``
reach huggingface.co. The same books read from a local copy (``--hf_dataset_dir``) give the same
corpus; the files are read by byte ranges and never saved whole."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from blbooks_fixture import Book, write_repo
from fake_hub_datasets import FakeDatasetHub

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "02_data_collection" / "historical_data_collector.py"
BOOKS = [Book("000000001", pages=5, empty=(2,)), Book("000000002", place="Edinburgh"),
         Book("000000003", date=1843, raw_date="1843-1845", place="Westminster"),
         Book("000000004", languages=("German",)), Book("000000005", pages=7)]


def collect(root: Path, *args: str, endpoint: str | None = None) -> subprocess.CompletedProcess:
    offline = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")  # the test suite's default
    env = {k: v for k, v in os.environ.items() if k not in offline}
    env.update(HF_HOME=str(root / "hf_home"), HF_ENDPOINT=endpoint or "http://127.0.0.1:9")
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root), "--sources", "bl_books",
                           "--workers", "1", "--min_chars", "50", *args], capture_output=True, text=True,
                          timeout=240, env=env, cwd=root.parent)


def manifest(root: Path) -> list[dict]:
    path = root / "data" / "london_historical" / "processed" / "manifest.jsonl"
    return [{k: v for k, v in json.loads(x).items() if k != "url"} for x in path.read_text().splitlines()]


def test_bl_books_streamed_from_a_hub_match_the_local_copy(tmp_path):
    repo = tmp_path / "blbooks-parquet"
    files = write_repo(repo, BOOKS, row_group_size=2)
    (repo / "README.md").write_text("---\nlicense: cc0-1.0\n---\n# British Library Books (fixture)\n")
    local = collect(tmp_path / "local", "--hf_dataset_dir", str(repo))
    assert local.returncode == 0, local.stderr + local.stdout
    with FakeDatasetHub() as hub:
        hub.add_folder("biglam/blbooks-parquet", repo)
        streamed = collect(tmp_path / "hub", endpoint=hub.url)
        assert streamed.returncode == 0, streamed.stderr + streamed.stdout
        reads = hub.reads(".parquet")
        assert {r.path.rsplit("/", 1)[-1] for r in reads} == {f.name for f in files}
        assert all(r.range and r.range.startswith("bytes=") for r in reads)  # byte ranges, as pyarrow asks
        assert manifest(tmp_path / "hub") == manifest(tmp_path / "local")  # same books, same bytes
        again = collect(tmp_path / "hub", endpoint=hub.url)
        assert again.returncode == 0 and "outputs are current" in again.stdout
        write_repo(repo, BOOKS + [Book("000000006")], row_group_size=2)  # a new revision on the Hub
        hub.add_folder("biglam/blbooks-parquet", repo)
        changed = collect(tmp_path / "hub", endpoint=hub.url)
        assert changed.returncode == 0 and "rebuilding (inputs changed: source:bl_books)" in changed.stdout
    assert "bl_books-000000006" in {r["id"] for r in manifest(tmp_path / "hub")}
    assert [r["id"] for r in manifest(tmp_path / "local")] == ["bl_books-000000001", "bl_books-000000003",
                                                               "bl_books-000000005"]
    saved = [p for p in (tmp_path / "hub").rglob("*") if p.suffix == ".parquet" or p.name.endswith(".incomplete")]
    assert not saved, saved  # streamed: no copy of a data file anywhere (Hub cache, datasets cache, downloads)
    url = json.loads((tmp_path / "hub/data/london_historical/processed/manifest.jsonl").read_text().splitlines()[0])["url"]
    assert url.endswith("/datasets/biglam/blbooks-parquet")


def test_a_dataset_the_hub_does_not_have_is_one_error_line(tmp_path):
    with FakeDatasetHub() as hub:  # serves no repository at all
        r = collect(tmp_path / "root", endpoint=hub.url)
    assert r.returncode == 2, r.stderr + r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: dataset_unavailable: biglam/blbooks-parquet"), r.stderr
    assert "Traceback" not in r.stderr


def test_offline_without_a_local_copy_is_one_error_line(tmp_path):
    r = collect(tmp_path / "root", "--offline")
    assert r.returncode == 2 and r.stderr.strip().startswith("error: --offline: bl_books streams from the Hub")


def test_hugging_face_offline_mode_is_named(tmp_path):
    root = tmp_path / "root"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    r = subprocess.run([sys.executable, str(SCRIPT), "--root", str(root), "--sources", "bl_books"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and "offline mode is on (HF_HUB_OFFLINE" in r.stderr and "--hf_dataset_dir" in r.stderr


# ~24 s on 2 cores (the hub source's own resume after a stop, in the default suite: test_hub_source)
@pytest.mark.slow
def test_a_collection_killed_mid_stage_resumes_where_it_was(tmp_path):
    """SIGKILL while books are being cleaned and staged; the rerun keeps the staged books (it
    cleans only the rest) and ends with the corpus an uninterrupted run makes."""
    import signal
    import time

    repo = tmp_path / "repo"
    write_repo(repo, [Book(f"{n:09d}", pages=3) for n in range(1, 241)], row_group_size=8)
    whole = collect(tmp_path / "whole", "--hf_dataset_dir", str(repo))
    assert whole.returncode == 0, whole.stderr
    root = tmp_path / "killed"
    staged = root / "data/london_historical/processed/shards/shard-000-of-001/staged.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--root", str(root), "--sources", "bl_books",
                             "--hf_dataset_dir", str(repo), "--workers", "1", "--min_chars", "50", "--progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if staged.exists() and staged.read_text().count("\n") >= 20:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    err = proc.communicate()[1].decode()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert "bl_books: reading pages" in err and "bl_books: books" in err  # bars in bytes, with totals
    assert not (root / "data/london_historical/processed/manifest.jsonl").exists()
    kept_before = staged.read_text().count("\n")
    again = collect(root, "--hf_dataset_dir", str(repo))
    assert again.returncode == 0, again.stderr
    assert "resumed" in again.stdout
    assert staged.read_text().count("\n") == 240  # the staged books were not staged again
    assert kept_before >= 20
    assert manifest(root) == manifest(tmp_path / "whole")
