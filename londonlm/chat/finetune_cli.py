"""Command line of ``07_finetuning/finetune_chat.py``: the chat arguments beside the training
package's own (speed, run control and every ``transformers.TrainingArguments`` flag, parsed
by :func:`londonlm.training.flags.parse_flags`), turned into :class:`ChatTrainOptions` over the
chosen chat preset. ``--bf16 true|false``, ``--optim muon``, ``--time_budget``,
``--autotune``, ``--gradient_accumulation_steps``... mean what they mean for pre-training."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Mapping, Optional

from ..core import RunLayout, UsageError, user_path
from ..training import JobRequest, RunControlArguments, SpeedArguments, parse_flags
from .preset import ChatTrainOptions


# Run control's flags that only pre-training's job acts on (its best/ folder, early stopping):
# a chat run given one is refused, not trained as if it had not been given.
PRETRAINING_ONLY = frozenset({"save_best", "early_stopping_patience"})


@dataclass
class ChatArguments:
    preset: Optional[str] = field(default=None, metadata={
        "help": "Chat fine-tuning preset (config.py CHAT_PRESETS: micro, tiny, slm); it also "
                "names the default base run."})
    init_from: Optional[str] = field(default=None, metadata={
        "help": "Base model: a run name (its final/), RUN/checkpoint-N, best, latest or a folder "
                "(default: the preset's run)."})
    data_dir: Optional[str] = field(default=None, metadata={
        "help": "Dialogue dataset (default: data/london_historical/chat)."})
    batch_size: Optional[int] = field(default=None, metadata={
        "help": "Packed rows per device and step (alias of --per_device_train_batch_size)."})
    max_length: Optional[int] = field(default=None, metadata={
        "help": "Tokens per row (default: the base model's context)."})
    no_packing: bool = field(default=False, metadata={
        "help": "Pad each conversation window instead of packing them."})
    overwrite: bool = field(default=False, metadata={
        "help": "Retrain even when the chat run is current (the old run is moved aside)."})
    root: Optional[str] = field(default=None, metadata={
        "help": "Project root (default: $LONDONLM_ROOT or the repo)."})

    def __post_init__(self):
        for k in ("batch_size", "max_length"):
            v = getattr(self, k)
            if v is not None and v <= 0:
                raise UsageError(f"--{k} must be positive, got {v}")


# TrainingArguments flag -> ChatTrainOptions field, and the smallest value each accepts
MAPPED = {"max_steps": ("max_steps", 1), "per_device_train_batch_size": ("batch_size", 1),
          "gradient_accumulation_steps": ("grad_accum", 1), "learning_rate": ("learning_rate", None),
          "warmup_steps": ("warmup_steps", 0), "weight_decay": ("weight_decay", 0),
          "max_grad_norm": ("max_grad_norm", 0), "save_steps": ("save_steps", 1),
          "eval_steps": ("eval_steps", 1), "logging_steps": ("logging_steps", 1),
          "save_total_limit": ("save_total_limit", 1), "seed": ("seed", 0)}
# Trainer flags that are not passed on as they are: the run folder (--output_dir), the
# precision (a speed setting), the device (set by the training package) and the run's name
NOT_PASSED = {"output_dir", "bf16", "fp16", "use_cpu", "run_name"}


def _checked(flag: str, value, least):
    if least is None:
        if not value > 0:
            raise UsageError(f"--{flag} must be positive, got {value}")
    elif value < least:
        raise UsageError(f"--{flag} must be {'positive' if least == 1 else f'>= {least}'}, got {value}")
    return value


# pairs of flags that set one thing: given both, one would be dropped without a word
ONE_OF = ((("batch_size", "per_device_train_batch_size"),
           "--batch_size is an alias of --per_device_train_batch_size: give one of them"),
          (("run_name", "output_dir"),
           "--output_dir names the chat run's folder itself, so --run_name would go unused: give one of them"))


def _refuse_both(given: frozenset) -> None:
    """One line when two flags that set the same thing are both given."""
    for pair, message in ONE_OF:
        if set(pair) <= set(given):
            raise UsageError(message)


def chat_options(preset: Mapping, chat: ChatArguments, speed: SpeedArguments, control: RunControlArguments,
                 trainer: dict, given: frozenset) -> tuple[ChatTrainOptions, JobRequest]:
    """The chat preset's options with what the command line gave, and what it asked beyond
    them (speed, optimizer, time budget, stops, other Trainer flags)."""
    from ..training import asked_length

    _refuse_both(given)
    values = {}
    for flag, (name, least) in MAPPED.items():
        if flag in given:
            values[name] = _checked(flag, trainer[flag], least)
    if chat.batch_size is not None:
        values["batch_size"] = chat.batch_size
    base = ChatTrainOptions(**{k: v for k, v in preset.items()
                               if k in {f.name for f in fields(ChatTrainOptions)}})
    # --num_train_epochs (passes over the training rows), a budget, the warm-up's share: as
    # pre-training's (the tree carries passes and the share; the steps are counted with the rows)
    length = asked_length(given, trainer, control.time_budget or control.max_seconds, base.warmup_steps,
                          base.max_steps)
    if "max_steps" in length:
        values["max_steps"] = length.pop("max_steps")
    extra = {k: trainer[k] for k in sorted(given) if k in trainer and k not in MAPPED
             and k not in NOT_PASSED and k != "num_train_epochs"}
    extra.update(length)
    if "per_device_eval_batch_size" not in extra and "batch_size" in values:
        extra["per_device_eval_batch_size"] = values["batch_size"]
    options = replace(base, **values, packing=not chat.no_packing, max_length=chat.max_length or 0)
    request = JobRequest.from_flags(speed, control, trainer, given)  # --bf16/--fp16 read from trainer
    return options, replace(request, trainer=extra)


def chat_run_name(layout, base_dir: Path, spec: str) -> str:
    """``<base run>-chat`` when the base model lives in a run folder, else from the folder name."""
    run = base_dir.parent if base_dir.parent.parent == layout.checkpoints_dir else base_dir
    return layout.chat_run_name(run.name if run.name else spec)


def main(argv: list[str], presets: Mapping[str, Mapping], default_preset: str, get_layout,
         prog: str | None = None, description: str | None = None) -> int:
    """Fine-tune the base model a command line names into its chat run."""
    (chat, speed, control), trainer, given = parse_flags(
        argv, (ChatArguments, SpeedArguments, RunControlArguments), prog, description)
    name = chat.preset or default_preset
    for flag in PRETRAINING_ONLY & set(given):  # parsed with run control's flags, kept by pre-training alone
        raise UsageError(f"--{flag} is pre-training's (04_training); chat fine-tuning does not act on it")
    if name not in presets:
        raise UsageError(f"--preset: unknown chat preset {name!r}; choose one of: {', '.join(presets)}")
    options, request = chat_options(presets[name], chat, speed, control, trainer, given)
    layout = get_layout(chat.root)
    base_dir = layout.resolve_model(chat.init_from, name)
    run_name = trainer.get("run_name") if "run_name" in given else None
    # --output_dir is the run folder, as pre-training's (it was accepted and ignored: the model
    # went to <base>-chat under the runs folder, and the folder named stayed empty)
    out = trainer.get("output_dir") if "output_dir" in given else None
    run = RunLayout(user_path(out)) if out else layout.run(run_name or chat_run_name(layout, base_dir,
                                                                                     chat.init_from or name))
    # imported once the command line stands: the Trainer and model code take ~4 s to import,
    # which --help and a refused flag need not wait for
    from .finetune import finetune_chat

    finetune_chat(base_dir, chat.data_dir or layout.chat_data_dir, run, options, request=request,
                  fresh=control.fresh, overwrite=chat.overwrite)
    return 0
