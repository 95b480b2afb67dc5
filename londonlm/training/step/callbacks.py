"""What runs around every training step, whatever the job: throughput and MFU in the logs, the
training log file, perplexity beside the validation loss, the data position in checkpoints, the
profiler window and the time-budget fitter when asked for, and last the stop that every rank
agrees on (a signal, a time limit, a step limit, the Trainer's own decisions). :func:`step_callbacks`
is that list, in its order, with the reason for the order; :class:`~..job.RunControl` is what a
job asks of it."""
from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback

from ...core import checkpoint_name, device_name, peak_flops
from ..data import DataPosition, Position, RepetitionNote, StreamSampler
from ..dist import TrainingError, agree, log
from ..job import RunControl
from .profiling import ProfileCallback
from .schedules import BudgetFitCallback


# Where the Trainer's own callbacks (the flow of logging, evaluating and saving, the trackers of
# --report_to, the progress bar) run among a job's: RunTrainer puts them at this place in the list
TRAINER_OWN = "the Trainer's own callbacks"


def step_callbacks(control: RunControl, *, flops_per_token: float, tokens_per_step: int, world: int,
                   position: Position, stream: StreamSampler, tokens_per_sample: int,
                   job: list = (), stop_when_diverged: bool = True) -> tuple[list, "StopAndSaveCallback"]:
    """Every callback around a training step, in the order they run, for every job
    (pre-training, chat, the LR finder); ``job``: the job's own; ``stop_when_diverged`` False
    leaves a loss turning non-finite to the job (the LR finder's ramp looks for it). Returns (the
    list, the stopper, which knows why training stopped). The order, and why:

    1. the time-budget fitter (``--time_budget``): it sets the step count before anything reads
       it, and corrects the end-of-training samples/s before anyone logs it;
    2. throughput/MFU and perplexity: they add their figures to the logs before anyone reads them;
       then the finite-loss check, which stops a diverged run before its loss is saved anywhere;
    3. the Trainer's own (:data:`TRAINER_OWN`): the flow of logging, evaluating and saving, the
       trackers, the progress bar (which follows the fitted step count);
    4. the data position (saved in every checkpoint) and the note of how often the steps read
       the data over (told the fitted steps by the fitter), then the job's own (the log file,
       ``--save_best``, early stopping...), then the profiler window;
    5. last, the stopper: it agrees with the other ranks on what everything before it decided
       (a save, a stop), so it must see every decision of the step.
    """
    repeats = RepetitionNote(position, stream.n_blocks, budgeted=bool(control.time_budget), log=log)
    first = ([BudgetFitCallback(control.time_budget, log=log, on_fit=repeats.note,
                                plateau_patience=control.decay_on_plateau)]
             if control.time_budget else [])
    profile = ([ProfileCallback(control.profile_dir, control.profile_steps, log=log)]
               if control.profile_steps else [])
    stopper = StopAndSaveCallback(control.stop_after_seconds, control.stop_after_steps)
    callbacks = [*first,
                 ThroughputCallback(tokens_per_step, flops_per_token, peak_flops(device_name()), world,
                                    tokens_at=lambda step: position.consumed(step) * tokens_per_sample),
                 EvalLossOnlyCallback(),
                 *([FiniteLossCallback()] if stop_when_diverged else []),
                 TRAINER_OWN,
                 DataPosition(position, world, stream.n_blocks, stream.seed), repeats, *job, *profile,
                 stopper]
    return callbacks, stopper


@dataclass
class Pauses:
    """A run's seconds away from its steps, by what took them: evaluating, and writing
    checkpoints (every evaluation of slm's and regular's runs writes one)."""
    evaluating: float = 0.0
    evaluations: int = 0
    saving: float = 0.0
    checkpoints: int = 0

    @property
    def seconds(self) -> float:
        return self.evaluating + self.saving

    def add(self, kind: str, seconds: float) -> None:
        """One pause of ``kind`` ("evaluating" or "saving")."""
        if kind == "evaluating":
            self.evaluating, self.evaluations = self.evaluating + seconds, self.evaluations + 1
        else:
            self.saving, self.checkpoints = self.saving + seconds, self.checkpoints + 1

    def record(self) -> dict:
        return {"evaluating_seconds": round(self.evaluating, 2), "evaluations": self.evaluations,
                "checkpoint_seconds": round(self.saving, 2), "checkpoints": self.checkpoints}

    def describe(self) -> str:
        def part(n: int, what: str, seconds: float) -> str:
            return f"{n} {what} {seconds:.3g} s" + (f" ({seconds / n:.3g} s each)" if n else "")
        return (f"{part(self.evaluations, 'evaluations', self.evaluating)}, "
                f"{part(self.checkpoints, 'checkpoints', self.saving)}")


class ThroughputCallback(TrainerCallback):
    """Adds tokens/s and, on GPUs in the peak table, MFU to every log line, over the steps' own
    time: the seconds spent evaluating and writing checkpoints in the window are not counted
    (a window with an evaluation read half the speed on an H200, where neither step changed),
    and are added up in :attr:`pauses`. Uses the host clock at the Trainer's callbacks only: no
    device synchronisation of its own. A pause runs from the step's end (or its log line, which
    waits for the step's device work) to the evaluation's end, then to the checkpoint's."""

    def __init__(self, tokens_per_step: int, flops_per_token: float, peak_flops: float | None,
                 n_devices: int = 1, tokens_at=None, clock=time.perf_counter):
        self.tokens_per_step = tokens_per_step
        # tokens consumed by a global step: what the run read, at whatever world size each
        # invocation had (a resumed run passes its data position's count)
        self.tokens_at = tokens_at or (lambda step: step * tokens_per_step)
        self.flops_per_token = flops_per_token
        self.peak = peak_flops * n_devices if peak_flops else None
        self.clock = clock
        self._t = None
        self._t0 = None
        self._step = 0
        self.tokens_seen = 0
        self.pauses = Pauses()    # this invocation's
        self._paused = 0.0        # pauses.seconds at the window's start
        self._mark = None         # where the next pause would begin (None: not training)

    def on_train_begin(self, args, state, control, **kw):
        self._t, self._step = self.clock(), state.global_step
        self._t0 = self._mark = self._t

    def on_step_end(self, args, state, control, **kw):
        self.tokens_seen = self.tokens_at(state.global_step)
        if self._mark is not None:
            self._mark = self.clock()

    def _pause_ends(self, kind: str) -> None:
        if self._mark is not None:  # (the final evaluation, after training, is no pause of it)
            now = self.clock()
            self.pauses.add(kind, now - self._mark)
            self._mark = now

    def on_evaluate(self, args, state, control, **kw):
        self._pause_ends("evaluating")

    def on_save(self, args, state, control, **kw):
        self._pause_ends("saving")

    def on_train_end(self, args, state, control, **kw):
        self._mark = None

    def on_log(self, args, state, control, logs=None, **kw):
        if logs is None or "loss" not in logs or self._t is None:
            return
        now = self.clock()
        steps = state.global_step - self._step
        if steps > 0:
            dt = max(now - self._t - (self.pauses.seconds - self._paused), 1e-9)
            tps = steps * self.tokens_per_step / dt
            logs["tokens_per_second"] = round(tps, 1)
            logs["step_time_s"] = round(dt / steps, 4)
            if self.peak:
                logs["mfu"] = round(tps * self.flops_per_token / self.peak, 4)
        logs["tokens_seen"] = self.tokens_at(state.global_step)
        # seconds since this invocation's training began (evaluations included): loss against
        # wall time, the measure of time to quality
        logs["train_seconds"] = round(now - self._t0, 2)
        self._t, self._step, self._paused = now, state.global_step, self.pauses.seconds
        if self._mark is not None:  # the loss reached the host: the step's device work is done
            self._mark = now
        # Trainer.log appends a copy of `logs` to log_history before calling on_log, so the
        # figures added here would reach the console and W&B but not trainer_state.json
        # (and so not the evaluation report's throughput plot) without this.
        if state.log_history and state.log_history[-1].get("step") == state.global_step \
                and "loss" in state.log_history[-1]:
            for key in ("tokens_per_second", "step_time_s", "mfu", "tokens_seen", "train_seconds"):
                if key in logs:
                    state.log_history[-1][key] = logs[key]


class LogFileCallback(TrainerCallback):
    """Appends every log record (JSON) to the run's training log file, rank 0 only."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _write(self, text: str):
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text + "\n")

    def on_train_begin(self, args, state, control, **kw):
        if state.is_world_process_zero:
            self._write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} train begin: step "
                        f"{state.global_step}/{state.max_steps} -> {args.output_dir}")

    def on_log(self, args, state, control, logs=None, **kw):
        if state.is_world_process_zero and logs:
            self._write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} step {state.global_step}/"
                        f"{state.max_steps} " + json.dumps(logs))

    def on_save(self, args, state, control, **kw):
        if state.is_world_process_zero:
            self._write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} saved {checkpoint_name(state.global_step)}")


class StopAndSaveCallback(TrainerCallback):
    """Ctrl-C / SIGTERM, a wall-clock limit (``max_seconds``, the CLI's --stop_after_seconds)
    and ``stop_after_steps`` finish
    the current step, save a checkpoint and stop, so no work is lost and the run resumes
    exactly from there.

    Under torchrun every such decision is agreed: after each step, each rank's wish to stop
    (its own signal handler, its own clock) and the Trainer's should_save / should_log /
    should_evaluate / should_training_stop go through one all-reduce (MAX) of a few integers
    (:func:`londonlm.training.dist.agree`), so all ranks stop after the same step and save one
    checkpoint together. Early stopping and --save_best decide after an evaluation; their
    flags are agreed there too. Place this callback last, after every callback that decides.
    """

    # a repeat of the signal within this many seconds is the same request forwarded again
    # (Slurm signals every process of the step, then torchrun forwards it to each rank)
    REPEAT_SECONDS = 1.0
    _FLAGS = ("should_save", "should_log", "should_evaluate", "should_training_stop")

    def __init__(self, max_seconds: float = 0.0, stop_after_steps: int = 0, agree=agree,
                 clock=time.monotonic):
        self.max_seconds = max_seconds
        self.stop_after_steps = stop_after_steps
        self.agree = agree
        self.clock = clock
        self.reason: str | None = None
        self.signum = 0               # the signal this rank received (0: none)
        self._signalled_at = None
        self._start = None
        self._old = {}

    def _handler(self, signum, frame):
        now = time.monotonic()
        if self._signalled_at is not None and now - self._signalled_at > self.REPEAT_SECONDS:
            raise KeyboardInterrupt  # asked again: give up immediately
        if self._signalled_at is None:
            self._signalled_at, self.signum = now, signum

    def on_train_begin(self, args, state, control, **kw):
        self._start = self.clock()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass

    def _wishes(self, step: int) -> list[int]:
        """This rank's reasons to stop: [signal number, out of time, step limit reached]."""
        late = bool(self.max_seconds) and self.clock() - self._start >= self.max_seconds
        limit = bool(self.stop_after_steps) and step >= self.stop_after_steps
        return [self.signum, int(late), int(limit)]

    def _reason(self, signum: int, late: int, limit: int) -> str | None:
        if signum:
            return f"signal {signal.Signals(signum).name}"
        if late:
            return f"--stop_after_seconds {self.max_seconds:g} reached"
        if limit:
            return f"--stop_after_steps {self.stop_after_steps} reached"
        return None

    def _agree_flags(self, control, extra: list[int]) -> list[int]:
        out = self.agree(extra + [int(bool(getattr(control, f))) for f in self._FLAGS])
        for f, v in zip(self._FLAGS, out[len(extra):]):
            setattr(control, f, bool(v))
        return out[:len(extra)]

    def on_step_end(self, args, state, control, **kw):
        wishes = self._agree_flags(control, self._wishes(state.global_step))
        if self.reason is None:
            self.reason = self._reason(*wishes)
        if self.reason is not None:
            control.should_save = True
            control.should_training_stop = True

    def on_evaluate(self, args, state, control, **kw):
        self._agree_flags(control, [])

    def on_train_end(self, args, state, control, **kw):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


class EvalLossOnlyCallback(TrainerCallback):
    """Adds perplexity next to every validation loss."""

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        if metrics and "eval_loss" in metrics:
            metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 50))


class FiniteLossCallback(TrainerCallback):
    """Stops a run whose training loss turned NaN or infinite, before its weights reach a
    checkpoint or final/ (the step's save comes after its log). It reads the logged loss, which
    the Trainer already brought to the host and averaged over the ranks, so every rank stops
    together and no step pays a synchronisation of its own."""

    def on_log(self, args, state, control, logs=None, **kw):
        loss = next((logs[k] for k in ("loss", "train_loss") if k in (logs or {})), None)
        if isinstance(loss, (int, float)) and not math.isfinite(loss):
            raise TrainingError(
                f"training diverged: loss {loss} at step {state.global_step}; final/ was not written. "
                f"Lower --learning_rate (this run: {args.learning_rate:g}) or raise --warmup_steps, "
                f"then start over with --fresh")
