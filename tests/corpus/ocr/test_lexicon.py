"""The period lexicon: words and pairs counted from transcribed text, keys that fold the long s
and case, halves of line-broken words never counted as words, capitals in mid-sentence, a
bounded model, a file that round-trips and a damaged one refused in one line."""
from __future__ import annotations

import gzip
import json
import math

import pytest

from londonlm.corpus.ocr import lexicon as lexicon_module
from londonlm.corpus.ocr.lexicon import BACKOFF, FORMAT, LexiconError, PeriodLexicon, build_lexicon, word_key


def test_keys_fold_case_long_s_and_curly_apostrophe():
    assert word_key("Yeſterday") == "yesterday"
    assert word_key("Hop’d") == "hop'd"


def test_counts_words_and_pairs_and_keeps_what_is_evidence():
    lex = build_lexicon(["the watch cried the hour", "the watch slept"], min_count=2)
    assert lex.count("the") == 3 and lex.count("watch") == 2
    assert "cried" not in lex  # seen once: no evidence
    assert lex.logp_after("the", "watch") > lex.logp_after("watch", "the")
    # an unseen pair backs off to the unigram
    assert lex.logp_after("watch", "the") == pytest.approx(BACKOFF + lex.logp("the"))
    # a pair's is its count over its first word's, at most 1 (worked out as asked, the same each time)
    assert lex.logp_after("the", "watch") == math.log(2 / 3) == lex.logp_after("the", "watch")
    assert lex.logp_after(None, "watch") == BACKOFF + lex.logp("watch")


def test_a_pair_counted_no_times_is_refused_with_the_file(tmp_path):
    path = tmp_path / "lex.json.gz"
    path.write_bytes(gzip.compress(json.dumps({"format": FORMAT, "unigrams": {"the": 3, "watch": 2},
                                               "bigrams": {"the watch": 0}}).encode()))
    with pytest.raises(LexiconError, match="malformed period lexicon .*no times"):
        PeriodLexicon.load(path)


def test_line_broken_words_count_whole_and_compounds_keep_their_halves():
    lex = build_lexicon(["an atten-\ntion to the atten- tion of the to-morrow"] * 2)
    assert lex.count("attention") == 4
    assert "atten" not in lex and "tion" not in lex
    assert lex.count("morrow") == 2 and "tomorrow" not in lex  # "to-morrow" stays two words, as printed


def test_capitals_in_mid_sentence_tell_names_from_words():
    text = "We went to London in May, and in London we saw the Tower. In the end we came home in June."
    lex = build_lexicon([text] * 3)
    assert lex.capital_share("london") > 0.6
    assert lex.capital_share("in") < 0.15  # "In" opens a sentence: not counted as mid-sentence


def test_caps_keep_the_most_frequent():
    lex = build_lexicon(["a a a a b b b c c"] * 2, max_words=2, max_pairs=1)
    assert set(lex.unigrams) == {"a", "b"}
    assert len(lex.bigrams) == 1


def test_vocabulary_and_its_prefixes():
    known, prefixes = build_lexicon(["the watch the watch"]).vocabulary(2)
    assert known == {"the", "watch"}
    assert {"", "t", "th", "w", "wat", "watch"} <= prefixes and "x" not in prefixes


def test_file_round_trip_and_damaged_files(tmp_path):
    lex = build_lexicon(["the Watch of London, the watch"] * 2, made_from={"what": "test"})
    back = PeriodLexicon.load(lex.save(tmp_path / "lex.json.gz"))
    assert back.unigrams == lex.unigrams and back.bigrams == lex.bigrams and back.capitals == lex.capitals
    assert back.made_from["what"] == "test" and back.sha256() == lex.sha256()
    (tmp_path / "bad.json.gz").write_bytes(b"not gzip")
    with pytest.raises(LexiconError, match="not a period lexicon"):
        PeriodLexicon.load(tmp_path / "bad.json.gz")
    (tmp_path / "other.json.gz").write_bytes(gzip.compress(b'{"format": 99}'))
    with pytest.raises(LexiconError, match="format"):
        PeriodLexicon.load(tmp_path / "other.json.gz")
    (tmp_path / "deep.json.gz").write_bytes(gzip.compress(b"[" * 100_000 + b"]" * 100_000))  # past the parser's depth
    with pytest.raises(LexiconError, match="not a period lexicon"):
        PeriodLexicon.load(tmp_path / "deep.json.gz")


def test_a_lexicon_that_unpacks_past_the_limit_is_refused_without_unpacking_it_whole(tmp_path, monkeypatch):
    """Was: ``gzip.decompress`` of a --lexicon file unpacked a gzip bomb whole (a few hundred KB
    to gigabytes). Damaged deflate data (a ``zlib.error``, no OSError) was a traceback."""
    monkeypatch.setattr(lexicon_module, "MAX_LEXICON_BYTES", 1 << 20)  # stands for 256 MiB
    bomb = tmp_path / "bomb.json.gz"
    bomb.write_bytes(gzip.compress(b" " * (16 << 20)))  # 16 MiB of spaces: ~16 KB packed
    with pytest.raises(LexiconError, match="unpacks to more than 1 MiB, more than any period lexicon holds"):
        PeriodLexicon.load(bomb)
    lex = build_lexicon(["the Watch of London, the watch"] * 2)
    packed = bytearray((lex.save(tmp_path / "lex.json.gz")).read_bytes())
    packed[12:20] = b"\xff" * 8  # deflate data damaged past the header
    (tmp_path / "damaged.json.gz").write_bytes(bytes(packed))
    with pytest.raises(LexiconError, match="not a period lexicon"):
        PeriodLexicon.load(tmp_path / "damaged.json.gz")


def test_an_empty_corpus_is_refused():
    with pytest.raises(LexiconError, match="empty"):
        build_lexicon(["", "123 456"])


def test_letters_tell_a_word_of_the_period_from_ocr_debris():
    text = "the watch and the weather, the whole of the world with the wheel and the thatch " * 3
    lex = build_lexicon([text])
    assert lex.char_logp("whether") > lex.char_logp("wbetber")
    assert lex.char_logp("thatched") > lex.char_logp("tliatcbed")


def test_letters_set_close_to_a_number_are_not_words():
    lex = build_lexicon(["On the 4th of May he paid 5s. 6d. and 3l. for 2nd hand goods; hop'd o'clock."])
    assert {"th", "s", "d", "l", "nd"}.isdisjoint(lex.unigrams)
    assert {"the", "of", "may", "paid", "hand", "hop'd", "o'clock"} <= set(lex.unigrams)
    assert "the of" not in build_lexicon(["On the 4th of May, on the 5th of June"], min_pair_count=1).bigrams
