"""When a document was written, from the evidence its source saw, and whether it may stand in a
corpus with a cutoff year. This module is the one place that decides both.

A source records every date it sees on the ``Document`` (``dates``: rule name -> year). Two
kinds of evidence differ:

- a *trace* of the text itself (its session date, its manifest row, its file name, the
  catalogue record of the edition): a text can hold nothing written after its latest dated
  trace, but it can hold anything up to it, so **the latest trace decides** (Pepys's diary of
  1660 in an 1825 edition with 1825 notes is dated 1825);
- a *bound* that describes a whole source or folder, not this text (the registry's
  ``year_range``, whose end is used because any of its texts may be that late; the user's
  ``default_year`` for undated files): used only when the document has no trace of its own,
  the range end before the default.
"""
from __future__ import annotations

import re
from typing import Mapping

# traces of the text itself, in the order that names the rule when two give the same year
TEI_SESSION = "TEI session date"
LONDON_LIVES = "London Lives date"
ARCHIVE_ORG = "archive.org metadata"
CATALOGUE_DATE = "catalogue date"                # a dataset's year column (the British Library's ``date``)
CATALOGUE_DATE_TEXT = "catalogue date as printed"  # its date as transcribed (``raw_date``: "1843-1845", "[1790?]")
MANIFEST_FIRST_PUBLISHED = "MANIFEST.tsv year_first_published"
MANIFEST_YEAR = "MANIFEST.tsv year"
FILE_NAME = "file name"
REGISTRY_YEAR = "registry year"
SOURCE_YEAR = "source year"      # a year given to a Document without naming its evidence
TRACES = (TEI_SESSION, LONDON_LIVES, ARCHIVE_ORG, CATALOGUE_DATE, CATALOGUE_DATE_TEXT, MANIFEST_FIRST_PUBLISHED,
          MANIFEST_YEAR, FILE_NAME, REGISTRY_YEAR, SOURCE_YEAR)
# bounds, in the order they are tried when a document has no trace
REGISTRY_RANGE = "registry year_range"
DEFAULT_YEAR = "default_year"
BOUNDS = (REGISTRY_RANGE, DEFAULT_YEAR)
RULES = TRACES + BOUNDS

AFTER_CUTOFF = "after_cutoff"
UNDATED_UNDER_CUTOFF = "undated_under_cutoff"
UNDATED = "undated"   # the year_rule of a document with no evidence at all


def decide_year(dates: Mapping[str, int]) -> tuple[int | None, str | None]:
    """(year, the rule that decided it) from a document's evidence; (None, None) when none."""
    traces = {r: y for r, y in dates.items() if r not in BOUNDS}
    if traces:
        latest = max(traces.values())
        # a rule this module does not list still counts as a trace; named last, by name
        order = {r: i for i, r in enumerate(TRACES)}
        rule = min((r for r, y in traces.items() if y == latest), key=lambda r: (order.get(r, len(order)), r))
        return latest, rule
    for rule in BOUNDS:
        if rule in dates:
            return dates[rule], rule
    return None, None


def cutoff_verdict(year: int | None, rule: str | None, cutoff_year: int) -> tuple[bool, str, str]:
    """(kept, reason code or "", detail) of one document under ``cutoff_year``: the filter of
    the collection and the cutoff view of a collected corpus both ask here."""
    if year is None:
        return False, UNDATED_UNDER_CUTOFF, "no date evidence; a cutoff corpus keeps only dated documents"
    why = f" ({rule})" if rule else ""
    if year > cutoff_year:
        return False, AFTER_CUTOFF, f"dated {year}{why} > cutoff {cutoff_year}"
    return True, "", f"dated {year}{why} <= cutoff {cutoff_year}"


# a year as a catalogue prints it: 1843, a range's end in short form (1843-45), or a decade or
# century left open (184-, 18--, 184?)
_STATED_YEAR = re.compile(r"(?<!\d)(1[0-9])([0-9-])([0-9?-])(?!\d)(?:\s*[-–]\s*(\d{2})(?!\d))?")


def latest_year_stated(text: str | None) -> int | None:
    """The latest year a printed date statement allows: ``"1843-1845"`` and ``"1843-45"`` give
    1845, ``"[1790?]"`` 1790, an open decade ``"184-"`` 1849 and an open century ``"18--"``
    1899 (the latest trace decides a document's year, so an uncertain one counts at its
    latest); None when it names no year from 1000 to 1999."""
    latest = None
    for century, decade, unit, short_end in _STATED_YEAR.findall(text or ""):
        y = int(century) * 100 + (9 if decade == "-" else int(decade)) * 10 + (9 if unit in "-?" else int(unit))
        if short_end and decade != "-" and unit not in "-?":
            y = max(y, int(century) * 100 + int(short_end))
        latest = y if latest is None else max(latest, y)
    return latest


def row_year(row: Mapping) -> int | None:
    """A manifest row's year (None when it has none, or a value that is not a year)."""
    y = row.get("year")
    return y if isinstance(y, int) and not isinstance(y, bool) else None


__all__ = ["AFTER_CUTOFF", "ARCHIVE_ORG", "BOUNDS", "CATALOGUE_DATE", "CATALOGUE_DATE_TEXT", "DEFAULT_YEAR",
           "FILE_NAME", "LONDON_LIVES", "MANIFEST_FIRST_PUBLISHED", "MANIFEST_YEAR", "REGISTRY_RANGE", "REGISTRY_YEAR", "RULES",
           "SOURCE_YEAR", "TEI_SESSION", "TRACES", "UNDATED", "UNDATED_UNDER_CUTOFF", "cutoff_verdict",
           "decide_year", "latest_year_stated", "row_year"]
