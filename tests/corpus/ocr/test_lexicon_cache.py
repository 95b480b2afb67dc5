"""The period lexicon's derived tables kept in the user's cache: the same lexicon from the copy as
from the file, a damaged copy rebuilt with a warning, a stale one (other bytes, other code) never used."""
from __future__ import annotations

import os
import pickle

import pytest

from londonlm.corpus.ocr import lexicon as lexicon_module
from londonlm.corpus.ocr import lexicon_cache
from londonlm.corpus.ocr.lexicon import LexiconError, PeriodLexicon, build_lexicon

TEXTS = ["The Thames ran black by Southwark, and the waggons went over London Bridge.",
         "Up betimes, and to the Office, where Sir W. Pen and I sat all the morning by the Thames."]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv(lexicon_cache.ENV, "on")
    return tmp_path / "xdg" / "londonlm" / "lexicons"


@pytest.fixture
def saved(tmp_path):
    return build_lexicon(TEXTS).save(tmp_path / "lex.json.gz")


def same(a: PeriodLexicon, b: PeriodLexicon) -> None:
    assert a.unigrams == b.unigrams and a.bigrams == b.bigrams and a.made_from == b.made_from
    assert a._lp == b._lp and a.total == b.total and a.unseen == b.unseen
    assert [a.logp_after(*p.split(" ")) for p in a.bigrams] == [b.logp_after(*p.split(" ")) for p in b.bigrams]
    for key in ("thames", "tbc", "southwark"):
        assert a.char_logp(key) == b.char_logp(key)
    assert a.vocabulary(1) == b.vocabulary(1) and a.vocabulary(2) == b.vocabulary(2)


def test_the_copy_gives_the_same_lexicon_as_the_file(cache, saved, monkeypatch):
    first = PeriodLexicon.load(saved)
    copies = list(cache.glob("*.pickle"))
    assert len(copies) == 1
    monkeypatch.setattr(PeriodLexicon, "decode", lambda *a: pytest.fail("decoded again: the copy was not used"))
    same(PeriodLexicon.load(saved), first)
    monkeypatch.undo()
    monkeypatch.setenv(lexicon_cache.ENV, "off")
    same(PeriodLexicon.load(saved), first)


@pytest.mark.parametrize("damage", [b"", b"not a pickle at all", b"\x80\x05\x95"])
def test_a_damaged_copy_is_rebuilt_with_a_warning(cache, saved, damage):
    good = PeriodLexicon.load(saved)
    copy = next(cache.glob("*.pickle"))
    copy.write_bytes(damage)
    warnings: list[str] = []
    same(PeriodLexicon.load(saved, log=warnings.append), good)
    assert len(warnings) == 1 and "rebuilt" in warnings[0] and str(copy) in warnings[0]
    assert lexicon_cache.read_tables(copy, lexicon_cache.cache_key(saved.read_bytes(), lexicon_module.__file__)) is not None


def test_a_copy_that_would_run_code_is_refused(cache, saved):
    PeriodLexicon.load(saved)
    copy = next(cache.glob("*.pickle"))
    copy.write_bytes(pickle.dumps({"key": {}, "tables": {"x": os.getcwd}}))  # (a function: a global)
    warnings: list[str] = []
    PeriodLexicon.load(saved, log=warnings.append)
    assert warnings and "not a lexicon table" in warnings[0]


def test_a_stale_copy_is_not_used(cache, saved, monkeypatch):
    old = PeriodLexicon.load(saved)
    # other bytes: another name, another copy
    build_lexicon(TEXTS + ["A new word: Cheapside."]).save(saved)
    assert "cheapside" in PeriodLexicon.load(saved) and "cheapside" not in old
    assert len(list(cache.glob("*.pickle"))) == 2
    # the same bytes, code that derives other tables: rebuilt, silently
    monkeypatch.setattr(lexicon_cache, "_code_digest", lambda code: "other code")
    copy = cache / f"{lexicon_cache.cache_key(saved.read_bytes(), lexicon_module.__file__)['source']}.pickle"
    before = copy.read_bytes()
    warnings: list[str] = []
    PeriodLexicon.load(saved, log=warnings.append)
    assert not warnings and copy.read_bytes() != before


def test_only_the_latest_copies_are_kept(cache, tmp_path):
    for i in range(lexicon_cache.KEEP + 2):
        path = build_lexicon(TEXTS + [f"word{'x' * i}"]).save(tmp_path / f"l{i}.json.gz")
        PeriodLexicon.load(path)
    assert len(list(cache.glob("*.pickle"))) == lexicon_cache.KEEP


def test_an_unwritable_cache_still_loads(tmp_path, monkeypatch, saved):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.setenv(lexicon_cache.ENV, "on")
    assert "thames" in PeriodLexicon.load(saved)


def test_a_bad_lexicon_is_refused_as_before(cache, tmp_path):
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(LexiconError, match="not a period lexicon"):
        PeriodLexicon.load(bad)
    with pytest.raises(LexiconError, match="not a period lexicon"):
        PeriodLexicon.load(tmp_path / "missing.json.gz")
    assert not list(cache.glob("*.pickle"))

