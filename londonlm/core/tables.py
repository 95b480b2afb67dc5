"""The cells of the tables the stages write for people to read: Markdown reports (the
evaluation's, compare_runs') and CSV files a spreadsheet opens (the ratings sheet, comparisons),
and what such a table must say when its rows do not compare."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

# what a spreadsheet reads as the start of a formula in a cell it opens from CSV
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def sheet_cell(value: Any) -> Any:
    """A value for a CSV a person opens in a spreadsheet: a text that the spreadsheet would take
    for a formula gets a ``'`` before it, the spreadsheet's own mark for "text" (a passage opening
    with Gutenberg's ``--`` dash showed ``#NAME?``; one opening ``=HYPERLINK(...)``, or a run
    folder so named, became a live link). Numbers and other values are left as they are."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def md_cell(value: Any) -> str:
    """``value`` as the text of one Markdown table cell (or a heading): a ``|`` in a file, model
    or run name ended its cell early and a line break ended its row, so the rest of the row fell
    into the wrong columns or out of the table; a ``<`` could open HTML in a rendered report.
    Backslashes are doubled so a name's own ``\\|`` cannot undo the escape."""
    text = " ".join(str(value).replace("\\", "\\\\").replace("|", "\\|").splitlines())
    return text.replace("<", "&lt;")


def distinct_tokenizers(rows: Sequence[Mapping]) -> int:
    """How many tokenizers the rows' ``tokenizer_sha256`` name: past one, their losses per token
    do not compare (a tokenizer of near-byte tokens has a far lower one for the same text), and a
    table of them says so and compares bits per byte."""
    return len({r.get("tokenizer_sha256") for r in rows if isinstance(r.get("tokenizer_sha256"), str)})
