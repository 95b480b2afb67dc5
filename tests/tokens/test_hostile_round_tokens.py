"""Hostile inputs to the token cache build that earlier tests did not cover."""
import json
import shutil

import numpy as np
import pytest

from londonlm.tokens.cache import CACHE_FORMAT, ensure_cache, load_tokens


def _paths(root):
    return (root / "09_models" / "tokenizers" / "london_historical_bpe",
            root / "data" / "london_historical" / "processed")


@pytest.fixture(scope="module")
def whole_cache(micro_root, tmp_path_factory):
    tok_dir, proc = _paths(micro_root)
    out = tmp_path_factory.mktemp("whole") / "cache"
    meta = ensure_cache(out, tok_dir, proc, 64, True, progress=False, log=lambda *_: None)
    return out, meta


@pytest.mark.parametrize("record", [
    [1, 2],                                                  # not an object
    {"docs": "3", "tokens": 10},                             # a count that is a string
    {"docs": 1},                                             # a count missing
    {"docs": -5, "tokens": -1},                              # negative counts (truncate fails)
    {"done": True},                                          # finished, but no info
    {"done": True, "info": {"tokens": 5}},                   # finished, info a lie
])
def test_a_malformed_progress_record_restarts_the_split(micro_root, whole_cache, tmp_path, record):
    """A torn or hand-edited ``<split>.progress.json`` for this very build starts the split afresh
    (it used to stop the build with AttributeError/KeyError/TypeError/OSError, or to keep a
    finished split's lying info as the cache's metadata)."""
    whole, meta = whole_cache
    tok_dir, proc = _paths(micro_root)
    c = tmp_path / "c"
    c.mkdir()
    if isinstance(record, dict):
        record = {"identity": {"format_version": CACHE_FORMAT, "tokenizer_sha256": meta["tokenizer_sha256"],
                               "manifest_sha256": meta["manifest_sha256"], "context_length": 64,
                               "era_tokens": True, "split": "train"}, **record}
    shutil.copy(whole / "train.bin", c / "train.bin")  # what a "done" record would keep
    shutil.copy(whole / "train.idx.npy", c / "train.idx.npy")
    (c / "train.bin.tmp").write_bytes(b"\0" * 64)
    (c / "train.idx.tmp").write_bytes(b"\0" * 64)
    (c / "train.progress.json").write_text(json.dumps(record))
    got = ensure_cache(c, tok_dir, proc, 64, True, progress=False, log=lambda *_: None)
    assert got["splits"] == meta["splits"]
    assert np.array_equal(load_tokens(c, "train"), load_tokens(whole, "train"))


def test_a_finished_split_whose_file_changed_since_is_encoded_again(micro_root, whole_cache, tmp_path):
    """A stopped build's finished split is kept only while its .bin still has the size its record
    says: one truncated since is encoded again, not written into metadata as whole."""
    whole, meta = whole_cache
    tok_dir, proc = _paths(micro_root)
    c = tmp_path / "c"
    shutil.copytree(whole, c)
    (c / "metadata.json").unlink()
    identity = {"format_version": CACHE_FORMAT, "tokenizer_sha256": meta["tokenizer_sha256"],
                "manifest_sha256": meta["manifest_sha256"], "context_length": 64, "era_tokens": True,
                "split": "train"}
    (c / "train.progress.json").write_text(json.dumps({"identity": identity, "done": True,
                                                       "info": meta["splits"]["train"]}))
    with open(c / "train.bin", "r+b") as f:
        f.truncate(f.seek(0, 2) - 2)
    got = ensure_cache(c, tok_dir, proc, 64, True, progress=False, log=lambda *_: None)
    assert got["splits"] == meta["splits"]
    assert np.array_equal(load_tokens(c, "train"), load_tokens(whole, "train"))


def test_a_tokenizer_without_the_document_boundary_is_one_line(micro_root, tmp_path):
    """A foreign tokenizer (no <|endoftext|>) used to fail mid-build with a TypeError on the None
    id appended to every document; it is now a CacheError before any file is written."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from londonlm.tokens.cache import CacheError

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["the cat sat"] * 5, trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    (tmp_path / "tok").mkdir()
    tok.save(str(tmp_path / "tok" / "tokenizer.json"))
    _, proc = _paths(micro_root)
    with pytest.raises(CacheError, match="no <\\|endoftext\\|> token"):
        ensure_cache(tmp_path / "c", tmp_path / "tok", proc, 64, False, progress=False, log=lambda *_: None)
    assert not list((tmp_path / "c").glob("*.bin*"))


def test_report_on_a_tokenizer_whose_merges_are_not_text_is_one_line(micro_root, tmp_path):
    from londonlm.tokens.stage import tokenizer_report
    from londonlm.tokens.tokenizer import TokenizerUnreadable

    tok_dir, proc = _paths(micro_root)
    shutil.copytree(tok_dir, tmp_path / "tok")
    (tmp_path / "tok" / "merges.txt").write_bytes(b"\xff\xfe#version\n")
    with pytest.raises(TokenizerUnreadable, match="merges.txt is not UTF-8.*--overwrite"):
        tokenizer_report(tmp_path / "tok", proc)


@pytest.mark.parametrize("script", ["03_tokenizer/test_tokenizer.py", "03_tokenizer/train_historical_tokenizer.py",
                                    "07_finetuning/build_chat_dataset.py", "07_finetuning/evaluate_chat.py",
                                    "07_finetuning/finetune_chat.py", "10_scripts/compare_runs.py"])
def test_help_gives_the_whole_first_paragraph(script, capsys):
    """--help used to cut the description at the docstring's first line break, mid-sentence."""
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location(f"_h22_{script.replace('/', '_')[:-3]}", REPO / script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(SystemExit) as done:
        (getattr(mod, "parse", None) or mod.main)(["--help"])
    assert done.value.code == 0
    want = " ".join(mod.__doc__.split("\n\n")[0].split())
    assert want in " ".join(capsys.readouterr().out.split())
