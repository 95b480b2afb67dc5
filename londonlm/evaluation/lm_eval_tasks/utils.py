"""Dataset loaders and metrics for londonlm's lm-eval-harness tasks (lm-eval 0.4.x).

lm-eval calls a task's ``custom_dataset`` with the run's metadata (``--metadata`` JSON, the
``--model_args`` and the task's own ``metadata``) as keyword arguments, so the file or folder
to read can be chosen at run time: from that metadata, else from an environment variable.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

TEXT_DIR_ENV = "LONDONLM_TEXT_DIR"
PROBES_ENV = "LONDONLM_PROBES"
LEAKAGE_ENV = "LONDONLM_LEAKAGE"


def load_probes(probes_path: str | None = None, **_):
    """The multiple-choice probes as a one-split DatasetDict, validated by londonlm's own
    reader; ``continuations`` are the choices as londonlm scores them after the context."""
    import datasets

    from londonlm.evaluation.metrics.probes import default_probes_path, load_mc_jsonl  # loaded by lm-eval as a file

    path = probes_path or os.environ.get(PROBES_ENV) or default_probes_path()
    rows = [{"id": it.id, "category": it.category, "context": it.context,
             "choices": it.choices, "continuations": it.continuations, "answer": it.answer}
            for it in load_mc_jsonl(path)]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def load_leakage(leakage_path: str | None = None, **_):
    """The dated leakage facts as a one-split DatasetDict, validated by londonlm's own reader;
    each row keeps its ``year`` so results can be split at a cutoff afterwards."""
    import datasets

    from londonlm.evaluation.metrics.leakage import LEAKAGE_FACTS, load_leakage_facts  # loaded by lm-eval as a file

    path = leakage_path or os.environ.get(LEAKAGE_ENV) or LEAKAGE_FACTS
    rows = [{"id": f.item.id, "category": f.item.category, "year": f.year,
             "context": f.item.context, "choices": f.item.choices,
             "continuations": f.item.continuations, "answer": f.item.answer}
            for f in load_leakage_facts(path)]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def text_documents(folder: str | os.PathLike) -> list[dict]:
    """``{"name", "text"}`` for every non-empty ``*.txt`` file of ``folder``, by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"text folder not found: {folder}")
    docs = [{"name": p.name, "text": p.read_text(encoding="utf-8")}
            for p in sorted(folder.glob("*.txt"))]
    docs = [d for d in docs if d["text"]]
    if not docs:
        raise FileNotFoundError(f"no non-empty *.txt file in {folder}")
    return docs


def load_text_folder(text_dir: str | None = None, **_):
    """The folder's text files as a one-split DatasetDict (one file = one document)."""
    import datasets

    folder = text_dir or os.environ.get(TEXT_DIR_ENV)
    if not folder:
        raise ValueError(f"london_text_bpb needs a folder of .txt files: set {TEXT_DIR_ENV} "
                         f"or pass --metadata '{{\"text_dir\": \"/abs/folder\"}}'")
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(text_documents(folder))})


def process_text_results(doc, results):
    """Per-document sums for lm-eval's weighted perplexity and bits-per-byte aggregations:
    (log-likelihood, words) and (log-likelihood, UTF-8 bytes of the whole document)."""
    (loglikelihood,) = results
    words = len(re.split(r"\s+", doc["text"]))
    n_bytes = len(doc["text"].encode("utf-8"))
    return {"word_perplexity": (loglikelihood, words),
            "byte_perplexity": (loglikelihood, n_bytes),
            "bits_per_byte": (loglikelihood, n_bytes)}
