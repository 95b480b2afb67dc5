"""Tokens per split, source and decade of the kept corpus, with a trained tokenizer
(``02_data_collection/count_tokens.py``): what a corpus costs in tokens, and the bytes per
token a tokenizer reaches on each part of it."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from ..core import StageInputMissing
from ..corpus import SPLITS, decade_key, iter_split_texts, read_manifest, reading_corpus, require_finished_corpus
from .tokenizer import load_tokenizer, plain_backend, require_whole_save


def count_tokens(processed_dir: str | Path, tokenizer, batch: int = 32) -> dict[str, Any]:
    """Tokens of every kept document with ``tokenizer`` (a transformers or ``tokenizers``
    tokenizer), totalled per split, per source and per decade; no special tokens added."""
    processed = Path(processed_dir)
    backend = plain_backend(tokenizer)  # corpus text never becomes a control token
    # held shared from the rows to the last text: a corpus collected again (or a view remade) under
    # the count gave counts of the old rows over new texts, written as the corpus's
    with reading_corpus(processed) as unchanged:
        counts = _count(processed, backend, batch)
        unchanged()
    return counts


def _count(processed: Path, backend, batch: int) -> dict[str, Any]:
    rows = read_manifest(processed)
    require_finished_corpus(processed)  # counts of a half-merged corpus would be of no corpus there was
    empty = lambda: {"documents": 0, "tokens": 0, "chars": 0, "bytes": 0}  # noqa: E731
    tables: dict[str, dict[str, dict[str, int]]] = {"by_split": defaultdict(empty), "by_source": defaultdict(empty),
                                                    "by_decade": defaultdict(empty)}
    total = empty()

    def add(chunk: list[tuple[dict[str, Any], str]]) -> None:
        encs = backend.encode_batch([t for _, t in chunk], add_special_tokens=False)
        for (row, text), enc in zip(chunk, encs):
            dec = decade_key(row)
            n = {"documents": 1, "tokens": len(enc.ids), "chars": len(text), "bytes": len(text.encode("utf-8"))}
            # the source named as text, as the corpus statistics (summarize) name it: a hand-edited
            # row's 5 or ["a"] was a table key that could not be sorted, hashed or printed
            source = str(row.get("source", "?"))
            for agg in (total, tables["by_split"][row.get("split", "?")], tables["by_source"][source],
                        tables["by_decade"][dec]):
                for k, v in n.items():
                    agg[k] += v

    chunk: list[tuple[dict[str, Any], str]] = []
    for row, text in (doc for split in SPLITS for doc in iter_split_texts(processed, split, rows)):
        chunk.append((row, text))
        if len(chunk) >= batch:
            add(chunk)
            chunk = []
    if chunk:
        add(chunk)
    out: dict[str, Any] = {**total, "bytes_per_token": round(total["bytes"] / max(total["tokens"], 1), 4)}
    for name, table in tables.items():
        out[name] = {k: {**v, "bytes_per_token": round(v["bytes"] / max(v["tokens"], 1), 4)}
                     for k, v in sorted(table.items())}
    return out


def count_tokens_with(processed_dir: str | Path, tokenizer_dir: str | Path) -> dict[str, Any]:
    """``count_tokens`` with the tokenizer saved in ``tokenizer_dir``; the counts name it."""
    try:
        tokenizer = load_tokenizer(tokenizer_dir)
    except FileNotFoundError as e:  # its message names the command that trains one
        raise StageInputMissing(str(e)) from None
    require_whole_save(tokenizer_dir)  # counts of a save killed half-way are of no tokenizer (as tokenizer_report)
    return {**count_tokens(processed_dir, tokenizer), "tokenizer": str(tokenizer_dir)}


def format_token_counts(counts: dict[str, Any]) -> str:
    lines = [f"tokens: {counts['tokens']:,} in {counts['documents']} documents "
             f"({counts['bytes_per_token']:.3f} bytes/token)"]
    for name in ("by_split", "by_source", "by_decade"):
        lines.append(f"  {name[3:]:<36} {'docs':>6} {'tokens':>14} {'bytes/token':>12}")
        for k, v in counts[name].items():
            lines.append(f"  {k[:36]:<36} {v['documents']:>6} {v['tokens']:>14,} {v['bytes_per_token']:>12.3f}")
    return "\n".join(lines)
