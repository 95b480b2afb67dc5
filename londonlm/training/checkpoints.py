"""A training run's checkpoints as training sees them: the listing ``--list_checkpoints``
prints, which checkpoint a run resumes from, and what ``--fresh`` moves aside.

Listing, validation and model-spec resolution live in :mod:`londonlm.core.layout`, which every
consumer of models uses; this module is training's own.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ..core import (LondonLMError, RunLayout, checkpoint_problem, latest_valid_checkpoint, list_checkpoints,
                    user_path)


class ResumeError(LondonLMError, RuntimeError):
    """A resume request that cannot be honoured; the message lists what can."""


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
        candidates = [user_path(spec), run.dir / spec]
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

