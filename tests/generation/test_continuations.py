"""Continuations scored in batches (the OCR repair's judge): the same as one at a time and as
the per-token scores summed; a context too long keeps its end; the scorer loads its model once
per process and pickles without it."""
from __future__ import annotations

import math
import pickle

import pytest

from londonlm.generation import ContinuationScorer, continuation_logprobs, encode_prompt, encode_text, load_model, \
    score_tokens


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu")


CONTEXTS = ["It was a cold morning in Cheapside, and", "The prisoner at the bar", "Up", ""]
ENDINGS = [" the", " was indicted for felony", " betimes, and to the office", " London"]


def pairs(lm):
    return [(encode_prompt(lm.tokenizer, c), encode_text(lm.tokenizer, e)) for c in CONTEXTS for e in ENDINGS]


def test_batched_scores_equal_one_at_a_time(lm):
    items = pairs(lm)
    one = continuation_logprobs(lm, items, batch_size=1)
    for size in (3, 16):
        assert continuation_logprobs(lm, items, batch_size=size) == pytest.approx(one, abs=1e-4)
    assert all(v < 0 and math.isfinite(v) for v in one)


def test_a_continuation_is_its_tokens_scores_summed(lm):
    ctx, cont = pairs(lm)[5]
    by_token = score_tokens(lm, ctx + cont).token_logprobs[len(ctx):]
    assert continuation_logprobs(lm, [(ctx, cont)])[0] == pytest.approx(sum(by_token), abs=1e-4)


def test_a_long_context_keeps_its_end(lm):
    ctx, cont = pairs(lm)[0]
    long = ctx * 50  # past the fixture's 64 positions
    end = long[-(lm.context_length - len(cont)):]
    got, cut = continuation_logprobs(lm, [(long, cont)]), continuation_logprobs(lm, [(end, cont)])
    assert got == pytest.approx(cut, abs=1e-5)
    with pytest.raises(ValueError):
        continuation_logprobs(lm, [(ctx, [])])


def test_the_scorer_reads_texts_and_pickles_without_its_model(tiny_model_dir, lm):
    scorer = ContinuationScorer(str(tiny_model_dir), batch_size=2)
    got = scorer([(c, e) for c in CONTEXTS for e in ENDINGS])
    assert got == pytest.approx(continuation_logprobs(lm, pairs(lm)), abs=1e-4)
    copy = pickle.loads(pickle.dumps(scorer))
    assert copy._lm is None and scorer._lm is not None
    assert scorer.identity()["sha256"] and scorer.identity()["model"].endswith(tiny_model_dir.name)
