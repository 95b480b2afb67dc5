"""The model an evaluation scores: loading it, which weights and run it is, and whether an
evaluation folder describes it (the check that refuses a mismatch).

Models load through the one model interface (:func:`londonlm.generation.load_model`), with a
clear error for a folder that is no model.

``metrics.json`` records the weights it scored (``model.weights_sha256``, with the step and
run for people) and the sha256 of every file the evaluation wrote beside it (``outputs``:
samples, probe items, report, the human-evaluation pack), so metrics.json vouches for its
companions. Publishing and the pipeline compare that record with the model in hand: ``--fresh``,
a resumed or retrained run, a copied folder or an interrupted evaluation can otherwise leave
one model's figures and "unedited" samples beside another model's weights.

Why a content hash of the weights rather than something cheaper: a run's ``run_info.json``
changes when a run resumes (its checkpoints do not), a step number repeats across ``--fresh``
runs, and size + mtime break on any copy (rsync, a restored backup). Every caller that hashes
also loads or verifies the same weights in the same call (the evaluation scores them, the
publisher loads and generates from the staged copy), so the one streamed sha256 per call at
most doubles a read the call makes anyway.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Iterable, Mapping

from ..core import LondonLMError, RunLayout, model_run_info, model_step, sha256_file, weights_sha256
from ..generation import LoadedModel, load_model as _load

METRICS_FILE = "metrics.json"
SAMPLES_FILE = "samples.jsonl"
EVALUATE_SCRIPT = "05_evaluation/run_evaluation.py"


class MissingInput(LondonLMError, FileNotFoundError):
    """A file the evaluation was asked to read does not exist."""


def load_for_evaluation(model_path: str | Path, device: str = "auto",
                        dtype: str = "auto") -> LoadedModel:
    """A model folder through the model interface (a checkpoint without a tokenizer borrows
    the run's final/ tokenizer there), with a clear error for a folder that is no model."""
    p = Path(model_path)
    if not (p / "config.json").is_file():
        raise MissingInput(f"{p} is not a model folder (no config.json); pass a folder "
                           f"written by save_pretrained or a checkpoint-N folder")
    return _load(p, device=device, dtype=dtype)


def load_model(model_path: str | Path, device: str = "auto", dtype: str = "auto"):
    """(model, tokenizer) of a model folder, in eval mode on ``device``."""
    lm = load_for_evaluation(model_path, device, dtype)
    return lm.model, lm.tokenizer


def run_name_of(model_dir: str | Path) -> str | None:
    """The run a model folder belongs to (its parent holds run_info.json), else None."""
    parent = Path(model_dir).resolve().parent
    return parent.name if RunLayout(parent).run_info.is_file() else None


def corpus_time_of(model_dir: str | Path) -> dict | None:
    """The ``corpus_time`` record of the run a model folder belongs to (None when unknown)."""
    return model_run_info(model_dir).get("corpus_time") or None


def model_identity(model_dir: str | Path, sha: str | None = None) -> dict:
    """``{"weights_sha256", "step", "run"}`` of a model folder (``sha`` when already known)."""
    return {"weights_sha256": sha or weights_sha256(model_dir), "step": model_step(model_dir),
            "run": run_name_of(model_dir)}


def outputs_record(out_dir: str | Path, names: Iterable[str]) -> dict[str, str]:
    """sha256 of each of ``names`` (relative to ``out_dir``) that exists."""
    out = Path(out_dir)
    return {n: sha256_file(out / n) for n in names if (out / n).is_file()}


def rerun_command(model_dir: str | Path, mode: str | None = None, root: str | Path | None = None) -> str:
    """The command that evaluates ``model_dir`` again, into the folder publishing reads."""
    cmd = ["python", EVALUATE_SCRIPT, "--model", str(model_dir)]
    if mode:
        cmd += ["--mode", mode]
    if root:
        cmd += ["--root", str(root)]
    return shlex.join(cmd)


def _describe(ident: Mapping) -> str:
    sha = ident.get("weights_sha256") or "?"
    step = f"step {ident['step']}" if ident.get("step") is not None else "step unknown"
    return f"{'run ' + ident['run'] + ', ' if ident.get('run') else ''}{step}, weights sha256 {sha[:12]}"


def stale_evaluation(metrics: Mapping, model_dir: str | Path, eval_dir: str | Path, *,
                     sha: str | None = None, root: str | Path | None = None,
                     companions: Iterable[str] = (SAMPLES_FILE,)) -> str | None:
    """Why ``eval_dir``'s metrics.json (and its ``companions``) does not describe
    ``model_dir``, with the command that re-evaluates it; None when it does."""
    metrics_path = Path(eval_dir) / METRICS_FILE
    cmd = rerun_command(model_dir, metrics.get("mode"), root)
    recorded = metrics.get("model") if isinstance(metrics.get("model"), Mapping) else {}
    if not recorded.get("weights_sha256"):
        return (f"{metrics_path} does not record which weights it scored (it predates "
                f"evaluations tied to their model), so its figures cannot be vouched for; "
                f"re-run the evaluation: `{cmd}`")
    mine = model_identity(model_dir, sha)
    if recorded["weights_sha256"] != mine["weights_sha256"]:
        return (f"{metrics_path} scored other weights ({_describe(recorded)}) than {model_dir} "
                f"({_describe(mine)}): it is a previous model's evaluation (the run was "
                f"retrained, resumed or replaced since). Re-run the evaluation: `{cmd}`")
    written = metrics.get("outputs") if isinstance(metrics.get("outputs"), Mapping) else {}
    for name in companions:
        path = Path(eval_dir) / name
        if not path.is_file():
            continue
        if written.get(name) != sha256_file(path):
            return (f"{path} is not the file {metrics_path} was written with (a later "
                    f"evaluation stopped part-way, or it was edited); re-run the "
                    f"evaluation: `{cmd}`")
    return None
