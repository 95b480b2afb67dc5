"""Benchmark-only shim for benchmarks/budget_race.py: makes any Hugging Face ``Trainer`` script
(the reference ../shared/bench/baseline_clm.py, or our training CLI before it fits schedules
itself) fit its learning-rate schedule to a wall-clock budget, unchanged otherwise.

Python imports ``sitecustomize`` at start-up from PYTHONPATH; the race puts this folder there
and sets LONDONLM_RACE_BUDGET (seconds), LONDONLM_RACE_SCHEDULE (``own``: the script's own
cosine/linear shape, ``wsd``: warmup-stable-decay) and LONDONLM_RACE_REPORT (a JSON file for the
fitted figures). Without LONDONLM_RACE_BUDGET it does nothing.
"""
import json
import os

if os.environ.get("LONDONLM_RACE_BUDGET"):
    import transformers
    from transformers import TrainerCallback

    from londonlm.training.step.schedules import BudgetFitCallback, WarmupStableDecay, make_lr_scheduler

    _BUDGET = float(os.environ["LONDONLM_RACE_BUDGET"])
    _KIND = os.environ.get("LONDONLM_RACE_SCHEDULE", "own")

    def _schedule(args, total: int) -> WarmupStableDecay:
        kind = str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type))
        floor = float((args.lr_scheduler_kwargs or {}).get("min_lr_rate", 0.0))
        warmup = args.get_warmup_steps(total)
        if _KIND == "wsd":
            return WarmupStableDecay(warmup, total, 0.2, floor, "linear")
        if kind not in ("cosine", "cosine_with_min_lr", "linear"):
            raise SystemExit(f"budget shim: cannot fit a {kind!r} schedule")
        return WarmupStableDecay(warmup, total, 1.0, floor, "linear" if kind == "linear" else "cosine")

    class _Report(TrainerCallback):
        def __init__(self, fit):
            self.fit = fit

        def on_train_end(self, args, state, control, **kw):
            path = os.environ.get("LONDONLM_RACE_REPORT")
            if path and state.is_world_process_zero:
                with open(path, "w") as f:
                    json.dump({**self.fit.report(), "global_step": state.global_step}, f)

    class BudgetFittedTrainer(transformers.Trainer):
        def __init__(self, *a, callbacks=None, **kw):
            fit = BudgetFitCallback(_BUDGET)
            super().__init__(*a, callbacks=[*(callbacks or []), fit, _Report(fit)], **kw)

        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.lr_scheduler is None:
                self.lr_scheduler = make_lr_scheduler(optimizer or self.optimizer,
                                                      _schedule(self.args, num_training_steps))
                self._created_lr_scheduler = True
            return self.lr_scheduler

    # transformers swaps its lazy module object in sys.modules on first use: patch that one
    import sys

    sys.modules["transformers"].Trainer = transformers.Trainer = BudgetFittedTrainer
