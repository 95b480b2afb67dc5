"""Training with the Hugging Face ``Trainer``: one implementation behind every training
script (GPT-2 Small, Medium, tiny, micro), single process or torchrun DDP/FSDP.

A run reads top to bottom in :func:`run_training` (``run.py``): ``plan.py`` (tokenizer,
resume, --init_from parent, shape) -> ``data.py`` (token cache, packed blocks) -> ``model.py``
(kernels, the model) -> the Trainer -> ``summary.py`` (final/, best, run_info.json).
``options.py`` turns a parsed command line and config.py's defaults into a
:class:`TrainingJob`; the pipeline and the grid build one and call :func:`run_job`.

Every other training job (chat fine-tuning, the LR finder) trains through the same pieces,
exported here: :mod:`.loop` (the one ``TrainingArguments`` constructor and Trainer builder),
:mod:`.finetune` (training a loaded model on a job's rows), :mod:`.speed` (precision, kernels,
time budget) and :mod:`.args` (the flags every job shares).
"""
from __future__ import annotations

from .args import RunControlArguments, SpeedArguments, TrainFlags, parse_flags
from .base import TrainingError, is_main_process, log
from .checkpoints import move_run_aside
from .finetune import FineTuneData, FineTuneJob, fine_tune, save_model_folder
from .grid import finished, share_cache
from .loop import RunControl, make_training_arguments
from .modeling import padded_vocab
from .options import BUDGET_STEP_CAP, RunOptions, TrainDefaults, TrainingJob, default_autotune, make_job
from .run import run_training
from .speed import SPEED_RECORD_KEYS, SpeedOptions
from .summary import training_settings


def run_job(job: TrainingJob) -> dict:
    """Run a :class:`TrainingJob` (see :func:`run_training`)."""
    return run_training(job.opts, job.args)


__all__ = [
    "BUDGET_STEP_CAP", "default_autotune", "fine_tune", "FineTuneData", "FineTuneJob", "finished",
    "is_main_process", "log", "make_job", "make_training_arguments", "move_run_aside", "padded_vocab",
    "parse_flags", "run_job", "run_training", "RunControl", "RunControlArguments", "RunOptions",
    "save_model_folder", "share_cache", "SPEED_RECORD_KEYS", "SpeedArguments", "SpeedOptions", "TrainDefaults",
    "TrainFlags", "training_settings", "TrainingError", "TrainingJob",
]
