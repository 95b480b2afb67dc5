"""Learning-rate schedules that end when a wall-clock budget does.

:class:`WarmupStableDecay` is the multiplier of a ``torch.optim.lr_scheduler.LambdaLR``:
linear warm-up, a constant stretch, then a decay over the last ``decay_fraction`` of the
steps. Its total length can change while training: during the constant stretch a new total
only moves where the decay will start (the learning rate now is the same), so the schedule
can be fitted to a time budget once the step time is known. ``decay_fraction=1`` with the
cosine shape is the Hugging Face ``cosine_with_min_lr`` schedule, so a cosine recipe can be
fitted the same way.

:class:`BudgetFitCallback` does the fitting inside a ``Trainer``: before every step it
measures seconds per step (after skipping the first, slow ones) and sets the total so that
the last step ends at the budget, within one step's time; ``state.max_steps`` follows, so
the Trainer's own end-of-training evaluation and save happen as for any finished schedule.
Under torchrun the ranks agree on the total at every step (the fewest steps any rank's clock
allows), on the host.

The schedule is a callable object rather than a function, so ``LambdaLR.state_dict`` saves
its fields (total, decay start, seconds spent) into the checkpoint's ``scheduler.pt`` and a
resumed run continues the same fitted schedule, with the budget spanning the resumes.
"""
from __future__ import annotations

import math
import time
from typing import Callable

from transformers import TrainerCallback

from ...core import LondonLMError
from ..dist import agree

DECAY_SHAPES = ("linear", "cosine", "1-sqrt")
# The decay takes the last fifth of a budget-fitted schedule: long enough to anneal fully,
# short enough that most of the budget trains at the peak rate (Hägele et al., 2024).
BUDGET_DECAY_FRACTION = 0.2


class BudgetError(LondonLMError, ValueError):
    """A time budget that cannot hold the requested schedule."""


def _decay_factor(shape: str, progress: float) -> float:
    if shape == "linear":
        return 1.0 - progress
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - math.sqrt(progress)  # "1-sqrt" (Hägele et al. 2024: best of the WSD decays)


class WarmupStableDecay:
    """LR multiplier for ``LambdaLR``: ``step/warmup`` during warm-up (Hugging Face's
    convention), 1 until ``decay_start``, then down to ``min_lr_ratio`` at ``total_steps``.
    ``warmup_share``: the warm-up is that share of the steps a budget holds (a preset's), so
    :class:`BudgetFitCallback` refits it with the total while it lasts; None: a fixed warm-up."""

    def __init__(self, warmup_steps: int, total_steps: int, decay_fraction: float = 0.2,
                 min_lr_ratio: float = 0.0, decay_shape: str = "linear", warmup_share: float | None = None):
        if warmup_steps < 0 or total_steps < 1:
            raise ValueError(f"need warmup_steps >= 0 and total_steps >= 1, got {warmup_steps}, "
                             f"{total_steps}")
        if not 0.0 < decay_fraction <= 1.0:
            raise ValueError(f"decay_fraction must be in (0, 1], got {decay_fraction}")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        if decay_shape not in DECAY_SHAPES:
            raise ValueError(f"decay_shape must be one of {', '.join(DECAY_SHAPES)}, got {decay_shape!r}")
        self.warmup_steps = int(warmup_steps)
        self.decay_fraction = float(decay_fraction)
        self.min_lr_ratio = float(min_lr_ratio)
        self.decay_shape = decay_shape
        self.warmup_share = warmup_share
        self.total_steps = int(total_steps)
        self.decay_start = self.planned_decay_start(self.total_steps)
        # filled by BudgetFitCallback; kept here so that scheduler.pt carries them
        self.budget_seconds = 0.0
        self.elapsed_seconds = 0.0
        self.step_seconds = 0.0
        # --decay_on_plateau: the step the run ends at once its decay was begun early (None: the
        # budget's), and the evaluations it counts: the best validation loss, those since
        self.end_step: int | None = None
        self.plateau_best = math.inf
        self.plateau_since = 0

    def planned_decay_start(self, total_steps: int) -> float:
        return self.warmup_steps + (1.0 - self.decay_fraction) * max(0, total_steps - self.warmup_steps)

    def total_decaying_from(self, step: int) -> int:
        """The total whose planned decay starts at ``step`` (past the warm-up): ``step`` plus the
        decay's share of the steps after the warm-up (a fifth of them all: a quarter more)."""
        after = max(0, step - self.warmup_steps)
        share = self.decay_fraction / (1.0 - self.decay_fraction) if self.decay_fraction < 1.0 else 1.0
        return step + max(1, math.ceil(share * after))

    def progress(self, step: int) -> float:
        """0 before the decay, 1 at its end."""
        if step < self.decay_start:
            return 0.0
        return min(1.0, (step - self.decay_start) / max(self.total_steps - self.decay_start, 1e-9))

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / max(1, self.warmup_steps)
        if step < self.decay_start:
            return 1.0
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * _decay_factor(self.decay_shape,
                                                                               self.progress(step))

    def refit(self, total_steps: int, at_step: int) -> None:
        """Make the schedule end at ``total_steps``, changing nothing for step ``at_step`` (the
        next one to run): before the decay only its start moves (at the earliest to
        ``at_step``); inside the decay the remaining part is stretched or squeezed from the
        point it has reached."""
        total = max(int(total_steps), at_step)
        p = self.progress(at_step)
        if p == 0.0:
            self.decay_start = max(self.planned_decay_start(total), float(min(at_step, total)))
        elif p < 1.0:
            # keep (at_step - start) / (total - start) == p
            self.decay_start = (at_step - p * total) / (1.0 - p)
        self.total_steps = total


def make_lr_scheduler(optimizer, schedule: WarmupStableDecay):
    """The ``LambdaLR`` a Trainer steps once per optimizer step (hand it to the Trainer through
    ``optimizers=(opt, sched)`` or a ``create_scheduler`` override)."""
    from torch.optim.lr_scheduler import LambdaLR

    return LambdaLR(optimizer, schedule)


def budget_schedule(time_budget: float, args, warmup_share: float | None = None) -> WarmupStableDecay | None:
    """The learning-rate schedule a budgeted run trains with (None: the Trainer's own);
    ``warmup_share``: its warm-up is that share of the steps the budget turns out to hold."""
    if not time_budget:
        return None
    floor = float((args.lr_scheduler_kwargs or {}).get("min_lr_rate", 0.0))
    return WarmupStableDecay(args.warmup_steps, args.max_steps, BUDGET_DECAY_FRACTION, floor, "linear",
                             warmup_share)


def shared_warmup(steps: int, share: float, most: float | None = None) -> float:
    """A warm-up that is ``share`` of a run's ``steps`` (a preset's warm-up over its steps): at
    least one step, never all of them (a one-step run has none), nor more than ``most``."""
    warmup = min(max(1, round(steps * share)), max(0, steps - 1))
    return warmup if most is None else min(warmup, most)


def schedule_of(lr_scheduler) -> WarmupStableDecay | None:
    lambdas = getattr(lr_scheduler, "lr_lambdas", None) or []
    return lambdas[0] if lambdas and isinstance(lambdas[0], WarmupStableDecay) else None


def check_budget(budget_seconds: float, warmup_steps: int, step_seconds: float | None = None) -> int | None:
    """Refuse, before any work, a budget that cannot hold the warm-up; return the step count
    it fits when the step time is known (e.g. measured by the autotune probe), else None."""
    if not budget_seconds or budget_seconds <= 0:
        raise BudgetError(f"the time budget must be a positive number of seconds, got {budget_seconds}")
    if not step_seconds:
        return None
    fits = int(budget_seconds // step_seconds)
    if fits <= warmup_steps:
        raise BudgetError(_too_small(budget_seconds, fits, warmup_steps, step_seconds, "expected"))
    return fits


def _too_small(budget: float, fits: int, warmup: int, step_seconds: float, how: str) -> str:
    need = math.ceil((warmup + 1) * step_seconds / 0.8)  # warm-up plus a little schedule after it
    return (f"a time budget of {budget:g} s fits only {fits} steps at the {how} "
            f"{step_seconds:.3g} s per step, not even the {warmup} warm-up steps: give at least "
            f"~{need} s, or fewer --warmup_steps")


# "no new total yet" in the agreement below
_NO_TOTAL = 1 << 62


def agreed_total(total: int | None, agree=agree) -> int | None:
    """The fewest steps any rank proposes (None when none proposes): every rank calls this at
    every step whatever it decided, so the ranks always meet in the same collective. One whose
    clock alone says the budget is spent would otherwise enter it while the others skip it: a
    hang. Agreement runs on the host (:func:`~..dist.agree`): no GPU synchronisation."""
    least = -agree([-(_NO_TOTAL if total is None else int(total))])[0]
    return None if least == _NO_TOTAL else least


class BudgetFitCallback(TrainerCallback):
    """Fits the Trainer's :class:`WarmupStableDecay` schedule to ``budget_seconds`` of training
    (all invocations of a resumed run together). The Trainer's ``max_steps`` is only an upper
    bound (set it high when the budget should decide); the fitted total never exceeds it."""

    def __init__(self, budget_seconds: float, skip_steps: int = 2,
                 clock: Callable[[], float] = time.perf_counter, log: Callable[[str], None] | None = print,
                 agree: Callable[[list[int]], list[int]] = agree,
                 on_fit: Callable[[int], None] | None = None, plateau_patience: int = 0):
        check_budget(budget_seconds, 0)
        self.on_fit = on_fit  # told the fitted total once, when the pace is first measured
        self.plateau_patience = plateau_patience  # --decay_on_plateau (0: off)
        self.budget = float(budget_seconds)
        self.skip_steps = skip_steps
        self.clock = clock
        self.agree = agree
        self.log = log or (lambda _msg: None)
        self.schedule: WarmupStableDecay | None = None

    def on_train_begin(self, args, state, control, lr_scheduler=None, **kw):
        self.schedule = schedule_of(lr_scheduler)
        if self.schedule is None:
            raise TypeError("BudgetFitCallback needs the Trainer's lr_scheduler to be "
                            "make_lr_scheduler(optimizer, WarmupStableDecay(...))")
        self.schedule.budget_seconds = self.budget
        self._t0, self._elapsed0 = self.clock(), self.schedule.elapsed_seconds
        self._start_step, self._ref = state.global_step, None
        self._cap = state.max_steps
        self._announced = self._decay_announced = False
        self._set_total(self.schedule.total_steps, state)

    def _bounded(self, total: int) -> int:
        # never past the Trainer's max_steps, nor past where --decay_on_plateau ended the run
        return min(total, self._cap, self.schedule.end_step or total)

    def _set_total(self, total: int, state) -> None:
        self.schedule.refit(self._bounded(total), state.global_step)
        state.max_steps = self.schedule.total_steps

    def on_step_begin(self, args, state, control, **kw):
        now, g, s = self.clock(), state.global_step, self.schedule
        s.elapsed_seconds = elapsed = self._elapsed0 + (now - self._t0)
        if g - self._start_step == self.skip_steps:
            self._ref = (now, g)  # the first steps pay for allocation and thread start-up
        total = None
        if self._ref is not None and g > self._ref[1]:
            s.step_seconds = (now - self._ref[0]) / (g - self._ref[1])
            # the steps that still end inside the budget (at least this one)
            total = g + max(1, int((self.budget - elapsed) // s.step_seconds))
        elif elapsed >= self.budget:
            total = g + 1
        total = agreed_total(total, self.agree)
        if total is None:
            return
        if s.warmup_share is not None and g <= s.warmup_steps:
            # a warm-up sized from an estimate of the pace (a probe on a machine then idle) keeps
            # its share of the steps the run will take (what the measured pace holds, or fewer:
            # --max_steps, --num_train_epochs): a busier machine shortens it, never fails
            s.warmup_steps = shared_warmup(self._bounded(total), s.warmup_share)
        elif total <= s.warmup_steps and g <= s.warmup_steps:
            raise BudgetError(_too_small(self.budget, total, s.warmup_steps,
                                         s.step_seconds or elapsed / max(1, g), "measured"))
        self._set_total(total, state)
        if not self._announced and s.step_seconds:
            self._announced = True
            self.log(f"time budget {self.budget:g} s: {s.step_seconds:.3g} s per step measured -> "
                     f"{s.total_steps} steps, warm-up {s.warmup_steps}, decay from step {s.decay_start:.0f}")
            if self.on_fit is not None:
                self.on_fit(s.total_steps)
        if not self._decay_announced and g >= s.decay_start:
            self._decay_announced = True
            self.log(f"time budget: decay starts at step {g} of {s.total_steps} "
                     f"({elapsed:.0f} s of {self.budget:g} s spent)")

    def on_step_end(self, args, state, control, **kw):
        self.schedule.elapsed_seconds = self._elapsed0 + (self.clock() - self._t0)

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        """--decay_on_plateau: ``plateau_patience`` evaluations in a row without a lower
        validation loss, while the rate is still at its peak, begin the decay now. It takes the
        schedule's share of the steps run so far (a fifth: 1/4 of them more) and the run ends
        with it. Every rank sees the same gathered loss, so every rank decides the same; the
        fitted total they agree on each step carries it."""
        s, loss = self.schedule, (metrics or {}).get("eval_loss")
        if not self.plateau_patience or s is None or loss is None or s.end_step is not None:
            return
        if loss < s.plateau_best:
            s.plateau_best, s.plateau_since = float(loss), 0
            return
        s.plateau_since += 1
        g = state.global_step
        if s.plateau_since < self.plateau_patience or g <= s.warmup_steps or s.progress(g) > 0.0:
            return
        end = s.total_decaying_from(g)
        if end >= s.total_steps:  # the budget ends sooner anyway
            return
        s.end_step = end
        self._set_total(end, state)
        self.log(f"validation loss not below {s.plateau_best:.4f} for {s.plateau_since} evaluations: "
                 f"the decay begins at step {g} and the run ends at step {s.total_steps} "
                 f"(--decay_on_plateau), {s.elapsed_seconds:.0f} s into its {self.budget:g} s budget")

    def on_log(self, args, state, control, logs=None, **kw):
        # The Trainer's end-of-training samples/s counts the samples of the max_steps it started
        # with (the cap), shared out over state.max_steps, which this callback lowered to the
        # fitted total: scale it back to the samples of the steps actually run.
        rate, cap = (logs or {}).get("train_samples_per_second"), getattr(self, "_cap", None)
        if rate is None or not cap or state.max_steps >= cap:
            return
        fixed = round(rate * state.max_steps / cap, 3)
        logs["train_samples_per_second"] = fixed
        last = state.log_history[-1] if state.log_history else {}
        if last.get("train_samples_per_second") == rate:  # the Trainer's copy of these logs
            last["train_samples_per_second"] = fixed

    def report(self) -> dict:
        """Figures for run_info.json."""
        s = self.schedule
        if s is None:
            return {"time_budget_seconds": self.budget}
        return {"time_budget_seconds": self.budget, "fitted_total_steps": s.total_steps,
                "warmup_steps": s.warmup_steps, "decay_start_step": round(s.decay_start, 1),
                "decay_on_plateau_end_step": s.end_step,
                "measured_step_seconds": round(s.step_seconds, 4) if s.step_seconds else None,
                "train_seconds_in_budget": round(s.elapsed_seconds, 1)}
