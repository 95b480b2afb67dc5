"""The corrector's shortcuts decide as the work they skip would: its caches (the language model's
scores, the keys, priors and character-model scores a text reads) hold what they would compute,
so a repair is the same from a cold repairer, a warm one and one whose caches empty at every
word; the walk's test before a glued search is the search's own; a document's own words found
in one pass are those a word-by-word pass finds; the strays found where a mark follows white
space, and the words of letters and digits found from their digits (the quality score's), are
every one their patterns find."""
from __future__ import annotations

import math
from collections import Counter

from hypothesis import given, settings, strategies as st
from ocr_fixtures import OCR, period_lexicon

from londonlm.corpus.ocr.confusions import load_confusions
from londonlm.corpus.ocr.lexicon import STRAY
from londonlm.corpus.ocr.repair import _GLUE, _TOKEN_SPLIT, TOKEN, OcrRepairer, RepairSettings, stray_tokens

LEX = period_lexicon("The Baker came with the Bread on the 27th of May. the Merchants was any body. " * 3)
NOISY = "Tbe Bakcr came, aud tbe Court met Bakcr at tbe Hall; fome Villains liad a Defign on tbe Bread. "
TRICKY = [
    NOISY, OCR, OCR.replace("\n", " "),
    NOISY + "the Merch.nts of the City, and he w.s examined; his L g was cut, B nevolent noi e. ",
    NOISY + "the Lord Mayor.The Court heard the Mer-chants, any body, pre vailed, ofthe Bakers, TheShoreham. ",
    NOISY + " ".join(["The Streete was set."] * 4) + " came In from 1 am, £1 Is. 6d. and 440 gs. ",
    "tbe Bakcr m the Hall, t, the Court. " * 2 + "Tbe Bakcr came. " * 5,
]


def repairer(**settings) -> OcrRepairer:
    return OcrRepairer(LEX, load_confusions(), RepairSettings(**settings))


def outcome(r: OcrRepairer, text: str) -> tuple:
    done = r.repair(text, 1790)
    return done.text, [c.to_dict() for c in done.changes], done.long_s


def test_a_repair_is_the_same_from_cold_warm_and_emptied_caches():
    cold = [outcome(repairer(), t) for t in TRICKY]
    warm = repairer()
    for t in TRICKY + TRICKY[::-1]:
        warm.repair(t, 1790)
    tiny = OcrRepairer(LEX, load_confusions(), RepairSettings(), cache_size=1)
    assert [outcome(warm, t) for t in TRICKY] == cold
    assert [outcome(tiny, t) for t in TRICKY] == cold
    thorough = [outcome(repairer(**vars(RepairSettings.thorough())), t) for t in TRICKY]
    assert [outcome(OcrRepairer(LEX, load_confusions(), RepairSettings.thorough(), cache_size=1), t)
            for t in TRICKY] == thorough


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from("tbe the Bakcr Baker came aud and Tbe The m in 1 I Is is . , - ; \n".split(" ")),
                max_size=40))
def test_any_text_repairs_the_same_whatever_the_caches_hold(tokens):
    text = " ".join(tokens)
    assert outcome(OcrRepairer(LEX, load_confusions(), RepairSettings(), cache_size=1), text) == \
        outcome(repairer(), text)


def test_the_language_models_cache_holds_what_it_computes():
    r = repairer()
    args = [("the", r._prior("the"), None, None), ("the", r._prior("the"), "of", "baker"),
            ("bakcr", None, "the", "came"), ("came", r._prior("came"), "zzz", None), ("bread", -3.5, "the", "on")]
    first = [r._lm(*a) for a in args]
    assert first == [r._lm_of(*a) for a in args] == [r._lm(*a) for a in args]


def test_a_glued_search_is_only_where_the_walk_looks_for_one():
    # the walk skips _glued where its own first test would: one mark of _GLUE between two tokens
    r, docs = repairer(), []
    r._strays = lambda doc, changes: docs.append(doc) or []
    for t in TRICKY:
        r.repair(t, 1790)
    found = 0
    for doc in docs:
        for i in range(len(doc.words) - 1):
            gap = doc.text[doc.starts[i] + len(doc.words[i]):doc.starts[i + 1]]
            if r._glued(doc, i) is not None:
                found += 1
                assert len(gap) == 1 and gap in _GLUE
    assert found >= 3


def _own_words_word_by_word(r: OcrRepairer, words, keys, priors, long_s):
    """_add_document_evidence as it was first written: a pass over the words for each key's first."""
    counts, total, least = Counter(keys), max(1, len(keys)), r.s.doc_min_count
    first = {}
    for w, k in zip(words, keys):
        if counts[k] >= least and k not in first:
            first[k] = w
    own = {}
    for k, w in first.items():
        cands = r._candidates(w, k, r._prior(k), long_s)
        could_be = sum((counts.get(ck, 0) + r.s.doc_slack * total * math.exp(p))
                       * min(1.0, r.s.doc_boost * math.exp(ch)) for _, ck, ch, p in cands if p is not None)
        if counts[k] > could_be and r.lex.char_logp(k) > r.s.own_min_char:
            own[k] = math.log(counts[k] / total) + r.s.doc_penalty
    return [own[k] if k in own and (p is None or own[k] > p) else p for k, p in zip(keys, priors)]


def test_a_documents_own_words_are_those_a_word_by_word_pass_finds():
    r = repairer()
    for text in TRICKY + ["Tiie Bakcr and tiie Streete, tiie Court. " * 6]:
        words = text.replace(".", " ").replace(",", " ").split()
        keys, priors = r._keys_and_priors(words)
        assert keys == [r._key(w) for w in words] and priors == [r._prior(k) for k in keys]
        expected = _own_words_word_by_word(r, words, keys, list(priors), False)
        r._add_document_evidence(words, keys, Counter(keys), priors, False)
        assert priors == expected


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(" \n\t\u00a0\u2003.,;:-^|¦'\"a1_é£$&*§{}")), max_size=30))
def test_the_strays_found_where_a_mark_follows_white_space_are_every_one(text):
    from londonlm.corpus.ocr.repair import _STRAY_START

    assert STRAY.pattern == rf"(?<!\S){_STRAY_START.pattern[2:]}+(?!\S)"  # (one class of marks)
    assert [(m.span(), m.group(0)) for m in stray_tokens(text)] == \
        [(m.span(), m.group(0)) for m in STRAY.finditer(text)]


def test_the_adaptations_pairs_keyed_at_once_are_those_keyed_word_by_word():
    from londonlm.corpus.ocr.adapt import text_pairs
    from londonlm.corpus.ocr.lexicon import word_key
    from londonlm.corpus.ocr.repair import TOKEN

    r = repairer()
    for text in TRICKY + ["İstanbul ÆTNA Ǆem tbe Bakcr’s Streete ſome Baker, Ǌ and the Bread. " * 2, ""]:
        done = r.repair(text, 1790)
        changed = {c.start: c.after for c in done.changes if c.kind == "word" and c.gain > 0.5}
        expected = [(m.group(0), changed[m.start()]) if m.start() in changed else (m.group(0), m.group(0))
                    for m in TOKEN.finditer(text)
                    if m.start() in changed or m.group(0).isalpha() and word_key(m.group(0)) in r.lex.unigrams]
        assert text_pairs(r, text, 1790, 0.5) == expected


def test_a_word_the_walk_skips_is_one_fix_word_leaves():
    # the walk asks _fix_word of a word whose search found nothing only where it is a capital of
    # _CASE_SHAPES: every other such word, _fix_word (through _fix_case) leaves as it is
    from londonlm.corpus.ocr.repair import _CASE_SHAPES

    lex = period_lexicon("and it is good, and he paid, and it is here. " * 300)  # "is": never a capital mid-sentence
    r, docs = OcrRepairer(lex, load_confusions()), []
    r._strays = lambda doc, changes: docs.append(doc) or []
    texts = TRICKY + ["It Was In the Hall; And The Court Met Him. " * 3,
                      NOISY + "and tbe Court said it Is good, and paid Is. 6d. for tbe Bread. "]
    for t in texts:
        r.repair(t, 1790)
    skipped = 0
    for doc in docs:
        for i, word in enumerate(doc.words):
            if r._cache.get((word, doc.long_s, doc.priors[i])) == () and word[0] not in _CASE_SHAPES:
                skipped += 1
                assert r._fix_word(doc, i) is None, word
    assert skipped > 20
    assert "it is good" in r.repair(texts[-1], 1790).text  # a capital of _CASE_SHAPES still is made small


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(" \n.,-'_a1Zé٣²ſ0\u00a0x")), max_size=30))
def test_the_words_of_letters_and_digits_found_from_their_digits_are_every_one(text):
    from londonlm.corpus.ocr.quality import _MIXED, mixed_words

    assert mixed_words(text) == [m.group(0) for m in _MIXED.finditer(text)]
    assert mixed_words("a" * 5000 + "1 x" + "b" * 3000 + " 2y 3 4to") == ["a" * 5000 + "1", "2y", "4to"]


def test_the_adaptations_first_pass_finds_the_same_pairs_without_strays():
    # adapt's first pass leaves strays (RepairSettings(strays=False)): their deletions are no word's pair
    from londonlm.corpus.ocr.adapt import confident_pairs

    lex = period_lexicon("The Baker came with the Bread on the 27th of May. " * 3)
    lex.marks["^"] = 1  # (the period set it alone once: a text's forty are debris)
    text = NOISY + " ^ tbe Court ^ met ^ Bakcr ^ at ^ the ^ Hall ^ and ^ fome ^ Villains ^ " * 3
    texts = [(text, 1790), (TRICKY[3], 1790), (OCR, 1750)]
    assert any(c.kind == "debris" for c in OcrRepairer(lex, load_confusions()).repair(text, 1790).changes)
    with_strays = confident_pairs(OcrRepairer(lex, load_confusions()), texts, min_gain=0.5)
    without = confident_pairs(OcrRepairer(lex, load_confusions(), RepairSettings(strays=False)), texts, min_gain=0.5)
    assert without == with_strays and any(o != g for o, g in without)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(" \n.,-'’_a1Zé«»ſ^\\\u00a0x")), max_size=30))
def test_the_tokens_split_out_with_their_places_are_those_the_pattern_finds(text):
    """The repair reads a text's tokens, and where each starts and ends, from one split of it."""
    parts = _TOKEN_SPLIT.split(text)
    assert parts[1::2] == TOKEN.findall(text) and "".join(parts) == text
    assert [m.span() for m in TOKEN.finditer(text)] == \
        [(sum(map(len, parts[:k])), sum(map(len, parts[:k + 1]))) for k in range(1, len(parts), 2)]
