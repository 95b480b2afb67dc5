"""The compiled candidate search (londonlm/corpus/ocr/_walk.c) against the Python walk it
replaces: the same candidates, log-probabilities and order, word for word."""
from __future__ import annotations

import random
import re

import pytest

from londonlm.corpus.ocr import confusions
from londonlm.corpus.ocr.confusions import ConfusionModel, load_confusions
from londonlm.corpus.ocr.lexicon import word_key
from londonlm.corpus.ocr.repair import OcrRepairer

from ocr_fixtures import OCR, PERIOD, period_lexicon

compiled = pytest.mark.skipif(confusions._CompiledWalker is None,
                              reason="the compiled walk is not built here (no C compiler at install: "
                                     "`python setup.py build_ext --inplace` builds it)")
SEARCHES = [dict(max_edits=1, floor=-10.0, beam=-8.0, fanout=20), dict(max_edits=2, floor=-14.0, beam=-8.0, fanout=20),
            dict(max_edits=3, floor=-18.0, beam=-12.0, fanout=40), dict(max_edits=2, floor=-14.0, beam=-8.0, fanout=-3)]


def words_to_try(seed: int = 0) -> list[str]:
    """The fixture's OCR and period words, and each with a few random misreadings the shipped
    model knows (so that first and second undoings, ties and the long s are all exercised)."""
    words = sorted(set(re.findall(r"[A-Za-zſ0-9'.,-]+", OCR + PERIOD)))
    rules = load_confusions().rules
    backwards = [(g, o) for o, alts in rules.items() for g, _ in alts]
    rng = random.Random(seed)
    for w in list(words):
        for _ in range(3):
            g, o = rng.choice(backwards)
            at = w.find(g)
            words.append(w[:at] + o + w[at + len(g):] if at >= 0 else w + o)
    return words + ["", "ü", "İstanbul", "a" * 60]


def both_walks(model: ConfusionModel, word: str, known, prefixes, **search) -> tuple[list, list]:
    out = []
    for use_compiled in (True, False):
        model.compiled = use_compiled
        for long_s in (False, True):
            out.append(list(model.candidates(word, known, prefixes, word_key, long_s=long_s, **search).items()))
    return out[:2], out[2:]


@compiled
@pytest.mark.parametrize("search", SEARCHES)
def test_the_compiled_walk_finds_what_the_python_walk_finds_in_its_order(search):
    model = load_confusions()
    known, prefixes = period_lexicon().vocabulary(1)
    found = 0
    for word in words_to_try():
        fast, reference = both_walks(model, word, known, prefixes, **search)
        assert fast == reference, word
        found += bool(fast[0] or fast[1])
    assert found > 100  # the comparison is not of empty results


@compiled
def test_the_compiled_walk_on_an_empty_lexicon_and_odd_rules():
    model = ConfusionModel({"b": [("h", -1.0), ("b", -1.0)], "e": [("", -2.0)], "xyz": [("q", -0.5)],
                            "ii": [("İ", -1.0)], "c": [("e", -1.5), ("ee", -1.5)]})
    for vocabulary in ([], ["the", "thee", "q", "i̇", "tee"]):
        known = frozenset(word_key(w) for w in vocabulary)
        prefixes = frozenset(k[:i] for k in known for i in range(len(k) + 1))
        for word in ("tbe", "tbc", "xyz", "ii", "tcc", "e", "bbb"):
            fast, reference = both_walks(model, word, known, prefixes, max_edits=3, floor=-20.0, beam=-20.0, fanout=50)
            assert fast == reference, (vocabulary, word)


@compiled
def test_the_compiled_walk_at_nodes_with_many_children():
    """A node with nine children or more is looked up by letter in a table (ASCII) and searched
    otherwise (``é``, ``æ``, ``ſ``-free keys past ASCII): both give what the Python walk gives."""
    model = ConfusionModel({"b": [("h", -1.0), ("é", -1.5)], "c": [("e", -1.0), ("æ", -2.0)], "rn": [("m", -0.5)]})
    letters = "abcdefghijklmnopqrstuvwxyzéæœ"
    vocabulary = [f"t{c}" for c in letters] + [f"t{c}{d}" for c in letters for d in "ehm"] + ["é", "æsop", "tæ"]
    known = frozenset(word_key(w) for w in vocabulary)
    prefixes = frozenset(k[:i] for k in known for i in range(len(k) + 1))
    assert len({k[1] for k in known if len(k) > 1 and k[0] == "t"}) >= 9
    tried = ["tb", "tc", "tbe", "tcb", "trn", "tbrn", "b", "csop", "tæc", "tzz", "tœb", "t"] + [f"t{c}b" for c in letters]
    found = 0
    for word in tried:
        fast, reference = both_walks(model, word, known, prefixes, max_edits=2, floor=-10.0, beam=-10.0, fanout=20)
        assert fast == reference, word
        found += bool(fast[0])
    assert found > 20


@compiled
def test_the_compiled_walk_refuses_unsorted_keys():
    with pytest.raises(ValueError, match="sorted"):
        confusions._CompiledWalker({}, ["the", "and"])
    with pytest.raises(TypeError):
        confusions._CompiledWalker({"b": [("h", "h")]}, ["the"])


def test_without_the_compiled_walk_the_python_walk_answers(monkeypatch):
    monkeypatch.setattr(confusions, "_CompiledWalker", None)
    model = ConfusionModel({"b": [("h", -1.0)]})
    assert model.compiled is False
    known = frozenset({"the"})
    assert model.candidates("tbe", known, frozenset({"", "t", "th", "the"}), word_key) == {"the": -1.0}


@pytest.mark.parametrize("built, error, says", [
    (True, "", "OCR search: compiled walk in use"),
    (False, "No module named 'londonlm.corpus.ocr._walk'",
     "OCR search: compiled walk not built (no C compiler at install, or its build failed: bash install.sh says "
     "which); using the Python walk (same repairs, slower)"),
    (False, "_walk.so: undefined symbol: PyFoo", "(it does not load: _walk.so: undefined symbol: PyFoo); using the Python walk"),
])
def test_the_log_says_once_per_process_which_walk_the_search_runs(monkeypatch, capsys, built, error, says):
    """A repairer's first repair says on stderr whether the compiled walk is in use (the Python
    one is several times slower), once per process, not per repairer or text."""
    if built and confusions._CompiledWalker is None:
        pytest.skip("the compiled walk is not built here")
    monkeypatch.setattr(confusions, "_walk_announced", False)
    if not built:
        monkeypatch.setattr(confusions, "_CompiledWalker", None)
        monkeypatch.setattr(confusions, "_WALK_ERROR", error)
    lexicon = period_lexicon()
    model = ConfusionModel(load_confusions().rules)   # built under the patch: its walk is the patched one
    assert model.compiled is built
    repairers = [OcrRepairer(lexicon, model), OcrRepairer(lexicon, model)]
    assert capsys.readouterr().err == ""     # built, nothing repaired yet: nothing said
    for repairer in repairers:
        repairer.repair(OCR)
        repairer.repair(OCR)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and says in lines[0], lines


SCORINGS = [dict(own=-9.0, weight=1.0, least=-6.0), dict(own=-4.0, weight=0.7, least=-3.0),
            dict(own=-20.0, weight=1.3, least=-30.0)]


@compiled
@pytest.mark.parametrize("scoring", SCORINGS)
def test_the_compiled_scoring_keeps_what_the_python_loop_keeps_in_its_order(scoring):
    """``scored``: the candidates ranked against the word (prior, channel, threshold) in C give
    the tuples the Python loop over ``candidates`` gives, numbers and order alike."""
    model = load_confusions()
    lexicon = period_lexicon()
    known, prefixes = lexicon.vocabulary(1)
    kept = 0
    for search in SEARCHES[:3]:
        for word in words_to_try(seed=1):
            for long_s in (False, True):
                got = []
                for use_compiled in (True, False):
                    model.compiled = use_compiled
                    got.append(model.scored(word, known, prefixes, word_key, lexicon.logp, long_s=long_s,
                                            **scoring, **search))
                assert got[0] == got[1], (word, long_s)
                assert all(k != word_key(word) and static > scoring["least"] for static, _, k, _, _ in got[0])
                kept += len(got[0])
    assert kept > 20  # the comparison is not of empty results


@compiled
def test_the_compiled_scoring_needs_the_priors():
    model = ConfusionModel({"b": [("h", -1.0)]})
    rules = model._keyed(False, word_key)
    with pytest.raises(RuntimeError, match="logps"):
        confusions._CompiledWalker(rules, ["the"]).scored("tbe", "tbe", 1, -9.0, -9.0, 5, -5.0, 1.0, -9.0)
    with pytest.raises(ValueError, match="one per key"):
        confusions._CompiledWalker(rules, ["the", "thy"], [-1.0])
    walker = confusions._CompiledWalker(rules, ["the", "thy"], [-1.5, -4.0])
    assert walker.scored("tbe", "tbe", 1, -9.0, -9.0, 5, -5.0, 1.0, -9.0) == [(1.0 * (-1.5 + 5.0) - 1.0, "the", "the", -1.0, -1.5)]
    # built first without them (``candidates``), the walk is built again when ``scored`` asks
    known = frozenset({"the"})
    model.candidates("tbe", known, frozenset({"", "t", "th", "the"}), word_key)
    assert model.scored("tbe", known, frozenset(), word_key, {"the": -2.0}.get, -5.0, 1.0, -9.0) == \
        [(-2.0 + 5.0 - 1.0, "the", "the", -1.0, -2.0)]


# ---------------------------------------------------------------- the near-word search's scan
def _pool_and_keys(seed: int = 0):
    rng = random.Random(seed)
    letters = "abcdeilmnorstuſéw"
    pool = sorted({"".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(600)})
    rng.shuffle(pool)  # (an order that is not sorted: ties must come back in the pool's order)
    keys = [*pool[:80], *("".join(rng.choice(letters) for _ in range(rng.randint(1, 10))) for _ in range(300))]
    return pool, keys


@compiled
@pytest.mark.parametrize("limit", [0, 1, 2, 3, 4])
def test_the_compiled_near_scan_finds_what_rapidfuzz_finds_in_its_order(limit):
    """The words within ``limit`` edits, by distance and then by their order in the pool, as
    rapidfuzz's process.extract lists them (the long s and accented letters among them)."""
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    from londonlm.corpus.ocr._walk import near, near_masks

    pool, keys = _pool_and_keys()
    masks = near_masks(pool)
    for key in keys:
        want = [k for k, _, _ in process.extract(key, pool, scorer=Levenshtein.distance, score_cutoff=limit, limit=None)]
        assert near(key, pool, masks, limit) == want, key


@compiled
def test_the_compiled_near_scan_of_keys_past_64_letters_and_of_none():
    """A key of up to 64 letters is scanned a machine word at a time; a longer one, and the empty
    one, the letter-by-letter way: the same words either way."""
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    from londonlm.corpus.ocr._walk import near, near_masks

    rng = random.Random(3)
    base = "".join(rng.choice("abcdeſé") for _ in range(70))
    pool = [base[:n] + x for n in (62, 63, 64, 65, 66, 70) for x in ("", "a", "bb", "é")] + ["", "a", "ab"]
    masks = near_masks(pool)
    for key in (base[:63], base[:64], base[:65], base[:66] + "b", base, "", "a"):
        for limit in (0, 1, 2, 4):
            want = [k for k, _, _ in process.extract(key, pool, scorer=Levenshtein.distance, score_cutoff=limit,
                                                      limit=None)]
            assert near(key, pool, masks, limit) == want, (len(key), limit)


@compiled
def test_the_compiled_near_scan_refuses_masks_of_another_pool():
    from londonlm.corpus.ocr._walk import near, near_masks

    with pytest.raises(ValueError, match="near_masks"):
        near("tbe", ["the", "she"], near_masks(["the"]), 1)
    with pytest.raises(TypeError):
        near_masks(["the", 3])


@compiled
def test_a_repair_with_the_compiled_near_scan_is_the_same_as_without(monkeypatch):
    from londonlm.corpus.ocr import repair as repair_module
    from londonlm.corpus.ocr.repair import RepairSettings

    lexicon = period_lexicon()
    settings = RepairSettings(near_min_count=1)
    text = OCR + " Tbe Merchnts of tbe Cty met tbe Admirlty and tbe Aldrmen"
    with_it = OcrRepairer(lexicon, load_confusions(), settings)
    keys = [with_it._near_keys(k) for k in ("merchnts", "admirlty", "aldrmen", "cty")]
    assert any(keys)
    got = with_it.repair(text)
    monkeypatch.setattr(repair_module, "_compiled_near", None)
    without = OcrRepairer(lexicon, load_confusions(), settings)
    assert [without._near_keys(k) for k in ("merchnts", "admirlty", "aldrmen", "cty")] == keys
    assert without.repair(text) == got
