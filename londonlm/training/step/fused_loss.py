"""Fused LM-head + cross-entropy for training: the loss of a causal LM without keeping the
``tokens x vocab`` logits alive between forward and backward.

The stock path (``GPT2LMHeadModel.forward`` then ``ForCausalLMLoss``) materialises the
logits, upcasts them to fp32, runs ``log_softmax`` over the whole tensor, and in backward
builds a zero-filled gradient of the same size, scatters into it and runs the
``log_softmax`` backward: several passes over a tensor far larger than the caches (tiny
preset: 4,096 tokens x 4,096 vocab x 4 B = 64 MiB per step). Here the logits are produced
256 rows at a time and turned into the loss *and* its gradient (softmax minus one-hot) while
still in cache; in bf16 one softmax kernel writes the probabilities straight into the bf16
gradient. The two gradient matmuls then run once on the whole gradient. Same loss and
gradients to the autocast path's precision (the head's matmul in the autocast dtype, the
softmax computed in fp32, the gradient rounded once to the autocast dtype).

Measured on 2 CPU cores in bf16 (BENCHMARKS.md, ``benchmarks/profile_step.py``): on a Zen 4
EPYC the LM head + loss group of a tiny-shape step takes 89 ms with the bf16 softmax against
120-392 ms for the stock path (it varies with memory-bandwidth contention); alone, 4,096 rows
take 28-32 ms against 46-68 ms with the earlier fp32-softmax version; lower peak memory.
Only the training forward changes; the model, its weights and ``save_pretrained`` output
are an ordinary ``GPT2LMHeadModel``, and generation uses the stock forward.
"""
from __future__ import annotations

import weakref

import torch

from .vocab_padding import real_rows

IGNORE_INDEX = -100


def _compute_dtype(device_type: str, fallback: torch.dtype) -> torch.dtype:
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return fallback


def _fp32_chunk(logits: torch.Tensor, tgt: torch.Tensor, g: torch.Tensor | None,
                valid: torch.Tensor | None) -> torch.Tensor:
    """Summed target log-probability of one chunk, the softmax in fp32; ``g`` (when given)
    receives d loss / d logits = softmax - onehot(target), zero on ignored rows: the
    exponential written straight in ``g``'s dtype, the target entries p - 1 computed in fp32
    and rounded once, like the stock path's fp32 gradient cast back to the logits' dtype."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # max, sum of exponentials, normalisation
    picked = logp.gather(1, tgt[:, None]).squeeze(1)
    if g is not None:
        torch.exp(logp, out=g)
        g[torch.arange(len(tgt), device=g.device), tgt] = (picked.exp() - 1.0).to(g.dtype)
        if valid is not None:
            g.masked_fill_(~valid[:, None], 0)
    return picked.sum() if valid is None else torch.where(valid, picked, torch.zeros_like(picked)).sum()


def _bf16_chunk(logits: torch.Tensor, tgt: torch.Tensor, g: torch.Tensor,
                valid: torch.Tensor | None) -> torch.Tensor:
    """The same for bf16 logits in a quarter of the passes: one softmax kernel (fp32 inside)
    writes the probabilities straight into the bf16 gradient ``g``, where the stock path upcasts
    the logits, takes an fp32 log-softmax, exponentiates and casts back (measured on a 2-core
    Zen 4 EPYC, 4,096 rows x 4,096 vocab: 28-32 ms against 46-68 ms, the head's GEMM included).
    bf16 keeps fp32's exponent range, so no probability underflows. The target's own entry is
    rebuilt in fp32 from the row: with S the fp32 sum of the row's bf16 probabilities, p = p_t/S
    and 1 - p = (S - p_t)/S, both to bf16's relative precision, so the gradient p - 1 = -(1 - p)
    is as exact as the stock path's for confident tokens too, and log p uses log1p(-(1 - p))
    when p > 1/2."""
    torch.softmax(logits, dim=-1, out=g)
    total = g.sum(-1, dtype=torch.float32)
    p_t = g.gather(1, tgt[:, None]).squeeze(1).float()
    rest = (total - p_t) / total
    p = p_t / total
    logp = torch.where(p < 0.5, p.log(), torch.log1p(-rest))
    g[torch.arange(len(tgt), device=g.device), tgt] = (-rest).to(g.dtype)
    if valid is None:
        return logp.sum()
    g.masked_fill_(~valid[:, None], 0)
    return torch.where(valid, logp, torch.zeros_like(logp)).sum()


class LinearCrossEntropy(torch.autograd.Function):
    """sum over valid rows of -log softmax(h @ W^T)[target]; gradients computed in forward."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                chunk_rows: int, need_grad: bool, real: int | None = None):
        device_type = hidden.device.type
        cd = _compute_dtype(device_type, hidden.dtype)
        ctx.has = (False, False)
        with torch.autocast(device_type, enabled=False):
            h = hidden.to(cd)
            w = weight.to(cd)
            n = h.shape[0]
            valid = targets != IGNORE_INDEX
            # packed blocks have no ignored targets; skip the masking then (the check is a host
            # sync, so only on CPU, where it costs nothing)
            all_valid = h.device.type == "cpu" and bool(valid.all())
            safe_t = targets if all_valid else torch.where(valid, targets, torch.zeros_like(targets))
            total = torch.zeros((), dtype=torch.float32, device=h.device)
            grad_logits = torch.empty((n, w.shape[0]), dtype=cd, device=h.device) if need_grad else None
            softmax_first = need_grad and cd == torch.bfloat16
            masked = real is not None and real < w.shape[0]
            for s in range(0, n, chunk_rows):
                e = min(n, s + chunk_rows)
                tgt = safe_t[s:e]
                v = None if all_valid else valid[s:e]
                logits = h[s:e] @ w.t()
                if masked:  # a padded vocabulary's rows: probability 0, gradient 0
                    logits[:, real:] = float("-inf")
                if softmax_first:
                    total -= _bf16_chunk(logits, tgt, grad_logits[s:e], v)
                else:
                    total -= _fp32_chunk(logits, tgt, grad_logits[s:e] if need_grad else None, v)
            if need_grad:
                grad_h = (grad_logits @ w).to(hidden.dtype) if hidden.requires_grad else None
                grad_w = (grad_logits.t() @ h).to(weight.dtype) if weight.requires_grad else None
                ctx.save_for_backward(*(t for t in (grad_h, grad_w) if t is not None))
                ctx.has = (grad_h is not None, grad_w is not None)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        saved = list(ctx.saved_tensors)
        grad_h = saved.pop(0) * grad_out if ctx.has[0] else None
        grad_w = saved.pop(0) * grad_out if ctx.has[1] else None
        return grad_h, grad_w, None, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk_rows: int = 256, real: int | None = None) -> torch.Tensor:
    """Summed next-token loss of ``hidden`` (rows x d) under the head ``weight`` (vocab x d);
    ``real``: the rows that are the vocabulary (a padded head's others are never predicted)."""
    # (inside Function.forward grad mode is always off, so decide here)
    need_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    return LinearCrossEntropy.apply(hidden, weight, targets, chunk_rows, need_grad, real)


# Rows of logits per chunk: 256 keep a chunk in a CPU core's cache (measured, above); on a GPU that
# many would be hundreds of small GEMMs per step (and a loop torch.compile unrolls), so there
# chunks are large (8,192 x 30,000 bf16 logits: 0.5 GB). Not yet measured on a GPU.
CHUNK_ROWS = {"cpu": 256, "cuda": 8192}


def enable_fused_loss(model, chunk_rows: int | None = None):
    """Route ``model(input_ids=..., labels=...)`` through :func:`linear_cross_entropy`
    (returning the loss and no logits); calls without labels (generation, scoring) keep the
    stock forward. Works through DDP, which calls the module's ``forward``. Returns the model.

    The new forward reaches the model through a weak reference: a bound method stored on the
    model would make a reference cycle, and a discarded model (the autotune probe's, several GB
    at GPT-2 Medium's size) would then outlive its last use until the garbage collector ran."""
    from transformers.modeling_outputs import CausalLMOutputWithCrossAttentions

    stock_forward = type(model).forward
    this = weakref.ref(model)
    # The KV cache's field name in model outputs: ``cache`` since transformers renamed it (the
    # old ``past_key_values`` attribute then warns on every read), ``past_key_values`` before.
    cache_field = "cache" if "cache" in CausalLMOutputWithCrossAttentions.__dataclass_fields__ else "past_key_values"

    def forward(input_ids=None, labels=None, num_items_in_batch=None, **kwargs):
        self = this()
        if labels is None:
            return stock_forward(self, input_ids=input_ids, **kwargs)
        kwargs.pop("return_dict", None)
        out = self.transformer(input_ids=input_ids, **kwargs)
        hidden = out[0][:, :-1].reshape(-1, out[0].shape[-1])
        targets = labels[:, 1:].reshape(-1).to(hidden.device)
        rows = chunk_rows or CHUNK_ROWS.get(hidden.device.type, CHUNK_ROWS["cpu"])
        total = linear_cross_entropy(hidden, self.lm_head.weight, targets, rows, real_rows(self))
        denom = num_items_in_batch if num_items_in_batch is not None else (targets != IGNORE_INDEX).sum()
        if torch.is_tensor(denom):
            denom = denom.to(total.device)
        loss = total / denom
        return CausalLMOutputWithCrossAttentions(loss=loss, logits=None, **{cache_field: out.get(cache_field)})

    model.forward = forward
    return model
