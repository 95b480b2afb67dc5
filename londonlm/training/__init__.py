"""Training with the Hugging Face ``Trainer``: one implementation behind every training
script (GPT-2 Small, Medium, tiny, micro), single process or torchrun DDP/FSDP.

A run reads top to bottom in :func:`run_training` (``run.py``): ``plan.py`` (tokenizer,
resume, --init_from parent, shape) -> ``data.py`` (token cache, packed blocks) -> ``model.py``
(kernels, the model) -> the Trainer -> ``summary.py`` (final/, best, run_info.json).
``options.py`` turns a parsed command line and config.py's defaults into a
:class:`TrainingJob`; the pipeline and the grid build one and call :func:`run_job`.
"""
from __future__ import annotations

from .base import TrainingError, is_main_process, log
from .options import RunOptions, TrainDefaults, TrainingJob, make_job
from .run import run_training


def run_job(job: TrainingJob) -> dict:
    """Run a :class:`TrainingJob` (see :func:`run_training`)."""
    return run_training(job.opts, job.args)


__all__ = ["RunOptions", "TrainDefaults", "TrainingError", "TrainingJob", "is_main_process",
           "log", "make_job", "run_job", "run_training"]
