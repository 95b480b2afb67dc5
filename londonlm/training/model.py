"""Step 3 of a run, the model: kernels and threads for this machine, then the model itself:
freshly built, loaded from --init_from weights, or from a continued run's checkpoint."""
from __future__ import annotations

from dataclasses import dataclass

from .base import log
from .modeling import build_model, padded_vocab
from .options import RunOptions
from .plan import TrainingPlan


@dataclass(frozen=True)
class Kernels:
    attn: str        # attention implementation: eager or sdpa
    fused_loss: bool
    precision: str   # bf16, fp16 or fp32
    cuda: bool


def choose_kernels(opts: RunOptions, args) -> Kernels:
    """The attention kernel and LM-head loss for this machine and precision."""
    import torch

    cuda = torch.cuda.is_available()
    # Measured on 2 CPU cores in bf16 (BENCHMARKS.md): the matmul-based eager attention beats
    # PyTorch's CPU flash kernel at these context lengths; on GPUs sdpa/flash is the fast one.
    attn = opts.attn_implementation
    if attn == "auto":
        attn = "eager" if (not cuda and args.bf16) else "sdpa"
    # the fused loss measured ~15% faster in CPU bf16 on a Zen 4 EPYC, even on a Zen 5 one (with
    # lower peak memory), and no faster in CPU fp32: auto = CPU bf16 only (BENCHMARKS.md)
    fused = opts.fused_loss == "on" or (opts.fused_loss == "auto" and not cuda and args.bf16)
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
    return Kernels(attn, fused, precision, cuda)


def configure_torch() -> None:
    """CPU: threads from OMP_NUM_THREADS, else the usable physical cores shared among this
    node's ranks (hardware.training_threads), and freed memory kept in the heap; GPU: TF32."""
    import torch

    from ..core import keep_freed_memory_in_heap, use_training_threads

    if not torch.cuda.is_available():
        use_training_threads()
        keep_freed_memory_in_heap()
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _from_parent(plan: TrainingPlan):
    """--init_from: the parent's weights, its embeddings resized when the tokenizer differs
    (only reached with --resize_embeddings), with this tokenizer's special ids."""
    from transformers import AutoModelForCausalLM

    tokenizer, init = plan.tokenizer, plan.init
    model = AutoModelForCausalLM.from_pretrained(str(init.path))
    if init.tokenizer_problem:
        model.resize_token_embeddings(padded_vocab(len(tokenizer)))
        log(f"--resize_embeddings: {init.tokenizer_problem}; embeddings resized to "
            f"{padded_vocab(len(tokenizer))} rows")
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.config, k, getattr(tokenizer, k))
    log(f"init from {init.path}: step 0, fresh optimizer and schedule (continued pre-training)")
    return model


def make_model(opts: RunOptions, plan: TrainingPlan, kernels: Kernels, seed: int):
    """The model the Trainer trains (it then loads a resumed checkpoint's weights itself)."""
    from transformers import AutoModelForCausalLM

    tok = plan.tokenizer
    if plan.resumes_continued_run:
        model = AutoModelForCausalLM.from_pretrained(str(plan.resume))
    elif plan.init is not None:
        model = _from_parent(plan)
    else:
        model = build_model(plan.shape, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id,
                            dropout=opts.dropout, attn_implementation=kernels.attn, seed=seed)
    if plan.resumes_continued_run or plan.init is not None:
        model.set_attn_implementation(kernels.attn)
    if kernels.fused_loss:
        from .fused_loss import enable_fused_loss

        enable_fused_loss(model)
    import torch

    log(f"precision: {kernels.precision}, attention: {kernels.attn}, fused LM-head loss: "
        f"{'on' if kernels.fused_loss else 'off'}"
        + ("" if kernels.cuda else f", {torch.get_num_threads()} threads"))
    return model
