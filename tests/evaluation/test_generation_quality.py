"""Continuation-quality metrics: ROUGE on known pairs, repetition, anachronisms, style."""
from __future__ import annotations

import random

import pytest

from conftest import SAMPLE_TEXTS
from londonlm.evaluation.metrics.generation_quality import (anachronisms, distinct_n, evaluate_generation,
                                                            load_wordlist, repeated_ngram_rate, rouge,
                                                            style_markers, text_statistics, words_of)


def test_rouge_known_pairs():
    assert rouge(["the cat sat"], ["the cat sat"]) == pytest.approx(
        {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0})
    r = rouge(["the cat sat"], ["the cat ran"])
    assert r["rouge1"] == pytest.approx(2 / 3)
    assert r["rouge2"] == pytest.approx(1 / 2)
    assert r["rougeL"] == pytest.approx(2 / 3)
    # precision 1, recall 1/2 -> F1 2/3; word order matters for L
    r = rouge(["cat the"], ["the cat sat down"])
    assert r["rouge1"] == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert r["rouge2"] == 0.0
    assert rouge(["up betimes"], ["thames fog"])["rouge1"] == 0.0


def test_repetition_measures():
    ws = "a b a b a b".split()
    assert distinct_n(ws, 1) == pytest.approx(2 / 6)
    assert distinct_n(ws, 2) == pytest.approx(2 / 5)
    assert repeated_ngram_rate(ws, 2) == pytest.approx(3 / 5)
    assert repeated_ngram_rate("a b c d".split(), 2) == 0.0
    assert distinct_n(["a"], 2) is None and repeated_ngram_rate([], 3) is None


def test_wordlist_and_anachronism_rate():
    wl = load_wordlist()
    assert {"television", "internet", "okay", "radio", "airplane", "email"} <= wl
    assert "computer" not in wl and "aeroplane" not in wl and not any(w.startswith("#") for w in wl)
    hits, n, words = anachronisms("He watched Television and heard the radio, okay?", wl)
    assert (hits, n) == (3, 8) and words == ["television", "radio", "okay"]
    assert anachronisms("Up betimes, and to the Office.", wl)[0] == 0


def test_style_markers():
    s = style_markers("Thou hast ſeen it, 'tis true; he goeth beneath the teeth and dieth.")
    assert s["archaic_words"] == 3  # thou, hast, tis
    assert s["eth_verbs"] == 2      # goeth, dieth (beneath/teeth excluded)
    assert s["long_s"] == 1
    assert words_of("'Tis") == ["tis"]


def test_text_statistics_pools_texts():
    st = text_statistics(["the radio the radio", "thou art"], frozenset({"radio"}))
    assert st["words"] == 6 and st["anachronism_rate"] == pytest.approx(2 / 6)
    assert st["anachronism_hits"] == {"radio": 2}
    assert st["archaic_words_per_1k"] == pytest.approx(1000 / 6)


def test_evaluate_generation_on_tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conftest import SAMPLE_TEXTS

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    texts = ["".join(SAMPLE_TEXTS) * 2, "".join(reversed(SAMPLE_TEXTS)) * 2, "too short"]
    m, samples = evaluate_generation(model, tok, texts, n_passages=3, prompt_tokens=16,
                                     continuation_tokens=8, seed=1)
    # the short text cannot hold prompt + continuation: the two others give all three
    assert m["passages"] == 3 and m["documents"] == 2 and m["max_passages_per_document"] == 2
    assert {s["doc"] for s in samples} == {0, 1}
    assert {s["mode"] for s in samples} == {"greedy", "sampled"} and len(samples) == 6
    for k in ("rouge1", "rougeL", "distinct_1", "anachronism_rate"):
        assert k in m["greedy"]
    assert m["reference"]["texts"] == 3
    again, s2 = evaluate_generation(model, tok, texts, n_passages=3, prompt_tokens=16,
                                    continuation_tokens=8, seed=1, modes=("greedy",))
    assert [s["generated"] for s in s2] == [s["generated"] for s in samples if s["mode"] == "greedy"]


def test_decoding_uses_the_one_set_of_defaults_whatever_the_folder_says(tiny_model_dir, tmp_path):
    """Every model compared is decoded alike: a folder's own generation_config.json (here one
    that forbids any repeated token) changes nothing."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from conftest import SAMPLE_TEXTS
    from londonlm.generation import GenerationSettings

    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    GenerationConfig(do_sample=True, no_repeat_ngram_size=1, repetition_penalty=3.0,
                     top_k=2).save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    texts = ["".join(SAMPLE_TEXTS) * 2, "".join(reversed(SAMPLE_TEXTS)) * 2]
    runs = [evaluate_generation(AutoModelForCausalLM.from_pretrained(str(f)), tok, texts, n_passages=2,
                                prompt_tokens=16, continuation_tokens=24, seed=1)
            for f in (tiny_model_dir, folder)]
    assert [s["generated"] for s in runs[0][1]] == [s["generated"] for s in runs[1][1]]
    d = GenerationSettings()
    assert runs[0][0]["sampling"] == {"temperature": d.temperature, "top_p": d.top_p, "top_k": d.top_k,
                                      "repetition_penalty": d.repetition_penalty,
                                      "no_repeat_ngram_size": d.no_repeat_ngram_size}


def test_one_long_document_gives_every_passage_asked_for(tiny_model_dir):
    """A validation split of one document (the sample corpus's) still gives the passages
    asked for, from different stretches of it, and every figure says how many it rests on."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from londonlm.evaluation.report import render_markdown

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    rng = random.Random(0)  # period words in a random order: every stretch is unique
    book = " ".join(rng.choice(words_of(" ".join(SAMPLE_TEXTS))) for _ in range(12000))
    m, samples = evaluate_generation(model, tok, [book], n_passages=4, prompt_tokens=16,
                                     continuation_tokens=8, seed=0, modes=("greedy",))
    assert m["passages"] == 4 and m["documents"] == 1 and m["passages_requested"] == 4
    assert m["greedy"]["texts"] == 4 and m["reference"]["texts"] == 4
    at = [book.find(s["prompt"] + s["reference"]) for s in samples]
    assert all(a >= 0 for a in at) and at == sorted(at)
    quarters = [a * 4 // len(book) for a in at]
    assert quarters == [0, 1, 2, 3]                     # one from each stretch of the document
    again, _ = evaluate_generation(model, tok, [book], n_passages=4, prompt_tokens=16,
                                   continuation_tokens=8, seed=0, modes=("greedy",))
    assert again == m                                   # deterministic for a seed
    report = render_markdown({"model": {"name": "m", "path": "m"}, "mode": "quick",
                              "settings": {"seed": 0, "device": "cpu"}, "created": "now",
                              "timing_s": {}, "format_version": 1, "generation": m}, {}, samples)
    assert "4 held-out passages from 1 validation document;" in report
    assert "| metric | greedy (n=4) | reference (n=4) |" in report
