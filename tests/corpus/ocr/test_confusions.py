"""The confusion model: rules learned from aligned word pairs with their probabilities, the
line-end hyphen and space rates, the long s only for long-s print, candidates that are every
known word the rules reach (the prefix pruning loses none), and the shipped model's file."""
from __future__ import annotations

import itertools
import json
import math

import pytest
from hypothesis import given, settings, strategies as st

from londonlm.corpus.ocr.confusions import (ConfusionError, ConfusionModel, _substring_counts, edit_segments, learn,
                                           load_confusions)
from londonlm.corpus.ocr.lexicon import word_key

PAIRS = [("fome", "ſome"), ("fet", "ſet"), ("fuch", "ſuch"), ("fun", "sun"), ("tbe", "the"), ("the", "the"),
         ("tbe", "the"), ("man", "man"), ("pre", "pre-"), ("how ever", "however"), ("ofthe", "of the"),
         ("ﬁre", "ﬁre")]


def test_learns_rules_with_their_probabilities():
    m = learn(PAIRS, min_count=2)
    alts = dict(m.rules["f"])
    # ſ printed 3 times (the gold's ſ), read as f 3 times; h printed 4 times (the x3, ſuch; the
    # pairs that split or join words are left out of the rules), read as b twice
    assert alts["ſ"] == pytest.approx(0.0)
    assert dict(m.rules["b"])["h"] == pytest.approx(math.log(2 / 4))
    assert m.hyphen == pytest.approx(math.log(1 / len(PAIRS)))
    assert m.split == m.join == pytest.approx(math.log(1 / len(PAIRS)))
    assert "s" not in alts  # "fun" for "sun" once: under min_count


def test_a_pair_counts_as_often_as_it_occurs_wherever_it_stands():
    """Each distinct pair is aligned once and weighted by its count: a pair given again later
    counts as if given together, and every count scales with the pairs repeated."""
    scattered = PAIRS + [("tbe", "the"), ("fun", "sun"), ("ofthe", "of the")]
    together = PAIRS[:4] + [("fun", "sun")] + PAIRS[4:5] + [("tbe", "the")] + PAIRS[5:] + [("ofthe", "of the")]
    assert learn(scattered, min_count=2).to_json() == learn(together, min_count=2).to_json()
    once, thrice = learn(PAIRS, min_count=1), learn(PAIRS * 3, min_count=1)
    assert thrice.made_by["words"] == 3 * once.made_by["words"]
    assert thrice.rules == once.rules and thrice.split == once.split and thrice.hyphen == once.hyphen
    assert "s" in dict(learn(PAIRS * 2, min_count=2).rules["f"])  # "fun" for "sun" twice now: a rule


def test_a_letter_read_as_a_space_is_a_rule_a_space_merely_added_is_not():
    m = learn([("noi e", "noise"), ("hou e", "house"), ("how ever", "however"), ("pre vailed", "pre-vailed")]
              + [("sun", "sun")] * 2, min_count=2)
    assert dict(m.rules[" "]) == {"s": pytest.approx(math.log(2 / 4))}  # s printed 4 times, twice read as a space
    assert not any(" " in o for o in learn([("how ever", "however"), ("pre vailed", "pre-vailed")] * 2).rules)


def test_a_short_word_misread_twice_over_is_learned():
    # "ami" for "and": two of three letters differ, one misreading of "nd" all the same
    m = learn([("ami", "and")] * 2 + [("and", "and")] * 2, min_count=2)
    assert dict(m.rules["mi"])["nd"] == pytest.approx(math.log(2 / 4))
    assert not learn([("ami", "and")] * 2, min_count=2, max_distance=0.5).rules  # the old cap left it out


def test_edit_segments_group_adjacent_edits():
    assert edit_segments("home", "liome") == [("h", "li", 0)]
    assert edit_segments("the", "the") == []


def known_of(words):
    keys = {word_key(w) for w in words}
    return keys, {k[:i] for k in keys for i in range(len(k) + 1)}


def brute_force(model, word, known, long_s, edits):
    """Every string the rules reach from ``word`` in at most ``edits`` undoings (any order)."""
    out, frontier = {}, {word: 0.0}
    for _ in range(edits):
        nxt = {}
        for w, base in frontier.items():
            for i, n in itertools.product(range(len(w)), range(1, 4)):
                for g, lp in model.rules.get(w[i:i + n], ()):
                    if "ſ" in g and not long_s:
                        continue
                    c = w[:i] + g + w[i + n:]
                    nxt[c] = max(nxt.get(c, -math.inf), base + lp)
        frontier = nxt
        out.update({c: lp for c, lp in nxt.items() if word_key(c) in known and c != word})
    return set(out)


@pytest.mark.parametrize("word", ["tbe", "fome", "Tbe", "fuch", "tlie"])
def test_candidates_are_the_known_words_the_rules_reach(word):
    m = ConfusionModel({"b": [("h", -1.0)], "f": [("ſ", -0.5)], "li": [("h", -2.0)], "c": [("e", -1.5)]})
    known, prefixes = known_of(["the", "some", "such", "The", "she"])
    for long_s in (True, False):
        got = m.candidates(word, known, prefixes, word_key, long_s=long_s, floor=-20, beam=-20)
        assert set(got) == brute_force(m, word, known, long_s, 2)
    assert "ſome" not in m.candidates("fome", known, prefixes, word_key, long_s=False)


def test_a_word_misread_as_another_often_enough_is_a_word_rule():
    # "be" printed 10 times as a word, 3 of them read "he" ("he," too: the stop is no part of it);
    # the letter rule b -> h counts every b ("but" 6 times) and says less
    pairs = [("he", "be")] * 2 + [("he,", "be,")] + [("be", "be")] * 7 + [("but", "but")] * 6 + [("tbe", "the")]
    m = learn(pairs, min_count=1, word_min_count=2)
    assert m.word_channel("be", "he") == pytest.approx(math.log(3 / 10))
    assert dict(m.rules["h"])["b"] == pytest.approx(math.log(3 / 16))
    assert m.word_channel("the", "tbe") is None  # once: under word_min_count
    assert m.made_by["word_rules"] == 1
    assert not learn(pairs, min_count=1, word_min_count=4).words


def test_a_model_file_from_before_word_rules_still_loads(tmp_path):
    data = learn(PAIRS, min_count=1).to_json()
    del data["words"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert load_confusions(tmp_path / "old.json").words == {}


def test_the_shipped_model_says_how_it_was_made():
    m = load_confusions()
    assert "benchmarks/ocr_repair.py learn" in m.made_by["command"]
    assert "ſ" in dict(m.rules["f"])  # the long s read as f, the commonest misreading of 18th-century print


def test_model_files_round_trip_and_bad_ones_are_refused(tmp_path):
    m = learn(PAIRS, min_count=1, made_by={"data": "test"})
    back = load_confusions(m.save(tmp_path / "m.json"))
    assert back.rules.keys() == m.rules.keys() and back.made_by["data"] == "test"
    assert back.words.keys() == m.words.keys() and back.word_channel("the", "tbe") == pytest.approx(math.log(2 / 3), abs=1e-4)
    (tmp_path / "bad.json").write_text(json.dumps({"format": 1, "rules": {"f": [["s"]]}}))
    with pytest.raises(ConfusionError, match="malformed"):
        load_confusions(tmp_path / "bad.json")
    (tmp_path / "bad_words.json").write_text(json.dumps({"format": 1, "rules": {}, "words": {"he": [["be"]]}}))
    with pytest.raises(ConfusionError, match="malformed"):
        load_confusions(tmp_path / "bad_words.json")
    with pytest.raises(ConfusionError, match="cannot read"):
        load_confusions(tmp_path / "missing.json")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)  # past the parser's depth
    with pytest.raises(ConfusionError, match="cannot read"):
        load_confusions(tmp_path / "deep.json")


def test_channel_scores_an_alignment_by_its_rules_and_a_price_for_the_rest():
    m = ConfusionModel({"b": [("h", -1.0)], "li": [("h", -2.0)], "tt": [("t", -0.5)]})
    assert m.channel("the", "tbe", -6.0) == -1.0
    assert m.channel("the", "tlie", -6.0) == -2.0
    assert m.channel("the", "thx", -6.0) == -6.0       # e read as x: no rule, one letter's price
    assert m.channel("the", "tbx", -6.0) == -12.0      # adjacent differences are one, of two letters
    assert m.channel("the", "the", -6.0) == 0.0
    # a printed string listed twice under one OCR string: the first listed counts
    twice = ConfusionModel({"b": [("h", -1.0), ("h", -3.0), ("l", -2.0)]})
    assert (twice.channel("the", "tbe", -6.0), twice.channel("tle", "tbe", -6.0)) == (-1.0, -2.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="abl-", max_size=6), max_size=40), st.sets(st.text(alphabet="abl-", max_size=3)))
def test_printed_strings_are_counted_as_in_the_words_joined(words, wanted):
    """Each string counted as often as it is printed (non-overlapping, within a word), as a count
    over the words joined by line breaks counts it, from the distinct words read once per count."""
    text = "\n".join(words)
    assert _substring_counts(words, wanted) == {g: text.count(g) for g in wanted if g}
