"""Leakage probes: the shipped facts and words are valid and spread over 1500-1900, the
statistics match hand-computed values, the flag follows after-cutoff accuracy (with a stub
scorer standing in for a model), the report reads right, bad files fail clearly, and the
lm-eval task points at the shipped file. No model is trained here."""
from __future__ import annotations

import importlib.util
import json
import math
from collections import Counter
from types import SimpleNamespace

import pytest
import yaml

from londonlm.core import LondonLMError
from londonlm.evaluation.harness import LONDON_TASKS, TASKS_DIR
from londonlm.evaluation.metrics import leakage
from londonlm.evaluation.metrics.leakage import (CATEGORIES, LEAKAGE_FACTS, LEAKAGE_WORDS, LeakageError,
                                                 binomial_tail, load_leakage_facts, load_leakage_words,
                                                 mean_interval, run_leakage_probes, side_of, spread,
                                                 tail_probability, wilson_interval)
from londonlm.evaluation.report import leakage_markdown

NO_LM = SimpleNamespace(model=None, tokenizer=None, device="cpu")


# --------------------------------------------------------------------------- shipped data

def test_shipped_facts_are_valid_and_spread_over_the_period():
    facts = load_leakage_facts()
    assert len(facts) >= 150
    assert len({f.item.id for f in facts}) == len(facts)
    assert {f.item.category for f in facts} == set(CATEGORIES)
    assert all(1500 <= f.year <= 1900 for f in facts)
    centuries = Counter(f.year // 100 for f in facts)
    assert all(centuries[c] >= 25 for c in (15, 16, 17, 18)), centuries
    assert sum(f.year > 1750 for f in facts) >= 40
    assert sum(f.year > 1750 for f in facts) >= 0.4 * len(facts)
    assert sum(f.year > 1800 for f in facts) >= 40
    positions = Counter(f.item.answer for f in facts)
    assert set(positions) == {0, 1, 2, 3} and max(positions.values()) - min(positions.values()) <= 2
    for f in facts:
        it = f.item
        assert len(it.choices) == 4 and 0 <= it.answer < 4
        assert all(c.startswith(" ") for c in it.choices), it.id
        assert it.choices[it.answer].strip().lower() not in it.context.lower(), it.id
        assert len(it.context.split()) <= 25, it.id
        assert f.source.strip(), it.id


def test_shipped_facts_say_what_they_say():
    by_id = {f.item.id: f for f in load_leakage_facts()}
    trafalgar = by_id["events-1805"]
    assert trafalgar.item.choices[trafalgar.item.answer] == " Nelson" and trafalgar.year == 1805
    exhibition = by_id["places-1851"]
    assert exhibition.item.choices[exhibition.item.answer] == " Hyde Park"


def test_shipped_words_are_valid():
    words = load_leakage_words()
    assert len(words) >= 40 and len({w.id for w in words}) == len(words)
    assert all(1550 <= w.year <= 1900 for w in words)
    assert sum(w.year > 1750 for w in words) >= 20
    for w in words:
        assert len(w.controls) == 4 and w.word not in w.controls and w.source.strip()
        assert w.word not in w.context.split()
    assert {w.word: w.year for w in words}["photograph"] == 1839


# --------------------------------------------------------------------------- statistics

def test_wilson_interval_against_hand_computed_values():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = wilson_interval(0, 10)   # upper end z^2 / (n + z^2)
    assert lo == 0 and hi == pytest.approx(1.959964 ** 2 / (10 + 1.959964 ** 2), abs=1e-6)
    assert wilson_interval(0, 0) is None


def test_binomial_tail_against_hand_computed_values():
    assert binomial_tail(3, 3, 0.25) == pytest.approx(1 / 64)
    assert binomial_tail(2, 4, 0.25) == pytest.approx(67 / 256)   # 1 - (81 + 108) / 256
    assert binomial_tail(0, 5, 0.25) == 1.0 and binomial_tail(6, 5, 0.25) == 0.0
    # at most 5 right of 20 four-way items is what guessing gives: no evidence at all
    assert binomial_tail(5, 20, 0.25) > 0.5
    # unequal numbers of choices: P(at least one of a coin and a 4-way guess)
    assert tail_probability(1, [0.5, 0.25]) == pytest.approx(1 - 0.5 * 0.75)
    k, n = 40, 100
    exact = sum(math.comb(n, j) * 0.25 ** j * 0.75 ** (n - j) for j in range(k, n + 1))
    assert binomial_tail(k, n, 0.25) == pytest.approx(exact, rel=1e-9)


def test_mean_interval_normal_approximation():
    m = mean_interval([0.0, 0.5, 1.0, 0.5])
    half = 1.959964 * math.sqrt(1 / 6) / 2
    assert m["mean"] == 0.5 and m["ci95"] == pytest.approx([0.5 - half, 0.5 + half], abs=1e-6)
    assert mean_interval([]) == {"n": 0, "mean": None, "ci95": None}


def test_split_and_spread():
    assert side_of(1750, 1750) == "before" and side_of(1751, 1750) == "after"
    assert side_of(1899, None) == "before"
    assert spread(list(range(10)), 3) == [0, 3, 6] and spread([1, 2], 5) == [1, 2]
    with pytest.raises(LeakageError, match="limit"):
        spread([1, 2], 0)


# --------------------------------------------------------------------------- stub scorer

def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _facts(tmp_path, n_each=20):
    rows = [{"id": f"f{y}-{i}", "category": "events" if i % 2 else "people", "year": y,
             "context": "It happened at", "choices": [" A", " B", " C", " D"], "answer": i % 4,
             "source": "test"} for y in (1700, 1800) for i in range(n_each)]
    return _write(tmp_path / "facts.jsonl", rows)


def _words(tmp_path):
    rows = [{"id": f"w{y}", "word": f"new{y}", "year": y, "controls": ["aa", "bb", "cc", "dd"],
             "context": "He spoke of the", "source": "test"} for y in (1600, 1650, 1820, 1860)]
    return _write(tmp_path / "words.jsonl", rows)


def _stub(monkeypatch, right_after: float):
    """Before-cutoff items all right; after-cutoff items right at ``right_after``; words
    first used after 1750 stranger than every control, earlier ones plainer."""
    def score_items(model, tokenizer, items, **_):
        rows, after_seen = [], 0
        for it in items:
            if it.id.startswith("f1800"):
                after_seen += 1
                right = after_seen <= round(right_after * 20)
            else:
                right = True
            pred = it.answer if right else (it.answer + 1) % 4
            rows.append({"pred": {r: pred for r in ("sum", "per_token", "per_byte")},
                         "correct": {r: right for r in ("sum", "per_token", "per_byte")}})
        return {"items": rows}

    def continuation_logprobs(model, tokenizer, pairs, **_):
        out = []
        for _, cont in pairs:
            word = cont.strip()
            late = word.startswith("new") and int(word[3:]) > 1750
            per_byte = 5.0 if late else 1.0 if word.startswith("new") else 3.0
            out.append((-per_byte * len(cont.encode()), 1))
        return out

    monkeypatch.setattr(leakage, "score_items", score_items)
    monkeypatch.setattr(leakage, "continuation_logprobs", continuation_logprobs)


def test_after_cutoff_knowledge_is_flagged(tmp_path, monkeypatch):
    _stub(monkeypatch, right_after=1.0)
    res = run_leakage_probes(NO_LM, 1750, facts_path=_facts(tmp_path), words_path=_words(tmp_path))
    before, after = res["facts"]["before"], res["facts"]["after"]
    assert before["n"] == after["n"] == 20 and after["chance"] == 0.25
    assert after["per_byte"]["accuracy"] == 1.0 and after["per_byte"]["p_value"] == pytest.approx(0.25 ** 20)
    assert res["flag"] and res["informative"] and res["verdict"].startswith("WARNING")
    assert res["words"]["before"]["mean"] == 1.0 and res["words"]["after"]["mean"] == 0.0
    assert set(res["facts"]["by_category"]) == {"events", "people"}
    assert res["facts"]["by_half_century"]["1700-1749"]["side"] == "before"
    assert res["facts"]["by_half_century"]["1800-1849"]["side"] == "after"
    json.dumps(res, allow_nan=False)   # everything serialisable, no NaN
    text = "\n".join(leakage_markdown(res))
    assert "| facts | items | accuracy | 95% CI | chance | p (above chance)" in text
    assert "| dated > 1750 | 20 | 100.0% |" in text and "WARNING: after-cutoff accuracy" in text
    assert "| new words | words | mean share | 95% CI |" in text


def test_chance_after_cutoff_is_not_flagged(tmp_path, monkeypatch):
    _stub(monkeypatch, right_after=0.25)
    res = run_leakage_probes(NO_LM, 1750, facts_path=_facts(tmp_path), words_path=_words(tmp_path))
    assert res["facts"]["after"]["per_byte"]["correct"] == 5
    assert res["p_value"] == pytest.approx(binomial_tail(5, 20, 0.25))
    assert not res["flag"] and res["verdict"] == "no sign of post-cutoff knowledge"
    assert "no sign of post-cutoff knowledge" in "\n".join(leakage_markdown(res))


def test_no_cutoff_puts_everything_before(tmp_path, monkeypatch):
    _stub(monkeypatch, right_after=0.25)
    res = run_leakage_probes(NO_LM, None, facts_path=_facts(tmp_path), words_path=_words(tmp_path))
    assert res["facts"]["before"]["n"] == 40 and res["facts"]["after"]["n"] == 0
    assert not res["flag"] and res["p_value"] is None and "no cutoff" in res["verdict"]
    json.dumps(res, allow_nan=False)
    with pytest.raises(LeakageError, match="cutoff_year"):
        run_leakage_probes(NO_LM, "1750", facts_path=_facts(tmp_path))


def test_a_model_at_chance_before_the_cutoff_is_said_to_bound_nothing(tmp_path, monkeypatch):
    _stub(monkeypatch, right_after=0.25)
    res = run_leakage_probes(NO_LM, 1850, facts_path=_facts(tmp_path), words_path=_words(tmp_path))
    assert res["facts"]["before"]["n"] == 40 and not res["flag"]
    res["facts"]["before"]["per_byte"].update(above_chance=False, p_value=0.6)
    assert "cannot bound leakage" in "\n".join(leakage_markdown(res))


# --------------------------------------------------------------------------- bad files

GOOD = {"id": "a", "category": "events", "year": 1700, "context": "x", "choices": [" p", " q"],
        "answer": 1, "source": "s"}


@pytest.mark.parametrize("bad,msg", [
    ({k: v for k, v in GOOD.items() if k != "year"} | {"id": "b"}, "missing key 'year'"),
    ({**GOOD, "id": "b", "year": "1700"}, "'year' must be an integer"),
    ({**GOOD, "id": "b", "year": True}, "'year' must be an integer"),
    ({**GOOD, "id": "b", "year": -5}, "'year' must be at least 1000 (got -5)"),
    ({**GOOD, "id": "b", "year": 10**30}, f"'year' must be at most 2100 (got {10**30})"),
    ({**GOOD, "id": "b", "answer": 5}, "out of range"),
    ({**GOOD, "id": "b", "source": 3}, "'source' must be a string"),
    (GOOD, "duplicate id"),
    ("{not json", "invalid JSON"),
])
def test_bad_fact_is_a_clear_error(tmp_path, bad, msg):
    p = tmp_path / "facts.jsonl"
    p.write_text(json.dumps(GOOD) + "\n\n" + (bad if isinstance(bad, str) else json.dumps(bad)) + "\n")
    with pytest.raises(LeakageError) as e:
        load_leakage_facts(p)
    assert isinstance(e.value, LondonLMError) and f"{p}:3:" in str(e.value) and msg in str(e.value)


@pytest.mark.parametrize("change,msg", [
    ({"year": 3000}, "'year' must be at most 2100"),
    ({"controls": []}, "'controls' must be a non-empty list"),
    ({"controls": ["new", "old"]}, "must not contain the word"),
    ({"year": None}, "'year' must be an integer"),
    ({"context": " "}, "'context' must be a non-empty string"),
])
def test_bad_word_is_a_clear_error(tmp_path, change, msg):
    row = {"id": "w", "word": "new", "year": 1850, "controls": ["old"], "context": "the", **change}
    p = _write(tmp_path / "words.jsonl", [row])
    with pytest.raises(LeakageError, match=msg):
        load_leakage_words(p)
    with pytest.raises(LeakageError, match="not found"):
        load_leakage_words(tmp_path / "nope.jsonl")


def test_a_leakage_file_that_is_not_utf8_names_its_line(tmp_path, monkeypatch):
    p = tmp_path / "facts.jsonl"
    p.write_bytes(json.dumps(GOOD).encode() + b"\n" + json.dumps({**GOOD, "id": "b", "context": "Caf\u00e9"})
                  .encode().replace(b"\\u00e9", b"\xe9") + b"\n")  # latin-1, as an old editor saves it
    with pytest.raises(LeakageError) as e:
        load_leakage_facts(p)
    assert str(e.value).startswith(f"{p}:2: not valid UTF-8 (byte 0xe9 at character ")
    pytest.importorskip("datasets")  # lm-eval's task reads $LONDONLM_LEAKAGE through the same reader
    spec = importlib.util.spec_from_file_location("lm_eval_task_utils", TASKS_DIR / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    monkeypatch.setenv(utils.LEAKAGE_ENV, str(p))
    with pytest.raises(LeakageError, match=f"{p}:2: not valid UTF-8"):
        utils.load_leakage()


# --------------------------------------------------------------------------- lm-eval and a real model

class _TaskLoader(yaml.SafeLoader):
    """lm-eval's YAML: ``!function module.name`` tags read as their text."""


_TaskLoader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")


def test_lm_eval_task_points_at_the_shipped_file(monkeypatch):
    task = yaml.load((TASKS_DIR / "london_leakage.yaml").read_text(), Loader=_TaskLoader)
    assert task["task"] == "london_leakage" in LONDON_TASKS
    assert task["custom_dataset"] == "!function utils.load_leakage"
    assert task["output_type"] == "multiple_choice" and task["doc_to_choice"] == "continuations"
    assert {m["metric"] for m in task["metric_list"]} == {"acc", "acc_norm"}
    pytest.importorskip("datasets")
    spec = importlib.util.spec_from_file_location("lm_eval_task_utils", TASKS_DIR / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    monkeypatch.delenv(utils.LEAKAGE_ENV, raising=False)
    rows = utils.load_leakage()["test"]
    assert len(rows) == len(load_leakage_facts(LEAKAGE_FACTS)) and "year" in rows.column_names


def test_probes_on_the_tiny_model(tiny_model_dir):
    from londonlm.generation import load_model

    lm = load_model(tiny_model_dir, device="cpu")
    res = run_leakage_probes(lm, 1750, limit=12)
    assert res["facts"]["n"] == res["words"]["n"] == 12
    assert res["facts"]["before"]["n"] + res["facts"]["after"]["n"] == 12
    assert res["facts"]["after"]["n"] >= 4 and res["words"]["after"]["n"] >= 4
    assert all(0 <= w["share"] <= 1 for w in res["words"]["items"])
    assert res["facts"]["file"] == LEAKAGE_FACTS.name and res["words"]["file"] == LEAKAGE_WORDS.name
    json.loads(json.dumps(res, allow_nan=False))
    assert any(line.startswith("**Verdict:**") for line in leakage_markdown(res))


def test_lm_eval_runs_the_task(tiny_model_dir):
    pytest.importorskip("lm_eval")
    from londonlm.evaluation.harness import run_harness

    got = run_harness(tiny_model_dir, ["london_leakage"], limit=4)["london_leakage"]
    assert got["sample_len"] == 4 and 0.0 <= got["acc"] <= 1.0
