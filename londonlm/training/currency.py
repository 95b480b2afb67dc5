"""Whether a run on disk is what a request asks for: finished, and made from the tokenizer,
corpus and training settings asked for now (as its run_info.json recorded them).

The pipeline, the grid and the family decide alike: a finished run made from the same inputs
and settings is skipped; one made from others starts over, its files moved aside. A run kept
only because it had finished was skipped as the request's own, its figures tabulated (the
grid's table, the family's leakage table) under settings it was never trained with."""
from __future__ import annotations

import json
from pathlib import Path

from ..core import RunLayout, sha256_file
from ..corpus import MANIFEST
from .dist import log, same_on_all_ranks
from .job import TrainingConfig, training_settings

# What run_info.json recorded before it kept a "settings" record (still compared for old runs)
LEGACY_SETTINGS = ("preset", "learning_rate", "batch_size", "gradient_accumulation_steps", "seed",
                   "lr_scheduler_type", "warmup_steps", "max_steps", "precision")
LEGACY_SHAPE = ("n_layer", "n_head", "n_embd", "context_length")


def finished(run: RunLayout) -> bool:
    """A run that wrote its record and a whole final model, and was not stopped early. (Its
    step count is not compared: an early-stopping run ends before max_steps, as finished.)"""
    info = run.read_run_info()
    # a final/ cut short or lost is not a finished model: the run resumes from its last
    # checkpoint, which writes final/ again, where it was skipped and failed where it was read
    return bool(info) and not info.get("interrupted") and run.has_final()


def recorded_settings(info: dict) -> dict:
    """The training settings a run recorded (for an older run_info.json, the ones it kept)."""
    if isinstance(info.get("settings"), dict):
        return info["settings"]
    shape = info.get("shape") if isinstance(info.get("shape"), dict) else {}
    return {**{k: info[k] for k in LEGACY_SETTINGS if k in info},
            **{k: shape[k] for k in LEGACY_SHAPE if k in shape}}


def settings_changes(info: dict, wanted: dict) -> list[str]:
    """``name old -> new`` for every recorded setting that ``wanted`` changes (a setting the
    run did not record cannot be compared and is not counted)."""
    recorded = recorded_settings(info)
    wanted = json.loads(json.dumps(wanted))  # JSON values against JSON values (tuples, enums)
    # "auto" (precision chosen for the machine by --autotune) accepts whatever the run used
    return [f"{k} {recorded[k]!r} -> {wanted[k]!r}" for k in sorted(wanted)
            if k in recorded and recorded[k] != wanted[k] and wanted[k] != "auto"]


def _digest(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() else None


def changed_inputs(info: dict, tokenizer_dir: Path, corpus_dir: Path, settings: dict) -> str | None:
    """Why the run that recorded ``info`` was made from another tokenizer, corpus or training
    settings than ``settings`` (:func:`.job.training_settings` of the request), or None. An input
    that is not there cannot be compared and is not counted: a finished run is not moved aside
    for a training that cannot start (which names the command that makes it)."""
    tokenizer = _digest(Path(tokenizer_dir) / "tokenizer.json")
    if tokenizer is not None and info.get("tokenizer_sha256") != tokenizer:
        return "tokenizer changed"
    cache = info.get("cache") if isinstance(info.get("cache"), dict) else {}
    corpus = _digest(Path(corpus_dir) / MANIFEST)
    if corpus is not None and cache.get("manifest_sha256") != corpus:
        return "corpus changed"
    changes = settings_changes(info, settings)
    return "training settings changed: " + "; ".join(changes) if changes else None


def run_changes(run: RunLayout, config: TrainingConfig) -> str | None:
    """Why the run on disk was made from other inputs or settings than the job ``config``
    trains from (its tokenizer, its corpus, :func:`.job.training_settings`), or None."""
    return changed_inputs(run.read_run_info(), config.data.tokenizer_dir, config.data.processed_dir,
                          training_settings(config))


def finished_earlier(config: TrainingConfig) -> dict | None:
    """The record of the run ``config`` would train, when that run finished earlier from the
    same tokenizer, corpus and settings (and neither --fresh nor a checkpoint was named):
    training it again would resume from its last step and replace final/. Agreed by every
    rank."""
    run, control = config.run, config.control
    asked = control.fresh or control.resume_from not in (None, "", "auto", "latest")
    done = not asked and finished(run) and run_changes(run, config) is None
    same_on_all_ranks(int(done), "whether the run finished earlier")
    if not done:
        return None
    log(f"{run.dir}: finished earlier with this tokenizer, corpus and these settings; skipped "
        f"(--fresh trains it again, the old run moved aside)")
    return run.read_run_info()
