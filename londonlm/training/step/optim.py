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
from torch.distributed.tensor import DTensor, distribute_tensor

from ...core import LondonLMError

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
    ns_dtype: torch.dtype | None = None        # None: bf16 where it is the faster, else fp32
    ns_compiled: bool | None = None            # None: torch.compile'd on CUDA (see Muon)


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


def newton_schulz(x: torch.Tensor, a: float, b: float, c: float, steps: int) -> torch.Tensor:
    """The quintic iteration on a stack of matrices (wide, spectral norm at most 1)."""
    for _ in range(steps):
        gram = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x


class CompiledNewtonSchulz:
    """:func:`newton_schulz` through ``torch.compile`` (one kernel chain per stack shape instead of
    three launches per product), falling back to the eager iteration for good, with one line said,
    where compiling fails (no Triton or C compiler, an unsupported device)."""

    def __init__(self, log=print):
        self.fn, self.failed, self.log = None, None, log

    def __call__(self, x: torch.Tensor, a: float, b: float, c: float, steps: int) -> torch.Tensor:
        if self.failed is None:
            try:
                if self.fn is None:
                    self.fn = torch.compile(newton_schulz, dynamic=False)
                return self.fn(x, a, b, c, steps)
            except Exception as e:  # noqa: BLE001  (whatever stops the compile, eager still works)
                self.failed = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
                self.log(f"Muon: compiling Newton-Schulz failed ({self.failed}); it runs eager")
        return newton_schulz(x, a, b, c, steps)


def orthogonalize_many(updates: list[torch.Tensor], coefficients: tuple[float, float, float],
                       steps: int, eps: float, dtype: torch.dtype, iterate=newton_schulz) -> list[torch.Tensor]:
    """:func:`orthogonalize` of each matrix. Matrices of one shape (tall ones transposed
    first) are stacked, up to ``STACK_ELEMENTS`` per stack, and iterated together: one batched
    matmul per product instead of one per matrix. Each keeps its own norm, so every result is
    what the one-matrix iteration gives.

    A sharded update (a ``DTensor``, as FSDP2 hands the optimizer) is orthogonalised as the
    whole matrix, the distributed Muon of Moonshot AI ("Muon is Scalable for LLM Training",
    2025): every rank gathers the stack's matrices, iterates them all, and keeps its own shard
    of each result (:func:`_full` and :func:`_local_part`). Computing redundantly on every rank
    rather than on one owner rank per matrix costs one all-gather per matrix and no second
    collective, needs no scheduling of owners, and Newton-Schulz is small next to the forward
    and backward passes at this project's sizes. Iterating the DTensors themselves (as before)
    gave the whole-matrix numbers too (within rounding), but through DTensor's implicit
    redistributions: 65 collectives instead of 6 for 6 matrices in 4 stacks on 2 ranks, and
    tall matrices came back sharded on their other dimension."""
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
            # gathered per stack, so at most one stack of whole matrices exists at a time
            mats = [_full(updates[i]) for i in idx]
            tall = [u.size(0) > u.size(1) for u in mats]
            x = torch.stack([u.T if t else u for u, t in zip(mats, tall)]).to(dtype)
            x = x / x.norm(dim=(1, 2), keepdim=True).clamp(min=eps)  # spectral norm at most 1
            x = iterate(x, a, b, c, steps)
            for j, (i, t) in enumerate(zip(idx, tall)):
                out[i] = _local_part(x[j].T if t else x[j], updates[i])
    return out


def _full(update: torch.Tensor) -> torch.Tensor:
    """The whole matrix of a sharded update (an all-gather); a plain tensor as it is."""
    return update.full_tensor() if isinstance(update, DTensor) else update


def _local_part(result: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """``result`` (a whole matrix) laid out like ``update``: for a DTensor, this rank's shard,
    cut locally (``src_data_rank=None``: every rank holds the same whole result, nothing to
    send). The clone lets the whole stack go once the loop moves on; the shard would be a view
    of it."""
    if not isinstance(update, DTensor):
        return result
    return distribute_tensor(result, update.device_mesh, update.placements,
                             src_data_rank=None).clone()


class Muon(torch.optim.Muon):
    """``torch.optim.Muon``'s update with the Newton-Schulz iteration in ``ns_dtype`` and
    batched over same-shape matrices (:func:`orthogonalize_many`). torch runs it in bf16, which
    a CPU without native bf16 emulates: on a 2-core Zen 1 EPYC one 256x1024 iteration took
    7.6 s in bf16 against 0.34 s in fp32, so there it runs in fp32, and so where bf16 is native
    but slower (Intel's avx512_bf16 without AMX: :func:`fast_ns_dtype`). Batching took the tiny
    shape's 16 matrices from 55.8 to 50.6 ms alone on a 2-core Zen 4 (within the noise of a
    whole step, BENCHMARKS.md) and launches 3 kernels per shape and iteration instead of 3 per
    matrix, which is what costs on a GPU. Same state (``momentum_buffer``) as torch's, so
    checkpoints move between the two.

    ``ns_dtype=None`` picks :func:`fast_ns_dtype` for the device the parameters are on when it
    is read, not when the optimizer is built: under FSDP2 the Trainer builds it while the model
    is still on the CPU and accelerate moves the (sharded) parameters to the GPU afterwards.
    ``ns_compiled`` (None: on CUDA) runs the iteration through ``torch.compile``
    (:class:`CompiledNewtonSchulz`; eager where compiling fails): on GPT-2 Small the step cost
    6.2 ms against fused AdamW's 1.9 ms on an H200, eager (BENCHMARKS.md)."""

    def __init__(self, params, ns_dtype: torch.dtype | None = torch.bfloat16, ns_compiled: bool | None = None,
                 **kwargs):
        super().__init__(params, **kwargs)
        self.requested_ns_dtype = ns_dtype
        self._fast_ns_dtypes: dict[torch.device, torch.dtype] = {}  # fast_ns_dtype reads /proc
        self.ns_compiled = ns_compiled
        self._compiled_ns = CompiledNewtonSchulz()

    def _iterate(self):
        """The Newton-Schulz iteration this step runs: compiled when asked, or by default on
        CUDA (read when the step runs: FSDP2 moves the parameters after the optimizer is built);
        eager on CPUs by default, where training runs eager too and a compiled iteration is not
        measured to pay for its compile."""
        compiled = self.ns_compiled
        if compiled is None:
            compiled = self.param_groups[0]["params"][0].device.type == "cuda"
        return self._compiled_ns if compiled else newton_schulz

    @property
    def ns_dtype(self) -> torch.dtype:
        if self.requested_ns_dtype is not None:
            return self.requested_ns_dtype
        device = self.param_groups[0]["params"][0].device
        if device not in self._fast_ns_dtypes:
            self._fast_ns_dtypes[device] = fast_ns_dtype(device)
        return self._fast_ns_dtypes[device]

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
            # per tensor, not torch._foreach_lerp: torch 2.11's DTensor has no sharding rule for that
            # out-of-place op, and FSDP2 + Muon stopped at its first step (the first GPU run, H200)
            updates = [g.lerp(b, m) for g, b in zip(grads, bufs)] if group["nesterov"] else bufs
            updates = orthogonalize_many(updates, group["ns_coefficients"], group["ns_steps"],
                                         group["eps"], self.ns_dtype, self._iterate())
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
            for p, update in zip(params, updates):
                p.add_(update.to(p.dtype), alpha=-_adjust_lr(lr, group["adjust_lr_fn"], p.shape))
        return loss


def fast_ns_dtype(device: torch.device) -> torch.dtype:
    """bf16 where its matmuls outrun fp32's (GPUs; CPUs with AMX, AMD's with avx512_bf16:
    :func:`~londonlm.core.cpu_has_fast_bf16`), else fp32."""
    if device.type == "cuda":
        return torch.bfloat16
    from ...core import cpu_has_fast_bf16  # read at call time: tests emulate another CPU by patching it

    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


class MuonAdamW(torch.optim.Optimizer):
    """One optimizer over a ``torch.optim.Muon`` and a ``torch.optim.AdamW``. Its
    ``param_groups`` are the two inner optimizers' group dicts themselves, so an LR scheduler
    that sets ``group["lr"]`` drives both; ``state_dict`` holds both states in torch's standard
    format (so FSDP's torch.distributed.checkpoint saves it) and ``load_state_dict`` splits it
    back into the two (and re-links the groups, which loading replaces)."""

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
        """torch's standard format over the combined groups, Muon's first: ``state`` keyed by
        the parameter's index over all groups, which is how torch.distributed.checkpoint (FSDP)
        maps states to parameter names, and what ``torch.save`` of any optimizer holds."""
        muon, adamw = self.muon.state_dict(), self.adamw.state_dict()
        offset = sum(len(g["params"]) for g in muon["param_groups"])
        state = {**muon["state"], **{i + offset: s for i, s in adamw["state"].items()}}
        groups = muon["param_groups"] + [{**g, "params": [i + offset for i in g["params"]]}
                                         for g in adamw["param_groups"]]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """A :meth:`state_dict` (parameters keyed by index, or by name as DCP hands them), or
        the ``{"muon", "adamw"}`` pair that versions before the standard format saved."""
        if set(state_dict) == {"muon", "adamw"}:
            muon, adamw = state_dict["muon"], state_dict["adamw"]
        else:
            muon, adamw = self._split(state_dict)
        self.muon.load_state_dict(muon)
        self.adamw.load_state_dict(adamw)
        self.param_groups[:] = self._inner_groups()

    def _split(self, state_dict: dict) -> tuple[dict, dict]:
        """The standard-format ``state_dict`` as the Muon and the AdamW halves' own (torch
        maps each half's keys to its parameters by position, whatever the keys are)."""
        groups = state_dict.get("param_groups")
        if "state" not in state_dict or not self._same_groups(groups):
            raise OptimizerError("this optimizer state is not a Muon+AdamW one (was the run "
                                 "started with another --optim?); resume with the same --optim")
        n = len(self.muon.param_groups)
        halves = []
        for part in (groups[:n], groups[n:]):
            keys = {k for g in part for k in g["params"]}
            halves.append({"state": {k: s for k, s in state_dict["state"].items() if k in keys},
                           "param_groups": part})
        return halves[0], halves[1]

    def _same_groups(self, groups) -> bool:
        """Whether saved ``groups`` are this optimizer's: their sizes, and each half's own
        settings (Muon's ``ns_coefficients``, AdamW's ``betas``), which another optimizer's
        groups, even of the same sizes, do not both have."""
        if not isinstance(groups, list) or len(groups) != len(self.param_groups):
            return False
        own = (["ns_coefficients"] * len(self.muon.param_groups)
               + ["betas"] * len(self.adamw.param_groups))
        return all(key in g and len(g.get("params", ())) == len(mine["params"])
                   for g, mine, key in zip(groups, self.param_groups, own))


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
    muon = Muon(hidden, ns_dtype=opts.ns_dtype, ns_compiled=opts.ns_compiled,  # None: per device, see Muon
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


def optimizer_factory(optimizer: str, args, log=print):
    """``--optim muon``: a builder of Muon on the hidden matrices and AdamW on the rest, called by
    the Trainer when it builds its optimizer (None for adamw: the Trainer's own)."""
    if optimizer == "adamw":
        return None
    if optimizer != "muon":
        raise OptimizerError(f"unknown optimizer {optimizer!r}: choose adamw or muon")

    def build(model):
        log(describe_split(model))
        return build_muon_adamw(model, muon_options_from_args(args))

    return build


def describe_split(model) -> str:
    """One line for the training log: which parameters each half optimises."""
    g = split_parameters(model)
    n = {k: sum(p.numel() for _, p in v) for k, v in g.items()}
    return (f"optimizer: Muon on {len(g['muon'])} hidden matrices ({n['muon'] / 1e6:.2f}M params), "
            f"AdamW on {len(g['adamw_decay']) + len(g['adamw_no_decay'])} others "
            f"({(n['adamw_decay'] + n['adamw_no_decay']) / 1e6:.2f}M: embeddings/LM head, norms, biases)")
