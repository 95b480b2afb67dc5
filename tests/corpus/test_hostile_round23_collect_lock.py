"""Hostile round 23: the collection's hold on its corpus folder. Round 22's readers (a token cache
build, the tokenizer stage, a cutoff view's maker) hold `processed/` shared, but the collection took
no lock on the folder itself: a re-collection replaced the texts under a reader, which learnt of it
only at its end ("made again while it was read") and lost its work. The collection now takes the
folder exclusively once its merge is decided, so it is the one refused, before it writes."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tree_digest, write_micro_source
from reading_at import read_at
from londonlm.core import SIDECAR, lock_folder
from londonlm.corpus import CollectionOptions, CorpusError, build_corpus
import londonlm.corpus.shards as shards_module
from londonlm.corpus.collect import CollectionBusy
from londonlm.tokens import ensure_cache
from londonlm.tokens.tokenizer import save_tokenizer, train_bpe

REPO = Path(__file__).resolve().parents[2]
COLLECTOR = REPO / "02_data_collection" / "historical_data_collector.py"
quiet = lambda *a: None  # noqa: E731
BUSY = (r"process PID {pid} is reading the corpus in {dir} now \(a tokenizer, token cache, cutoff view or "
        r"evaluation made from it\); wait for it to end, then run the same command again; the corpus there was "
        r"not changed")


def options(**kw) -> CollectionOptions:
    return CollectionOptions(validation_percent=20, log=quiet, **kw)


@pytest.fixture
def corpus(tmp_path) -> tuple[Path, Path]:
    """(a project root with a collected micro corpus, the folder it was collected from)."""
    src = write_micro_source(tmp_path / "src", n_docs=4, chars=3000)
    data = tmp_path / "root" / "data" / "london_historical"
    build_corpus(data / "processed", data / "metadata", options=options(), source_dir=src)
    return tmp_path / "root", src


def processed_of(root: Path) -> Path:
    return root / "data" / "london_historical" / "processed"


def corpus_digest(processed: Path) -> dict:
    """What a reader of the corpus sees (its staged shards and the collection's lock files left out)."""
    return {p: h for p, h in tree_digest(processed).items() if not p.startswith(("shards/", ".collection"))}


def edit_source(src: Path) -> None:
    """The user's folder changed: the next collection rebuilds the corpus."""
    first = sorted(src.iterdir())[0]
    first.write_text(first.read_text(encoding="utf-8") + " And so the plague went on.", encoding="utf-8")


@pytest.fixture
def tok_dir(tmp_path) -> Path:
    eras = ["<|1700s|>"]
    tok = train_bpe(["the plague in the city of London"] * 40, vocab_size=300, min_frequency=1, era_tokens=eras,
                    show_progress=False)
    save_tokenizer(tok, tmp_path / "tok", model_max_length=64, era_tokens=eras)
    return tmp_path / "tok"


def test_a_collection_under_a_cache_build_is_refused_and_the_build_finishes(corpus, tok_dir, tmp_path, monkeypatch):
    """`historical_data_collector.py` run again (its source folder changed) while a token cache build
    read `processed/`: the collection replaced the texts and exited 0; the build, at its end, died with
    "made again while it was read", its work lost. Now the collector, a real second process, is one
    line and exit 2, the corpus is byte for byte as it was, and the build finishes, of that corpus."""
    root, src = corpus
    processed, before, other = processed_of(root), corpus_digest(processed_of(root)), []
    edit_source(src)

    def collect_again():
        other.append(subprocess.run([sys.executable, str(COLLECTOR), "--root", str(root), "--source_dir", str(src),
                                     "--validation_percent", "20", "--workers", "1"], cwd=tmp_path,
                                    capture_output=True, text=True, timeout=120))

    read_at(monkeypatch, 2, collect_again)
    meta = ensure_cache(tmp_path / "c", tok_dir, processed, 16, True, progress=False, log=quiet)
    monkeypatch.undo()
    (proc,) = other
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert re.fullmatch("error: " + BUSY.format(pid=os.getpid(), dir=re.escape(str(processed))), line), line
    assert corpus_digest(processed) == before
    assert meta["splits"]["train"]["documents"] >= 1
    # the reader gone, the same command collects the changed folder
    stats = build_corpus(processed, processed.parent / "metadata", options=options(), source_dir=src)
    assert stats["documents"] and corpus_digest(processed) != before


def test_a_merge_of_shards_is_refused_while_read_and_the_shards_still_run_beside_a_reader(corpus):
    """A Slurm array's shards write only their own folders, so they run beside a reader (and beside
    each other); the merge, which replaces what the reader reads, is refused until it is gone."""
    root, src = corpus
    processed = processed_of(root)
    meta = processed.parent / "metadata"
    edit_source(src)
    before = corpus_digest(processed)
    fd = lock_folder(processed, shared=True)  # a reader in another process
    try:
        for k in (0, 1):
            build_corpus(processed, meta, options=options(shard=k, num_shards=2), source_dir=src)
        assert (processed / "shards" / "shard-001-of-002" / "done.json").is_file()
        assert corpus_digest(processed) == before
        with pytest.raises(CollectionBusy, match=BUSY.format(pid=os.getpid(), dir=re.escape(str(processed)))):
            build_corpus(processed, meta, options=options(num_shards=2, merge_only=True), source_dir=src)
        assert corpus_digest(processed) == before
        assert (processed / SIDECAR).is_file()  # still current, as before the refusal
    finally:
        os.close(fd)
    stats = build_corpus(processed, meta, options=options(num_shards=2, merge_only=True), source_dir=src)
    assert stats["documents"] and (processed / SIDECAR).is_file() and corpus_digest(processed) != before


def test_a_reader_arriving_mid_merge_is_refused_naming_the_collection(corpus, tok_dir, tmp_path, monkeypatch):
    """A cache build started while the merge placed the new texts: it read the old manifest over new
    texts (or a text not yet pruned). Now it is refused in one line before it reads anything."""
    root, src = corpus
    processed, refused = processed_of(root), []
    edit_source(src)
    real = shards_module.place_texts

    def place_texts(*a, **kw):
        try:
            ensure_cache(tmp_path / "c", tok_dir, processed, 16, True, progress=False, log=quiet)
        except CorpusError as e:
            refused.append(str(e))
        return real(*a, **kw)

    monkeypatch.setattr(shards_module, "place_texts", place_texts)
    build_corpus(processed, processed.parent / "metadata", options=options(), source_dir=src)
    assert refused == [f"process PID {os.getpid()} is making the corpus {processed} now; wait for it to end, "
                       f"then run again; nothing was read from it"]
    assert not (tmp_path / "c" / "metadata.json").exists()


def test_a_collection_that_finds_its_corpus_current_goes_on_beside_a_reader(corpus):
    """Held: the hold is taken only once the merge is decided, so a collection that would only skip
    (a pipeline's corpus step while another pipeline's cache build reads) is not refused."""
    root, src = corpus
    processed, logs = processed_of(root), []
    fd = lock_folder(processed, shared=True)
    try:
        build_corpus(processed, processed.parent / "metadata", options=CollectionOptions(
            validation_percent=20, log=logs.append), source_dir=src)
    finally:
        os.close(fd)
    assert any("outputs are current" in m and "skipping" in m for m in logs), logs
