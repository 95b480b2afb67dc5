"""A run's length: how many optimizer steps it trains and how long it warms up, settled once its
training data is counted (:func:`fit_length`).

The step count is the preset's ``max_steps``, ``--max_steps``, or ``--num_train_epochs``: the
steps that read the training blocks that many times over (passes, counted from where a resumed
run's data position stands), which is how a corpus small for its model is best sized (a pass
past the fourth is worth less than new text, and the model begins to overfit it: Muennighoff et
al. 2023). A time budget fits the steps while training, with those as its upper bound.

The warm-up is the preset's, or ``--warmup_steps``. A run whose length was asked for and not its
warm-up warms up for the preset's share of its steps (``OptimConfig.warmup_share``,
:func:`~.step.schedules.shared_warmup`): a time budget for that share of the steps it holds
(sized before training, refitted while it trains), a fixed length (``--max_steps``,
``--num_train_epochs``) for that share where it is shorter than the preset's warm-up: GPT-2
Small's 1,000-step warm-up would otherwise outlast a 500-step run, whose rate would never reach
its peak, and a longer run keeps it, so extending a run never changes it. A resumed run keeps the
warm-up it trained with. A warm-up given that is not below the run's steps is said to be so."""
from __future__ import annotations

import math

from .data import Position
from .dist import TrainingError, agree, log
from .job import TrainingConfig
from .step.schedules import shared_warmup


def steps_for_passes(position: Position, n_blocks: int, passes: float) -> int:
    """The global step at which the run has read ``n_blocks`` blocks ``passes`` times over (at
    least its first step), from ``position`` (a resumed run's blocks already read count)."""
    return max(1, position.step_reading(math.ceil(passes * n_blocks)))


def fit_length(config: TrainingConfig, position: Position, n_blocks: int,
               trained_warmup: float | None = None) -> TrainingConfig:
    """The tree with its step count (``--num_train_epochs``: the steps for those passes) and its
    warm-up (the preset's share where the run is shorter than the preset's) settled; a note when
    a fixed-length run's warm-up takes all its steps. Every rank agrees on the count (the most
    any rank's data gives: the same blocks give the same). ``trained_warmup``: the warm-up a
    resumed run trained with (its record's), which it keeps: a share of another step count, or
    a run begun before warm-ups were shares, would bend its schedule mid-run."""
    o, budget = config.optim, config.control.time_budget
    steps = o.max_steps
    if o.passes is not None:
        steps = agree([steps_for_passes(position, n_blocks, o.passes)])[0]
        log(f"--num_train_epochs {o.passes:g}: {steps:,} steps read the {n_blocks:,} training blocks "
            f"{o.passes:g} times over" + (" (fewer if the time budget ends first)" if budget else ""))
    warmup = o.warmup_steps
    if o.warmup_share is not None and trained_warmup is not None:
        warmup = trained_warmup
    elif o.warmup_share is not None and steps > 0:
        warmup = shared_warmup(steps, o.warmup_share, most=warmup)
        if warmup < o.warmup_steps and not budget:
            log(f"warm-up: {warmup:,} of the run's {steps:,} steps, the preset's share "
                f"({o.warmup_share:.3g}; its {o.warmup_steps:g} would outlast them; --warmup_steps sets it)")
    if not budget:
        note_long_warmup(warmup, steps, o.learning_rate)
    if (steps, warmup) == (o.max_steps, o.warmup_steps):
        return config
    return config.but(optim={"max_steps": steps, "warmup_steps": warmup})


def refuse_length_behind(steps: int, at_step: int | None) -> None:
    """A resumed run whose --max_steps ends before the step it resumes at (``--max_steps 3`` on a
    run at checkpoint-4) took no step, and its final/ (step 4's weights, mid-schedule) was recorded
    as the finished run of 3 steps, exit 0. Ending at the checkpoint's own step stays (a final/
    lost after the last checkpoint is written again), and so do fewer --num_train_epochs than it
    has read (:func:`steps_for_passes`: the run ends where it stands, as asked)."""
    if at_step is not None and 0 < steps < at_step:
        raise TrainingError(
            f"--max_steps {steps:,} ends the run before the step it resumes at ({at_step:,}): a resume only "
            f"trains on. Give --max_steps {at_step:,} or more ({at_step:,}: end the run at this checkpoint), "
            f"resume an earlier checkpoint (--resume_from_checkpoint checkpoint-N), or pass --fresh to start "
            f"this run over; nothing was trained")


def note_long_warmup(warmup: float, steps: int, learning_rate: float) -> None:
    """Says so when a fixed-length run's warm-up (in steps; below 1 it is a share) takes all its
    steps: the rate never reaches its peak (a smoke run may mean it; a real one does not)."""
    if warmup >= 1 and warmup >= steps > 0:
        log(f"note: --warmup_steps {warmup:g} is not below the run's {steps:,} steps: its learning rate "
            f"never reaches --learning_rate {learning_rate:g}; give fewer --warmup_steps or more steps")
