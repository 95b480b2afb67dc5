"""A token cache whose metadata.json is valid JSON of the wrong shape is treated like a damaged
cache (rebuilt, or one line under --use_pretokenized), never computed with."""
import json
import shutil

import pytest
from conftest import train_exit_code, tree_digest

from londonlm.tokens.cache import CacheError, ensure_cache, load_checked_tokens, read_metadata
from londonlm.tokens.chunks import CheckedTokens


def _splits_x(m):
    m["splits"] = "x"


def _train_x(m):
    m["splits"]["train"] = "x"


def _chunk_bytes(value):
    def change(m):
        m["splits"]["train"]["chunk_bytes"] = value
    return change


def _tokens_text(m):
    m["splits"]["validation"]["tokens"] = str(m["splits"]["validation"]["tokens"])


def _crc_short(m):
    m["splits"]["train"]["chunk_crc32"] = []


def _corpus_time_text(m):
    m["corpus_time"] = "1700"


def _a_list(m):
    return [m]


MALFORMED = {"splits_text": _splits_x, "split_text": _train_x, "chunk_bytes_0": _chunk_bytes(0),
             "chunk_bytes_odd": _chunk_bytes(3), "chunk_bytes_text": _chunk_bytes("1"),
             "tokens_text": _tokens_text, "crc_list_short": _crc_short,
             "corpus_time_text": _corpus_time_text, "top_level_list": _a_list}


@pytest.fixture(scope="module")
def built(micro_root, tmp_path_factory):
    """One clean cache of the micro corpus, copied by each test."""
    cache = tmp_path_factory.mktemp("meta") / "cache"
    tok_dir, proc = _inputs(micro_root)
    ensure_cache(cache, tok_dir, proc, 64, True, progress=False, log=lambda *_: None)
    return cache


def _inputs(root):
    return (root / "09_models" / "tokenizers" / "london_historical_bpe",
            root / "data" / "london_historical" / "processed")


def _malformed_copy(built, tmp_path, change):
    cache = tmp_path / "cache"
    shutil.copytree(built, cache)
    meta = json.loads((cache / "metadata.json").read_text())
    meta = change(meta) or meta
    (cache / "metadata.json").write_text(json.dumps(meta))
    return cache


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_metadata_is_refused_in_one_line_and_rebuilt(built, micro_root, tmp_path, name):
    cache = _malformed_copy(built, tmp_path, MALFORMED[name])
    tok_dir, proc = _inputs(micro_root)
    assert "unreadable" in read_metadata(cache)  # a resumed run's data checks do not trust it
    with pytest.raises(CacheError, match="damaged") as e:
        ensure_cache(cache, tok_dir, proc, 64, True, mode="require", progress=False, log=lambda *_: None)
    assert "\n" not in str(e.value)
    with pytest.raises(CacheError, match="rebuild it"):
        load_checked_tokens(cache, "train")
    logs: list[str] = []
    meta = ensure_cache(cache, tok_dir, proc, 64, True, progress=False, log=logs.append)
    assert any("building" in m and "damaged" in m for m in logs)
    assert meta == read_metadata(cache) and len(load_checked_tokens(cache, "train")) > 0


def test_an_older_format_is_still_called_stale_not_damaged(built, micro_root, tmp_path):
    """The shape check is this format's: an older cache keeps its 'format version' reason."""
    cache = _malformed_copy(built, tmp_path, lambda m: m.update(format_version=3, splits="x"))
    tok_dir, proc = _inputs(micro_root)
    with pytest.raises(CacheError, match="format version 3"):
        ensure_cache(cache, tok_dir, proc, 64, True, mode="require", progress=False, log=lambda *_: None)


def test_checked_tokens_refuse_a_chunk_size_of_zero(built):
    with pytest.raises(CacheError, match="chunks of 0 bytes"):
        CheckedTokens(built / "train.bin", (built / "train.bin").stat().st_size // 2, [], 0)


def test_training_on_malformed_metadata_is_one_error_line(micro_root, tmp_path, capsys):
    """The reviewed reproduction: --use_pretokenized over a cache whose chunk_bytes is 0 was a
    ZeroDivisionError traceback (rc 1); without the flag the cache is rebuilt and training runs."""
    root = tmp_path / "root"
    shutil.copytree(micro_root, root)
    common = ("--max_steps", "1", "--save_steps", "100", "--eval_steps", "100", "--logging_steps", "1")
    assert train_exit_code(root, *common) == 0
    meta_path = root / "09_models" / "checkpoints" / "micro" / "pretokenized_data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["splits"]["train"]["chunk_bytes"] = 0
    meta_path.write_text(json.dumps(meta))
    capsys.readouterr()
    assert train_exit_code(root, *common, "--fresh", "--use_pretokenized", "true") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "chunk_bytes" in err[0]
    assert train_exit_code(root, *common, "--fresh") == 0
    assert json.loads(meta_path.read_text())["splits"]["train"]["chunk_bytes"] > 0


def test_current_mode_only_reads(built, micro_root, tmp_path):
    """mode='current' (the LR finder's look at a run's cache): metadata when it fits, None when
    not, and nothing written either way, not even the lock file."""
    tok_dir, proc = _inputs(micro_root)
    missing = tmp_path / "none"
    assert ensure_cache(missing, tok_dir, proc, 64, True, mode="current") is None
    assert not missing.exists()
    cache = _malformed_copy(built, tmp_path, lambda m: None)
    (cache / ".build.lock").unlink(missing_ok=True)
    before = tree_digest(cache)
    assert ensure_cache(cache, tok_dir, proc, 32, True, mode="current") is None
    assert ensure_cache(cache, tok_dir, proc, 64, True, mode="current") == read_metadata(cache)
    assert tree_digest(cache) == before


def test_the_token_ceiling_of_a_split_bounds_what_its_cache_counts(tmp_path):
    """split_token_ceiling never says fewer tokens than the cache then holds (it refuses a
    context before any data work, so an estimate below the truth would refuse good data)."""
    import shutil

    from conftest import write_micro_source
    from londonlm.corpus import CollectionOptions, build_corpus
    from londonlm.tokens import ensure_cache, split_token_ceiling
    from londonlm.tokens.stage import train_tokenizer_stage

    processed = tmp_path / "processed"
    build_corpus(processed, tmp_path / "meta", options=CollectionOptions(validation_percent=20, log=lambda *_: None),
                 source_dir=write_micro_source(tmp_path / "src"))
    tok = tmp_path / "tok"
    train_tokenizer_stage(processed, tok, vocab_size=300, min_frequency=2, era_tokens=True, model_max_length=64,
                          log=lambda *_: None)
    meta = ensure_cache(tmp_path / "cache", tok, processed, 64, era_tokens=True, progress=False, log=lambda *_: None)
    ceiling = split_token_ceiling(processed)
    for split in ("train", "validation"):
        assert meta["splits"][split]["tokens"] <= ceiling[split]
    shutil.rmtree(processed)
    assert split_token_ceiling(processed) == {}  # no manifest: no estimate (the build says why)
