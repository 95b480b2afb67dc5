"""What the project's defaults give every training entry point: config.py's presets, root,
tokenizer name and seed (:class:`TrainDefaults`, built by the scripts from config.py and passed
in, since the library never imports it), the Trainer values a preset implies on this machine,
and the ``--autotune`` mode when none is given."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Mapping

from ..core import Layout, UsageError
from .speed.settings import MODES
from .trackers import default_report_to

# With a time budget and no --max_steps, the budget alone decides how many steps run.
BUDGET_STEP_CAP = 10 ** 7


@dataclass(frozen=True)
class TrainDefaults:
    """What config.py gives every training entry point (the scripts build it and pass it in)."""

    presets: Mapping[str, Any]   # name -> preset (a dataclass or a dict of its fields)
    default_preset: str
    layout: Layout
    tokenizer_name: str
    seed: int
    wandb_project: str
    dataloader_workers: int = 0  # GPU only (config.py's, measured); CPU training loads in the main process

    def preset(self, name: str | None) -> tuple[str, dict]:
        """``(name, fields)`` of a preset (the default one for None)."""
        name = name or self.default_preset
        if name not in self.presets:
            raise UsageError(f"unknown preset {name!r}; choose one of: {', '.join(self.presets)}")
        p = self.presets[name]
        return name, (dataclasses.asdict(p) if dataclasses.is_dataclass(p) else dict(p))

    def at_root(self, root: str | os.PathLike | None) -> Layout:
        """The layout, moved to ``--root`` when one is given."""
        if not root:
            return self.layout
        return Layout.at(root, default_root=self.layout.root, registry_file=self.layout.registry_file)


def preset_trainer_values(preset: dict, batch_size: int, seed: int, workers: int) -> dict:
    """``TrainingArguments`` values a preset (and this machine) implies; flags given win."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "per_device_train_batch_size": batch_size, "per_device_eval_batch_size": batch_size,
        "gradient_accumulation_steps": preset["grad_accum"],
        "learning_rate": preset["learning_rate"], "warmup_steps": preset["warmup_steps"],
        "max_steps": preset["max_steps"], "save_steps": preset["save_steps"],
        "eval_steps": preset["eval_steps"], "logging_steps": preset["logging_steps"],
        "save_total_limit": preset["save_total_limit"], "weight_decay": preset["weight_decay"],
        "max_grad_norm": preset["max_grad_norm"],
        "lr_scheduler_type": "cosine_with_min_lr",
        "lr_scheduler_kwargs": {"min_lr_rate": preset["min_lr_ratio"]},
        "eval_strategy": "steps", "save_strategy": "steps", "logging_strategy": "steps",
        "prediction_loss_only": True, "seed": seed, "data_seed": seed,
        "report_to": default_report_to(),
        "optim": "adamw_torch_fused" if cuda else "adamw_torch",
        "dataloader_num_workers": workers if cuda else 0, "dataloader_pin_memory": cuda,
        "metric_for_best_model": "eval_loss", "greater_is_better": False,
        "load_best_model_at_end": bool(preset.get("load_best_model_at_end", False)),
        "ddp_find_unused_parameters": False, "save_safetensors": True,
        "adam_beta2": 0.95,
        # the filter checks every micro-batch's loss for NaN/inf on the host: a GPU sync per
        # micro-batch; and a NaN logged as NaN is what a user should see, not a smoothed-over one
        "logging_nan_inf_filter": False,
    }


def asked_length(given, trainer: Mapping, budget: float, preset_warmup: float, preset_steps: int) -> dict:
    """The values a job's asked length sets beside its preset's (``given``: the flags on its
    command line; ``trainer``: the Trainer's parsed values), for pre-training and chat alike:

    - ``--num_train_epochs P``: ``passes`` P, the steps for them counted once the data is
      (:func:`.length.fit_length`), ``max_steps`` an upper bound till then (the Trainer ignores its
      epochs beside any ``max_steps``); refused beside ``--max_steps``;
    - a time budget without ``--max_steps``: ``max_steps`` the upper bound (the budget decides);
    - a length asked (a budget, ``--max_steps``, ``--num_train_epochs``) without ``--warmup_steps``:
      ``warmup_share``, the preset's warm-up over its steps, which the run's warm-up keeps where
      shorter than the preset's."""
    out: dict = {}
    if "num_train_epochs" in given:
        if "max_steps" in given:
            raise UsageError("--num_train_epochs and --max_steps both set how long the run trains: give one")
        out.update(passes=trainer["num_train_epochs"], max_steps=BUDGET_STEP_CAP)
    elif budget and "max_steps" not in given:
        out["max_steps"] = BUDGET_STEP_CAP
    if (budget or {"max_steps", "num_train_epochs"} & set(given)) and "warmup_steps" not in given \
            and preset_steps > 0:
        out["warmup_share"] = preset_warmup / preset_steps
    return out


def enum_name(value) -> str:
    """A Trainer value given as a string or as transformers' enum (a strategy, a schedule, an
    optimizer), by its name."""
    return str(getattr(value, "value", value))


def strategy(values: dict, key: str) -> str:
    """A Trainer value's interval strategy as its name ('no', 'steps', ...)."""
    return enum_name(values.get(key))


def why_not_load_best(values: dict) -> str | None:
    """Why the Trainer would refuse ``load_best_model_at_end`` with these values (it needs a
    checkpoint at every evaluation: the same strategy, save steps a multiple of eval steps),
    or None. A preset's default gives way to the steps a user chose, with a note, rather than
    refusing a command line that never asked for it."""
    evals, saves = strategy(values, "eval_strategy"), strategy(values, "save_strategy")
    if saves == "best":
        return None
    if evals != saves:
        return f"--eval_strategy {evals} and --save_strategy {saves} differ"
    if evals != "steps":
        return None
    save, every = values.get("save_steps"), values.get("eval_steps")
    whole = [isinstance(x, (int, float)) and x >= 1 and float(x).is_integer() for x in (save, every)]
    if not (all(whole) and int(save) % int(every) == 0):
        return f"--save_steps {save} is not a multiple of --eval_steps {every}"
    return None


def default_autotune() -> str:
    """``--autotune`` when not given: $LONDONLM_AUTOTUNE (e.g. ``off`` in a test suite that
    wants the fixed rules everywhere), else ``on``."""
    mode = os.environ.get("LONDONLM_AUTOTUNE", "on") or "on"
    if mode not in MODES:
        raise UsageError(f"LONDONLM_AUTOTUNE must be one of {', '.join(MODES)}, got {mode!r}")
    return mode
