"""Hostile round 15, the tokenizer stage and the token cache: a cache built over a corpus its
stage did not finish, odd corpora for the tokenizer, odd --max_length and damaged chunks."""
from __future__ import annotations

from pathlib import Path

import pytest

from londonlm.core import SIDECAR
from londonlm.corpus.manifest import COLLECT_CMD, MANIFEST, CorpusError, read_manifest
from londonlm.tokens.cache import ensure_cache, read_metadata, split_token_ceiling

from test_hostile_round_data import _scans

QUIET = dict(log=lambda *_: None)


def _collect(proc: Path, src: Path) -> None:
    from londonlm.corpus.collect import CollectionOptions, build_corpus

    build_corpus(proc, proc.parent / "metadata", CollectionOptions(validation_percent=20, **QUIET), source_dir=src)


def _stopped_rebuild(proc: Path, src: Path, monkeypatch) -> None:
    """The collection rerun over new texts and killed once they are placed, before its manifest:
    the old manifest over the new texts, no sidecar."""
    import londonlm.corpus.shards as shards

    real = shards.atomic_writer

    def writer(path, *a, **k):
        if Path(path).name == MANIFEST:
            raise KeyboardInterrupt("killed")
        return real(path, *a, **k)
    _scans(src, "The plague came to Aldgate")
    with monkeypatch.context() as m:
        m.setattr(shards, "atomic_writer", writer)
        with pytest.raises(KeyboardInterrupt):
            _collect(proc, src)
    assert not (proc / SIDECAR).exists() and "Aldgate" in (proc / read_manifest(proc)[0]["path"]).read_text()


@pytest.fixture
def stopped_corpus(tmp_path, monkeypatch, tiny_tokenizer_dir):
    """(processed, tokenizer, a cache of the finished old corpus) once a rebuild stopped part-way."""
    proc = tmp_path / "processed"
    src = _scans(tmp_path / "src", "Pepys walked to Whitehall")
    _collect(proc, src)
    old = tmp_path / "old_cache"
    ensure_cache(old, tiny_tokenizer_dir, proc, 16, era_tokens=False, progress=False, **QUIET)
    _stopped_rebuild(proc, src, monkeypatch)
    return proc, tiny_tokenizer_dir, old


def test_a_cache_is_not_built_from_a_corpus_its_stage_did_not_finish(stopped_corpus, tmp_path):
    """Was: with no current cache, a build after a stopped rebuild encoded the new texts under
    the old manifest (a mixture of two corpora), and training trained on it."""
    proc, tok, _ = stopped_corpus
    new = tmp_path / "new_cache"
    with pytest.raises(CorpusError, match=f"no sidecar.json.*{COLLECT_CMD}"):
        ensure_cache(new, tok, proc, 16, era_tokens=False, progress=False, **QUIET)
    assert not any(new.glob("*.bin")) and read_metadata(new) is None
    with pytest.raises(CorpusError, match="no sidecar.json"):  # refused before the speed probe, too
        split_token_ceiling(proc)


def test_a_current_cache_of_the_finished_corpus_stays_usable_and_is_never_rebuilt_from_it(stopped_corpus):
    """The cache of the old corpus holds no text of the stopped rebuild (its manifest is the old
    one): auto and --use_pretokenized read it; --no_pretokenized, which would encode the mixture,
    is refused and leaves that cache whole."""
    proc, tok, old = stopped_corpus
    meta = read_metadata(old)
    logs = []
    assert ensure_cache(old, tok, proc, 16, False, mode="auto", progress=False, log=logs.append) == meta
    assert any("compatible cache found" in m for m in logs)
    assert ensure_cache(old, tok, proc, 16, False, mode="require", progress=False, **QUIET) == meta
    bins = {p.name: p.read_bytes() for p in old.glob("*.bin")}
    with pytest.raises(CorpusError, match="no sidecar.json"):
        ensure_cache(old, tok, proc, 16, False, mode="rebuild", progress=False, **QUIET)
    with pytest.raises(CorpusError, match="no sidecar.json"):  # another context: a build, refused
        ensure_cache(old, tok, proc, 32, False, mode="auto", progress=False, **QUIET)
    assert read_metadata(old) == meta and {p.name: p.read_bytes() for p in old.glob("*.bin")} == bins
