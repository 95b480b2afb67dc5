"""The confusion model adapted to a collection's OCR from its own confident repairs: rules mixed
by probability, the pairs a first pass gives, and repair_ocr.py adapting by default (--no_adapt: not)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from conftest import REPO
from ocr_fixtures import OCR, PERIOD, confusions_without, period_lexicon

from londonlm.corpus.ocr.adapt import adapt, confident_pairs, jsonl_texts
from londonlm.corpus.ocr.confusions import ConfusionModel, mix
from londonlm.corpus.ocr.repair import OcrRepairer, RepairSettings

SCRIPT = REPO / "02_data_collection" / "repair_ocr.py"


def test_mixed_rules_are_the_weighted_sum_of_their_probabilities():
    base = ConfusionModel({"b": [("h", math.log(0.1))], "o": [("e", math.log(0.01))]}, debris={"i": -9.0})
    other = ConfusionModel({"o": [("e", math.log(0.2))], "rn": [("m", math.log(0.3))]})
    m = mix(base, other, 0.5, {"adapted_on": {"rules": 2}})
    assert dict(m.learned_rules["o"])["e"] == pytest.approx(math.log(0.5 * 0.01 + 0.5 * 0.2))
    assert dict(m.learned_rules["b"])["h"] == pytest.approx(math.log(0.05))
    assert dict(m.learned_rules["rn"])["m"] == pytest.approx(math.log(0.15))
    assert m.debris == base.debris and m.made_by["adapted_on"] == {"rules": 2}


def test_a_rule_the_adapted_pairs_could_not_observe_stays_the_bases():
    base = ConfusionModel({"I": [("i", math.log(0.01))], "o": [("e", math.log(0.01))]})
    other = ConfusionModel({"o": [("e", math.log(0.2))]})
    m = mix(base, other, 0.5, unseen=lambda o, g: o == "I")
    assert dict(m.learned_rules["I"])["i"] == pytest.approx(math.log(0.01))
    assert dict(m.learned_rules["o"])["e"] == pytest.approx(math.log(0.105))
    assert dict(mix(base, other, 0.5).learned_rules["I"])["i"] == pytest.approx(math.log(0.005))


def test_adapting_keeps_the_capital_the_ocr_reads_for_a_small_letter():
    """Every word read right counts the capitals it printed while a case repair is never a
    confident pair: adapting would only ever weaken "In" for "in"."""
    from londonlm.corpus.ocr.confusions import load_confusions

    shipped = load_confusions()
    got = adapt(shipped, period_lexicon(), [(ENGINE * 3, 1800)], min_gain=0.0, min_words=0)
    assert dict(got.learned_rules["I"])["i"] == dict(shipped.learned_rules["I"])["i"]
    assert dict(got.learned_rules["o"])["e"] != dict(shipped.learned_rules["o"]).get("e")


# an OCR that reads "e" as "o" far more often than the shipped model expects
ENGINE = PERIOD.replace("the ", "tho ").replace("he ", "ho ").replace("were ", "woro ").replace("Merchants", "Morchants")


def test_confident_repairs_and_the_periods_words_are_the_pairs():
    lex = period_lexicon()
    from londonlm.corpus.ocr.confusions import load_confusions

    pairs = confident_pairs(OcrRepairer(lex, load_confusions(), RepairSettings()), [(ENGINE, 1800)], min_gain=0.0)
    assert ("tho", "the") in pairs and ("Court", "Court") in pairs
    assert all(o == g or o != g and g.lower() in lex.unigrams for o, g in pairs)


def test_adapting_raises_the_misreadings_this_ocr_makes():
    from londonlm.corpus.ocr.confusions import load_confusions

    shipped = load_confusions()
    got = adapt(shipped, period_lexicon(), [(ENGINE * 3, 1800)], min_gain=0.0, min_words=0)
    before = dict(shipped.learned_rules["o"]).get("e", -math.inf)
    assert dict(got.learned_rules["o"])["e"] > before and got.made_by["adapted_on"]["repairs"] > 0
    # nothing confident to learn from: the model as it was
    assert adapt(shipped, period_lexicon(), [("", None)], min_words=0) is shipped


def test_the_first_pass_searches_near_words_only_for_misread_letters_and_leaves_strays(monkeypatch):
    """A near word's edits are priced at a flat near_edit, not by this OCR: pairs from a word of
    plain letters would teach that price back (and the search is 0.4 of the first pass's time);
    a word with a letter no rule knows (``th»``) is searched, so its pairs teach how this OCR
    reads it. A stray's deletion is no word's pair. The final repair keeps both."""
    import londonlm.corpus.ocr.adapt as adapt_module

    seen = []
    monkeypatch.setattr(adapt_module, "confident_pairs", lambda repairer, *a, **k: seen.append(repairer.s) or [])
    settings = RepairSettings()
    adapt_module.adapt(ConfusionModel({}), period_lexicon(), [(ENGINE, 1800)], settings)
    assert seen[0].near > 0 and seen[0].near_plain is False and seen[0].strays is False and seen[0].edges is False
    assert settings.near_plain and settings.strays  # (the caller's settings as they were)


def test_adapting_learns_a_mark_this_ocr_reads_for_a_letter():
    """``th»`` for ``the``: a model learned from OCR that never read » has no rule for it, the
    first pass's near search repairs it, and its pairs teach the rule, so the final repair prices
    » as this OCR reads it."""
    shipped = confusions_without("»")
    assert "»" not in shipped.rules
    got = adapt(shipped, period_lexicon(), [(PERIOD.replace("the ", "th» ") * 3, 1800)], min_gain=0.0, min_words=0)
    assert "e" in dict(got.rules["»"])


def test_too_little_text_is_not_adapted_on():
    """A few rows repeating one misreading would teach it as a rule stronger than the shipped
    model's evidence (a long s read as f turned into an f->s rule): below MIN_WORDS words the
    model stays as it is."""
    from londonlm.corpus.ocr.adapt import MIN_WORDS
    from londonlm.corpus.ocr.confusions import load_confusions

    shipped = load_confusions()
    few = [(ENGINE, 1800)] * 3
    assert len(" ".join(t for t, _ in few).split()) < MIN_WORDS
    assert adapt(shipped, period_lexicon(), few, min_gain=0.0) is shipped
    assert adapt(shipped, period_lexicon(), few, min_gain=0.0, min_words=0) is not shipped


def test_jsonl_texts_skip_what_the_stage_reports(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_bytes(b'{"text": "tho Court", "year": 1850}\nnot json\n[1]\n{"id": 2}\n{"text": "ho said", "year": "x"}\n'
                  + b"[" * 100_000 + b"]" * 100_000 + b"\n")  # nested past the parser's depth
    assert list(jsonl_texts(f)) == [("tho Court", 1850), ("ho said", None)]
    f.write_bytes(b'{"text": "tho Court", "year": "1850"}\n{"text": "ho", "year": true}\n')
    assert list(jsonl_texts(f)) == [("tho Court", 1850), ("ho", None)]  # years read as the repair stage reads them


@pytest.mark.parametrize("flag", [None, "--no_adapt"])
def test_repair_ocr_adapts_by_default(tmp_path, flag):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rows = 40  # enough words to adapt on (MIN_WORDS)
    src.write_text("".join(json.dumps({"id": k, "text": OCR, "year": 1744}) + "\n" for k in range(rows)))
    env = {**os.environ, "LONDONLM_ROOT": str(tmp_path / "root")}
    res = subprocess.run([sys.executable, str(SCRIPT), "--input", str(src), "--output", str(out), *filter(None, [flag])],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert ("confusion model adapted on" in res.stdout and "confident repairs" in res.stdout) == (flag is None)
    assert len(out.read_text().splitlines()) == rows


def test_a_huge_row_is_read_only_as_far_as_the_sample_goes(tmp_path):
    from londonlm.corpus.ocr.confusions import load_confusions

    seen = []

    class Spy(OcrRepairer):
        def repair(self, text, year=None):
            seen.append(len(text))
            return super().repair(text, year)

    spy = Spy(period_lexicon(), load_confusions(), RepairSettings())
    confident_pairs(spy, [(OCR * 50, 1744), (OCR, 1744)], max_chars=1000)
    assert seen == [1000]
    f = tmp_path / "in.jsonl"
    f.write_bytes(b'{"text": "' + b"x" * 200 + b'"}\n{"text": "tbe"}\n')
    assert list(jsonl_texts(f, max_row_bytes=100)) == [("tbe", None)]


@pytest.mark.parametrize("content", [b"", b"\x00\x01binary"])
def test_bad_input_is_refused_in_one_line_before_the_first_pass(tmp_path, content):
    src = tmp_path / "in.jsonl"
    src.write_bytes(content)
    res = subprocess.run([sys.executable, str(SCRIPT), "--input", str(src), "--output", str(tmp_path / "o.jsonl"),
                          "--root", str(tmp_path / "root")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and res.stderr.startswith("error:") and len(res.stderr.strip().splitlines()) == 1
    assert "adapted" not in res.stdout and not (tmp_path / "o.jsonl").exists()


def test_the_first_pass_on_two_processes_gives_the_same_pairs_in_the_same_order(monkeypatch):
    """A text's repair does not depend on the texts before it, so the workers' pairs, put back
    in the texts' order, are the serial pass's (chunks made small so both workers take some)."""
    from londonlm.corpus.ocr import adapt as adapt_module
    from londonlm.corpus.ocr.confusions import load_confusions

    monkeypatch.setattr(adapt_module, "CHUNK_CHARS", 300)
    rows = [(ENGINE[i:] + PERIOD[:i], 1800 + i) for i in range(0, 1200, 97)]
    repairer = lambda: OcrRepairer(period_lexicon(), load_confusions(), RepairSettings())  # noqa: E731
    serial = confident_pairs(repairer(), rows, min_gain=0.0, max_chars=6000)
    assert len(serial) > 100
    assert confident_pairs(repairer(), rows, min_gain=0.0, max_chars=6000, workers=2) == serial
    # the sample: the rows up to max_chars, the last one cut there
    sample = adapt_module.adapt_sample(rows, 1000)
    assert sum(len(t) for t, _ in sample) == 1000 and sample[-1][0] == rows[len(sample) - 1][0][:len(sample[-1][0])]
