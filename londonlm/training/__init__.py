"""Training with the Hugging Face ``Trainer``: one implementation behind every training
script (GPT-2 Small, Medium, tiny, micro), single process or torchrun DDP/FSDP.

A job is one frozen configuration tree (:class:`TrainingConfig`, ``job.py``), built once from
the command line (``flags.py``), the preset and config.py's defaults (``defaults.py``); the
Trainer's arguments are generated from it (:func:`training_arguments`) after every decision.
A run reads top to bottom in :func:`run_training` (``run.py``): ``plan.py`` (every check before
work: tokenizer, resume, --init_from parent, shape, time lock) -> ``speed/`` (precision,
kernels, compile, micro-batch) -> ``data.py`` (token cache, packed blocks, the stream) ->
``model.py`` -> ``step/trainer.py`` (the Trainer, with its optimizer and schedule;
``step/callbacks.py`` around every step, in one stated order) -> ``record.py`` (final/, best/,
run_info.json). Everything a resume decides is in ``resume.py``; ranks and agreement in
``dist.py``; one live training per run folder in ``runlock.py``.

Every other training job (chat fine-tuning, the LR finder) builds the same tree from its own
preset (:func:`config_from_values`, :class:`JobRequest`) and trains through the same pieces
(:func:`fine_tune`).
"""
from __future__ import annotations

from .defaults import BUDGET_STEP_CAP, TrainDefaults, default_autotune
from .dist import TrainingError, is_main_process, log
from .finetune import FineTuneData, FineTuneJob, fine_tune
from .flags import RunArguments, RunControlArguments, SpeedArguments, TrainFlags, parse_flags, parse_train_flags
from .job import (JobRequest, ModelConfig, OptimConfig, OutputConfig, RunControl, SpeedConfig, TrainingConfig,
                  build_config, config_from_values, training_arguments)
from .model import padded_vocab
from .record import save_model_folder, training_settings
from .resume import Resumed, move_run_aside, resumed
from .run import run_training
from .speed.settings import SpeedRequest, SpeedSettings
from .tools.grid import finished, share_cache

__all__ = [
    "BUDGET_STEP_CAP", "build_config", "config_from_values", "default_autotune", "fine_tune", "FineTuneData",
    "FineTuneJob", "finished", "is_main_process", "JobRequest", "log", "ModelConfig", "move_run_aside",
    "OptimConfig", "OutputConfig", "padded_vocab", "parse_flags", "parse_train_flags", "resumed", "Resumed",
    "run_training", "RunArguments", "RunControl", "RunControlArguments", "save_model_folder", "share_cache",
    "SpeedArguments", "SpeedConfig", "SpeedRequest", "SpeedSettings", "TrainDefaults", "TrainFlags",
    "training_arguments", "training_settings", "TrainingConfig", "TrainingError",
]
