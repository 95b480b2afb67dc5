"""The seam through which ``--optim muon`` and a budget-fitted schedule reach the Hugging Face
``Trainer``: a subclass whose ``create_optimizer`` / ``create_scheduler`` build ours, called
by the Trainer at the moment it would build its own (after the model is placed on its device,
before a checkpoint's optimizer and scheduler states are loaded into them)."""
from __future__ import annotations

from typing import Callable

from .schedules import WarmupStableDecay, make_lr_scheduler


def trainer_class(optimizer_factory: Callable | None = None,
                  schedule: WarmupStableDecay | Callable[[int], float] | None = None, base=None):
    """``base`` (default ``transformers.Trainer``) with ``optimizer_factory(model)`` building the
    optimizer and ``schedule`` driving the learning rate; either left None keeps the Trainer's
    own (AdamW from ``args.optim``, the scheduler from ``args.lr_scheduler_type``). A
    ``schedule`` is any step -> learning-rate factor (a ``LambdaLR`` lambda)."""
    if base is None:
        from transformers import Trainer as base

    class HookedTrainer(base):
        def create_optimizer(self, model=None):
            if self.optimizer is None and optimizer_factory is not None:
                self.optimizer = optimizer_factory(self.model if model is None else model)
            return super().create_optimizer(model)

        def create_scheduler(self, num_training_steps: int, optimizer=None):
            if self.lr_scheduler is None and schedule is not None:
                self.lr_scheduler = make_lr_scheduler(optimizer or self.optimizer, schedule)
                self._created_lr_scheduler = True  # rebuilt (from the same schedule) on a re-train
            return super().create_scheduler(num_training_steps, optimizer)

    return HookedTrainer
