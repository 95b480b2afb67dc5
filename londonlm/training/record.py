"""What a run leaves behind: the final evaluation, ``final/`` as a save_pretrained folder with
its tokenizer and generation_config.json (:func:`save_model_folder`, also fine-tuning's),
``best/`` (:class:`SaveBestCallback`, ``--save_best``), and ``run_info.json`` (written last,
atomically: the training stage's sidecar)."""
from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Callable

from transformers import TrainerCallback

from ..core import (BEST_INFO, RunLayout, checkpoint_name, checkpoint_problem, checkpoint_step, hardware_summary,
                    now_iso, read_json, read_json_object, to_generation_config, write_json_atomic)
from ..tokens import ERA_WIDTH
from .data import TrainData, validation_bytes
from .defaults import enum_name
from .dist import barrier, is_main_process, log
from .job import TrainingConfig, save_config, training_settings
from .plan import TrainingPlan
from .resume import finish_moving_aside, tokenizer_fingerprint
from .speed.settings import SpeedSettings
from .step.trainer import Outcome
from .step.vocab_padding import real_rows

TOKENIZER_EXTRAS = ("special_tokens_map.json", "vocab.json", "merges.txt")  # slow-tokenizer files


def _shape(config: TrainingConfig, plan: TrainingPlan) -> dict:
    s = plan.shape
    return {"n_layer": s.n_layer, "n_head": s.n_head, "n_embd": s.n_embd,
            "context_length": config.model.context_length, "vocab_size": len(plan.tokenizer),
            "embedding_rows": s.vocab_size}


def _throughput(plan: TrainingPlan, out: Outcome) -> dict:
    info, ck = plan.resume.info, plan.resume.checkpoint
    prev_wall = (info.get("total_train_wall_seconds") or info.get("train_wall_seconds") or 0.0) if ck else 0.0
    steps_now = out.state.global_step - (checkpoint_step(ck) if ck else 0)
    seen = out.tokens_seen if out.tokens_seen is not None else out.state.global_step * plan.tokens_per_step
    return {"tokens_seen": seen,
            "train_wall_seconds": round(out.wall_seconds, 1),
            "total_train_wall_seconds": round(out.wall_seconds + prev_wall, 1),
            "tokens_per_second": round(steps_now * plan.tokens_per_step / max(out.wall_seconds, 1e-9), 1)}


def _hyperparameters(args) -> dict:
    return {"learning_rate": args.learning_rate, "batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps, "seed": args.seed,
            "lr_scheduler_type": enum_name(args.lr_scheduler_type),
            "warmup_steps": args.warmup_steps}


def start_record(config: TrainingConfig, args, plan: TrainingPlan, data: TrainData, speed: SpeedSettings,
                 settings: dict) -> dict:
    """What a run is, known before its first step: the part of run_info.json every checkpoint
    also carries (:class:`.resume.RunRecord`), so a run killed before it could write run_info.json
    is resumed under the settings it was trained with. ``settings``: those asked for
    (:func:`.job.training_settings` of the tree before any decision)."""
    splits = data.meta["splits"]
    return {
        "run_dir": str(config.run.dir), "preset": config.output.preset,
        "run_name": args.run_name, "shape": _shape(config, plan),
        "settings": settings,
        "tokens_per_step": plan.tokens_per_step, "world_size": plan.world,
        **speed.record(),
        "tokenizer_dir": str(config.data.tokenizer_dir), "processed_dir": str(config.data.processed_dir),
        "tokenizer_sha256": tokenizer_fingerprint(config.data.tokenizer_dir),
        "cache": {"tokens_train": splits["train"]["tokens"],
                  "tokens_validation": splits["validation"]["tokens"],
                  "manifest_sha256": data.meta["manifest_sha256"], "era_tokens": data.era_tokens,
                  **({"era_width": data.meta.get("era_width", ERA_WIDTH)} if data.era_tokens else {})},
        "corpus_time": plan.corpus_time,
        "resumed_from": str(plan.resume.checkpoint) if plan.resume.checkpoint else None, "parent": plan.parent,
        **_hyperparameters(args),
    }


def run_summary(config: TrainingConfig, args, plan: TrainingPlan, data: TrainData, model, out: Outcome,
                start: dict) -> dict:
    """The run_info.json record: what the run is (``start``: :func:`start_record`) and what
    it did: size, steps, tokens, time, losses, hardware, evaluations."""
    state, logs = out.state, out.state.log_history
    train_losses = [h["loss"] for h in logs if "loss" in h]
    return {
        **start, "created": now_iso(),
        "parameters": saved_parameters(model),
        "global_step": state.global_step, "max_steps": state.max_steps,
        **_throughput(plan, out),
        "final_train_loss": train_losses[-1] if train_losses else None,
        "train_loss_mean": out.train_loss_mean,
        "hardware": hardware_summary(),
        "interrupted": out.interrupted,
        "pauses": out.pauses,  # train_wall_seconds spent evaluating and writing checkpoints
        "eval_blocks": len(data.eval),
        "validation_bytes": validation_bytes(config.data.processed_dir),
        "best_eval_loss": state.best_metric, "best_step": state.best_global_step or None,
        # --load_best_model_at_end: final/ holds the best evaluation's weights, not the last step's
        "final_weights_step": (state.best_global_step if args.load_best_model_at_end and state.best_global_step
                               else state.global_step),
        "eval_curve": [[h["step"], h["eval_loss"]] for h in logs if "eval_loss" in h],
        "train_curve": [[h["step"], h["loss"]] for h in logs if "loss" in h],
    }


def saved_parameters(model) -> int:
    """The parameters of the saved model: a padded vocabulary's rows (never saved) not counted."""
    n = sum(p.numel() for p in model.parameters())
    real = real_rows(model)
    if real is None:
        return n
    padded = {id(w): w for w in (model.get_input_embeddings().weight,
                                 getattr(model.get_output_embeddings(), "weight", None)) if w is not None}
    return n - sum((w.shape[0] - real) * w.shape[1] for w in padded.values())


def final_metrics(trainer, summary: dict, data: TrainData) -> dict:
    """Validation loss, perplexity and bits per byte of the finished model."""
    loss = trainer.evaluate().get("eval_loss")
    out = {"final_eval_loss": loss,
           "final_eval_perplexity": math.exp(min(loss, 50)) if loss is not None else None}
    if loss is not None and summary["validation_bytes"]:
        # nats/token x tokens / bytes / ln 2; era tokens count as tokens: a close estimate
        out["final_eval_bpb"] = (loss * data.meta["splits"]["validation"]["tokens"]
                                 / (math.log(2) * summary["validation_bytes"]))
    return out


def generation_config(tokenizer):
    """generation_config.json of a saved model: the project's sampling defaults (the field
    defaults of :class:`~londonlm.generation.GenerationSettings`) and the tokenizer's ids."""
    return to_generation_config(bos_token_id=tokenizer.bos_token_id,
                                eos_token_id=tokenizer.eos_token_id,
                                pad_token_id=tokenizer.pad_token_id)


def _aside(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.old"


def swap_in(tmp: Path, folder: Path) -> None:
    """Put the whole folder ``tmp`` in the place of ``folder``: the old one renamed aside, the new
    one renamed in, then the old one deleted. Deleting the old one first (as final/ and best/ did)
    let a kill during the delete leave a folder cut short that still held its config and weights:
    a run "finished" with a final/ missing its tokenizer. A kill now leaves ``folder`` whole (old
    or new), or gone with the new one whole in ``tmp`` (:func:`finish_swap`)."""
    old = _aside(folder)
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def finish_swap(tmp: Path, folder: Path) -> bool:
    """Finish a :func:`swap_in` a kill cut short; True when it put a folder in place. With the
    old one aside and ``folder`` gone, ``tmp`` is whole (it is renamed in only once complete)."""
    old, placed = _aside(folder), False
    if not folder.exists() and old.exists():
        (tmp if tmp.is_dir() else old).rename(folder)
        placed = True
    shutil.rmtree(old, ignore_errors=True)
    return placed


def recover_run_folder(run: RunLayout) -> None:
    """What a kill cut short in the run folder, finished before a training reads it: a move aside
    (:func:`.resume.finish_moving_aside`) and final/'s swap (:func:`finish_swap`). Rank 0; every
    rank waits for it, so none reads a folder still being moved."""
    if is_main_process():
        for dest in finish_moving_aside(run):
            log(f"{run.dir}: the move of the previous run to {dest} was cut short; finished it")
        if finish_swap(_tmp(run.final), run.final):
            log(f"{run.final}: put in place from {_tmp(run.final).name}, cut short in its swap")
    barrier()


def _tmp(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.tmp"


def save_model_folder(trainer, folder: Path, tokenizer, extras: Callable[[Path], None] | None = None) -> Path:
    """A ``save_pretrained`` folder (weights, generation config, tokenizer, ``extras``) built
    in a temporary folder and moved into place (:func:`swap_in`), so a crash never leaves half
    of one. Every rank calls this: under FSDP gathering the weights is a collective (rank 0
    writes)."""
    folder = Path(folder)
    tmp = _tmp(folder)
    zero = trainer.is_world_process_zero()
    if zero:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    if not zero:
        return folder
    tokenizer.save_pretrained(str(tmp))
    if extras is not None:
        extras(tmp)
    swap_in(tmp, folder)
    return folder


def save_final(trainer, run: RunLayout, tokenizer, tok_dir: Path) -> Path:
    """``final/``: weights, tokenizer (fast and slow files) and generation_config.json, built
    in a temporary folder and moved into place (:func:`.finetune.save_model_folder`), so a
    crash never leaves a half final/. Every rank calls this (FSDP gathers collectively)."""
    def extras(tmp: Path) -> None:
        for f in TOKENIZER_EXTRAS:
            if (Path(tok_dir) / f).exists() and not (tmp / f).exists():
                shutil.copy2(Path(tok_dir) / f, tmp / f)
        generation_config(tokenizer).save_pretrained(str(tmp))

    save_model_folder(trainer, run.final, tokenizer, extras)
    if trainer.is_world_process_zero():
        log(f"final model saved to {run.final}")
    return run.final


def best_record(run: RunLayout) -> dict:
    """--save_best: which checkpoint best/ copies, from its best_info.json ({} when none)."""
    if not (run.best / BEST_INFO).exists():
        return {}
    info = read_json(run.best / BEST_INFO)
    log(f"best model (validation loss {info.get('eval_loss'):.4f} at step {info.get('step')}) "
        f"in {run.best}")
    return {"best_checkpoint": info.get("checkpoint"), "best_eval_loss": info.get("eval_loss"),
            "best_step": info.get("step")}


def say_which_weights(summary: dict) -> None:
    """--load_best_model_at_end: say when final/ holds an earlier evaluation's weights."""
    step, last = summary["final_weights_step"], summary["global_step"]
    if step == last:
        return
    best, at_last = summary.get("best_eval_loss"), [loss for s, loss in summary["eval_curve"] if s == last]
    log(f"final/ holds the weights of step {step}, the lowest validation loss"
        + (f" ({best:.4f})" if best is not None else "")
        + (f"; the last step's was {at_last[-1]:.4f}" if at_last else "") + " (--load_best_model_at_end)")


REPLACING_FINAL = "stopped while final/ was replaced"


def unvouch_final(run: RunLayout) -> None:
    """Before a new final/ replaces the one an earlier run_info.json describes (a finished run
    extended): that record marked as no longer vouching for final/, until this run's replaces it.
    A kill between the new final/ and its record left the old record saying "finished" over the
    new weights: rerun as it was first asked (the old --max_steps), the run was skipped as
    finished with a final/ of other steps."""
    info = run.read_run_info()
    if info and not info.get("interrupted"):
        write_json_atomic(run.run_info, {**info, "interrupted": REPLACING_FINAL})


def finish(trainer, config: TrainingConfig, plan: TrainingPlan, data: TrainData, summary: dict) -> dict:
    """Evaluate and save final/ (a finished run) or say how to resume (a stopped one); record
    the best checkpoint; write run_info.json last."""
    zero = trainer.is_world_process_zero()
    if summary["interrupted"]:
        step = summary["global_step"]
        # the same command resumes (the latest valid checkpoint): right for any preset, root, run
        # name or launcher, where "./resume_training.sh checkpoint-N" named the slm run of the repo
        log(f"stopped early ({summary['interrupted']}) at step {step}; {checkpoint_name(step)} saved. "
            f"Resume: run the same command again (or add --resume_from_checkpoint {checkpoint_name(step)})")
    else:
        summary.update(final_metrics(trainer, summary, data))
        if zero:
            unvouch_final(config.run)
        save_final(trainer, config.run, plan.tokenizer, config.data.tokenizer_dir)
        say_which_weights(summary)
    if config.control.save_best:
        summary.update(best_record(config.run))
    if zero:
        write_json_atomic(config.run.run_info, summary)
    return summary


class SaveBestCallback(TrainerCallback):
    """--save_best: every evaluation that lowers the validation loss forces a checkpoint at
    that step, and that checkpoint's model (no optimizer state) is copied to ``best/`` with
    ``best_info.json``, so the best model outlives checkpoint rotation and interruptions."""

    def __init__(self, run: RunLayout | Path):
        self.run = run if isinstance(run, RunLayout) else RunLayout(Path(run))

    def on_train_begin(self, args, state, control, **kw):
        # a run killed in on_save's swap (after best/ went, before the copy took its place) left
        # the whole copy in .best.tmp and no best/ (or half of one); its rerun resumes from a
        # state that already counts that step the best, so no later evaluation would write best/
        tmp = self.run.best_tmp
        if not state.is_world_process_zero:
            return
        # (a copy killed before its swap began is whole when its best_info.json, written last, reads)
        whole = read_json_object(tmp / BEST_INFO) and checkpoint_problem(tmp, need_training_state=False) is None
        if finish_swap(tmp, self.run.best) or whole:
            if tmp.exists():
                swap_in(tmp, self.run.best)
            log(f"best/: put in place from {tmp.name}, the whole copy a stopped run left")

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        loss = (metrics or {}).get("eval_loss")
        # state.best_metric is still the previous best here (the Trainer updates it after)
        if loss is not None and state.global_step > 0 and (
                state.best_metric is None or loss < state.best_metric):
            control.should_save = True

    def on_save(self, args, state, control, **kw):
        if not state.is_world_process_zero or state.best_global_step != state.global_step:
            return
        src = self.run.checkpoint(state.global_step)
        if not src.is_dir():
            return
        tmp, best = self.run.best_tmp, self.run.best
        shutil.rmtree(tmp, ignore_errors=True)
        # the model only: no optimizer, scheduler or RNG state, nor FSDP's sharded copies
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(
            "optimizer*", "scheduler.pt", "scaler.pt", "rng_state*.pth", "pytorch_model_fsdp*"))
        (tmp / BEST_INFO).write_text(json.dumps(
            {"checkpoint": src.name, "step": state.global_step, "eval_loss": state.best_metric,
             "saved": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1))
        swap_in(tmp, best)


class ConfigFileCallback(TrainerCallback):
    """training_config.json, written once the run is committed to training: at its first step
    (a resumed checkpoint's optimizer, scheduler and RNG state are loaded by then) or, with
    nothing left to train, as it ends. Written before the Trainer was built, a resume refused as
    the Trainer loads that state (another model's optimizer: :func:`.step.trainer.state_that_fits`)
    or a flag refused as it is built (``--fsdp`` it would ignore) left the run folder's record of
    its settings rewritten with those of a run that never trained. Rank 0 only."""

    def __init__(self, config: TrainingConfig):
        self.config, self.written = config, False

    def _write(self) -> None:
        if not self.written:
            save_config(self.config, self.config.run.training_config)
            self.written = True

    def on_step_begin(self, args, state, control, **kw):
        self._write()

    def on_train_end(self, args, state, control, **kw):
        self._write()
