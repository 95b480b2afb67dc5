"""Text normalisation shared by every source: BOM, line endings, Unicode NFC,
Project Gutenberg header/footer removal.

Each step is a small pure function so sources can compose them; ``clean_text``
is the default chain.
"""
from __future__ import annotations

import re
import unicodedata

# Gutenberg START/END markers vary with the age of the file:
#   "*** START OF THIS PROJECT GUTENBERG EBOOK X ***", "***START OF THE PROJECT ...",
#   "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*...", "End of the Project Gutenberg EBook of X".
_PG_START = re.compile(
    r"^\s*\*{3}\s*START OF (?:THIS|THE) PROJECT GUTENBERG E-?BOOK.*$"
    r"|^\s*\*END\*THE SMALL PRINT!.*$",
    re.IGNORECASE | re.MULTILINE,
)
_PG_END = re.compile(
    r"^\s*\*{3}\s*END OF (?:THIS|THE) PROJECT GUTENBERG E-?BOOK.*$"
    r"|^\s*End of (?:the |this )?Project Gutenberg'?s? .*$",
    re.IGNORECASE | re.MULTILINE,
)


def strip_bom(text: str) -> str:
    return text[1:] if text.startswith("\ufeff") else text


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def strip_gutenberg_boilerplate(text: str) -> str:
    """Keep only the text between the last START marker and the first END marker.

    Files without markers are returned unchanged (local scans, the embedded sample)."""
    starts = list(_PG_START.finditer(text))
    if starts:
        text = text[starts[-1].end():]
    end = _PG_END.search(text)
    if end:
        text = text[: end.start()]
    return text


def collapse_blank_lines(text: str) -> str:
    """At most one blank line in a row; trailing spaces dropped; ends with one newline."""
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n") + "\n" if text.strip() else ""


def clean_text(text: str) -> str:
    """The default cleaning chain for plain-text sources."""
    text = strip_bom(text)
    text = normalize_newlines(text)
    text = nfc(text)
    text = strip_gutenberg_boilerplate(text)
    return collapse_blank_lines(text)
