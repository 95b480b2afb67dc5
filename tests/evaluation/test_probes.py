"""Multiple-choice probes: the bundled set's schema and balance, file validation with line
numbers, MMLU form, and the scorer on a toy model with known log-probabilities."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from londonlm.evaluation.metrics.probes import (ProbeFormatError, continuation_logprobs,
                                                default_probes_path, join_continuation, load_mc_jsonl,
                                                score_items, shuffled_items)
from toy_lm import BigramLM, CharTokenizer, char_ids


def test_bundled_probe_set_is_valid_and_balanced():
    items = load_mc_jsonl(default_probes_path())
    assert len(items) >= 150
    assert all(len(it.choices) == 4 for it in items)
    cats = Counter(it.category for it in items)
    assert len(cats) >= 8 and min(cats.values()) >= 8
    pos = Counter(it.answer for it in items)
    assert set(pos) == {0, 1, 2, 3} and max(pos.values()) - min(pos.values()) <= 2
    facts = {it.id: it.choices[it.answer] for it in items}
    assert facts["events-01"] == "Pudding Lane"
    by_context = {it.context: it.choices[it.answer] for it in items}
    assert any(v == "twenty-one shillings" for v in by_context.values())
    assert any(v == "twelve pence" for v in by_context.values())


def _write(tmp_path, lines):
    p = tmp_path / "mc.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


GOOD = json.dumps({"id": "a", "category": "c", "context": "x", "choices": ["p", "q"], "answer": 1})


@pytest.mark.parametrize("bad,msg", [
    ("{not json", "invalid JSON"),
    (json.dumps({"id": "b", "category": "c", "context": "x", "choices": ["p", "q"]}), "missing key"),
    (json.dumps({"id": "b", "category": "c", "context": "x", "choices": ["p", "q"], "answer": 2}),
     "out of range"),
    (json.dumps({"id": "b", "category": "c", "context": "x", "choices": ["p"], "answer": 0}),
     "at least 2"),
    (json.dumps({"id": "a", "category": "c", "context": "x", "choices": ["p", "q"], "answer": 0}),
     "duplicate id"),
    (json.dumps({"foo": 1, "choices": ["p", "q"]}), "needs 'context'"),
    ("[1, 2]", "expected a JSON object"),
])
def test_malformed_line_reported_with_line_number(tmp_path, bad, msg):
    p = _write(tmp_path, [GOOD, "", bad])
    with pytest.raises(ProbeFormatError) as e:
        load_mc_jsonl(p)
    assert f"{p}:3:" in str(e.value) and msg in str(e.value)


@pytest.mark.parametrize("raw,msg", [
    (b'{"id": "b", "category": "c", "context": "The \xff fire", "choices": ["p", "q"], "answer": 0}',
     "not valid UTF-8 (byte 0xff at character 46)"),
    (b'{"id": "b", "category": "c", "context": "x", "choices": ["p", "\\ud800"], "answer": 0}',
     "lone surrogate escape"),
])
def test_a_line_that_is_not_text_is_reported_with_its_line_number(tmp_path, raw, msg):
    p = tmp_path / "mc.jsonl"
    p.write_bytes(GOOD.encode() + b"\n\n" + raw + b"\n" + GOOD.replace('"a"', '"c"').encode() + b"\n")
    with pytest.raises(ProbeFormatError) as e:
        load_mc_jsonl(p)
    assert str(e.value).startswith(f"{p}:3: ") and msg in str(e.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ProbeFormatError, match="not found"):
        load_mc_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(ProbeFormatError, match="no items"):
        load_mc_jsonl(_write(tmp_path, [""]))


def test_mmlu_format(tmp_path):
    p = _write(tmp_path, [
        json.dumps({"question": "2+2?", "choices": ["3", "4", "5", "6"], "answer": 1, "subject": "math"}),
        json.dumps({"question": "Capital?", "choices": ["London", "Paris", "Rome", "Bath"], "answer": "A"}),
    ])
    a, b = load_mc_jsonl(p)
    assert a.answer == 1 and a.category == "math" and a.context == "2+2?\nAnswer:"
    assert a.continuations[1] == " 4"
    assert b.answer == 0 and b.category == "mmlu"


def test_join_continuation():
    assert join_continuation("in", "Pudding Lane") == " Pudding Lane"
    assert join_continuation("in ", "Pudding Lane") == "Pudding Lane"
    assert join_continuation("the bells of", ", said") == ", said"


def test_continuation_logprobs_hand_computed():
    model, tok = BigramLM(n_positions=32, seed=1), CharTokenizer()
    pairs = [("abc", " de"), ("abc", "a"), ("e", "dddd")]
    got = continuation_logprobs(model, tok, pairs, batch_size=2)
    for (ctx, cont), (lp, n) in zip(pairs, got):
        full = [0] + char_ids(ctx + cont)  # BOS prefix, then context + continuation
        k = len(cont)
        assert n == k
        assert lp == pytest.approx(model.lp(full[-(k + 1):]), abs=1e-5)


def test_context_is_cut_from_the_left_when_too_long():
    model, tok = BigramLM(n_positions=6, seed=1), CharTokenizer()
    (lp, n), = continuation_logprobs(model, tok, [("abcdeabcde", "ab")])
    assert n == 2 and lp == pytest.approx(model.lp(char_ids("eab")), abs=1e-5)


def test_score_items_rules_and_chance(tmp_path):
    model, tok = BigramLM(n_positions=32, seed=1), CharTokenizer()
    # pick, by brute force, the choice each rule should prefer and compare
    lines = []
    for i, (ctx, choices) in enumerate([("ab", ["c", "dd", "e ede"]), ("e", ["a", "b", "cc"]),
                                        ("dc", ["ba", "e", "aaaa"])]):
        lines.append(json.dumps({"id": str(i), "category": "k" if i else "j", "context": ctx + " ",
                                 "choices": choices, "answer": 0}))
    items = load_mc_jsonl(_write(tmp_path, lines))
    res = score_items(model, tok, items)
    for it, row in zip(items, res["items"]):
        lps = [model.lp([0] + char_ids(it.context + c))
               - model.lp([0] + char_ids(it.context)) for c in it.choices]
        assert row["pred"]["sum"] == max(range(3), key=lambda j: lps[j])
        assert row["pred"]["per_byte"] == max(range(3), key=lambda j: lps[j] / len(it.choices[j]))
    assert res["chance"] == pytest.approx(1 / 3)
    assert set(res["by_category"]) == {"j", "k"} and res["by_category"]["k"]["n"] == 2
    assert res["accuracy"]["sum"] == sum(r["correct"]["sum"] for r in res["items"]) / 3


def test_shuffled_items_keep_the_answer():
    items = load_mc_jsonl(default_probes_path())[:20]
    for a, b in zip(items, shuffled_items(items, seed=3)):
        assert a.choices[a.answer] == b.choices[b.answer]
        assert sorted(a.choices) == sorted(b.choices)


def test_bundled_probes_on_tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    items = load_mc_jsonl(default_probes_path())
    res = score_items(model, tok, items)
    assert res["n"] == len(items) and res["chance"] == pytest.approx(0.25)
    assert all(0 <= res["accuracy"][r] <= 1 for r in ("sum", "per_token", "per_byte"))
