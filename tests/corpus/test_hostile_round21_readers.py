"""Hostile round 21: readers of a corpus (a token cache build, the tokenizer stage) while another
process makes it again: a cutoff view remade from a corpus collected again, or the corpus itself
collected again under them."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import tree_digest, vouch_for_corpus
from reading_at import read_at
from londonlm.core import SIDECAR, lock_folder
from londonlm.corpus import CorpusError, cutoff_view
import londonlm.corpus.manifest as manifest_module
from londonlm.tokens import ensure_cache, train_tokenizer_stage
from londonlm.tokens.tokenizer import save_tokenizer, train_bpe

quiet = lambda m: None  # noqa: E731
YEARS = (1600, 1650, 1700, 1720, 1750, 1800, 1900, 1950)
ERAS = ["<|1600s|>", "<|1650s|>", "<|1700s|>", "<|1750s|>", "<|1800s|>", "<|1850s|>", "<|1900s|>", "<|1950s|>"]


def collect(parent: Path, word: str, drop: tuple[str, ...] = ()) -> Path:
    """A finished corpus of dated documents whose texts say ``word``, as a collection writes it
    (texts replaced whole, the manifest, the sidecar last); ``drop``: ids pruned from it."""
    (parent / "texts").mkdir(parents=True, exist_ok=True)
    (parent / SIDECAR).unlink(missing_ok=True)
    rows = []
    for i, year in enumerate(YEARS):
        path = parent / "texts" / f"d{i}.txt"
        if f"d{i}" in drop:
            path.unlink(missing_ok=True)
            continue
        text = f"{word} {i} of the year {year}. " * 20
        tmp = path.with_name(f".d{i}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        rows.append({"id": f"d{i}", "path": f"texts/d{i}.txt", "split": "validation" if i == 2 else "train",
                     "year": year, "decade": year // 10 * 10, "year_rule": "manifest",
                     "date_evidence": {"manifest": year}, "chars": len(text), "words": 120, "title": f"t{i}",
                     "source": "local", "sha256": hashlib.sha256(text.encode()).hexdigest()})
    (parent / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    vouch_for_corpus(parent)
    return parent


@pytest.fixture
def tok_dir(tmp_path) -> Path:
    out = tmp_path / "tok"
    tok = train_bpe(["document pamphlet of the year"] * 40, vocab_size=300, min_frequency=1, era_tokens=ERAS,
                    show_progress=False)
    save_tokenizer(tok, out, model_max_length=64, era_tokens=ERAS)
    return out


def cache_words(cache: Path, tok_dir: Path) -> set[str]:
    """Which corpus's word the cache's training tokens hold."""
    from tokenizers import Tokenizer

    text = Tokenizer.from_file(str(tok_dir / "tokenizer.json")).decode(
        np.fromfile(cache / "train.bin", dtype=np.uint16).tolist())
    return {w for w in ("document", "pamphlet") if w in text}


MAKER = """
import sys
from londonlm.core import run_main
from londonlm.corpus import cutoff_view
run_main(lambda a: cutoff_view(a[0], a[1], 1800, log=lambda m: None) and None)
"""


def test_a_view_remade_under_a_cache_build_is_refused_and_the_build_is_of_one_view(tmp_path, tok_dir,
                                                                                           monkeypatch):
    """A family's token cache build reading `processed-to1800` while another process remade the view
    from a corpus collected again: texts were replaced under it, and the build vouched for a mixture
    of both corpora under the first manifest's hash, exit 0 (the run then trained on it). Now the
    maker, a real second process, is one line while the build reads, and the build is the old view's."""
    parent, view, cache = collect(tmp_path / "processed", "document"), tmp_path / "processed-to1800", tmp_path / "c"
    cutoff_view(parent, view, 1800, log=quiet)
    before, other = tree_digest(view), []

    def remake():  # the corpus collected again, and another family making its view
        collect(parent, "pamphlet")
        other.append(subprocess.run([sys.executable, "-c", MAKER, str(parent), str(view)], capture_output=True,
                                    text=True, cwd=Path(__file__).parents[2], timeout=60))

    read_at(monkeypatch, 2, remake)
    meta = ensure_cache(cache, tok_dir, view, 16, True, progress=False, log=quiet)
    monkeypatch.undo()
    (proc,) = other
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: process PID {os.getpid()} is reading the corpus view {view} now (a tokenizer or token cache made "
        f"from it); wait for it to end, then run again (the view will be made then); nothing was written"]
    assert tree_digest(view) == before  # the build read one view, and vouches for it
    assert meta["manifest_sha256"] == hashlib.sha256((view / "manifest.jsonl").read_bytes()).hexdigest()
    assert cache_words(cache, tok_dir) == {"document"}
    # the reader gone, the maker's rerun makes the view of the new corpus, and the cache follows it
    assert not cutoff_view(parent, view, 1800, log=quiet)["skipped"]
    ensure_cache(cache, tok_dir, view, 16, True, progress=False, log=quiet)
    assert cache_words(cache, tok_dir) == {"pamphlet"}


def test_a_corpus_collected_again_under_a_cache_build_is_not_vouched_for(tmp_path, tok_dir, monkeypatch):
    """The collection takes no lock on the folder itself: re-collected (one text pruned, the others
    replaced) under a build from `processed/`, the build died on the pruned text naming the
    collection's --overwrite, or (nothing pruned) vouched for a mixture. Now one line saying what
    happened and the rerun, and no metadata; the rerun builds the new corpus."""
    parent, cache = collect(tmp_path / "processed", "document"), tmp_path / "c"
    read_at(monkeypatch, 2, lambda: collect(parent, "pamphlet", drop=("d6",)))
    with pytest.raises(CorpusError, match=r"the corpus in .*processed was made again while it was read \(another "
                                          r"process collected it or remade the view\): what was read is of two "
                                          r"corpora, so nothing made from it was kept; run the same command again"):
        ensure_cache(cache, tok_dir, parent, 16, True, progress=False, log=quiet)
    monkeypatch.undo()
    assert not (cache / "metadata.json").exists()
    meta = ensure_cache(cache, tok_dir, parent, 16, True, progress=False, log=quiet)
    assert meta["splits"]["train"]["documents"] == 6 and cache_words(cache, tok_dir) == {"pamphlet"}


def test_nothing_pruned_a_corpus_collected_again_is_still_not_vouched_for(tmp_path, tok_dir, monkeypatch):
    parent, cache = collect(tmp_path / "processed", "document"), tmp_path / "c"
    read_at(monkeypatch, 2, lambda: collect(parent, "pamphlet"))
    with pytest.raises(CorpusError, match="was made again while it was read"):
        ensure_cache(cache, tok_dir, parent, 16, True, progress=False, log=quiet)
    assert not (cache / "metadata.json").exists()


def test_a_view_remade_under_the_tokenizer_stage_is_refused_and_the_tokenizer_is_of_one_view(tmp_path,
                                                                                              monkeypatch):
    """The tokenizer stage read the view's manifest, then its texts: remade between, the merges were
    learnt from both corpora and the sidecar vouched for them under the old manifest's hash."""
    parent, view = collect(tmp_path / "processed", "document"), tmp_path / "processed-to1800"
    cutoff_view(parent, view, 1800, log=quiet)
    before, refused = tree_digest(view), []

    def remake():
        collect(parent, "pamphlet")
        try:  # (an flock taken through another open file conflicts as another process's does)
            cutoff_view(parent, view, 1800, log=quiet)
        except CorpusError as e:
            refused.append(str(e))

    read_at(monkeypatch, 2, remake)
    side = train_tokenizer_stage(view, tmp_path / "tok", vocab_size=300, min_frequency=1, progress=False, log=quiet)
    (why,) = refused
    assert "is reading the corpus view" in why and "nothing was written" in why
    assert tree_digest(view) == before
    assert side["inputs"]["manifest_sha256"] == hashlib.sha256((view / "manifest.jsonl").read_bytes()).hexdigest()


def test_a_tokenizer_trained_while_its_corpus_was_collected_again_is_neither_saved_nor_vouched_for(
        tmp_path, monkeypatch):
    parent, out = collect(tmp_path / "processed", "document"), tmp_path / "tok"
    read_at(monkeypatch, 2, lambda: collect(parent, "pamphlet"))
    with pytest.raises(CorpusError, match="was made again while it was read"):
        train_tokenizer_stage(parent, out, vocab_size=300, min_frequency=1, progress=False, log=quiet)
    assert not (out / SIDECAR).exists() and not (out / "tokenizer.json").exists()


def test_readers_do_not_block_each_other_nor_a_maker_that_finds_the_view_current(tmp_path, tok_dir):
    """Held: a second reader (another family's cache build, another preset's tokenizer) and a
    maker that only finds the view current go on beside a reader; a maker mid-build refuses a
    reader in one line naming it."""
    parent, view = collect(tmp_path / "processed", "document"), tmp_path / "processed-to1800"
    cutoff_view(parent, view, 1800, log=quiet)
    fd = lock_folder(view, shared=True)  # a reader in another process
    try:
        assert cutoff_view(parent, view, 1800, log=quiet)["skipped"]
        assert ensure_cache(tmp_path / "c", tok_dir, view, 16, True, progress=False, log=quiet)
        with pytest.raises(CorpusError, match="is reading the corpus view"):
            cutoff_view(parent, view, 1800, overwrite=True, log=quiet)
        assert (view / SIDECAR).is_file()
    finally:
        os.close(fd)
    fd = lock_folder(view)  # a maker in another process, mid-build
    try:
        with pytest.raises(CorpusError, match=rf"process PID {os.getpid()} is making the corpus .*processed-to1800 "
                                              r"now; wait for it to end, then run again; nothing was read from it"):
            ensure_cache(tmp_path / "c2", tok_dir, view, 16, True, progress=False, log=quiet)
    finally:
        os.close(fd)
    assert not (tmp_path / "c2").exists()


def test_a_view_made_while_its_parent_is_collected_again_is_not_vouched_for(tmp_path, monkeypatch):
    """The view's maker read the parent's manifest, then linked its texts: the parent collected
    again between, the view's sidecar vouched for the old manifest's rows over some new texts, and
    its fingerprint was taken of those texts, so no later reader hashed them against the rows."""
    parent, view = collect(tmp_path / "processed", "document"), tmp_path / "processed-to1800"
    real, calls = manifest_module.link_or_copy, []

    def link(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            collect(parent, "pamphlet")
        return real(src, dst)

    monkeypatch.setattr(manifest_module, "link_or_copy", link)
    with pytest.raises(CorpusError, match=r"the corpus in .*processed was made again while it was read"):
        cutoff_view(parent, view, 1800, log=quiet)
    monkeypatch.undo()
    assert not (view / SIDECAR).exists()
    assert not cutoff_view(parent, view, 1800, log=quiet)["skipped"]  # the rerun: the new corpus's view
    assert all("pamphlet" in p.read_text() for p in (view / "texts").iterdir())
