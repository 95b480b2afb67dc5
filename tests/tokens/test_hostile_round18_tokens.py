"""Hostile round 18, the token cache: a corpus text edited after the cache was built."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from londonlm.core import RunLayout
from londonlm.corpus.manifest import COLLECT_CMD, CorpusError, read_manifest
from londonlm.tokens.cache import ensure_cache, read_metadata
from londonlm.tokens.chunks import CacheError

from test_hostile_round15_data import QUIET, _collect
from test_hostile_round_data import _scans


@pytest.fixture
def cached_corpus(tmp_path, tiny_tokenizer_dir):
    """(processed, tokenizer, run) with the run's cache built from the finished corpus."""
    proc = tmp_path / "processed"
    _collect(proc, _scans(tmp_path / "src", "Pepys walked to Whitehall"))
    run = RunLayout(tmp_path / "run")
    ensure_cache(run.cache_dir, tiny_tokenizer_dir, proc, 16, era_tokens=False, progress=False, **QUIET)
    return proc, tiny_tokenizer_dir, run


def _edit_first_text(proc: Path) -> str:
    path = read_manifest(proc)[0]["path"]
    with open(proc / path, "a", encoding="utf-8") as f:
        f.write(" The plague came to Aldgate.")
    return path


def test_a_cache_built_before_a_text_was_edited_is_not_current(cached_corpus):
    """Was: the cache records the manifest's hash only, which a hand edit keeps: "compatible cache
    found" and trained on the old text (auto, --use_pretokenized and training's block check alike).
    Now it is not current: auto's rebuild is refused by the corpus's check (the cache left whole), --use_pretokenized refuses it, and so does training's block check."""
    from londonlm.training.data import check_blocks_fit
    from londonlm.training.job import DataOptions

    proc, tok, run = cached_corpus
    meta = read_metadata(run.cache_dir)
    bins = {p.name: p.read_bytes() for p in run.cache_dir.glob("*.bin")}
    path = _edit_first_text(proc)
    with pytest.raises(CorpusError, match=f"changed since it was made.*{COLLECT_CMD}"):
        ensure_cache(run.cache_dir, tok, proc, 16, era_tokens=False, progress=False, **QUIET)
    with pytest.raises(CacheError, match=f"texts changed since it was made: {path}"):
        ensure_cache(run.cache_dir, tok, proc, 16, False, mode="require", progress=False, **QUIET)
    with pytest.raises(CorpusError, match="changed since it was made"):
        check_blocks_fit(run, DataOptions(tokenizer_dir=tok, processed_dir=proc, era_tokens=False), 16, None)
    assert read_metadata(run.cache_dir) == meta
    assert {p.name: p.read_bytes() for p in run.cache_dir.glob("*.bin")} == bins


def test_a_text_edited_to_its_own_size_is_seen_too(cached_corpus):
    """An edit that keeps the size changes the mtime, which the corpus's fingerprint holds."""
    proc, tok, run = cached_corpus
    text = proc / read_manifest(proc)[0]["path"]
    body = text.read_bytes()
    text.write_bytes(body[:-1] + (b"X" if body[-1:] != b"X" else b"Y"))
    os.utime(text, ns=(text.stat().st_atime_ns, text.stat().st_mtime_ns + 10_000_000))
    with pytest.raises(CacheError, match="texts changed since it was made"):
        ensure_cache(run.cache_dir, tok, proc, 16, False, mode="require", progress=False, **QUIET)


def test_a_copied_corpus_keeps_its_cache_current(cached_corpus, tmp_path):
    """A `cp -r` of the corpus (every mtime new, every text as made) is the same corpus: the cache
    stays current, never rebuilt."""
    proc, tok, run = cached_corpus
    copy = tmp_path / "copy"
    shutil.copytree(proc, copy, copy_function=shutil.copy)  # (copy: new mtimes)
    meta = read_metadata(run.cache_dir)
    logs: list[str] = []
    assert ensure_cache(run.cache_dir, tok, copy, 16, False, progress=False, log=logs.append) == meta
    assert any("compatible cache found" in m for m in logs), logs
