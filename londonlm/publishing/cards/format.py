"""Formatting shared by the model card, the dataset card and LICENSE: numbers, durations,
Markdown escaping, metric lookup, and the corpus tables (from ``manifest.summarize``)."""
from __future__ import annotations

import math
from typing import Any


def fmt_num(v: Any) -> str:
    """Integers with thousands separators, floats to 4 significant digits."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
            return f"{v:.4g}"
        return f"{v:,.4f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:,.1f}"
    return str(v)


def fmt_seconds(s: float | int | None) -> str:
    if s is None:
        return "not recorded"
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


def md_escape(text: Any) -> str:
    """Text safe inside one Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def flatten_numeric(obj: Any, prefix: str = "") -> dict[str, float | int]:
    """Dotted paths to every numeric leaf of nested dicts (bools and lists skipped:
    lists in metrics files are per-item details, not results)."""
    out: dict[str, float | int] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten_numeric(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = obj
    return out


def lookup(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def last_parts(path: Any, n: int = 2) -> str:
    """``run/checkpoint-N`` from a local path: a public card must not expose the
    publisher's folder layout (home directory, user name)."""
    parts = [p for p in str(path).replace("\\", "/").split("/") if p]
    return "/".join(parts[-n:]) if parts else str(path)


# ---------------------------------------------------------------- corpus figures
def year_span(years: list | None) -> str:
    """'1623', '1660–1703' or 'undated' (a one-year corpus is not a range)."""
    lo, hi = years or (None, None)
    if lo is None:
        return "undated"
    return str(lo) if lo == hi else f"{lo}–{hi}"


def split_count(corpus: dict, split: str) -> int:
    return int(corpus.get("splits", {}).get(split, 0))


def decade_label(key: str) -> str:
    """``1670s`` for the summary's ``"1670"``; ``undated`` stays."""
    return key if key == "undated" else f"{key}s"


def source_table(corpus: dict) -> list[str]:
    lines = ["| Source | Kind | Documents | Words | Years | Licence |", "|---|---|---:|---:|---|---|"]
    for name, s in corpus["by_source"].items():
        lines.append(f"| {md_escape(name)} | {md_escape(s['kind'])} | {s['documents']:,} | "
                     f"{s['words']:,} | {year_span(s['years'])} | {md_escape(', '.join(s['licenses']))} |")
    return lines


def decade_table(corpus: dict) -> list[str]:
    lines = ["| Decade | Documents | Words |", "|---|---:|---:|"]
    for dec, d in corpus["by_decade"].items():
        lines.append(f"| {decade_label(dec)} | {d['documents']:,} | {d['words']:,} |")
    return lines


_ERA_PERIODS = {10: "decade", 25: "quarter-century", 50: "half-century", 100: "century"}


def era_period(width) -> str:
    """What one era token covers, in words: ``50`` -> "half-century" (a card from before the
    width was recorded: the default, 50)."""
    width = width if type(width) is int and width > 0 else 50
    return _ERA_PERIODS.get(width, f"{width}-year period")
