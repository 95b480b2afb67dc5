"""Learning-rate range test (Smith 2017, "Cyclical Learning Rates", section 3.3): one short
run whose learning rate grows exponentially from ``min_lr`` to ``max_lr``; the smoothed
training loss against the learning rate shows where learning starts, where it is fastest
and where it diverges. Writes a CSV table, a PNG plot and a JSON summary with a suggestion.

The model is freshly initialised and thrown away; nothing is written to the run's
checkpoints. AdamW with the training stage's betas and weight decay, no warmup (the ramp
itself starts tiny), gradient clipping as in training.
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from .layout import Layout, RunLayout


@dataclass
class LRFindResult:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)       # raw per-step training loss
    smoothed: list[float] = field(default_factory=list)     # bias-corrected EMA of the loss
    stopped_early: str | None = None
    seconds: float = 0.0
    suggestion: dict = field(default_factory=dict)


def lr_schedule(min_lr: float, max_lr: float, steps: int) -> list[float]:
    """``steps`` learning rates evenly spaced in log space from min_lr to max_lr."""
    if not 0 < min_lr < max_lr:
        raise ValueError(f"need 0 < min_lr < max_lr, got {min_lr} and {max_lr}")
    if steps < 5:
        raise ValueError(f"the sweep needs at least 5 steps, got {steps}")
    r = math.log(max_lr / min_lr) / (steps - 1)
    return [min_lr * math.exp(r * i) for i in range(steps)]


def suggest_lr(lrs: list[float], smoothed: list[float], skip_start: int = 3) -> dict:
    """Two classic readings of the curve: the learning rate of steepest loss descent
    (d loss / d log lr most negative) and one tenth of the learning rate at the minimum
    loss. The suggestion is the smaller of the two: the largest rate still well clear of
    divergence."""
    if len(smoothed) < skip_start + 3:
        raise ValueError("too few points to read a suggestion; run more --steps")
    i_min = min(range(skip_start, len(smoothed)), key=lambda i: smoothed[i])
    logs = [math.log10(x) for x in lrs]
    hi = max(i_min, skip_start + 2)
    grads = [(smoothed[i + 1] - smoothed[i - 1]) / (logs[i + 1] - logs[i - 1])
             for i in range(skip_start, min(hi, len(smoothed) - 1))]
    i_steep = skip_start + min(range(len(grads)), key=lambda j: grads[j]) if grads else i_min
    steep, min_over_10 = lrs[i_steep], lrs[i_min] / 10
    return {"suggested_lr": min(steep, min_over_10), "steepest_lr": steep,
            "min_loss_lr": lrs[i_min], "min_loss_lr_over_10": min_over_10,
            "min_smoothed_loss": smoothed[i_min]}


def run_lr_sweep(model, blocks, batch_size: int, lrs: list[float], *, weight_decay: float = 0.1,
                 betas=(0.9, 0.95), max_grad_norm: float = 1.0, smoothing: float = 0.98,
                 diverge_factor: float = 4.0, seed: int = 0, device: str = "cpu",
                 log=print) -> LRFindResult:
    """Train ``model`` one step per learning rate in ``lrs`` on random batches of ``blocks``
    (a dataset of ``{"input_ids", "labels"}``); stop once the smoothed loss exceeds
    ``diverge_factor`` x its minimum."""
    import torch

    g = torch.Generator().manual_seed(seed)
    model.to(device).train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lrs[0], betas=betas)
    res = LRFindResult()
    avg, best, t0 = 0.0, float("inf"), time.time()
    n = len(blocks)
    for i, lr in enumerate(lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, n, (batch_size,), generator=g).tolist()
        batch = [blocks[j] for j in idx]
        ids = torch.stack([b["input_ids"] for b in batch]).to(device)
        labels = torch.stack([b["labels"] for b in batch]).to(device)
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        opt.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            res.stopped_early = f"loss became {value} at lr {lr:.3g}"
            break
        avg = smoothing * avg + (1 - smoothing) * value
        sm = avg / (1 - smoothing ** (i + 1))
        res.lrs.append(lr)
        res.losses.append(value)
        res.smoothed.append(sm)
        best = min(best, sm)
        if i and i % max(1, len(lrs) // 10) == 0:
            log(f"  step {i:>4}/{len(lrs)}  lr {lr:.3g}  loss {value:.4f}  smoothed {sm:.4f}")
        if i > 5 and sm > diverge_factor * best:
            res.stopped_early = f"smoothed loss {sm:.3f} > {diverge_factor:g} x minimum at lr {lr:.3g}"
            break
    res.seconds = round(time.time() - t0, 1)
    res.suggestion = suggest_lr(res.lrs, res.smoothed)
    return res


def write_lr_find(res: LRFindResult, out_dir: str | Path, title: str = "",
                  extra: dict | None = None) -> dict:
    """``lr_find.csv`` (step, lr, loss, smoothed), ``lr_find.png`` and ``lr_find.json``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "lr_find.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["step", "learning_rate", "loss", "smoothed_loss"])
        for i, (lr, lo, sm) in enumerate(zip(res.lrs, res.losses, res.smoothed)):
            w.writerow([i, f"{lr:.6g}", f"{lo:.5f}", f"{sm:.5f}"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(res.lrs, res.losses, alpha=0.3, label="loss")
    ax.plot(res.lrs, res.smoothed, label="smoothed loss")
    s = res.suggestion
    ax.axvline(s["suggested_lr"], color="red", ls="--", label=f"suggested {s['suggested_lr']:.2g}")
    ax.axvline(s["min_loss_lr"], color="grey", ls=":", label=f"minimum {s['min_loss_lr']:.2g}")
    ax.set_xscale("log")
    lo = min(res.smoothed)
    ax.set_ylim(min(min(res.losses), lo) - 0.1, max(res.smoothed[0], lo) + 0.5)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (nats/token)")
    ax.set_title(title or "learning-rate range test")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "lr_find.png", dpi=100)
    plt.close(fig)
    summary = {**s, "steps_run": len(res.lrs), "stopped_early": res.stopped_early,
               "seconds": res.seconds, "lr_range": [res.lrs[0], res.lrs[-1]], **(extra or {}),
               "table": str(out / "lr_find.csv"), "plot": str(out / "lr_find.png")}
    (out / "lr_find.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


@dataclass
class LRFindOptions:
    """One range test: the data and shape of a training run, and the ramp."""

    run: RunLayout              # whose token cache is used (built when missing)
    layout: Layout
    tokenizer_dir: Path
    processed_dir: Path
    output_dir: Path
    preset: str
    n_layer: int
    n_head: int
    n_embd: int
    context_length: int
    batch_size: int
    dropout: float = 0.0
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    preset_learning_rate: float | None = None
    min_lr: float = 1e-6
    max_lr: float = 1.0
    steps: int = 100
    smoothing: float = 0.98
    diverge_factor: float = 4.0
    seed: int = 0


def find_lr(o: LRFindOptions, log=print) -> tuple[dict, LRFindResult]:
    """Build the preset's model fresh, ramp the learning rate over the run's training blocks,
    write the table, plot and summary to ``o.output_dir``. The model is discarded."""
    import torch

    from .modeling import ModelShape, build_model, padded_vocab
    from .training.data import cached_tokens, load_blocks
    from .training.model import configure_torch
    from .training.options import RunOptions
    from .training.plan import load_tokenizer, validated

    tok = load_tokenizer(o.tokenizer_dir)
    shape = validated(ModelShape(o.n_layer, o.n_head, o.n_embd, o.context_length,
                                 padded_vocab(len(tok))))
    log(f"model: {shape.n_params / 1e6:.2f}M parameters; sweep {o.min_lr:g} -> {o.max_lr:g} "
        f"over {o.steps} steps at batch {o.batch_size} x {o.context_length} tokens")
    run_opts = RunOptions(run=o.run, layout=o.layout, tokenizer_dir=o.tokenizer_dir,
                          processed_dir=o.processed_dir, preset=o.preset, n_layer=o.n_layer,
                          n_head=o.n_head, n_embd=o.n_embd, context_length=o.context_length)
    meta, _ = cached_tokens(run_opts, tok, progress=False)
    blocks = load_blocks(o.run.cache_dir, "train", meta, o.context_length)
    configure_torch()  # as training does: one thread per physical core
    model = build_model(shape, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id,
                        dropout=o.dropout, seed=o.seed)
    res = run_lr_sweep(model, blocks, o.batch_size, lr_schedule(o.min_lr, o.max_lr, o.steps),
                       weight_decay=o.weight_decay, max_grad_norm=o.max_grad_norm,
                       smoothing=o.smoothing, diverge_factor=o.diverge_factor, seed=o.seed,
                       device="cuda" if torch.cuda.is_available() else "cpu", log=log)
    summary = write_lr_find(res, o.output_dir,
                            title=f"LR range test: {o.preset} preset ({shape.n_params / 1e6:.1f}M)",
                            extra={"preset": o.preset, "batch_size": o.batch_size,
                                   "context_length": o.context_length,
                                   "preset_learning_rate": o.preset_learning_rate})
    return summary, res
