"""Corpus statistics (``corpus_stats.json``) and a Markdown report with plots: characters by
source, documents and words by decade, rejections by reason."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from ..core import write_text_atomic
from .manifest import SUMMARY_KEYS, iter_manifest, iter_rejections, summarize
from .ocr import OCR_SUMMARY_KEYS, ocr_summary

CORPUS_STATS = "corpus_stats.json"
REPORT = "corpus_report.md"


def _plot_bar(labels: list[str], values: list[float], title: str, ylabel: str, path: Path, horizontal: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, max(3, 0.28 * len(labels)) if horizontal else 4))
    if horizontal:
        ax.barh(labels, values, color="#6b4c2a")
        ax.invert_yaxis()
        ax.set_xlabel(ylabel)
    else:
        ax.bar(labels, values, color="#6b4c2a")
        ax.set_ylabel(ylabel)
        plt.setp(ax.get_xticklabels(), rotation=60, ha="right")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(processed_dir: str | Path, metadata_dir: str | Path,
                 registry_entries: Iterable[dict[str, Any]] | None = None,
                 extra: dict[str, Any] | None = None) -> Path:
    """Write plots, ``corpus_report.md`` and (last, atomically) ``corpus_stats.json``; returns the report path."""
    meta = Path(metadata_dir)
    meta.mkdir(parents=True, exist_ok=True)
    # The statistics stream the rows (each read twice, a few fields of each): their memory does
    # not grow with the corpus.
    rows = lambda: iter_manifest(processed_dir, keys=SUMMARY_KEYS + OCR_SUMMARY_KEYS)  # noqa: E731
    rejections = lambda: iter_rejections(processed_dir, ("reason",) + OCR_SUMMARY_KEYS)  # noqa: E731
    stats = summarize(rows(), rejections(), list(registry_entries) if registry_entries is not None else None)
    ocr = ocr_summary(rows(), rejections())
    if ocr:
        stats["ocr"] = ocr
    if extra:
        stats.update(extra)
    plots = _plot_stats(stats, meta)
    lines = _report_lines(stats)
    for title, name in plots:
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    report = write_text_atomic(meta / REPORT, "\n".join(lines))
    write_text_atomic(meta / CORPUS_STATS, json.dumps(stats, indent=1, sort_keys=True, default=str))
    return report


def _plot_stats(stats: dict[str, Any], meta: Path) -> list[tuple[str, str]]:
    """The report's plots, drawn into ``meta``: (title, file name) of each drawn (none of what is empty)."""
    plots = []
    src = sorted(stats["by_source"].items(), key=lambda kv: -kv[1]["chars"])[:40]
    if src:
        _plot_bar([k for k, _ in src], [v["chars"] / 1e6 for _, v in src], "Characters by source", "million chars",
                  meta / "chars_by_source.png", horizontal=True)
        plots.append(("Characters by source", "chars_by_source.png"))
    dec = list(stats["by_decade"].items())
    if dec:
        _plot_bar([k for k, _ in dec], [v["documents"] for _, v in dec], "Documents by decade", "documents",
                  meta / "docs_by_decade.png")
        _plot_bar([k for k, _ in dec], [v["words"] / 1e3 for _, v in dec], "Words by decade", "thousand words",
                  meta / "words_by_decade.png")
        plots += [("Documents by decade", "docs_by_decade.png"), ("Words by decade", "words_by_decade.png")]
    rej = list(stats["rejections_by_reason"].items())
    if rej:
        _plot_bar([k for k, _ in rej], [v for _, v in rej], "Rejections by reason", "documents",
                  meta / "rejections_by_reason.png", horizontal=True)
        plots.append(("Rejections by reason", "rejections_by_reason.png"))
    return plots


def _report_lines(stats: dict[str, Any]) -> list[str]:
    """``corpus_report.md``'s text, up to its plots."""
    dec = list(stats["by_decade"].items())
    rej = list(stats["rejections_by_reason"].items())
    lines = ["# London historical corpus report", "",
             f"- Documents kept: **{stats['documents']}** ({stats['london_documents']} London-related)",
             f"- Characters: {stats['chars']:,}; words: {stats['words']:,}",
             f"- Years covered: {stats['years'][0]}–{stats['years'][1]}" +
             (f" (cutoff {stats['cutoff_year']}: nothing dated later, nothing undated)"
              if stats.get("cutoff_year") is not None else ""),
             "- Splits: " + ", ".join(f"{k}={v}" for k, v in stats["splits"].items()),
             f"- Rejected: {stats['rejected']}", ""]
    if rej:
        lines += ["## Rejections by reason", "", "| reason | documents |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in rej] + [""]
    lines += ["## By source kind", "", "| kind | documents | chars | words |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['documents']} | {v['chars']:,} | {v['words']:,} |" for k, v in stats["by_source_kind"].items()]
    lines += ["", "## By decade", "", "| decade | documents | words |", "|---|---|---|"]
    lines += [f"| {k} | {v['documents']} | {v['words']:,} |" for k, v in dec]
    # which evidence dated the documents (londonlm.corpus.dating: the latest trace decides)
    lines += ["", "## Dated by", "", "| rule | documents |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in stats.get("by_year_rule", {}).items()]
    lines += _ocr_section(stats.get("ocr"))
    if stats.get("registry_sources_by_kind"):
        lines += ["", "## Curated sources in the registry", "", "| kind | sources |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in stats["registry_sources_by_kind"].items()]
    lines.append("")
    return lines


def _ocr_section(ocr: dict[str, Any] | None) -> list[str]:
    """OCR documents: how many, the quality distribution before and after repair, the rejected."""
    if not ocr:
        return []
    lines = ["", "## OCR quality", "",
             f"{ocr['documents']} OCR documents kept, {ocr['rejected']} rejected "
             f"({ocr['rejected_too_damaged']} too damaged to train on); {ocr['repairs']:,} repairs. Quality = words "
             f"the period knows x characters that are not debris; mean {ocr['mean_quality_before']} before repair, "
             f"{ocr['mean_quality_after']} after.", "", "| quality | documents before repair | after |", "|---|---|---|"]
    return lines + [f"| {b} | {n} | {ocr['quality_after'][b]} |" for b, n in ocr["quality_before"].items()]


def format_summary(stats: dict[str, Any], top: int = 15) -> str:
    """A plain-text summary of ``manifest.summarize``'s statistics: documents, words and characters per source
    (the ``top`` largest) and per decade, and rejections by reason."""
    lines = [f"corpus statistics: {stats['documents']} documents, {stats['words']:,} words, "
             f"{stats['chars']:,} chars; splits {stats.get('splits', {})}",
             f"  {'source':<36} {'docs':>6} {'words':>12} {'chars':>14}"]
    src = sorted(stats["by_source"].items(), key=lambda kv: -kv[1]["chars"])
    for name, v in src[:top]:
        lines.append(f"  {name[:36]:<36} {v['documents']:>6} {v['words']:>12,} {v['chars']:>14,}")
    if len(src) > top:
        rest = src[top:]
        lines.append(f"  {f'({len(rest)} more sources)':<36} {sum(v['documents'] for _, v in rest):>6} "
                     f"{sum(v['words'] for _, v in rest):>12,} {sum(v['chars'] for _, v in rest):>14,}")
    lines.append(f"  {'decade':<36} {'docs':>6} {'words':>12} {'chars':>14}")
    for dec, v in stats["by_decade"].items():
        lines.append(f"  {dec:<36} {v['documents']:>6} {v['words']:>12,} {v['chars']:>14,}")
    rules = stats.get("by_year_rule") or {}
    if rules:
        lines.append("  dated by: " + ", ".join(f"{k}={v}" for k, v in rules.items()))
    ocr = stats.get("ocr")
    if ocr:
        lines.append(f"  OCR: {ocr['documents']} kept, {ocr['rejected_too_damaged']} too damaged; quality "
                     f"{ocr['mean_quality_before']} -> {ocr['mean_quality_after']} ({ocr['repairs']:,} repairs)")
    reasons = stats.get("rejections_by_reason") or {}
    lines.append(f"  rejected: {stats.get('rejected', 0)}" +
                 (" (" + ", ".join(f"{k}={v}" for k, v in reasons.items()) + ")" if reasons else ""))
    return "\n".join(lines)
