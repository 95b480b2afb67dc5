"""Learning-rate range test (Smith 2017, "Cyclical Learning Rates", section 3.3): one short
run whose learning rate grows exponentially from ``min_lr`` to ``max_lr``; the smoothed
training loss against the learning rate shows where learning starts, where it is fastest
and where it diverges. Writes a CSV table, a PNG plot and a JSON summary with a suggestion.

The model is freshly initialised and thrown away; nothing is written to the run's
checkpoints or its token cache: the sweep reads the run's cache only when it is current for the
sweep's context, else builds its own under the output folder (``lr_find_tokens/``). It trains
through the training package's Trainer (:mod:`londonlm.training.step.trainer`):
the same precision policy (``--bf16``, ``--autotune``), kernels, AdamW with the training
stage's betas and weight decay, gradient clipping; no warmup (the ramp itself starts tiny).
"""
from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...core import (Layout, LondonLMError, RunLayout, free_memory_bytes, refuse_artifacts_folder,
                     write_bytes_atomic, write_text_atomic)
from ...tokens import ensure_cache, era_tokens_of
from ..data import Position, StreamSampler, load_blocks
from ..job import ModelConfig, OutputConfig, RunControl, config_from_values, training_arguments
from ..model import ModelShape, build_model, configure_torch, prepare_for_training
from ..plan import load_tokenizer, validated
from ..speed.choice import choose_speed
from ..speed.settings import SpeedRequest, SpeedSettings
from ..step.callbacks import step_callbacks
from ..step.trainer import build_trainer
from ..trainer_checks import largest_adam_rate


# The finder's own token cache, in its output folder: never the run's pretokenized_data/, which
# the run's checkpoints were trained on (rebuilt at another context, they could not resume).
LR_FIND_CACHE = "lr_find_tokens"
# At most this many decades of learning rate per step: wider, and the loss diverges within a
# handful of steps, too few to read a suggestion from (1e-300 -> 1e300 in 10 steps: 67 a step).
MAX_DECADES_PER_STEP = 1.0
# The largest rate the sweep's optimizer (AdamW, beta1 0.9) can apply to float32 weights: past it,
# a traceback mid-sweep (--min_lr 1e300 --max_lr 1e308; --max_lr 1e38 at its first step)
LARGEST_RATE = largest_adam_rate(0.9)
# What a sweep writes, the summary last: the three are replaced together or not at all
LR_FIND_FILES = ("lr_find.csv", "lr_find.png", "lr_find.json")


class LRFindError(LondonLMError, ValueError):
    """A sweep that cannot run or cannot be read; the message says what to change."""


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
    check_range(min_lr, max_lr, steps)
    r = math.log(max_lr / min_lr) / (steps - 1)
    return [min_lr * math.exp(r * i) for i in range(steps)]


def check_range(min_lr: float, max_lr: float, steps: int) -> None:
    """Refuse a ramp that cannot give a readable curve, before any model is built."""
    if not 0 < min_lr < max_lr:
        raise LRFindError(f"need 0 < min_lr < max_lr, got {min_lr:g} and {max_lr:g}")
    if steps < 5:
        raise LRFindError(f"the sweep needs at least 5 steps, got {steps}")
    decades = math.log10(max_lr) - math.log10(min_lr)  # no overflow of max_lr / min_lr
    if decades / (steps - 1) > MAX_DECADES_PER_STEP:
        raise LRFindError(
            f"--min_lr {min_lr:g} to --max_lr {max_lr:g} spans {decades:.0f} decades, too wide for "
            f"{steps} steps (at most {MAX_DECADES_PER_STEP:g} a step): narrow the range or pass "
            f"--steps {math.ceil(decades / MAX_DECADES_PER_STEP) + 1} or more")
    if max_lr > LARGEST_RATE:
        raise LRFindError(f"--max_lr {max_lr:g} is past the largest rate the optimizer can apply to float32 "
                          f"weights ({LARGEST_RATE:.3g}); a ramp that far up only diverges: give a smaller --max_lr")


def suggest_lr(lrs: list[float], smoothed: list[float], skip_start: int = 3,
               stopped: str | None = None) -> dict:
    """Two classic readings of the curve: the learning rate of steepest loss descent
    (d loss / d log lr most negative) and one tenth of the learning rate at the minimum
    loss. The suggestion is the smaller of the two: the largest rate still well clear of
    divergence. ``stopped``: why the sweep ended early, named when it left too few points."""
    if len(smoothed) < skip_start + 3:
        why = f" (it stopped early: {stopped})" if stopped else ""
        raise LRFindError(f"the sweep recorded {len(smoothed)} points{why}, too few to read a suggestion "
                          f"(at least {skip_start + 3}); run more --steps or narrow --min_lr/--max_lr")
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


class ExponentialRamp:
    """The ramp as a ``LambdaLR`` factor over the base rate ``min_lr``: step i trains at
    ``lr_schedule(min_lr, max_lr, steps)[i]``."""

    def __init__(self, min_lr: float, max_lr: float, steps: int):
        self.lrs = lr_schedule(min_lr, max_lr, steps)

    def __call__(self, step: int) -> float:
        return self.lrs[min(step, len(self.lrs) - 1)] / self.lrs[0]


def sweep_recorder(res: LRFindResult, lrs: list[float], *, smoothing: float, diverge_factor: float,
                   log=print):
    """A Trainer callback that records each step's loss (logged every step) at the rate it
    trained with, smooths it, and stops the run once the loss is not finite or the smoothed
    loss exceeds ``diverge_factor`` x its minimum."""
    from transformers import TrainerCallback

    class SweepRecorder(TrainerCallback):
        avg, best = 0.0, float("inf")

        def on_log(self, args, state, control, logs=None, **kw):
            if not logs or "loss" not in logs:
                return
            i = state.global_step - 1
            lr, value = lrs[i], float(logs["loss"])
            if not math.isfinite(value):
                res.stopped_early = f"loss became {value} at lr {lr:.3g}"
                control.should_training_stop = True
                return
            self.avg = smoothing * self.avg + (1 - smoothing) * value
            sm = self.avg / (1 - smoothing ** (i + 1))
            res.lrs.append(lr)
            res.losses.append(value)
            res.smoothed.append(sm)
            self.best = min(self.best, sm)
            if i and i % max(1, len(lrs) // 10) == 0:
                log(f"  step {i:>4}/{len(lrs)}  lr {lr:.3g}  loss {value:.4f}  smoothed {sm:.4f}")
            if i > 5 and sm > diverge_factor * self.best:
                res.stopped_early = f"smoothed loss {sm:.3f} > {diverge_factor:g} x minimum at lr {lr:.3g}"
                control.should_training_stop = True

    return SweepRecorder()


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend; one line when matplotlib is missing, or
    refuses to import for an $MPLBACKEND it does not know (asked before the sweep, not after
    it has run)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise LRFindError(f"the LR finder draws lr_find.png with matplotlib, which cannot be "
                          f"imported ({e}): pip install -r requirements.txt") from None
    except ValueError as e:  # matplotlib's import checks $MPLBACKEND (the finder uses Agg)
        raise LRFindError(f"matplotlib cannot be imported to draw lr_find.png: {e}; unset "
                          f"MPLBACKEND or set it to a backend this matplotlib has") from None
    return plt


def check_outputs(out_dir: str | Path) -> None:
    """One line, before the sweep, when a file the sweep writes has a folder in its place: found
    after the sweep, the files before it would have been replaced, the summary not. And when
    the folder is another artifact's (a model's: the sweep's files and token cache would mix
    with the model's, and a publish of that folder would carry them)."""
    refuse_artifacts_folder("--output_dir", out_dir)
    taken = [Path(out_dir) / f for f in LR_FIND_FILES if (Path(out_dir) / f).is_dir()]
    if taken:
        raise LRFindError(f"cannot write {taken[0]}: it is a folder where the sweep's file goes; "
                          f"move it aside or name another --output_dir; nothing was written")


def _table(res: LRFindResult) -> str:
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(["step", "learning_rate", "loss", "smoothed_loss"])
    for i, (lr, lo, sm) in enumerate(zip(res.lrs, res.losses, res.smoothed)):
        w.writerow([i, f"{lr:.6g}", f"{lo:.5f}", f"{sm:.5f}"])
    return f.getvalue()


def _plot(res: LRFindResult, title: str) -> bytes:
    """The curve as PNG bytes (drawn in memory: nothing is written until every file is made)."""
    plt = pyplot()
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
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    return png.getvalue()


def write_lr_find(res: LRFindResult, out_dir: str | Path, title: str = "",
                  extra: dict | None = None) -> dict:
    """``lr_find.csv`` (step, lr, loss, smoothed), ``lr_find.png`` and ``lr_find.json``, each
    whole or not at all, the summary last; all made in memory first, so a plot that cannot be
    drawn leaves a previous sweep's files as they were."""
    out = Path(out_dir)
    check_outputs(out)
    csv_path, png_path, json_path = (out / f for f in LR_FIND_FILES)
    table, png = _table(res), _plot(res, title)
    summary = {**res.suggestion, "steps_run": len(res.lrs), "stopped_early": res.stopped_early,
               "seconds": res.seconds, "lr_range": [res.lrs[0], res.lrs[-1]], **(extra or {}),
               "table": str(csv_path), "plot": str(png_path)}
    write_text_atomic(csv_path, table)
    write_bytes_atomic(png_path, png)
    write_text_atomic(json_path, json.dumps(summary, indent=1))
    return summary


@dataclass
class LRFindOptions:
    """One range test: the data and shape of a training run, and the ramp."""

    run: RunLayout              # whose token cache is read when current (never rebuilt)
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
    precision: str | None = None    # fp32/bf16 given on the command line; None: the machine's
    autotune: str = "off"           # the sweep is short: fixed rules unless asked to measure


def sweep_config(o: LRFindOptions, output_dir: str):
    """The sweep's configuration tree (the training package's): one logged step per rate,
    nothing saved or evaluated; NaN losses are logged as they are (the Trainer would otherwise
    average them away)."""
    import torch

    cuda = torch.cuda.is_available()
    values = dict(
        output_dir=output_dir, max_steps=o.steps, per_device_train_batch_size=o.batch_size,
        per_device_eval_batch_size=o.batch_size, gradient_accumulation_steps=1,
        learning_rate=o.min_lr, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=o.weight_decay, max_grad_norm=o.max_grad_norm, adam_beta2=0.95,
        save_strategy="no", eval_strategy="no", logging_steps=1, logging_nan_inf_filter=False,
        report_to=[], seed=o.seed, data_seed=o.seed, disable_tqdm=True, dataloader_num_workers=0,
        optim="adamw_torch_fused" if cuda else "adamw_torch",
        torch_compile=False)  # a sweep of a few hundred steps never pays back a compile
    model = ModelConfig(o.n_layer, o.n_head, o.n_embd, o.context_length, dropout=o.dropout)
    return config_from_values(values, model=model, data=None,
                              request=SpeedRequest(o.autotune, 30.0, SpeedSettings(o.precision)),
                              optimizer="adamw", control=RunControl(),
                              output=OutputConfig(RunLayout(Path(output_dir)), "lr_find"))


def sweep(o: LRFindOptions, shape, tok, blocks, log=print) -> tuple[LRFindResult, str]:
    """Train a fresh model of ``shape`` one step per rate of the ramp through the training
    package's Trainer; returns (the recorded curve, the precision it ran in)."""
    import tempfile

    from transformers import PrinterCallback, default_data_collator

    ramp, res = ExponentialRamp(o.min_lr, o.max_lr, o.steps), LRFindResult()
    with tempfile.TemporaryDirectory(prefix="lr_find-") as tmp:
        config, speed = choose_speed(sweep_config(o, tmp), shape, 1)
        args = training_arguments(config)
        model = build_model(shape, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id,
                            dropout=o.dropout, attn_implementation=speed.settings.attn_implementation,
                            seed=o.seed)
        prepare_for_training(model, speed.settings)
        stream = StreamSampler(len(blocks), o.seed, 0, o.batch_size)
        recorder = sweep_recorder(res, ramp.lrs, smoothing=o.smoothing,
                                  diverge_factor=o.diverge_factor, log=log)
        callbacks, _ = step_callbacks(
            config.control, flops_per_token=shape.flops_per_token(), tokens_per_step=o.batch_size * o.context_length,
            world=1, position=Position(0, 0, o.batch_size), stream=stream,
            tokens_per_sample=o.context_length, job=[recorder],
            # a loss that turns non-finite is what the ramp looks for, not a failed run: the
            # recorder ends the sweep there and the curve up to it is read
            stop_when_diverged=False)
        trainer = build_trainer(model, args, config, train=blocks, eval_dataset=None,
                                collator=default_data_collator, callbacks=callbacks, stream=stream,
                                schedule=ramp)
        trainer.remove_callback(PrinterCallback)
        t0 = time.time()
        trainer.train()
        res.seconds = round(time.time() - t0, 1)
    return res, speed.settings.precision


def check_memory(o: LRFindOptions, shape) -> None:
    """One line when even the most frugal step of this model and batch (SDPA, the fused loss,
    bf16 autocast or fp32, whichever needs less) takes more memory than the device has free:
    the sweep would otherwise be killed by the kernel's out-of-memory killer (exit 137, not a
    word) or stop on CUDA's out-of-memory error, after the token cache was built."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    free = free_memory_bytes(device)
    need = min(shape.training_memory(o.batch_size, attention="sdpa", precision=p, fused_loss=True,
                                     dropout=o.dropout).total for p in ("bf16", "fp32"))
    if free is not None and need > free:
        raise LRFindError(
            f"the sweep's {shape.n_params / 1e6:.1f}M-parameter model at batch {o.batch_size} x "
            f"{o.context_length} tokens needs at least {need / 1e9:.1f} GB, more than the "
            f"{free / 1e9:.1f} GB free on the {device}: lower --batch_size (or --n_layer, --n_embd, "
            f"--max_length)")


def sweep_cache(o: LRFindOptions, tok, log=print) -> tuple[Path, dict]:
    """(folder, metadata) of the tokens the sweep reads: the run's cache when it is current for
    this tokenizer, corpus and context (read only), else the finder's own in its output folder."""
    era = bool(era_tokens_of(tok))
    meta = ensure_cache(o.run.cache_dir, o.tokenizer_dir, o.processed_dir, o.context_length, era,
                        mode="current")
    if meta is not None:
        log(f"token cache: reading the run's {o.run.cache_dir}")
        return o.run.cache_dir, meta
    own = Path(o.output_dir) / LR_FIND_CACHE
    return own, ensure_cache(own, o.tokenizer_dir, o.processed_dir, o.context_length, era,
                             progress=False, log=log)


def find_lr(o: LRFindOptions, log=print) -> tuple[dict, LRFindResult]:
    """Build the preset's model fresh, ramp the learning rate over the corpus's training blocks,
    write the table, plot and summary to ``o.output_dir``. The model is discarded."""
    check_range(o.min_lr, o.max_lr, o.steps)
    pyplot()                    # what would fail only once the sweep is over, said before it
    check_outputs(o.output_dir)
    tok = load_tokenizer(o.tokenizer_dir)
    shape = validated(ModelShape(o.n_layer, o.n_head, o.n_embd, o.context_length,
                                 len(tok)))
    check_memory(o, shape)
    log(f"model: {shape.n_params / 1e6:.2f}M parameters; sweep {o.min_lr:g} -> {o.max_lr:g} "
        f"over {o.steps} steps at batch {o.batch_size} x {o.context_length} tokens")
    cache_dir, meta = sweep_cache(o, tok, log)
    blocks = load_blocks(cache_dir, "train", meta, o.context_length)
    configure_torch()  # as training does: one thread per physical core
    res, precision = sweep(o, shape, tok, blocks, log)
    res.suggestion = suggest_lr(res.lrs, res.smoothed, stopped=res.stopped_early)
    summary = write_lr_find(res, o.output_dir,
                            title=f"LR range test: {o.preset} preset ({shape.n_params / 1e6:.1f}M)",
                            extra={"preset": o.preset, "batch_size": o.batch_size,
                                   "context_length": o.context_length,
                                   "preset_learning_rate": o.preset_learning_rate,
                                   "precision": precision})
    return summary, res
