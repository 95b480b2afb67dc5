"""Training with the Hugging Face ``Trainer``: one implementation behind every training
script (GPT-2 Small, Medium, tiny, micro), single process or torchrun DDP/FSDP.

A job is one frozen configuration tree (:class:`TrainingConfig`, ``job.py``), built once from
the command line (``flags.py``), the preset and config.py's defaults (``defaults.py``); the
Trainer's arguments are generated from it (:func:`training_arguments`) after every decision.
A run reads top to bottom in :func:`run_training` (``run.py``): ``plan.py`` (every check before
work: tokenizer, resume, --init_from parent, shape, time lock) -> ``speed/`` (precision,
kernels, compile, micro-batch) -> ``data.py`` (token cache, packed blocks, the stream) ->
``length.py`` (the step count and warm-up, once the data is counted) -> ``model.py`` ->
``step/trainer.py`` (the Trainer, with its optimizer and schedule; ``step/callbacks.py`` around
every step, in one stated order) -> ``record.py`` (final/, best/, run_info.json). Everything a
resume decides is in ``resume.py``; ranks and agreement in ``dist.py``; one live training per run
folder in ``runlock.py``.

Every other training job (chat fine-tuning, the LR finder) builds the same tree from its own
preset (:func:`config_from_values`, :class:`JobRequest`) and trains through the same pieces
(:func:`fine_tune`).

The names below load on first use (as the corpus package's do), so a command line is parsed,
and ``--help`` or a refused flag answered, before the Trainer and the model code are imported
(transformers' masking and Trainer modules: ~4 s of a training script's start).
"""
from ..core import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "currency": ("changed_inputs", "finished", "recorded_settings", "run_changes", "settings_changes"),
    "defaults": ("BUDGET_STEP_CAP", "TrainDefaults", "asked_length", "default_autotune"),
    "dist": ("TrainingError", "is_main_process", "log"),
    "finetune": ("FineTuneData", "FineTuneJob", "fine_tune"),
    "flags": ("RunArguments", "RunControlArguments", "SpeedArguments", "TrainFlags", "parse_flags",
              "parse_train_flags"),
    "job": ("JobRequest", "ModelConfig", "OptimConfig", "OutputConfig", "RunControl", "SpeedConfig",
            "TrainingConfig", "build_config", "config_from_values", "training_arguments", "training_settings"),
    "model": ("padded_vocab",),
    "record": ("recover_run_folder", "save_model_folder"),
    "resume": ("Resumed", "move_run_aside", "resumed"),
    "run": ("run_training",),
    "runlock": ("run_lock",),
    "speed.settings": ("SpeedRequest", "SpeedSettings"),
    "tools.grid": ("share_cache",),
})
