"""The Trainer's own flags that ``TrainingArguments`` accepts while parsing but that fail only
once a run has started: an optimizer or kernel package this machine lacks, an unknown compile
mode or backend, a malformed ``--optim_args``, a JSON option that is not an object, a W&B
tracker with no login, a push to the Hub. Each failed with the Trainer's traceback after the
token cache was built (or, for the Hub, before the first step with a network error); here
each is one ``error:`` line before any work. :func:`check_trainer_args` is called by the one
parser of every training job (:func:`~.flags.parse_flags`); :func:`check_scheduler` by the one
constructor of ``TrainingArguments`` (the schedule is the preset's and the flags' together)."""
from __future__ import annotations

import inspect
import json
import math
import os

from ..core import UsageError
from .defaults import enum_name

# TrainingArguments reads these as JSON objects when the text starts with "{" (else a file
# path); a list or a number passed the parse and failed inside the run
JSON_OBJECT_FLAGS = ("lr_scheduler_kwargs", "gradient_checkpointing_kwargs", "activation_checkpointing_kwargs",
                     "accelerator_config", "fsdp_config", "deepspeed")
# ... of which these are keyword arguments, never a file: other text (`--lr_scheduler_kwargs 1`)
# stayed a string, which the run's dict() of it failed on as a traceback
KWARGS_FLAGS = ("lr_scheduler_kwargs", "gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")
# what the Trainer's evaluation computes (prediction_loss_only): a --metric_for_best_model of any
# other name was a KeyError at the first evaluation, after the steps before it had trained
EVAL_METRICS = ("loss", "eval_loss")
# The training stage never publishes: 10_scripts/publish_to_huggingface.py does, with the model
# card and the weights' checks. The Trainer's push would also pickle --hub_token into every
# checkpoint's training_args.bin.
HUB_FLAGS = ("push_to_hub", "hub_model_id", "hub_token", "hub_strategy", "hub_private_repo",
             "hub_always_push", "hub_revision", "push_to_hub_model_id", "push_to_hub_organization",
             "push_to_hub_token")


# float32's largest number: Adam's first update is the rate over its bias correction (1 - beta1:
# 0.1 with the default 0.9), and one past this range is a RuntimeError inside torch's step ("value
# cannot be converted to type float without overflow"), a traceback at the first step with the
# run's record written (pre-training, chat fine-tuning and the LR finder's ramp alike)
FLOAT32_MAX = 3.4028234663852886e38


def largest_adam_rate(beta1: float) -> float:
    """The largest learning rate whose first Adam(W) update float32 weights can hold."""
    return FLOAT32_MAX * (1 - beta1)


def check_json_objects(argv: list[str]) -> None:
    """Each JSON option given as JSON text (``{...``, ``[...``) parses to an object."""
    for flag, text in _given_values(argv):
        if flag in JSON_OBJECT_FLAGS and (text.lstrip()[:1] in ("{", "[") or flag in KWARGS_FLAGS):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                raise UsageError(f"--{flag}: not valid JSON ({e.msg} at character {e.pos})") from None
            except RecursionError:  # `[[[[...` past the parser's depth
                raise UsageError(f"--{flag}: not valid JSON (nested too deeply)") from None
            if not isinstance(value, dict):
                raise UsageError(f"--{flag}: must be a JSON object such as '{{\"key\": 1}}' (got {text})")


def check_trainer_args(args, given) -> None:
    """What the parsed ``TrainingArguments`` would fail on only inside the run, for the flags
    ``given`` (the Trainer's defaults all work)."""
    given = set(given)
    hub = sorted(given & set(HUB_FLAGS))
    if hub:
        raise UsageError(f"--{hub[0]}: the training stage does not publish; once it has trained, "
                         "run `python 10_scripts/publish_to_huggingface.py` (model card, checked weights)")
    _check_settings_of_what_is_off(args, given)
    if "learning_rate" in given and args.learning_rate > largest_adam_rate(args.adam_beta1):
        raise UsageError(f"--learning_rate {args.learning_rate:g} is past the largest rate Adam can apply to "
                         f"float32 weights with beta1 {args.adam_beta1:g} ({largest_adam_rate(args.adam_beta1):.3g}: "
                         f"its first step is the rate over 1 - beta1)")
    if "optim_args" in given:
        _check_optim_args(args.optim_args)
    if "metric_for_best_model" in given and args.metric_for_best_model not in EVAL_METRICS:
        raise UsageError(f"--metric_for_best_model {args.metric_for_best_model}: the evaluation computes the "
                         f"validation loss alone; give 'loss' (or leave it out)")
    if "label_names" in given and list(args.label_names or ["labels"]) != ["labels"]:
        # the Trainer looks for the loss's targets under these names: any other left every
        # evaluation without a loss, a KeyError traceback at the first (the steps before it trained)
        raise UsageError(f"--label_names {' '.join(args.label_names)}: the batches carry their targets as "
                         f"'labels' (a causal LM's next tokens); leave --label_names out")
    if "dataloader_num_workers" in given:
        _check_loader_workers(args.dataloader_num_workers)
    if args.restore_callback_states_from_checkpoint:
        # the Trainer rebuilds each saved callback as type(cb)(**saved args): the data position
        # and run record take their settings from the run, so every resume was a TypeError traceback
        raise UsageError("--restore_callback_states_from_checkpoint: a resumed run restores its own "
                         "callbacks' state (its data position and record); leave the flag out")
    if "greater_is_better" in given and args.greater_is_better:  # the best would be the worst checkpoint
        raise UsageError("--greater_is_better true: the metric is the validation loss, of which lower is better")
    if "optim" in given:
        _check_optimizer_installed(args)
    if args.torch_compile and {"torch_compile_mode", "torch_compile_backend"} & given:
        _check_compile(args.torch_compile_mode, args.torch_compile_backend)
    if args.use_liger_kernel:
        from transformers.utils import is_liger_kernel_available

        if not is_liger_kernel_available():
            raise UsageError("--use_liger_kernel: liger-kernel is not installed here (pip install liger-kernel)")


def keywords_taken(kind, kwargs) -> dict:
    """Of ``kwargs`` (a preset's, for its own schedule), those the Trainer's schedule ``kind``
    names (none for one passing any keyword on to its class: they were not meant for it; all
    for a name the Trainer does not know, which it refuses itself)."""
    known = _schedule_keywords(kind)
    if known is None:
        return dict(kwargs or {})
    return {k: v for k, v in (kwargs or {}).items() if k in known[0]}


def _schedule_keywords(kind) -> tuple[list[str], bool] | None:
    """The keywords the schedule ``kind`` names, and whether it passes any other on to its
    torch class; None when the Trainer knows no such schedule."""
    from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION, SchedulerType

    try:
        params = inspect.signature(TYPE_TO_SCHEDULER_FUNCTION[SchedulerType(enum_name(kind))]).parameters
    except (KeyError, ValueError):
        return None
    named = [name for name, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD
             and name not in ("optimizer", "num_warmup_steps", "num_training_steps", "last_epoch")]
    return named, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


# settings of a feature -> the flags that turn it on: given without them, the Trainer keeps the
# settings and goes without the feature, and a user who meant to shard (or checkpoint) finds
# out only from the memory the run takes
SETTINGS_OF = {"fsdp_config": ("fsdp", "--fsdp (such as 'full_shard auto_wrap')"),
               "activation_checkpointing_kwargs": ("activation_checkpointing", "--activation_checkpointing"),
               "gradient_checkpointing_kwargs": ("gradient_checkpointing", "--gradient_checkpointing")}


def _check_settings_of_what_is_off(args, given: set) -> None:
    """Settings given (``SETTINGS_OF``) for a feature this run leaves off."""
    for flag, (feature, turn_on) in SETTINGS_OF.items():
        on = getattr(args, feature, None) or (feature.endswith("_checkpointing") and (
            args.activation_checkpointing or args.gradient_checkpointing))  # (each the other's alias)
        if flag in given and not on:
            raise UsageError(f"--{flag}: settings of what this run does not do; give {turn_on} as well, "
                             f"or leave --{flag} out")


def check_scheduler(args) -> None:
    """The Trainer's learning-rate schedule can be built from ``--lr_scheduler_type`` and
    ``--lr_scheduler_kwargs``, and gives a finite rate at every point of the run: built here on
    a throwaway optimizer, as the Trainer builds it. Keywords the schedule does not take
    (``--lr_scheduler_type linear --lr_scheduler_kwargs '{"min_lr_rate": 0.1}'``), one it needs
    and lacks (warmup_stable_decay's num_decay_steps) or a value of another kind (a power of
    "x") were a TypeError traceback once the token cache was built and the model made."""
    import torch
    from transformers import get_scheduler

    kind, kwargs = enum_name(args.lr_scheduler_type), dict(args.lr_scheduler_kwargs or {})
    steps = args.max_steps if args.max_steps and args.max_steps > 0 else 10
    warmup = args.get_warmup_steps(steps)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    try:
        schedule = get_scheduler(kind, optimizer, num_warmup_steps=warmup, num_training_steps=steps,
                                 scheduler_specific_kwargs=kwargs)
        # the rate at the steps where a schedule changes course (its lambdas are called lazily)
        points = sorted({0, max(warmup - 1, 0), warmup, warmup + 1, steps // 2, max(steps - 1, 0), steps})
        rates = [f(p) for f in getattr(schedule, "lr_lambdas", ()) for p in points]
        bad = next((r for r in rates if not math.isfinite(float(r))), None)
    except (TypeError, ValueError, KeyError, ZeroDivisionError, OverflowError) as e:
        raise UsageError(_schedule_refusal(kind, kwargs, " ".join(str(e).split()))) from None
    if bad is not None:
        raise UsageError(_schedule_refusal(kind, kwargs, f"a learning-rate factor of {bad}"))


def _schedule_refusal(kind: str, kwargs: dict, why: str) -> str:
    named, passes_on = _schedule_keywords(kind) or ([], False)
    takes = ("it takes the keywords of its torch scheduler class" if passes_on else
             f"the keywords it takes: {', '.join(named)}" if named else "it takes none")
    return f"--lr_scheduler_kwargs {json.dumps(kwargs)}: the {kind} schedule cannot be made of them ({why}); {takes}"


def _check_loader_workers(workers: int) -> None:
    """At most one loader process per CPU this process may use: each is a process of its own, and
    more only compete for the CPUs (``--dataloader_num_workers 1000000000`` began forking until
    the machine gave out, never a step)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers > cpus:
        raise UsageError(f"--dataloader_num_workers {workers}: more loader processes than the {cpus} CPUs "
                         f"this process may use; give at most {cpus} (0 loads in the training process)")


def _check_optim_args(text: str | None) -> None:
    for item in (text or "").replace(" ", "").split(","):
        if item and item.count("=") != 1:
            raise UsageError(f"--optim_args: must be key=value pairs separated by commas (got {text!r})")


def _check_optimizer_installed(args) -> None:
    """The Trainer's optimizer class can be found here. Looked up without a model, which some
    optimizers (GaLore, LOMO) need only after their package is found: their ValueErrors that
    are not about a missing package are left to the run."""
    from transformers import Trainer

    try:
        Trainer.get_optimizer_cls_and_kwargs(args)
    except (ImportError, ValueError) as e:
        if isinstance(e, ImportError) or "install" in str(e).lower() or "import" in str(e).lower():
            name = enum_name(args.optim)
            raise UsageError(f"--optim {name}: {' '.join(str(e).split())}") from None


def _check_compile(mode: str | None, backend: str | None) -> None:
    from accelerate.utils import DynamoBackend
    from torch._inductor import list_mode_options

    modes = list(list_mode_options())
    if mode is not None and mode not in modes:
        raise UsageError(f"--torch_compile_mode: must be one of {', '.join(modes)} (got {mode!r})")
    if backend is not None and backend.upper() not in DynamoBackend.__members__:
        known = ", ".join(sorted(b.lower() for b in DynamoBackend.__members__))
        raise UsageError(f"--torch_compile_backend: must be one of {known} (got {backend!r})")


def _given_values(argv: list[str]):
    """(flag name, value text) for each ``--flag value`` / ``--flag=value`` in ``argv``."""
    for i, a in enumerate(argv):
        if not a.startswith("--"):
            continue
        if "=" in a:
            name, text = a[2:].split("=", 1)
            yield name, text
        elif i + 1 < len(argv):
            yield a[2:], argv[i + 1]
