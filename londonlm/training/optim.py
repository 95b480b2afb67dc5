"""``--optim muon``: Muon on the hidden weight matrices, AdamW on everything else, as one
torch optimizer that a Hugging Face ``Trainer`` steps, schedules and checkpoints like AdamW.

``torch.optim.Muon`` (torch >= 2.9) orthogonalises the momentum of 2-D matrices with a
Newton-Schulz iteration and refuses any other parameter, and it is meant for hidden layers
only: the embeddings and the LM head (tied to them in GPT-2), the layer norms and the
biases stay with AdamW. Muon's ``match_rms_adamw`` learning-rate adjustment (Moonshot AI,
"Muon is Scalable for LLM Training", 2025) scales each matrix's update to AdamW's typical
size, so both halves share the run's one learning rate, schedule and weight decay. It is
also symmetric in the matrix's two sides, which matters here: GPT-2's ``Conv1D`` weights
are stored (in, out), transposed from ``nn.Linear``, and the "original" adjustment is not.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core import LondonLMError

OPTIMIZERS = ("adamw", "muon")


class OptimizerError(LondonLMError, ValueError):
    """An optimizer choice that cannot work for this model or machine."""


@dataclass
class MuonOptions:
    lr: float
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)   # AdamW half (the project's adam_beta2 0.95)
    eps: float = 1e-8
    momentum: float = 0.95                     # Muon half: Keller Jordan's defaults
    nesterov: bool = True
    ns_steps: int = 5
    muon_lr: float | None = None               # None: the same as ``lr``
    adjust_lr_fn: str = "match_rms_adamw"
    ns_dtype: torch.dtype | None = None        # None: bf16 where native, else fp32


def split_parameters(model) -> dict[str, list[tuple[str, torch.nn.Parameter]]]:
    """The model's trainable parameters as ``muon`` (2-D hidden matrices), ``adamw_decay``
    (embeddings and an untied LM head: decayed as the Trainer's AdamW does) and
    ``adamw_no_decay`` (biases, norms, any other non-matrix)."""
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is not None:
        embedding_ids.add(id(head.weight))
    groups: dict[str, list] = {"muon": [], "adamw_decay": [], "adamw_no_decay": []}
    for name, p in model.named_parameters():  # tied weights appear once
        if not p.requires_grad:
            continue
        if id(p) in embedding_ids:
            groups["adamw_decay"].append((name, p))
        elif p.ndim == 2:
            groups["muon"].append((name, p))
        else:
            groups["adamw_no_decay"].append((name, p))
    return groups


def orthogonalize(update: torch.Tensor, coefficients: tuple[float, float, float], steps: int,
                  eps: float, dtype: torch.dtype) -> torch.Tensor:
    """torch's quintic Newton-Schulz iteration (``torch.optim._muon``), in ``dtype``."""
    return orthogonalize_many([update], coefficients, steps, eps, dtype)[0]


# Elements per Newton-Schulz stack: bounds the transient copies (the stack, its Gram products)
# for deep models, e.g. GPT-2 Medium's 48 MLP matrices of 1024x4096 go in 6 stacks of 8, not one
STACK_ELEMENTS = 1 << 25


def orthogonalize_many(updates: list[torch.Tensor], coefficients: tuple[float, float, float],
                       steps: int, eps: float, dtype: torch.dtype) -> list[torch.Tensor]:
    """:func:`orthogonalize` of each matrix. Matrices of one shape (tall ones transposed
    first) are stacked, up to ``STACK_ELEMENTS`` per stack, and iterated together: one batched
    matmul per product instead of one per matrix. Each keeps its own norm, so every result is
    what the one-matrix iteration gives."""
    a, b, c = coefficients
    by_shape: dict[tuple, list[int]] = {}
    for i, u in enumerate(updates):
        if u.ndim != 2:
            raise ValueError(f"Newton-Schulz needs 2-D matrices, got shape {tuple(u.shape)}")
        by_shape.setdefault((min(u.shape), max(u.shape), u.device), []).append(i)
    out: list = [None] * len(updates)
    for (m, n, _), same in by_shape.items():
        per_stack = max(1, STACK_ELEMENTS // (m * n))
        for idx in (same[k:k + per_stack] for k in range(0, len(same), per_stack)):
            tall = [updates[i].size(0) > updates[i].size(1) for i in idx]
            x = torch.stack([updates[i].T if t else updates[i] for i, t in zip(idx, tall)]).to(dtype)
            x = x / x.norm(dim=(1, 2), keepdim=True).clamp(min=eps)  # spectral norm at most 1
            for _ in range(steps):
                gram = x @ x.mT
                x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
            for j, (i, t) in enumerate(zip(idx, tall)):
                out[i] = x[j].T if t else x[j]
    return out


class Muon(torch.optim.Muon):
    """``torch.optim.Muon``'s update with the Newton-Schulz iteration in ``ns_dtype`` and
    batched over same-shape matrices (:func:`orthogonalize_many`). torch runs it in bf16, which
    a CPU without native bf16 emulates: on a 2-core Zen 1 EPYC one 256x1024 iteration took
    7.6 s in bf16 against 0.34 s in fp32, so there it runs in fp32. Batching took the tiny
    shape's 16 matrices from 55.8 to 50.6 ms alone on a 2-core Zen 4 (within the noise of a
    whole step, BENCHMARKS.md) and launches 3 kernels per shape and iteration instead of 3 per
    matrix, which is what costs on a GPU. Same state (``momentum_buffer``) as torch's, so
    checkpoints move between the two."""

    def __init__(self, params, ns_dtype: torch.dtype = torch.bfloat16, **kwargs):
        super().__init__(params, **kwargs)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        from torch.optim._muon import _adjust_lr

        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, bufs = [], [], []
            self._init_group(group, params, grads, bufs)
            if not params:
                continue
            m, lr = group["momentum"], group["lr"]
            torch._foreach_lerp_(bufs, grads, 1 - m)
            updates = torch._foreach_lerp(grads, bufs, m) if group["nesterov"] else bufs
            updates = orthogonalize_many(updates, group["ns_coefficients"], group["ns_steps"],
                                         group["eps"], self.ns_dtype)
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
            for p, update in zip(params, updates):
                p.add_(update.to(p.dtype), alpha=-_adjust_lr(lr, group["adjust_lr_fn"], p.shape))
        return loss


def fast_ns_dtype(device: torch.device) -> torch.dtype:
    """bf16 where it is native (GPUs, CPUs with AVX512-BF16/AMX), else fp32."""
    if device.type == "cuda":
        return torch.bfloat16
    from ..core import cpu_has_native_bf16

    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


class MuonAdamW(torch.optim.Optimizer):
    """One optimizer over a ``torch.optim.Muon`` and a ``torch.optim.AdamW``. Its
    ``param_groups`` are the two inner optimizers' group dicts themselves, so an LR scheduler
    that sets ``group["lr"]`` drives both; ``state_dict`` holds both states and
    ``load_state_dict`` restores both (and re-links the groups, which loading replaces)."""

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer):
        self.muon, self.adamw = muon, adamw
        super().__init__(self._inner_groups(), defaults={})

    def _inner_groups(self) -> list[dict]:
        return [*self.muon.param_groups, *self.adamw.param_groups]

    # the inner optimizers own the per-parameter state; Optimizer.__init__ (and accelerate's
    # wrapper) assign to .state, which must not shadow theirs
    @property
    def state(self):
        return {**self.muon.state, **self.adamw.state}

    @state.setter
    def state(self, _value):
        pass

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        if set(state_dict) != {"muon", "adamw"}:
            raise OptimizerError("this optimizer state is not a Muon+AdamW one (was the run "
                                 "started with another --optim?); resume with the same --optim")
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        self.param_groups[:] = self._inner_groups()


def build_muon_adamw(model, opts: MuonOptions) -> MuonAdamW:
    """Muon + AdamW over ``model``'s parameters (see :func:`split_parameters`)."""
    if not hasattr(torch.optim, "Muon"):
        raise OptimizerError(f"--optim muon needs torch.optim.Muon (torch >= 2.9); this is torch "
                             f"{torch.__version__}. Upgrade torch or use --optim adamw")
    groups = split_parameters(model)
    if not groups["muon"]:
        raise OptimizerError("--optim muon: the model has no 2-D hidden weight matrices (is it "
                             "sharded, e.g. FSDP, which flattens them?); use --optim adamw")
    hidden = [p for _, p in groups["muon"]]
    muon = Muon(hidden, ns_dtype=opts.ns_dtype or fast_ns_dtype(hidden[0].device),
                lr=opts.muon_lr or opts.lr, weight_decay=opts.weight_decay, momentum=opts.momentum,
                nesterov=opts.nesterov, ns_steps=opts.ns_steps, adjust_lr_fn=opts.adjust_lr_fn)
    fused = all(p.is_cuda for _, p in groups["adamw_decay"] + groups["adamw_no_decay"])
    adamw = torch.optim.AdamW(
        [{"params": [p for _, p in groups["adamw_decay"]], "weight_decay": opts.weight_decay},
         {"params": [p for _, p in groups["adamw_no_decay"]], "weight_decay": 0.0}],
        lr=opts.lr, betas=opts.betas, eps=opts.eps, fused=fused or None)
    return MuonAdamW(muon, adamw)


def muon_options_from_args(args) -> MuonOptions:
    """The AdamW settings of a ``TrainingArguments`` carried over to Muon + AdamW."""
    return MuonOptions(lr=args.learning_rate, weight_decay=args.weight_decay,
                       betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)


def describe_split(model) -> str:
    """One line for the training log: which parameters each half optimises."""
    g = split_parameters(model)
    n = {k: sum(p.numel() for _, p in v) for k, v in g.items()}
    return (f"optimizer: Muon on {len(g['muon'])} hidden matrices ({n['muon'] / 1e6:.2f}M params), "
            f"AdamW on {len(g['adamw_decay']) + len(g['adamw_no_decay'])} others "
            f"({(n['adamw_decay'] + n['adamw_no_decay']) / 1e6:.2f}M: embeddings/LM head, norms, biases)")
