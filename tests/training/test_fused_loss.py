"""The fused LM-head loss gives the stock GPT-2 loss and gradients, and leaves the model stock."""
import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from londonlm.training.step.fused_loss import enable_fused_loss, linear_cross_entropy


def _model(seed=0):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=96, n_positions=16, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg)


@pytest.mark.parametrize("ignored", [True, False])
@pytest.mark.parametrize("chunk", [1, 7, 1024])
def test_loss_and_gradients_match_the_stock_path(chunk, ignored):
    stock = _model()
    fused = enable_fused_loss(copy.deepcopy(stock), chunk_rows=chunk)
    x = torch.randint(0, 96, (3, 16), generator=torch.Generator().manual_seed(1))
    labels = x.clone()
    if ignored:  # ignored targets count neither in the sum nor in the mean
        labels[0, 5:9] = -100
        labels[2, 0:3] = -100
    # (packed blocks, ignored=False, take the path without masking)
    a = stock(input_ids=x, labels=labels)
    b = fused(input_ids=x, labels=labels)
    assert b.logits is None
    assert torch.allclose(a.loss, b.loss, atol=1e-6, rtol=1e-6)
    a.loss.backward()
    b.loss.backward()
    for (name, p), q in zip(stock.named_parameters(), fused.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-5), name


def test_num_items_in_batch_normalises_like_the_trainer_expects():
    m = enable_fused_loss(_model())
    x = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(2))
    mean = m(input_ids=x, labels=x).loss
    summed = m(input_ids=x, labels=x, num_items_in_batch=torch.tensor(1)).loss
    assert torch.allclose(summed, mean * 2 * 15, rtol=1e-5)


def test_no_grad_evaluation_and_generation_keep_working():
    m = enable_fused_loss(_model())
    x = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        loss = m(input_ids=x, labels=x).loss
        ref = _model()(input_ids=x, labels=x).loss
        assert torch.allclose(loss, ref, atol=1e-6)
        assert m(input_ids=x).logits.shape == (2, 16, 96)  # no labels: the stock forward
    out = m.generate(x[:1, :4], max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 7)


def test_bf16_autocast_is_close_to_fp32():
    torch.manual_seed(0)
    h = torch.randn(64, 32, requires_grad=True)
    w = torch.randn(96, 32, requires_grad=True)
    t = torch.randint(0, 96, (64,))
    ref = torch.nn.functional.cross_entropy(h @ w.t(), t, reduction="sum")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = linear_cross_entropy(h, w, t, chunk_rows=16)
    assert got.dtype == torch.float32
    assert abs(got.item() - ref.item()) / ref.item() < 1e-2
    got.backward()
    assert h.grad.dtype == h.dtype and w.grad.dtype == w.dtype


@pytest.mark.parametrize("ignored", [True, False])
def test_bf16_gradients_match_the_stock_autocast_path(ignored):
    """In bf16 the fused gradient is the stock autocast one: fp32 softmax minus one-hot, rounded
    once to bf16 (the target entries too), then the same bf16 matmuls."""
    torch.manual_seed(0)
    h0 = torch.randn(200, 32) * 2
    w0 = torch.randn(96, 32) * 0.5
    t = torch.randint(0, 96, (200,))
    if ignored:
        t[10:30] = -100
    grads = []
    for fused in (False, True):
        h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if fused:
                loss = linear_cross_entropy(h, w, t, chunk_rows=64)
            else:
                loss = torch.nn.functional.cross_entropy((h @ w.t()).float(), t, reduction="sum")
        loss.backward()
        grads.append((loss.detach(), h.grad, w.grad))
    (la, ha, wa), (lb, hb, wb) = grads
    assert torch.allclose(la, lb, rtol=1e-5)
    for a, b in ((ha, hb), (wa, wb)):
        assert (a - b).norm() / a.norm() < 5e-3
    if ignored:
        assert hb[10:30].abs().max() == 0


def test_bf16_target_gradient_stays_exact_for_confident_tokens():
    """The bf16 path writes the softmax in bf16; a confident target's p - 1 must still carry
    bf16's relative precision (rebuilt from the rest of the row), not the absolute 2^-9 error of
    p rounded to bf16 (about 20% of p - 1 at p = 0.99)."""
    torch.manual_seed(0)
    h0 = torch.randn(256, 32)
    w0 = torch.randn(96, 32)
    t = (h0 @ w0.t()).argmax(-1)  # every target the model's favourite...
    h0 = h0 * 4  # ...held with p close to 1
    h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = linear_cross_entropy(h, w, t, chunk_rows=64)
    loss.backward()
    logits = (h0.bfloat16() @ w0.bfloat16().t()).double()
    p = torch.softmax(logits, -1)
    assert p[torch.arange(256), t].median() > 0.9
    exact_loss = -torch.log_softmax(logits, -1)[torch.arange(256), t].sum()
    assert abs(loss.item() - exact_loss.item()) / exact_loss.item() < 1e-3
    g = p.clone()
    g[torch.arange(256), t] -= 1
    exact_h = (g.bfloat16().double() @ w0.bfloat16().double())
    assert ((h.grad.double() - exact_h).norm() / exact_h.norm()) < 2e-2


def test_the_fused_loss_traces_under_torch_compile():
    """CUDA runs compile by default (training.speed.compile.compile_pays): the fused forward and its
    autograd Function must go through dynamo and AOT autograd with the eager gradients
    (aot_eager: the same tracing without inductor's C++ build, seconds on CPU)."""
    from conftest import micro_gpt2

    x = torch.randint(0, 64, (4, 16))
    grads = []
    for compiled in (False, True):
        model = enable_fused_loss(micro_gpt2(n_layer=2).train())
        run = torch.compile(model, backend="aot_eager") if compiled else model
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = run(input_ids=x, labels=x).loss
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (la, ga), (lb, gb) = grads
    assert torch.allclose(la, lb)
    assert all(torch.allclose(a, b) for a, b in zip(ga, gb))


def test_chunk_rows_follow_the_device(monkeypatch):
    """256 rows a chunk on the CPU (cache-sized, measured); large chunks on a GPU, where 256
    would be hundreds of small GEMMs a step and a loop torch.compile unrolls."""
    from londonlm.training.step import fused_loss

    seen = []
    real = fused_loss.linear_cross_entropy

    def spy(h, w, t, rows, vocab=None):
        seen.append(rows)
        return real(h, w, t, rows, vocab)
    monkeypatch.setattr(fused_loss, "linear_cross_entropy", spy)
    x = torch.randint(0, 96, (2, 16))
    enable_fused_loss(_model())(input_ids=x, labels=x)
    enable_fused_loss(_model(), chunk_rows=7)(input_ids=x, labels=x)
    assert seen == [256, 7] and fused_loss.CHUNK_ROWS["cuda"] >= 4096
