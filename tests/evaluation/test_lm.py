"""Held-out LM scoring: window coverage, exact NLL on a toy model with known log-probs,
token caps, and agreement with shared/bench/bpb.py."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from londonlm.evaluation.metrics.lm import document_windows, evaluate_lm, model_context_length
from toy_lm import BigramLM, CharTokenizer

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO.parent / "shared" / "bench" / "bpb.py"
def hand_nll(model, ids, first=1):
    return -sum(model.logp(ids[i - 1], ids[i]) for i in range(first, len(ids)))


@pytest.mark.parametrize("n,ctx,stride", [(1, 4, 2), (2, 4, 2), (10, 4, 2), (17, 8, 4),
                                          (17, 8, 7), (17, 8, 1), (33, 8, 3), (8, 8, 4)])
def test_windows_score_every_token_once(n, ctx, stride):
    for first in (1, 2):
        seen = []
        for begin, end, score_from in document_windows(n, ctx, stride, first):
            assert end - begin <= ctx and begin < score_from <= end
            seen += list(range(score_from, end))
        assert seen == list(range(first, n))


def test_windows_match_bench_loop():
    # the loop of shared/bench/bpb.py, copied literally, as the reference
    def bench(n, ctx):
        out, prev_end, stride = [], 1, max(1, ctx // 2)
        for begin in range(0, n, stride):
            end = min(begin + ctx, n)
            if end <= prev_end:
                continue
            out.append((begin, end, prev_end))
            prev_end = end
            if end == n:
                break
        return out

    for n in (2, 5, 64, 65, 129, 300):
        assert document_windows(n, 64, 32) == bench(n, 64)


@pytest.mark.parametrize("batch_size,stride", [(1, None), (3, None), (8, 1), (2, 7)])
def test_exact_nll_on_bigram_model(batch_size, stride):
    model, tok = BigramLM(n_positions=8), CharTokenizer()
    texts = ["abcab cdeab cdd", "a", "ee", "dcba edcba abcde abcde edcba"]
    r = evaluate_lm(model, tok, texts, batch_size=batch_size, stride=stride)
    ids = [tok(t)["input_ids"] for t in texts]
    nll = sum(hand_nll(model, i) for i in ids)
    ntok = sum(len(i) - 1 for i in ids)
    nbytes = sum(len(t.encode()) for t in texts if len(t) >= 2)  # 1-token docs score nothing
    assert r["tokens"] == ntok and r["documents"] == 3 and r["bytes"] == nbytes
    assert r["loss"] == pytest.approx(nll / ntok, rel=1e-5)
    assert r["perplexity"] == pytest.approx(math.exp(nll / ntok), rel=1e-5)
    assert r["bits_per_byte"] == pytest.approx(nll / (math.log(2) * nbytes), rel=1e-5)


def test_prepended_tokens_make_first_token_scored():
    model, tok = BigramLM(n_positions=8), CharTokenizer()
    texts = ["abcde abc", "e"]
    r = evaluate_lm(model, tok, texts, prepend_tokens=[[0], [0]], return_per_document=True)
    ids = [[0] + tok(t)["input_ids"] for t in texts]
    assert r["tokens"] == sum(len(t) for t in texts)
    assert r["loss"] * r["tokens"] == pytest.approx(sum(hand_nll(model, i) for i in ids), rel=1e-5)
    assert [d["tokens"] for d in r["per_document"]] == [9, 1]


def test_max_eval_tokens_caps_and_keeps_bytes_exact():
    model, tok = BigramLM(n_positions=8), CharTokenizer()
    texts = ["abcde " * 20, "edcba " * 20]
    r = evaluate_lm(model, tok, texts, max_eval_tokens=50, return_per_document=True)
    assert r["truncated"] and r["tokens"] <= 50 and r["documents"] == 1
    kept = r["per_document"][0]
    assert kept["bytes"] == kept["tokens"] + 1  # one char per token, first token unscored
    full = evaluate_lm(model, tok, texts)
    assert not full["truncated"] and full["tokens"] == 238


def test_stride_must_leave_context():
    with pytest.raises(ValueError, match="stride"):
        document_windows(10, 8, 8)


def test_context_length_required():
    class NoCfg(torch.nn.Module):
        config = SimpleNamespace()

    with pytest.raises(ValueError, match="context length"):
        model_context_length(NoCfg())


def test_real_model_runs_and_is_finite(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conftest import SAMPLE_TEXTS

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    r = evaluate_lm(model, tok, ["".join(SAMPLE_TEXTS) * 3], batch_size=4)
    assert r["tokens"] > 64 and math.isfinite(r["bits_per_byte"]) and r["context_length"] == 64
    # a padded batch must give the same answer as one window at a time
    r1 = evaluate_lm(model, tok, ["".join(SAMPLE_TEXTS) * 3], batch_size=1)
    assert r["loss"] == pytest.approx(r1["loss"], rel=1e-4)


@pytest.mark.skipif(not BENCH.is_file(), reason="../shared/bench/bpb.py absent (shared data not mounted)")
def test_bpb_agrees_with_shared_bench(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conftest import SAMPLE_TEXTS

    texts = ["".join(SAMPLE_TEXTS) * 4, "".join(reversed(SAMPLE_TEXTS)) * 2 + "Pudding Lane, 1666.\r\n"]
    files = []
    for i, t in enumerate(texts):
        f = tmp_path / f"t{i}.txt"
        f.write_bytes(t.encode("utf-8"))
        files.append(str(f))
    out = subprocess.run([sys.executable, str(BENCH), str(tiny_model_dir), *files],
                         capture_output=True, text=True, timeout=120, check=True)
    bench = json.loads(out.stdout.strip().splitlines()[-1])
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    raw = [Path(f).read_bytes().decode("utf-8", errors="ignore") for f in files]
    ours = evaluate_lm(model, tok, raw, batch_size=4)
    assert ours["bytes"] == bench["bytes"]
    assert ours["tokens"] == bench["tokens"] - len(files)  # the bench counts unscored first tokens
    assert ours["bits_per_byte"] == pytest.approx(bench["bpb"], rel=0.01)
