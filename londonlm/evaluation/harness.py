"""lm-evaluation-harness on a model folder, in-process, with londonlm's own tasks.

The tasks live in ``londonlm/evaluation/lm_eval_tasks/`` (YAML + ``utils.py``), so the same scores come
from the command line for any published model::

    lm_eval --model hf --model_args pretrained=PATH --include_path londonlm/evaluation/lm_eval_tasks \\
        --tasks london_probes

- ``london_probes``: the London multiple-choice probes, by log-likelihood (``acc``,
  ``acc_norm``);
- ``london_leakage``: the dated leakage facts (:mod:`londonlm.evaluation.metrics.leakage`), scored the
  same way; the split at a cutoff year is londonlm's own;
- ``london_text_bpb``: bits per byte, byte and word perplexity on a folder of ``.txt`` files
  (``text_dir``), lm-eval's wikitext recipe. It agrees with
  :func:`londonlm.evaluation.metrics.lm.evaluate_lm` run with an ``<|endoftext|>`` prefix on documents
  that fit one context window; on longer ones lm-eval restarts the context at each window
  (disjoint windows) where ours slides by half a window, so lm-eval's figure is higher.

Any other lm-eval task name (e.g. ``hellaswag``) works too when its data can be loaded.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from ..core import LondonLMError

TASKS_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"
PROBES_TASK = "london_probes"
TEXT_TASK = "london_text_bpb"
LEAKAGE_TASK = "london_leakage"
LONDON_TASKS = (PROBES_TASK, TEXT_TASK, LEAKAGE_TASK)


class HarnessError(LondonLMError, RuntimeError):
    """lm-eval cannot run as asked (package missing, bad model folder or task input)."""


def _task_manager(tasks: Sequence[str], metadata: dict):
    from lm_eval.tasks import TaskManager

    # indexing lm-eval's several thousand built-in YAML files takes seconds: only when needed
    builtin = any(t not in LONDON_TASKS for t in tasks)
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=builtin, metadata=metadata)


def _flatten(results: dict, tasks: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{"acc,none": 0.5, "alias": ...}`` per task -> ``{"acc": 0.5}`` (numbers only; an
    unset standard error, "N/A", is left out)."""
    out: dict[str, dict[str, float]] = {}
    for task, metrics in results.get("results", {}).items():
        row = {}
        for key, value in metrics.items():
            name, _, filt = key.partition(",")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row[name if filt in ("", "none") else key] = float(value)
        out[task] = row
    missing = [t for t in tasks if t not in out]
    if missing:
        raise HarnessError(f"lm-eval returned no result for {', '.join(missing)}")
    return out


def _task_inputs(tasks: Sequence[str], text_dir, probes_path) -> dict:
    """The metadata lm-eval hands our tasks' dataset loaders (absolute paths: lm-eval may
    run them from another working directory)."""
    metadata = {}
    if TEXT_TASK in tasks:
        if text_dir is None or not Path(text_dir).is_dir():
            raise HarnessError(f"{TEXT_TASK} needs text_dir, a folder of .txt files "
                               f"(got {text_dir})")
        metadata["text_dir"] = str(Path(text_dir).resolve())
    if probes_path is not None:
        metadata["probes_path"] = str(Path(probes_path).resolve())
    return metadata


def check_harness_request(tasks: Sequence[str], text_dir=None, probes_path=None):
    """lm-eval installed, ``tasks`` named and all known, their inputs there; returns lm-eval's
    task manager for them. Refused with one HarnessError line: callers that run lm-eval after
    other work check first, so a typo in a task name costs nothing."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise HarnessError("lm-eval is not installed: pip install -r requirements.txt") from None
    tasks = list(tasks)
    if not tasks:
        raise HarnessError("no lm-eval task named")
    metadata = _task_inputs(tasks, text_dir, probes_path)
    # our own names are known without indexing lm-eval's built-in tasks (seconds)
    unknown = [t for t in tasks if t.startswith("london_") and t not in LONDON_TASKS]
    manager = None if unknown else _task_manager(tasks, metadata)
    unknown = unknown or [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise HarnessError(f"unknown lm-eval task(s): {', '.join(unknown)}")
    return manager


def run_harness(model_dir: str | os.PathLike, tasks: Sequence[str] = (PROBES_TASK,), *,
                text_dir: str | os.PathLike | None = None,
                probes_path: str | os.PathLike | None = None, batch_size: int = 8,
                device: str = "cpu", limit: int | float | None = None,
                dtype: str = "float32", served_at: str | None = None,
                max_length: int | None = None) -> dict[str, dict[str, float]]:
    """Run lm-eval's ``simple_evaluate`` with the HF backend on ``model_dir`` (a
    save_pretrained folder with its tokenizer) and return ``{task: {metric: value}}``.

    ``text_dir`` is the folder ``london_text_bpb`` scores; ``probes_path`` replaces the
    shipped probe file; ``limit`` caps documents per task (lm-eval's meaning).

    With ``served_at`` (a server's base URL, ``http://host:port``), the model is the one that
    server serves (``06_inference/serve.py``), scored through its OpenAI-compatible
    ``/v1/completions`` by lm-eval's ``local-completions`` model; ``model_dir`` then only lends
    the tokenizer and the context length. lm-eval keeps a token of every request for the one
    it asks the server to generate and another for the rolling window's context, so
    ``london_text_bpb`` there scores windows two tokens shorter than in-process;
    ``max_length`` (lm-eval's: the longest sequence it sends) sets the window on either side.
    """
    import lm_eval

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise HarnessError(f"no model at {model_dir} (config.json missing)")
    tasks = list(tasks)
    manager = check_harness_request(tasks, text_dir, probes_path)
    results = lm_eval.simple_evaluate(
        **_model(model_dir, dtype, served_at, max_length), tasks=tasks, task_manager=manager, batch_size=batch_size, device=device,
        limit=limit, log_samples=False, bootstrap_iters=0)
    return _flatten(results, tasks)


def _model(model_dir: Path, dtype: str, served_at: str | None, max_length: int | None) -> dict:
    """lm-eval's model: the folder in-process, or the server that serves it."""
    if served_at is None:
        args = {"pretrained": str(model_dir), "dtype": dtype}
        return {"model": "hf", "model_args": args if max_length is None else {**args, "max_length": max_length}}
    import urllib.request

    context = json.loads((model_dir / "config.json").read_text()).get("n_positions", 1024)
    try:  # requests name the model the server serves
        with urllib.request.urlopen(f"{served_at.rstrip('/')}/v1/models", timeout=30) as r:
            served = json.loads(r.read())["data"][0]["id"]
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise HarnessError(f"no londonlm server answers at {served_at} ({e}); start one with "
                           f"`python 06_inference/serve.py`") from None
    return {"model": "local-completions",
            "model_args": {"model": served, "base_url": f"{served_at.rstrip('/')}/v1/completions", "tokenizer": str(model_dir),
                           "tokenizer_backend": "huggingface", "max_length": max_length or context,
                           "num_concurrent": 1,
                           "max_retries": 1, "tokenized_requests": True}}
