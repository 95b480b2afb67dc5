"""The OCR corrector: misreadings undone where the period's evidence is strong (the long s as
printed or as s, b/h, li/h, lost line-end hyphens, words run together), and everything the
period wrote left alone: its spellings and elisions, numbers, sums and dates, names in
mid-sentence, words a document uses too often to be misreadings, clean text."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings, strategies as st
from ocr_fixtures import OCR, PERIOD, confusions_without, period_lexicon

from londonlm.corpus.ocr.confusions import load_confusions
from londonlm.corpus.ocr.repair import OcrRepairer, RepairSettings

LEX = period_lexicon("The Baker came with the Bread on the 27th of May. " * 3)
NOISY = "Tbe Bakcr came, aud tbe Court met Bakcr at tbe Hall; fome Villains liad a Defign on tbe Bread. "


def repairer(**settings) -> OcrRepairer:
    return OcrRepairer(LEX, load_confusions(), RepairSettings(**settings))


def apply(text: str, changes) -> str:
    out, pos = [], 0
    for c in changes:
        assert text[c.start:c.start + len(c.before)] == c.before
        out += [text[pos:c.start], c.after]
        pos = c.start + len(c.before)
    return "".join(out) + text[pos:]


def test_long_s_print_is_restored_as_printed_or_as_s():
    done = repairer().repair(OCR, 1744)
    assert done.long_s
    assert done.text.startswith("Yeſterday the Lords of the Admiralty commiſſioned the following Ships")
    for word in ("ſome", "Deſign", "ſet", "Veſſels", "Treaſon", "Correſpondence", "all the small"):
        assert word in done.text
    modern = repairer(long_s_output="modern").repair(OCR, 1744).text
    assert modern.startswith("Yesterday the Lords") and "ſ" not in modern


def test_the_long_s_is_decided_by_the_year_and_the_texts_evidence():
    r = repairer()
    assert not r.repair("The Court met at tbe Hall to hear the Merchants.", 1880).long_s
    assert r.repair(OCR, None).long_s                       # undated: fome, Defign, Treafon are its evidence
    assert not repairer(long_s="off").repair(OCR, 1744).long_s


def test_the_periods_own_spellings_and_elisions_stay():
    text = "tbe Lord Mayor did shew the connexion, and To-morrow 'tis hop'd the Vessels are mann'd. " * 2
    done = repairer().repair(text, 1750)
    assert {c.before for c in done.changes} == {"tbe"}
    for word in ("shew", "connexion", "To-morrow", "'tis", "hop'd", "mann'd"):
        assert word in done.text


def test_numbers_dates_and_sums_are_never_touched_but_a_misread_sum_beside_a_sum_is():
    text = "tbe Court will sit on the 27th of May 1744, and the Merchants will attend with £5 10s. 6d. and Is. 6d. " * 2
    done = repairer().repair(text, 1744)
    assert {(c.before, c.after, c.kind) for c in done.changes} == {("tbe", "the", "word"), ("Is", "1s", "sum")}
    assert "with £5 10s. 6d. and 1s. 6d." in done.text
    assert not repairer(sums=False).repair(text, 1744).text.count("1s.")


def test_the_pronoun_read_as_a_figure_where_the_next_word_follows_i():
    lex = period_lexicon("of which I am sure, and I shall go, and I saw him. Clauses one and two of the year. " * 20)
    text = NOISY + "of which 1 am sure, and 1 shall go; Clauses 1 and 2 of the 1 year. "
    done = OcrRepairer(lex, load_confusions()).repair(text, 1790)
    assert "of which I am sure, and I shall go; Clauses 1 and 2 of the 1 year." in done.text
    assert {c.kind for c in done.changes if c.after == "I"} == {"pronoun"}
    assert "which 1 am" in OcrRepairer(lex, load_confusions(), RepairSettings(pronoun=None)).repair(text, 1790).text


def test_the_pronoun_read_as_a_figure_at_the_start_of_a_sentence_but_not_a_numbered_item():
    lex = period_lexicon("of which I am sure. I saw him go, and I shall go. Clauses one and two. " * 20)
    text = NOISY + "the Evening was cold. 1 saw him go! 1 shall go. Clauses: 1. and 2. of the Act. "
    done = OcrRepairer(lex, load_confusions()).repair(text, 1790)
    assert "was cold. I saw him go! I shall go. Clauses: 1. and 2." in done.text


def test_a_word_the_paired_data_saw_misread_often_takes_that_words_own_probability():
    # the letters' rule makes "be" read as "he" too unlikely for the context; the word rule
    # (3 in 10 readings of "be", say) does not, and "he said" stays
    lex = period_lexicon("the Bread will be made, and he said the Bread will be sold; he came. " * 6)
    shipped = load_confusions()
    letters = dict(shipped.rules, h=[(g, -7.5 if g == "b" else lp) for g, lp in shipped.rules["h"]])
    conf = replace(shipped, rules=letters, words={"he": [("be", math.log(0.3))]})
    text = NOISY + "The Bread will he made, and he said so. "
    on = OcrRepairer(lex, conf, RepairSettings(max_deficit=12)).repair(text, 1790)
    assert "The Bread will be made, and he said" in on.text
    off = OcrRepairer(lex, conf, RepairSettings(max_deficit=12, word_channel=False)).repair(text, 1790)
    assert "The Bread will he made" in off.text


def test_a_word_repaired_is_the_next_words_context():
    # "wiil" is no word, so no evidence for "he" after it, until it is repaired to "will"
    lex = period_lexicon("the Bread will be made, and he said the Bread will be sold; he came. " * 6)
    conf = replace(load_confusions(), words={"he": [("be", math.log(0.3))]})
    text = NOISY + "The Bread wiil he zqx, and the Bread will he zqx; he came. "
    done = OcrRepairer(lex, conf, RepairSettings()).repair(text, 1790)
    assert "The Bread will be zqx, and the Bread will be zqx; he came." in done.text


def test_the_word_an_unknown_neighbour_likely_stands_for_is_context():
    # "rnade" is no word; "made", the word it most likely stands for, is what follows "he"
    lex = period_lexicon("he said the Bread is to be made; he came. " * 6)
    conf = replace(load_confusions(), words={"he": [("be", math.log(0.3))]})
    done = OcrRepairer(lex, conf, RepairSettings()).repair(NOISY + "zqx he rnade, and zqx he made; he came. ", 1790)
    assert "zqx be made, and zqx be made; he came." in done.text


def test_a_capital_a_rule_made_of_a_small_letter_is_small_in_mid_sentence():
    # the rules say "l" is likelier a capital I than a small i; a sentence's first word is "In",
    # in mid-sentence the period wrote "in"
    shipped = load_confusions()
    conf = replace(shipped, rules=dict(shipped.rules, l=[("I", -1.0), ("i", -6.0)]))
    lex = period_lexicon("In the Evening he came in the House, and in the Hall. " * 4)
    done = OcrRepairer(lex, conf, RepairSettings()).repair(NOISY + "ln the Evening he came ln the House, and ln the Hall. ",
                                                           1790)
    assert "In the Evening he came in the House, and in the Hall." in done.text


def test_a_word_read_as_a_single_letter_but_not_a_letter_that_stands_for_one():
    lex = period_lexicon("he was in the House in the Evening, and it was one o'clock. " * 20 + "at ten p. m. and")
    text = NOISY + "he was m the House m the Evening at ten p. m. and it was one o'clock. "
    done = OcrRepairer(lex, load_confusions()).repair(text, 1790)
    assert "he was in the House in the Evening at ten p. m. and" in done.text
    assert "was m the" in OcrRepairer(lex, load_confusions(), RepairSettings(single_letters=False)).repair(
        text, 1790).text


def test_a_capitalised_word_in_mid_sentence_is_a_name_until_the_evidence_is_overwhelming():
    r = repairer(name_margin=1000.0)
    done = r.repair(NOISY, 1790).text
    assert done.startswith("The Bakcr came") or done.startswith("Tbe Bakcr came")  # "Bakcr" after a word: a name
    assert "met Bakcr at" in done
    assert "Baker came to" in r.repair("Bakcr came to the Court. " + NOISY, 1790).text  # opens a sentence


def test_words_the_ocr_split_or_ran_together():
    r = repairer()
    assert r.repair("tbe Bakers have pre vailed upon the Court, and ofthe Merchants.", 1780).text == \
        "the Bakers have pre- vailed upon the Court, and of the Merchants."   # flattened: the hyphen the line lost
    lined = "tbe Bakers have pre\nvailed upon the Court, and the Merchants\nwere heard.\n"
    assert r.repair(lined, 1780).text.startswith("the Bakers have prevailed\nupon the Court")
    assert "pre- vailed" in r.repair("tbe Bakers have pre-vailed upon the Court.", 1780).text


def changed(text: str, **settings) -> set[str]:
    return {c.before for c in repairer(**settings).repair(text, 1790).changes}


def test_a_word_the_document_uses_often_is_its_own():
    # "Streete" (Stow's spelling) four times in a short text: more than misreadings of "Street" could give
    once, often = ("tbe Lords met. " + " ".join(["The Streete was set."] * n) + " tbe Court liad a Defign."
                   for n in (1, 4))
    assert "Streete" in changed(once) and "Streete" not in changed(often)
    assert "Streete" in changed(often, doc_min_count=0)
    assert "tbe" in changed(often)  # "tbe" is misreadings of "the" however often it comes


def test_clean_text_is_left_alone():
    assert repairer().repair(PERIOD, 1750).changes == []


def test_a_clean_text_makes_every_misreading_less_likely():
    r = repairer()
    clean, noisy = PERIOD.split(), NOISY.split()
    assert r._noise_adjustment(clean, [0.0] * len(clean)) < -10
    assert r._noise_adjustment(noisy, [None] * len(noisy)) == 0.0


def test_changes_say_where_what_and_why():
    done = repairer().repair(NOISY, 1790)
    assert apply(NOISY, done.changes) == done.text
    first = done.changes[0].to_dict()
    assert set(first) == {"at", "from", "to", "kind", "gain", "channel"} and first["gain"] > 0 > first["channel"]


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("tbehofaslicnu ſf.,-'\n0123456789TBLMé")), max_size=80))
def test_any_text_repairs_to_what_its_changes_say(text):
    done = repairer().repair(text, 1744)
    assert apply(text, done.changes) == done.text


def test_a_long_text_is_repaired_in_pieces_as_it_would_be_whole(monkeypatch):
    import londonlm.corpus.ocr.repair as m

    text = (OCR + "\n") * 6
    whole = repairer().repair(text, 1744)
    monkeypatch.setattr(m, "PIECE", 700)
    r = repairer()
    seen, inner = [], r._repair
    monkeypatch.setattr(r, "_repair", lambda t, y: seen.append(len(t)) or inner(t, y))
    pieces = r.repair(text, 1744)
    assert len(seen) > 3 and max(seen) <= 700
    assert pieces.text == whole.text and apply(text, pieces.changes) == pieces.text
    assert len(pieces.changes) == len(whole.changes)


def test_an_unknown_word_that_looks_like_the_periods_is_likelier_than_debris():
    r = repairer()
    assert r._unknown("bakery") > r._unknown("bakcry") and r._unknown("tbe") < repairer(char_weight=0)._unknown("tbe")


def test_a_capital_i_read_for_a_small_one_but_not_a_sum():
    lex = period_lexicon("and it is good, and he paid, and it is here. " * 300)  # "is": never a capital in mid-sentence
    text = NOISY + "and tbe Court said it Is good, and paid Is. 6d. for tbe Bread. "
    out = OcrRepairer(lex, load_confusions()).repair(text, 1790).text
    assert "it is good" in out and "paid 1s. 6d." in out  # a sum, not a small i


def test_the_thorough_search_goes_deeper():
    deep = RepairSettings.thorough(long_s_output="modern")
    assert deep.max_edits == 3 and deep.floor < RepairSettings().floor and deep.long_s_output == "modern"


def test_a_letter_read_as_an_apostrophe_inside_an_unknown_word():
    text = NOISY + "the small Vessels to be ful'y mann'd. "
    done = repairer().repair(text, 1790)
    assert "to be fully mann'd" in done.text  # "mann'd" is the period's elision, never searched


def test_a_letter_read_as_a_stop_or_hyphen_cuts_a_word_the_whole_is_repaired():
    text = NOISY + "the Merch.nts of the City, and he w.s examined. "
    done = repairer().repair(text, 1790)
    assert "the Merchants of the City, and he was examined." in done.text
    assert {c.kind for c in done.changes if c.after in ("Merchants", "was")} == {"glued"}
    off = repairer(glued=False).repair(text, 1790).text  # (the pieces may be repaired apart, never whole)
    assert "Merchants" not in off and "w.s" in off


def test_two_words_set_close_and_a_line_end_hyphen_are_not_glued():
    text = NOISY + "the Lord Mayor.The Court heard the Mer-chants. "
    done = repairer().repair(text, 1790)
    assert "Lord Mayor" in done.text and not any(c.kind == "glued" for c in done.changes)


def test_a_letter_read_as_a_space_beside_a_stray_letter():
    text = NOISY + "The Soldier was taken Care of, and his L g was cut off yesterday. "
    assert "and his Leg was cut off" in repairer().repair(text, 1790).text
    assert "his L g was" in repairer(glued=False).repair(text, 1790).text


def test_a_letter_read_as_a_space_between_two_longer_pieces():
    lex = period_lexicon("the Bakers met at the Hall " * 3)
    two = NOISY + "the Bak rs met at the Hall. "  # neither half a stray letter
    done = OcrRepairer(lex, load_confusions()).repair(two, 1790)
    assert "the Bakers met at the Hall" in done.text and any(c.kind == "glued" for c in done.changes)


def test_a_space_between_two_long_pieces_is_the_thorough_search_s():
    # both pieces longer than glued_space letters: a search per word pair of a noisy text, left
    # to the thorough search
    lex = period_lexicon("the Patronage of the Court " * 3)
    text = NOISY + "the Patro age of the Court. "
    default = OcrRepairer(lex, load_confusions()).repair(text, 1790).text
    assert "the Patro age of" in default
    for settings in (RepairSettings.thorough(), RepairSettings(glued_space=5)):
        assert "the Patronage of the Court" in OcrRepairer(lex, load_confusions(), settings).repair(text, 1790).text


def test_a_join_that_beats_a_glued_repair_wins():
    # "w ill": the space read for a letter gives "wall", but the space merely added gives "will"
    lex = period_lexicon("the wall of the Court " * 3)
    done = OcrRepairer(lex, load_confusions()).repair(NOISY + "the Court w ill sit again. ", 1790)
    assert "the Court will sit again" in done.text


def test_a_misreading_the_document_makes_often_is_not_its_own_word():
    # "tiie" eight times and "the" never: too often to be a misreading by the model's average
    # rate, but its letters are unlike the period's words ("Streete"'s are like them)
    text = "Tbe Bakcr came. " + " ".join(["Tiie Court of tiie City met at tiie Hall."] * 4)
    assert "Tiie" in changed(text)  # (a sentence's first word: its only evidence is its prior)
    assert "Tiie" not in changed(text, own_min_char=-99.0)


def test_a_unit_after_a_number_is_left_alone():
    lex = period_lexicon("he said go to the sale, and go home. " * 30)
    text = NOISY + "he bid 440 gs for the Horse, and gs more. "
    done = OcrRepairer(lex, load_confusions()).repair(text, 1790)
    assert "440 gs for" in done.text
    assert "440 gs for" not in OcrRepairer(lex, load_confusions(), RepairSettings(unit_letters=0)).repair(text, 1790).text


def test_a_word_too_garbled_for_the_rules_takes_a_near_word_of_the_period():
    lex = period_lexicon("The Baker came with the Bread on the 27th of May, and Caesar heard it. " * 6, times=6)
    text = NOISY + "A Bill is ordered into Parlxamcnt, and the Merchants will attend with their Acxqunts. "
    done = OcrRepairer(lex, load_confusions(), RepairSettings(near=4, near_min_count=5)).repair(text, 1790)
    assert "into Parliament, and" in done.text and "with their Accounts." in done.text
    deep = OcrRepairer(lex, load_confusions(), RepairSettings.thorough()).repair(text, 1790).text
    assert "into Parliament, and" in deep and "with their Accounts." in deep
    # the default mode searches only the period's common words (seen near_min_count times: its time)
    off = OcrRepairer(lex, load_confusions()).repair(text, 1790).text
    assert "Parlxamcnt" in off and "Acxqunts" in off
    common = period_lexicon("The Baker came with the Bread on the 27th of May, and Caesar heard it. " * 6, times=50)
    on = OcrRepairer(common, load_confusions()).repair(text, 1790).text
    assert "into Parliament, and" in on and "with their Accounts." in on
    # a word with a letter the period's words hold (its loans and names) is never searched
    loans = period_lexicon("The Baker came with the Bread on the 27th of May, and Caesar heard it. " * 6
                           + "Mariæ ", times=6)
    loan = OcrRepairer(loans, load_confusions(), RepairSettings(near=4, near_min_count=5)).repair(NOISY + "the Merchants heard Cæsar at the Court. ", 1790)
    assert "Cæsar" in loan.text


def test_a_mark_or_a_letter_the_period_never_printed_among_letters_is_a_misread_letter():
    """ABBYY's OCR of the Sydney Morning Herald reads s as « or », r as í, c as \\: a model learned
    from OCR that never read them has no rule for them, and no word of the period holds them, so
    the near search takes the word; a mark apart from letters, a number's, and a letter the
    period's words hold are left."""
    lex = period_lexicon("Mariæ ", times=50)
    model = confusions_without("«»í\\")
    text = NOISY + "th» Merchants will attend with their Account«, and the Mérchants of tho Cíty. " \
        "The Merchants « 1744» met the Mærchants of Mariæ. The Mer\\hants met. "
    got = OcrRepairer(lex, model).repair(text, 1790).text
    assert "the Merchants will attend with their Accounts, and the Merchants of the City." in got
    assert "The Merchants met." in got  # (a backslash: never printed)
    assert "The Merchants « 1744» met the Mærchants of Mariæ." in got  # (æ: the period's letter)
    # the near search alone finds them: without it they stand
    assert "th» Merchants" in OcrRepairer(lex, model, RepairSettings(near=0)).repair(text, 1790).text


def test_a_capital_read_for_a_small_i_in_mid_sentence_is_small():
    # "In" is a word (a sentence's first), but the period never set it with a capital in
    # mid-sentence, and OCR reads i as I
    lex = period_lexicon("the Watch was set in the Evening, and he was in an House on the Hill, and it is in. " * 150)
    text = NOISY + "the Goods were found In his House, and the Watch was set In the Evening. In the Morning "
    got = OcrRepairer(lex, load_confusions()).repair(text, 1790).text
    assert "found in his House" in got and "set in the Evening" in got
    assert "Evening. In the Morning" in got  # a sentence's first word keeps its capital


def test_the_halves_of_a_word_a_line_end_hyphen_breaks_are_no_words_to_repair():
    text = NOISY + "and the Mer-\nchants met at tbe Hall. "
    got = repairer().repair(text, 1790).text
    assert "the Mer-\nchants met at the Hall" in got  # not "Met-": a half is no word of its own


def test_a_candidate_the_document_itself_uses_is_likelier_there():
    """A cache model of the document: ``Acies`` is ``Aches`` by the period's counts, but this text
    sells ``Acres`` twice, so it is ``Acres`` here; a known word's candidates are not raised (a
    book's ``owners`` turned its ``owner`` into them), and None leaves the cache off."""
    lex = period_lexicon("the Bakers sold their Acres and the Lords bought Acorns. " + "the Soldier had Aches. " * 20)
    text = NOISY + "The Lords bought 20 Acres of the Bakers, and 30 Acres more, and the Merchants 40 Acies. "
    assert "the Merchants 40 Acres." in OcrRepairer(lex, load_confusions()).repair(text, 1790).text
    off = OcrRepairer(lex, load_confusions(), RepairSettings(cache_penalty=None)).repair(text, 1790).text
    assert "the Merchants 40 Aches." in off
    # a word a misread letter cut in two (a comma read for r or h) is raised the same way
    from londonlm.corpus.ocr.confusions import ConfusionModel

    fewer = period_lexicon("the Bakers sold their Acres and the Lords bought Acorns. " + "the Soldier had Aches. " * 6)
    glued = text.replace("40 Acies.", "40 Ac,es.")
    commas = ConfusionModel({",": [("r", -3.0), ("h", -2.0)]})
    assert "the Merchants 40 Acres." in OcrRepairer(fewer, commas).repair(glued, 1790).text
    assert "the Merchants 40 Aches." in OcrRepairer(fewer, commas, RepairSettings(cache_penalty=None)).repair(glued, 1790).text
    known = NOISY + "the owners came, the owners went, the owners sat, the owners met, and his owner stayed. "
    owners = period_lexicon("the owner came. " + "the owners came. " * 5)

    def scores(cache_penalty):  # (the close choice over "owner", as the repairer scored it)
        done = OcrRepairer(owners, load_confusions(), RepairSettings(cache_penalty=cache_penalty),
                           doubts=100.0).repair(known, 1790)
        return [d.scores for d in done.doubts if d.options[:2] == ["owner", "owners"]]
    assert scores(0.0) == scores(None) != []


def test_a_letter_the_repair_puts_after_a_small_letter_is_small():
    """The walk keeps the case of what it read: where this OCR reads s as B more often than as b,
    ``JameB`` came out ``JameS``. A capital the word itself has stays (``McDonald``)."""
    from londonlm.corpus.ocr.confusions import ConfusionModel
    from londonlm.corpus.ocr.repair import _small_after_small

    lex = period_lexicon("the Bakers sold their Acres and James Thomas bought it. the Lords heard the Merchants. " * 5)
    got = OcrRepairer(lex, ConfusionModel({"B": [("S", -2.0), ("s", -4.0)]})).repair(
        NOISY + "and JameB bought it, and the MerchantB heard it. ", 1790).text
    assert "and James bought it, and the Merchants heard it." in got
    assert _small_after_small("McDonald", "McDonakl") == "McDonald" and _small_after_small("JAmeS", "JameB") == "JAmes"
