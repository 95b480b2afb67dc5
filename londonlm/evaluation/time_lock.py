""""What this model could not know": the section the evaluation report and the model card
share. It states the run's cutoff and the years of its training text (words per decade, as a
table with bars, since a historian reads the shape at a glance), then the leakage probes:
accuracy on facts from before and after the cutoff, against chance.

Also :func:`leakage_for_model`, the probes on one model folder kept in a JSON file and redone
only when the weights change (the family of time-locked runs and the pipeline use it).
"""
from __future__ import annotations

from pathlib import Path

from ..core import current_or_make, model_run_info
from .identity import model_identity
from .leakage import leakage_markdown, run_leakage_probes

BAR_WIDTH = 30


def leakage_summary(result: dict) -> str:
    """One line: per-byte accuracy before and after the cutoff against chance, and the verdict."""
    facts, cutoff = result.get("facts") or {}, result.get("cutoff_year")
    parts = []
    for side, sign in (("before", "≤"), ("after", ">")):
        s = facts.get(side) or {}
        acc = (s.get("per_byte") or {}).get("accuracy")
        if s.get("n") and acc is not None:
            where = f"{sign} {cutoff}" if cutoff is not None else "all"
            parts.append(f"facts {where}: {acc:.1%} of {s['n']} (chance {s['chance']:.1%})")
    return "; ".join(parts + [result.get("verdict", "")])


def corpus_time_of(model_dir: str | Path) -> dict | None:
    """The ``corpus_time`` record of the run a model folder belongs to (None when unknown)."""
    return model_run_info(model_dir).get("corpus_time") or None


def year_histogram(words_by_decade: dict) -> list[str]:
    """Words of training text per decade as a Markdown table with a bar per row."""
    rows = sorted(((str(k), int(v)) for k, v in (words_by_decade or {}).items()), key=lambda kv: kv[0])
    if not rows:
        return ["(no dated training text recorded)"]
    top = max(v for _, v in rows) or 1
    lines = ["| decade | words | |", "|---|---:|---|"]
    for decade, words in rows:
        label = f"{decade}s" if decade.isdigit() else decade
        lines.append(f"| {label} | {words:,} | {'█' * max(1, round(BAR_WIDTH * words / top)) if words else ''} |")
    return lines


def _years_line(record: dict) -> str:
    years = record.get("years") or [None, None]
    cutoff = record.get("cutoff_year")
    span = f"{years[0]}–{years[1]}" if years[0] is not None else "unknown years"
    if cutoff is None:
        return (f"This model was trained without a cutoff year: its training text spans {span}, "
                f"so it may know anything written up to {years[1] or 'the end of its corpus'}.")
    return (f"**Cutoff: {cutoff}.** Only documents whose date evidence is {cutoff} or earlier were "
            f"kept (undated documents were left out), and the tokenizer was trained on the same "
            f"text. Its training text spans {span}.")


def could_not_know_section(record: dict | None, leakage: dict | None, heading: str = "##") -> list[str]:
    """The section's Markdown lines (``record``: run_info ``corpus_time``; ``leakage``: the
    probes' result, either may be None)."""
    lines = [f"{heading} What this model could not know", ""]
    if not record and not leakage:
        return lines + ["The run recorded no corpus years and no leakage probes were run, so "
                        "nothing can be said about what this model could not know.", ""]
    if record:
        lines += [_years_line(record), "", "Training text by decade:", "",
                  *year_histogram(record.get("words_by_decade") or {}), ""]
    if leakage:
        lines += [f"{heading}# Leakage probes", "", *leakage_markdown(leakage), ""]
    else:
        lines += ["No leakage probes were run on this model (`05_evaluation/run_evaluation.py` runs them).", ""]
    return lines


def leakage_for_model(model_dir: str | Path, cutoff_year: int | None, *, out: Path,
                      limit: int | None = None, overwrite: bool = False, log=print) -> dict:
    """The probes' result for ``model_dir`` under ``cutoff_year``, from ``out`` when that holds
    the result for these very weights and settings, else computed and written there."""
    from .run import load_for_evaluation

    return current_or_make(
        Path(out), model_identity(model_dir), {"cutoff_year": cutoff_year, "limit": limit},
        lambda: run_leakage_probes(load_for_evaluation(model_dir, device="auto"), cutoff_year, limit=limit),
        overwrite, log, "leakage probes")
