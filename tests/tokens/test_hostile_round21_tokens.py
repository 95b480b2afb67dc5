"""Hostile round 21, the tokenizer folder later stages read: a tokenizer save killed between its
renames (a new tokenizer.json beside the old tokenizer_config.json), and a stage-made folder
whose files no longer match its sidecar. The token cache and training read the folder without
asking its sidecar; now they refuse it in one line naming the rebuild."""
from __future__ import annotations

import multiprocessing
import os
import shutil

import pytest

from conftest import write_dated_source
from londonlm.corpus import CollectionOptions, build_corpus
from londonlm.tokens import load_tokenizer, require_whole_save
from londonlm.tokens.cache import ensure_cache
from londonlm.tokens.stage import train_tokenizer_stage
from londonlm.tokens.tokenizer import TokenizerUnreadable, era_width_in

QUIET = {"log": lambda *_: None}
YEARS = [1655, 1668, 1680, 1690, 1702, 1730]


@pytest.fixture(scope="module")
def dated_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("r21tok")
    src = write_dated_source(root / "src", YEARS)
    build_corpus(root / "processed", root / "metadata",
                 options=CollectionOptions(validation_percent=5, log=lambda *_: None), source_dir=src)
    return root / "processed"


def _tokenizer(corpus, out, width):
    return train_tokenizer_stage(corpus, out, vocab_size=400, era_tokens=True, era_width=width,
                                 model_max_length=64, **QUIET)


def _killed_save(corpus, out, width, renames: int) -> None:
    """The stage retraining ``out`` at ``width``, killed (no ``finally`` runs, as under SIGKILL)
    after ``renames`` of its save's renames into the folder."""
    def child():
        real, done = os.replace, [0]

        def replace(src, dst, *a, **kw):
            if ".saving-" in str(src):
                if done[0] == renames:
                    os._exit(9)
                done[0] += 1
            return real(src, dst, *a, **kw)

        os.replace = replace
        _tokenizer(corpus, out, width)
        os._exit(0)

    p = multiprocessing.get_context("fork").Process(target=child)
    p.start()
    p.join(60)
    assert p.exitcode == 9


def test_a_save_killed_between_its_renames_is_refused_by_the_cache_and_the_loader(dated_corpus, tmp_path):
    """Was: merges.txt, special_tokens_map.json and tokenizer.json of the new 50-year tokenizer
    beside the 25-year one's tokenizer_config.json and vocab.json; the cache was rebuilt from the
    mixture (its era width read from the old config) and training loaded it as whole."""
    tok, cache = tmp_path / "tok", tmp_path / "cache"
    _tokenizer(dated_corpus, tok, 25)
    ensure_cache(cache, tok, dated_corpus, 64, True, progress=False, **QUIET)
    _killed_save(dated_corpus, tok, 50, renames=3)  # sorted: merges, special_tokens_map, tokenizer.json
    assert not (tok / "sidecar.json").exists() and era_width_in(tok) == 25  # the old config
    for read in (lambda: require_whole_save(tok),  # (what a run asks once it loaded the tokenizer)
                 lambda: ensure_cache(cache, tok, dated_corpus, 64, True, progress=False, **QUIET)):
        with pytest.raises(TokenizerUnreadable) as e:
            read()
        msg = str(e.value)
        assert "stopped part-way" in msg and "03_tokenizer/train_historical_tokenizer.py" in msg
        assert "\n" not in msg
    # the stage's rerun retrains it whole, and every reader takes it again
    _tokenizer(dated_corpus, tok, 50)
    assert era_width_in(tok) == 50 and not list(tok.glob(".saving-*"))
    require_whole_save(tok)
    assert ensure_cache(cache, tok, dated_corpus, 64, True, progress=False, **QUIET)["era_width"] == 50


def test_a_stage_made_folder_whose_files_changed_since_is_refused(dated_corpus, tmp_path):
    """A file of another tokenizer copied over one of the stage's (here its tokenizer_config.json:
    the era width the cache and the cards read) made a folder its sidecar no longer vouches for."""
    tok, other = tmp_path / "tok", tmp_path / "other"
    _tokenizer(dated_corpus, tok, 25)
    _tokenizer(dated_corpus, other, 50)
    shutil.copy2(other / "tokenizer_config.json", tok / "tokenizer_config.json")
    with pytest.raises(TokenizerUnreadable, match="tokenizer_config.json was deleted or changed since it was "
                                                  "written, .*delete sidecar.json to use the folder as it is now.* --overwrite"):
        ensure_cache(tmp_path / "cache", tok, dated_corpus, 64, True, progress=False, **QUIET)


def test_a_folder_with_no_sidecar_is_a_users_own_and_is_read(dated_corpus, tmp_path):
    """A tokenizer not made by the stage (a Hub download, a folder saved by hand) has nothing to
    say what it should hold: it is read as it is."""
    tok = tmp_path / "tok"
    _tokenizer(dated_corpus, tok, 25)
    (tok / "sidecar.json").unlink()
    load_tokenizer(tok)
    require_whole_save(tok)
    assert ensure_cache(tmp_path / "cache", tok, dated_corpus, 64, True, progress=False, **QUIET)["era_width"] == 25
