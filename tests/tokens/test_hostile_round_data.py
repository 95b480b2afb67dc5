"""Hostile inputs to the data stages' readers: a corpus a stopped --merge left (the old manifest
over some new texts, no sidecar), one whose sidecar vouches for another manifest, an old one
that never had a sidecar; a token cache whose metadata vouches for another tokenizer's ids."""
from __future__ import annotations

import importlib.util
import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from londonlm.core import SIDECAR, sha256_file
from londonlm.core.errors import run_main
from londonlm.corpus.manifest import COLLECT_CMD, MANIFEST, CorpusError, read_manifest
from londonlm.tokens.cache import CacheError, ensure_cache, load_checked_tokens
from londonlm.tokens.stage import train_tokenizer_stage

QUIET = dict(log=lambda *_: None)


def _script(rel: str):
    spec = importlib.util.spec_from_file_location(Path(rel).stem, REPO / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _exit(main, argv, capsys) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as e:
        run_main(main, argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return e.value.code, [line for line in err.splitlines() if line.strip()]


def _paths(root: Path) -> tuple[Path, Path]:
    return root / "data" / "london_historical" / "processed", root / "09_models" / "tokenizers" / "london_historical_bpe"


def _scans(src: Path, words: str) -> Path:
    src.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        (src / f"part{i}_1722.txt").write_text(f"{words} {i}. " * 60 + "The watch went down Fleet Street. " * 30)
    return src


def _collect(root: Path, src: Path) -> None:
    from londonlm.corpus.collect import CollectionOptions, build_corpus

    proc, _ = _paths(root)
    build_corpus(proc, proc.parent / "metadata", CollectionOptions(validation_percent=20, **QUIET), source_dir=src)


def _stop_at_the_manifest(monkeypatch) -> None:
    """The merge killed once its texts are placed, before its manifest is written."""
    import londonlm.corpus.shards as shards

    real = shards.atomic_writer

    def writer(path, *a, **k):
        if Path(path).name == MANIFEST:
            raise KeyboardInterrupt("killed")
        return real(path, *a, **k)
    monkeypatch.setattr(shards, "atomic_writer", writer)


def test_a_merge_stopped_before_its_manifest_is_refused_downstream(tmp_path, monkeypatch, capsys, tiny_tokenizer_dir):
    """Was: count_tokens counted (and the tokenizer stage trained on) the new texts under the old
    manifest, exit 0: its hash unchanged, the tokenizer even skipped as current."""
    root = tmp_path / "root"
    proc, tok = _paths(root)
    src = _scans(tmp_path / "src", "Pepys walked to Whitehall")
    _collect(root, src)
    shutil.copytree(tiny_tokenizer_dir, tmp_path / "tok")
    manifest = (proc / MANIFEST).read_bytes()
    _scans(src, "The plague came to Aldgate")  # the same files, new words: a rebuild
    _stop_at_the_manifest(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        _collect(root, src)
    monkeypatch.undo()
    assert (proc / MANIFEST).read_bytes() == manifest and not (proc / SIDECAR).exists()
    assert "Aldgate" in (proc / read_manifest(proc)[0]["path"]).read_text()  # new texts under the old manifest

    count = _script("02_data_collection/count_tokens.py").main
    code, err = _exit(count, ["--root", str(root), "--tokenizer", str(tmp_path / "tok")], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error:"), err
    assert "no sidecar.json" in err[0] and COLLECT_CMD in err[0], err
    assert not (proc.parent / "metadata" / "token_counts.json").exists()
    with pytest.raises(CorpusError, match="no sidecar.json.*historical_data_collector"):
        train_tokenizer_stage(proc, tok, vocab_size=300, era_tokens=False, **QUIET)
    assert not tok.exists()

    _collect(root, src)  # the command the message names mends it
    train_tokenizer_stage(proc, tok, vocab_size=300, era_tokens=False, **QUIET)
    assert _exit(count, ["--root", str(root), "--tokenizer", str(tok)], capsys)[0] == 0


def test_a_sidecar_of_another_manifest_is_refused_and_the_tokenizer_kept(micro_root_copy):
    """A manifest edited or copied in after the collection (one row dropped): the tokenizer stage
    retrained on it, replacing the tokenizer with one of no corpus the collection made."""
    proc, tok = _paths(micro_root_copy)
    lines = (proc / MANIFEST).read_text().splitlines(keepends=True)
    (proc / MANIFEST).write_text("".join(lines[:-1]))
    before = (tok / "tokenizer.json").read_bytes()
    with pytest.raises(CorpusError, match=r"manifest.jsonl was deleted or changed since.*historical_data_collector"):
        train_tokenizer_stage(proc, tok, vocab_size=512, **QUIET)
    assert (tok / "tokenizer.json").read_bytes() == before and (tok / SIDECAR).exists()


def test_a_corpus_that_never_had_a_sidecar_gets_a_clear_line(micro_root_copy, capsys):
    """An old or hand-made corpus: the tokenizer report names the missing sidecar and the
    collection that makes one (it used to report on it without a word)."""
    proc, tok = _paths(micro_root_copy)
    (proc / SIDECAR).unlink()
    code, err = _exit(_script("03_tokenizer/test_tokenizer.py").main, ["--root", str(micro_root_copy)], capsys)
    assert code == 2 and len(err) == 1 and "no sidecar.json" in err[0] and COLLECT_CMD in err[0], err


def test_a_cutoff_view_changed_since_names_its_own_command(micro_root_copy):
    from londonlm.corpus.cutoff import cutoff_view

    proc, tok = _paths(micro_root_copy)
    view = proc.parent / "processed-to1800"
    cutoff_view(proc, view, 1800, **QUIET)
    (view / read_manifest(view)[0]["path"]).write_text("another text")
    out = view.parent / "tok1800"
    with pytest.raises(CorpusError, match=r"texts was deleted or changed.*run_pipeline.py --cutoff_year 1800"):
        train_tokenizer_stage(view, out, vocab_size=300, **QUIET)
    assert not out.exists()


# ---------------------------------------------------------------- the token cache of another tokenizer

@pytest.fixture(scope="module")
def two_tokenizers(micro_root, tmp_path_factory):
    """The micro tokenizer's cache, and a tokenizer of 300 tokens on the same corpus."""
    proc, tok = _paths(micro_root)
    base = tmp_path_factory.mktemp("caches")
    small = base / "small"
    train_tokenizer_stage(proc, small, vocab_size=300, min_frequency=2, era_tokens=True, model_max_length=64, **QUIET)
    ensure_cache(base / "cache", tok, proc, 64, True, progress=False, **QUIET)
    return proc, small, base / "cache"


def _as_if_for(cache: Path, tok: Path) -> None:
    """metadata.json edited to name tokenizer ``tok`` (its hash), as a user saving a rebuild would."""
    meta = json.loads((cache / "metadata.json").read_text())
    meta["tokenizer_sha256"] = sha256_file(tok / "tokenizer.json")
    (cache / "metadata.json").write_text(json.dumps(meta))


def test_a_cache_vouched_for_another_vocabulary_is_rebuilt_or_refused(two_tokenizers, tmp_path):
    """Was: used as compatible, ids up to 511 fed to a model of 300 tokens (an IndexError, a
    device assert on a GPU, or padding rows trained)."""
    proc, small, cache = two_tokenizers
    c = tmp_path / "c"
    shutil.copytree(cache, c)
    _as_if_for(c, small)
    with pytest.raises(CacheError, match=r"vocabulary mismatch \(cache built for 512 tokens, tokenizer 300\)"):
        ensure_cache(c, small, proc, 64, True, mode="require", progress=False, **QUIET)
    logs = []
    meta = ensure_cache(c, small, proc, 64, True, progress=False, log=logs.append)
    assert any("vocabulary mismatch" in line for line in logs), logs
    assert meta["vocab_size"] == 300 and int(load_checked_tokens(c, "train")[:].max()) < 300


def test_ids_past_the_vocabulary_under_matching_checksums_are_one_line(two_tokenizers, tmp_path):
    """A cache whose metadata (vocabulary, checksums) was made to fit other tokens: training read
    them unchecked; the chunk reader now refuses ids its tokenizer does not have."""
    proc, small, cache = two_tokenizers
    c = tmp_path / "c"
    shutil.copytree(cache, c)
    meta = json.loads((c / "metadata.json").read_text())
    meta["vocab_size"] = 300
    tokens = np.fromfile(c / "train.bin", dtype=np.uint16)
    assert tokens.max() >= 300
    meta["splits"]["train"]["chunk_crc32"] = [zlib.crc32(tokens.tobytes())]
    (c / "metadata.json").write_text(json.dumps(meta))
    checked = load_checked_tokens(c, "train")
    with pytest.raises(CacheError, match=r"ids of another vocabulary.*past the 300 tokens.*no_pretokenized"):
        checked[0:64]
