"""A training run's checkpoints as training sees them: the listing ``--list_checkpoints``
prints, which checkpoint a run resumes from, and what ``--fresh`` moves aside.

Listing, validation and model-spec resolution live in :mod:`londonlm.layout`, which every
consumer of models uses; this module is training's own.
"""
from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

from .errors import LondonLMError
from .layout import (BEST, RunLayout, checkpoint_problem, checkpoint_step, latest_valid_checkpoint,
                     list_checkpoints)


class ResumeError(LondonLMError, RuntimeError):
    """A resume request that cannot be honoured; the message lists what can."""


def _losses(ck: Path) -> tuple[str, str]:
    """Last logged training and validation loss of a checkpoint, formatted ('-' if none)."""
    try:
        logs = json.loads((ck / "trainer_state.json").read_text()).get("log_history", [])
    except (OSError, ValueError):
        return "-", "-"
    tr = [h["loss"] for h in logs if "loss" in h]
    ev = [h["eval_loss"] for h in logs if "eval_loss" in h]
    return (f"{tr[-1]:.4f}" if tr else "-"), (f"{ev[-1]:.4f}" if ev else "-")


def describe_checkpoints(run_dir: str | Path) -> str:
    """One line per checkpoint: name, step, last logged loss, validation loss, validity;
    the best-by-validation-loss one is marked, and best/ and final/ are named."""
    run = RunLayout(Path(run_dir))
    best = run.best_info()
    lines = []
    for ck in run.checkpoints():
        problem = checkpoint_problem(ck)
        loss, eval_loss = _losses(ck)
        when = datetime.datetime.fromtimestamp(ck.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        status = "ok" if problem is None else f"INVALID: {problem}"
        mark = "  <- best" if best and best.get("checkpoint") == ck.name else ""
        lines.append(f"{ck.name:<18} step {checkpoint_step(ck):>7}  loss {loss:>8}  "
                     f"val {eval_loss:>8}  {when}  {status}{mark}")
    if best is not None:
        ev = best.get("eval_loss")
        where = f"{BEST}/ (copy)" if Path(best["path"]) == run.best else best["checkpoint"]
        lines.append(f"best: {best.get('checkpoint')} (step {best.get('step')}, val "
                     f"{ev:.4f}) -> {where}" if ev is not None else f"best: {best.get('checkpoint')}")
    if run.final.is_dir():
        lines.append(f"final: {run.final.name}/")
    return "\n".join(lines) if lines else "(no checkpoints)"


def resolve_resume(run: RunLayout, spec: str | None, fresh: bool, log=print) -> Path | None:
    """The checkpoint to resume from, never silently nothing when one was asked for.

    spec None: latest valid checkpoint (invalid ones are named and skipped), or a fresh
    start when the run has none. spec 'checkpoint-N' / a path: that one, or an error
    listing the available ones."""
    if fresh:
        if spec:
            raise ResumeError("--fresh and --resume_from_checkpoint contradict each other")
        return None
    if spec in (None, "", "auto"):
        ck = latest_valid_checkpoint(run.dir, warn=log)
        if ck is not None:
            log(f"resuming from {ck} (latest valid checkpoint; use --fresh to start over)")
        return ck
    if spec == "latest":
        ck = latest_valid_checkpoint(run.dir, warn=log)
        candidates = [ck] if ck else []
    else:
        candidates = [Path(spec).expanduser(), run.dir / spec]
    for c in candidates:
        if c.is_dir():
            problem = checkpoint_problem(c)
            if problem:
                raise ResumeError(f"checkpoint {c} cannot be resumed: {problem}. Pick another "
                                  f"(`python 04_training/test_checkpoint.py --list-checkpoints`)")
            return c
    avail = [f"{p.name}{'' if checkpoint_problem(p) is None else ' (invalid)'}"
             for p in list_checkpoints(run.dir)]
    raise ResumeError(f"checkpoint {spec!r} not found in {run.dir}; available: "
                      f"{', '.join(avail) or 'none'}. Use --fresh to start a new run.")


def move_run_aside(run: RunLayout) -> Path | None:
    """--fresh: move everything the old model produced (:meth:`RunLayout.movable_on_fresh`:
    checkpoints, final/, best/, run_info.json, logs, its evaluation and staged upload) to a
    dated sibling folder; nothing is deleted. The token cache stays."""
    movable = run.movable_on_fresh()
    if not movable:
        return None
    dest, n = run.previous_dir(), 1
    while True:  # a second --fresh within the same second gets its own folder
        try:
            dest.mkdir(parents=True)
            break
        except FileExistsError:
            n += 1
            dest = dest.with_name(f"{run.previous_dir().name}-{n}")
    for p in movable:
        shutil.move(str(p), str(dest / p.name))
    return dest

