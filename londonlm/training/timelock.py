"""The time lock: a model trained to a cutoff year must never see text written after it.

Every run records its corpus's years (``run_info.json`` ``corpus_time``: the cutoff, the first and
last document year, words per decade). A run with a cutoff, given by ``--cutoff_year`` or by a
corpus built with one, refuses, before any data work, whatever would carry later text into it: a
corpus whose latest document is past the cutoff; a tokenizer trained on such a corpus, or holding
an era token that starts after it; an ``--init_from`` parent, or a checkpoint being resumed
(:func:`check_cutoff`, called with the other resume checks), whose corpus reaches past it (or is
unknown). Each refusal names both years and the command that makes a compatible input.
"""
from __future__ import annotations

from pathlib import Path

from ..core import SIDECAR, model_run_info, read_json_object, record_field
from ..corpus import corpus_time_facts
from ..tokens import era_tokens_of, read_metadata
from .dist import TrainingError


def last_year(record: dict | None) -> int | None:
    """The latest document year of a ``corpus_time`` record (None when unknown)."""
    years = record_field(record, "years", kind=list) or [None, None]
    return years[1] if len(years) == 2 and isinstance(years[1], int) else None


def recorded_years(info: dict, cache_meta: dict | None = None) -> dict | None:
    """A run's ``corpus_time``: its record's (``info``: the checkpoint's own, else run_info.json),
    else its token cache's (for a checkpoint saved before checkpoints carried their record)."""
    return info.get("corpus_time") or (cache_meta or {}).get("corpus_time")


def check_cutoff(resume, cache_dir: Path, cutoff: int | None) -> None:
    """Resuming under a cutoff: the checkpoint's corpus must end by it (a run trained on later
    text cannot become time-locked by training on), and a time-locked run stays locked to its
    own cutoff (resumed without it, it would go on over later text)."""
    if resume.checkpoint is None:
        return
    record = recorded_years(resume.info, read_metadata(Path(cache_dir)) or {}) or {}
    locked = record.get("cutoff_year")
    if locked is not None and cutoff != locked:
        raise TrainingError(f"cannot resume {resume.checkpoint} under "
                            f"{f'--cutoff_year {cutoff}' if cutoff is not None else 'no cutoff'}: it was "
                            f"time-locked to {locked}. Resume it on its cutoff view (--cutoff_year {locked}), "
                            f"or pass --fresh to start this run over")
    latest = last_year(record)
    if cutoff is not None and latest is not None and latest > cutoff:
        raise TrainingError(f"cannot resume {resume.checkpoint} under --cutoff_year {cutoff}: it was "
                            f"trained on text up to {latest}. Pass --fresh to start this run over, or "
                            f"train under another --run_name")



VIEW_CMD = "python 10_scripts/run_pipeline.py --cutoff_year {y} (or 02_data_collection/historical_data_collector.py --cutoff_year {y})"
TOKENIZER_CMD = ("python 03_tokenizer/train_historical_tokenizer.py --processed_dir {corpus} --output_dir NEW_DIR, "
                 "then pass --tokenizer_dir NEW_DIR")


def corpus_time(processed_dir: Path, cutoff_year: int | None) -> dict:
    """The run's ``corpus_time`` record; raises when the corpus reaches past ``cutoff_year``."""
    facts = corpus_time_facts(processed_dir)
    own = facts.get("cutoff_year")
    cutoff = cutoff_year if cutoff_year is not None else own
    latest = last_year(facts)
    if cutoff is not None and latest is not None and latest > cutoff:
        raise TrainingError(
            f"--cutoff_year {cutoff}: the corpus at {processed_dir} reaches {latest}, past the "
            f"cutoff; train on a cutoff view of it: {VIEW_CMD.format(y=cutoff)}")
    if cutoff is not None and facts.get("undated_documents"):
        raise TrainingError(
            f"--cutoff_year {cutoff}: the corpus at {processed_dir} holds "
            f"{facts['undated_documents']} undated documents, which could be from any year; "
            f"train on a cutoff view of it: {VIEW_CMD.format(y=cutoff)}")
    return {**facts, "cutoff_year": cutoff}


def _era_start(token: str) -> int | None:
    digits = token.strip("<|>").rstrip("s")
    return int(digits) if digits.isdigit() else None


def check_tokenizer_years(tokenizer, tok_dir: Path, cutoff: int, corpus: Path) -> None:
    """The tokenizer must come from text up to the cutoff: no era token starting after it, and
    (when its stage recorded one) a training corpus that ends by it. ``corpus``: the run's
    (already checked) corpus, the one to train a tokenizer on."""
    fix = TOKENIZER_CMD.format(corpus=corpus)
    late = [t for t in era_tokens_of(tokenizer) if (_era_start(t) or 0) > cutoff]
    if late:
        raise TrainingError(f"--cutoff_year {cutoff}: the tokenizer at {tok_dir} has era token(s) "
                            f"{', '.join(late)} past the cutoff; train one on the cutoff corpus: {fix}")
    record = record_field(read_json_object(Path(tok_dir) / SIDECAR), "counts", "corpus_time")
    latest = last_year(record)
    if latest is not None and latest > cutoff:
        raise TrainingError(f"--cutoff_year {cutoff}: the tokenizer at {tok_dir} was trained on text "
                            f"up to {latest}, past the cutoff (its merges carry later words); train "
                            f"one on the cutoff corpus: {fix}")


def check_parent(src: Path, cutoff: int) -> None:
    """``--init_from`` under a cutoff: the parent's corpus must be known and end by it."""
    record = recorded_years(model_run_info(src))
    latest = last_year(record)
    if latest is None:
        raise TrainingError(f"--init_from {src}: the years of its training corpus are unknown (no "
                            f"corpus_time in its run_info.json), so it cannot seed a model time-locked "
                            f"to {cutoff}; start from a run trained with a cutoff of {cutoff} or earlier")
    if latest > cutoff:
        raise TrainingError(f"--init_from {src}: its corpus reaches {latest}, past this run's cutoff "
                            f"{cutoff}; a base trained on later text would leak it. Start from a run "
                            f"whose corpus ends by {cutoff}")


def time_lock(config, tokenizer, init_path: Path | None) -> dict:
    """The time lock of the corpus, the tokenizer and the parent; returns the run's
    ``corpus_time`` record (a resumed checkpoint's years are checked with the resume)."""
    data = config.data
    record = corpus_time(Path(data.processed_dir), data.cutoff_year)
    cutoff = record["cutoff_year"]
    if cutoff is None:
        return record
    check_tokenizer_years(tokenizer, Path(data.tokenizer_dir), cutoff, Path(data.processed_dir))
    if init_path is not None:
        check_parent(init_path, cutoff)
    return record
