"""Hostile round 21: a token cache shared between runs (a grid's next run, a family's twin member:
``share_cache``'s hard links) while another process rebuilds it, or reads it."""
from __future__ import annotations

import fcntl
import hashlib
import json
from pathlib import Path

import pytest

from conftest import tree_digest, vouch_for_corpus
from londonlm.core import Layout
from londonlm.tokens import ensure_cache, load_checked_tokens
from londonlm.tokens.cache import check_cache, cache_request
from londonlm.tokens.tokenizer import save_tokenizer, train_bpe
from londonlm.training import share_cache

quiet = lambda m: None  # noqa: E731


@pytest.fixture
def inputs(tmp_path) -> tuple[Path, Path]:
    """A finished corpus of six documents and a tokenizer for it."""
    processed = tmp_path / "processed"
    (processed / "texts").mkdir(parents=True)
    rows = []
    for i in range(6):
        text = f"document {i} of the year. " * 200
        (processed / "texts" / f"d{i}.txt").write_text(text, encoding="utf-8")
        rows.append({"id": f"d{i}", "path": f"texts/d{i}.txt", "split": "validation" if i == 2 else "train",
                     "year": 1700, "chars": len(text), "sha256": hashlib.sha256(text.encode()).hexdigest()})
    (processed / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    vouch_for_corpus(processed)
    tok = tmp_path / "tok"
    save_tokenizer(train_bpe(["document of the year"] * 40, vocab_size=300, min_frequency=1,
                             era_tokens=["<|1700s|>"], show_progress=False),
                   tok, model_max_length=64, era_tokens=["<|1700s|>"])
    return processed, tok


def runs(tmp_path, inputs):
    processed, tok = inputs
    layout = Layout(tmp_path / "root")
    src, dst = layout.run("g-lr0.001-bs2"), layout.run("g-lr0.002-bs2")
    ensure_cache(src.cache_dir, tok, processed, 16, True, progress=False, log=quiet)
    return src, dst


def test_a_cache_being_rebuilt_is_not_shared_mid_build(tmp_path, inputs):
    """The grid (or a family's twin) linked every file of the finished run's cache folder, checking
    only that its metadata.json was there: a rebuild started between (another process's
    --no_pretokenized, another --max_length) had its half-written `train.bin.tmp` linked into the
    next run, one file with two names. Now the share waits for no build and links none."""
    src, dst = runs(tmp_path, inputs)
    with open(src.cache_dir / ".build.lock", "a") as other:  # another process building it now
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        (src.cache_dir / "train.bin.tmp").write_bytes(b"\1\0" * 100)  # its tokens so far
        logs = []
        share_cache(src, dst, logs.append)
    assert not dst.cache_dir.exists()
    assert logs == [f"token cache: {src.cache_dir} is being built by another process now; not shared"]


def test_a_share_links_only_the_finished_caches_files(tmp_path, inputs):
    """What a stopped build left beside a finished cache (its `.bin.tmp`, progress records) was
    linked too; now only the cache's own files are."""
    src, dst = runs(tmp_path, inputs)
    (src.cache_dir / "train.bin.tmp").write_bytes(b"\1\0" * 100)
    (src.cache_dir / "train.progress.json").write_text("{}")
    share_cache(src, dst, quiet)
    assert sorted(p.name for p in dst.cache_dir.iterdir()) == [
        "metadata.json", "train.bin", "train.idx.npy", "val.bin", "val.idx.npy"]


def test_a_build_never_writes_through_a_temporary_another_cache_shares(tmp_path, inputs):
    """A `train.bin.tmp` linked from another cache's build (as the old share left it) was opened
    `w+b` by this run's build: truncated and written through, so the other build's file held this
    run's tokens, and after both renames the two caches' train.bin were one file. Now the build
    starts its temporaries afresh and the other's file is untouched."""
    processed, tok = inputs
    src, dst = runs(tmp_path, inputs)
    theirs = src.cache_dir / "train.bin.tmp"
    theirs.write_bytes(b"\1\0" * 100)
    dst.cache_dir.mkdir(parents=True)
    (dst.cache_dir / "train.bin.tmp").hardlink_to(theirs)
    meta = ensure_cache(dst.cache_dir, tok, processed, 32, True, progress=False, log=quiet)
    assert theirs.read_bytes() == b"\1\0" * 100
    assert check_cache(dst.cache_dir, cache_request(tok, processed, 32, True)) is None
    assert meta["splits"]["train"]["tokens"] * 2 == (dst.cache_dir / "train.bin").stat().st_size


def test_a_shared_cache_rebuilt_by_its_first_run_leaves_the_other_runs_files_as_they_were(tmp_path, inputs):
    """Held: the rebuild writes new files and renames them over the old names, so the other run's
    links keep the tokens its metadata describes, and its training reads them whole."""
    processed, tok = inputs
    src, dst = runs(tmp_path, inputs)
    share_cache(src, dst, quiet)
    before = tree_digest(dst.cache_dir)
    tokens = load_checked_tokens(dst.cache_dir, "train")  # the other run, reading as it trains
    ensure_cache(src.cache_dir, tok, processed, 32, True, mode="rebuild", progress=False, log=quiet)
    assert tree_digest(dst.cache_dir) == before
    assert check_cache(dst.cache_dir, cache_request(tok, processed, 16, True)) is None
    assert len(tokens.read(0, len(tokens))) == len(tokens)  # every chunk's CRC-32 checked as it is read
