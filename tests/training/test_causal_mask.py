"""The "sdpa" mask function registered for training: no mask for a full causal window even
inside a dynamo trace (so a compiled step can use flash attention), transformers' own mask
everywhere else, and the same outputs either way."""
from __future__ import annotations

import pytest
import torch
import transformers.masking_utils as masking
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from londonlm.training.model import ModelShape, build_model
from londonlm.training.step.causal_mask import skip_causal_mask_for_full_windows

SHAPE = ModelShape(n_layer=2, n_head=2, n_embd=32, n_positions=16, vocab_size=64)


@pytest.fixture
def stock_sdpa_mask():
    """transformers' own "sdpa" mask function for the test, the registered one put back after."""
    before = AttentionMaskInterface._global_mapping["sdpa"]
    AttentionMaskInterface.register("sdpa", sdpa_mask)
    yield
    AttentionMaskInterface.register("sdpa", before)


@pytest.fixture
def in_a_trace(monkeypatch):
    """What transformers reads inside any dynamo trace with torch < 2.14 (pytorch#176499)."""
    monkeypatch.setattr(masking, "is_torchdynamo_exporting", lambda: True)


@pytest.fixture
def sdpa_calls(monkeypatch):
    calls, real = [], torch.nn.functional.scaled_dot_product_attention

    def record(q, k, v, attn_mask=None, is_causal=False, **kw):
        calls.append((attn_mask, is_causal))
        return real(q, k, v, attn_mask=attn_mask, is_causal=is_causal, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", record)
    return calls


def tokens(batch=2):
    return torch.randint(0, SHAPE.vocab_size, (batch, SHAPE.n_positions), generator=torch.Generator().manual_seed(0))


def model():
    return build_model(SHAPE, 0, 0, 0, attn_implementation="sdpa", seed=0).eval()


def test_stock_transformers_builds_a_mask_inside_a_trace(stock_sdpa_mask, in_a_trace, sdpa_calls):
    """Why causal_mask.py exists. If this fails after an upgrade, transformers skips the mask in a
    trace by itself, and the module (with its two calls in model.py) can go."""
    m = model()  # build_model registers the training mask function ...
    AttentionMaskInterface.register("sdpa", sdpa_mask)  # ... put transformers' own back
    m(input_ids=tokens())
    assert all(mask is not None and not causal for mask, causal in sdpa_calls)


def test_a_full_window_gets_no_mask_and_is_causal_inside_a_trace(stock_sdpa_mask, in_a_trace, sdpa_calls):
    m = model()
    m(input_ids=tokens())
    assert len(sdpa_calls) == SHAPE.n_layer
    assert all(mask is None and causal for mask, causal in sdpa_calls)


def test_padding_still_gets_transformers_mask_inside_a_trace(stock_sdpa_mask, in_a_trace, sdpa_calls):
    m = model()
    pad = torch.ones(2, SHAPE.n_positions, dtype=torch.long)
    pad[0, :5] = 0  # left padding, as a chat batch has
    m(input_ids=tokens(), attention_mask=pad)
    assert all(mask is not None for mask, _ in sdpa_calls)


@pytest.mark.parametrize("bf16", [False, True])
def test_the_same_logits_as_transformers_own_mask(stock_sdpa_mask, in_a_trace, bf16):
    m, x = model(), tokens()
    pad = torch.ones_like(x)
    pad[1, :3] = 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        ours = [m(input_ids=x).logits, m(input_ids=x, attention_mask=pad).logits]
        AttentionMaskInterface.register("sdpa", sdpa_mask)
        stock = [m(input_ids=x).logits, m(input_ids=x, attention_mask=pad).logits]
    for a, b in zip(ours, stock):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_generation_with_a_cache_keeps_transformers_mask(stock_sdpa_mask):
    skip_causal_mask_for_full_windows()
    m = model()
    x = tokens(1)[:, :4]
    with torch.no_grad():
        ours = m.generate(x, max_new_tokens=6, do_sample=False, pad_token_id=0)
        AttentionMaskInterface.register("sdpa", sdpa_mask)
        stock = m.generate(x, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(ours, stock)


def test_registering_twice_is_harmless(stock_sdpa_mask):
    skip_causal_mask_for_full_windows()
    first = AttentionMaskInterface._global_mapping["sdpa"]
    skip_causal_mask_for_full_windows()
    assert AttentionMaskInterface._global_mapping["sdpa"] is first is not sdpa_mask
