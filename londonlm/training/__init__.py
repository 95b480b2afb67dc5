"""Training with the Hugging Face ``Trainer``: one implementation behind every training
script (GPT-2 Small, Medium, tiny, micro), single process or torchrun DDP/FSDP.

A run reads top to bottom in :func:`run_training` (``run.py``): ``plan.py`` (tokenizer, resume,
--init_from parent, shape, time lock) -> ``speed/choice.py`` (precision, kernels, compile,
micro-batch) -> ``data.py`` (token cache, packed blocks, the stream) -> ``model.py`` ->
``step/trainer.py`` (the Trainer, with its optimizer and schedule; ``step/callbacks.py`` around
every step) -> ``record.py`` (final/, best/, run_info.json). ``options.py`` turns a parsed command
line and config.py's defaults into a :class:`TrainingJob`; the pipeline and the grid build one
and call :func:`run_job`. Everything a resume decides is in ``resume.py``; ranks and agreement in
``dist.py``.

Every other training job (chat fine-tuning, the LR finder) trains through the same pieces,
exported here: :func:`make_training_arguments` (the one ``TrainingArguments`` constructor),
:func:`fine_tune` (training a loaded model on a job's rows), :class:`SpeedRequest` and the flags
every job shares.
"""
from __future__ import annotations

from .dist import TrainingError, is_main_process, log
from .finetune import FineTuneData, FineTuneJob, fine_tune
from .model import padded_vocab
from .options import (BUDGET_STEP_CAP, RunControlArguments, RunOptions, SpeedArguments, TrainDefaults,
                      TrainFlags, TrainingJob, default_autotune, make_job, make_training_arguments, parse_flags)
from .record import save_model_folder, training_settings
from .resume import Resumed, move_run_aside, resumed
from .run import run_training
from .speed.settings import SpeedRequest, SpeedSettings
from .step.callbacks import RunControl
from .tools.grid import finished, share_cache


def run_job(job: TrainingJob) -> dict:
    """Run a :class:`TrainingJob` (see :func:`run_training`)."""
    return run_training(job.opts, job.args)


__all__ = [
    "BUDGET_STEP_CAP", "default_autotune", "fine_tune", "FineTuneData", "FineTuneJob", "finished",
    "is_main_process", "log", "make_job", "make_training_arguments", "move_run_aside", "padded_vocab",
    "parse_flags", "resumed", "Resumed", "run_job", "run_training", "RunControl", "RunControlArguments",
    "RunOptions", "save_model_folder", "share_cache", "SpeedArguments",
    "SpeedRequest", "SpeedSettings", "TrainDefaults", "TrainFlags", "training_settings", "TrainingError",
    "TrainingJob",
]
