"""A local folder of ``.txt`` / ``.xml`` / ``.html`` (and ``.gz``) files: users' own scans,
or the shared test corpus.

Per-file metadata comes from an optional ``MANIFEST.tsv`` in the folder (columns ``file``,
``title``, ``author``, ``year_first_published`` or ``year``, ``london_related``, ``license``),
the registry entry and the file name (a date such as ``1782-04-10``): every date seen is
kept as evidence and the latest decides (``londonlm.corpus.dating``).
XML in Old Bailey TEI form is extracted trial by trial; other XML has its markup dropped.
"""
from __future__ import annotations

import codecs
import csv
import errno
import io
import fnmatch
import os
import re
import stat
from pathlib import Path
from typing import Any, Iterator

from ...core import user_path
from ..manifest import CorpusError
from ..dating import DEFAULT_YEAR, FILE_NAME, MANIFEST_FIRST_PUBLISHED, MANIFEST_YEAR, latest_year_stated
from .base import Document, Source, safe_id, wanted

DEFAULT_PATTERNS = ("*.txt", "*.xml", "*.html", "*.htm", "*.txt.gz", "*.xml.gz")
# a year in a file name, alone or as the start of a date (oldbailey_1782-04-10.xml, OA16780123.txt)
_FILE_YEAR = re.compile(r"(?<!\d)(1[0-9]\d\d)(?:-?\d\d-?\d\d)?(?!\d)")
FOLDER_MANIFEST = "MANIFEST.tsv"  # a folder's table of per-file metadata
_BOOL = {"yes": True, "true": True, "1": True, "y": True, "no": False, "false": False, "0": False, "n": False}


def read_folder_manifest(folder: Path) -> dict[str, dict[str, str]]:
    """The rows of a folder's ``MANIFEST.tsv`` by file name ({} without one). UTF-8, or UTF-16
    with its byte-order mark (a spreadsheet's "Unicode text" export); anything else is refused
    by name: read wrongly, every file of the folder would lose its date."""
    path = folder / FOLDER_MANIFEST
    if not path.exists():
        return {}
    data = path.read_bytes()
    try:
        text = data.decode("utf-16") if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) \
            else data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}): save it as UTF-8 "
                          f"(tab-separated)") from None
    try:
        return {row["file"]: row for row in csv.DictReader(io.StringIO(text, newline=""), delimiter="\t")
                if row.get("file")}
    except csv.Error as e:
        raise CorpusError(f"{path} is not a tab-separated table ({e}); its columns: file, title, author, "
                          f"year_first_published or year, london_related, license") from None


# a Roman year as an imprint prints it, in capitals (MDCLX, M.DCC.XX.); one from MC (1100) on is
# read, so that a word or a letter (MIX, M) is none
_ROMAN_YEAR = re.compile(r"M{1,2}(CM|CD|D?C{0,3})(XC|XL|L?X{0,3})(IX|IV|V?I{0,3})")
_ROMAN = {"M": 1000, "D": 500, "C": 100, "L": 50, "X": 10, "V": 5, "I": 1}


def _roman_year(token: str) -> int | None:
    letters = token.replace(".", "")
    if not _ROMAN_YEAR.fullmatch(letters):
        return None
    values = [_ROMAN[c] for c in letters]
    return sum(-v if i + 1 < len(values) and v < values[i + 1] else v for i, v in enumerate(values))


def manifest_year(cell: str) -> int | None:
    """The year a ``MANIFEST.tsv`` cell gives: ``1782`` (or ``1782.0``, a spreadsheet's number),
    else the latest year a printed date allows (``1650-1700`` 1700, ``c. 1720`` 1720, ``16--``
    1699, ``MDCCXX`` 1720). Only a bare year was read before: a range or a "c." was passed
    over, and the file name's year (``letters_1660.txt``) dated a text of up to 1700 as 1660,
    under a cutoff of 1680."""
    value = cell.strip()
    m = re.fullmatch(r"(\d{3,4})(?:\.0*)?", value)
    if m:
        return int(m.group(1))
    romans = re.findall(r"(?<![A-Za-z])M\.?[CD][MDCLXVI.]*(?![A-Za-z])", value)
    years = [y for y in map(_roman_year, romans) if y]
    stated = latest_year_stated(value)
    return max(years + ([stated] if stated is not None else []), default=None)


def _format_of(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".xml"):
        return "tei"
    if name.endswith((".html", ".htm")):
        return "html"
    return "text"


def shown_name(name: str) -> str:
    """A file name as text: bytes that are no UTF-8 (a Latin-1 name from an old archive), which
    Python keeps as lone surrogates, shown as U+FFFD. Such a name written into a row or hashed
    as UTF-8 raised UnicodeEncodeError and ended the collection; the file itself is still read
    by its real name."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _link_problem(path: Path, rel: str) -> tuple[str, str] | None:
    """(``broken_link`` or ``link_loop``, detail) for a symbolic link that leads to no file;
    None for anything else."""
    if not path.is_symlink():
        return None
    try:
        path.stat()
    except OSError as e:
        target = shown_name(os.readlink(path))
        if e.errno == errno.ELOOP:
            return "link_loop", f"{rel} -> {target}: the links lead back to themselves"
        return "broken_link", f"{rel} -> {target}: {e.strerror.lower() if e.strerror else 'cannot be followed'}"
    return None


def _linked_folder(path: Path, rel: str) -> tuple[str, str] | None:
    """(``linked_folder``, detail) for a symbolic link to a folder: the walk does not follow
    one (a link back up would never end, one into the corpus would read it back), so the files
    of a folder linked in (``vol2 -> /mnt/disk2/vol2``) were left out without a word."""
    if not (path.is_symlink() and path.is_dir()):
        return None
    return "linked_folder", (f"{rel} -> {shown_name(os.readlink(path))}: a link to a folder, whose files are "
                             f"not read; give that folder as a source of its own (--source_dir, a local entry)")


def _special_problem(path: Path, rel: str) -> tuple[str, str] | None:
    """(``not_a_file``, detail) for a name the patterns select that is a pipe, a socket or a
    device (``is_file()`` is False for those too, so they vanished unreported; a pipe is never
    opened: reading one would wait for a writer); None for files and folders."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = "a pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return "not_a_file", f"{rel} is {kind}, not a file"


class LocalSource(Source):
    """Registry fields: ``path`` (folder), optional ``patterns``, ``exclude``, ``recursive``,
    ``id_prefix``, ``default_year`` (for files with no date in the manifest or the name)."""

    kind = "local"

    def folder(self) -> Path:
        return user_path(str(self.spec.get("path", "")))

    def files(self) -> list[Path]:
        """The files to read (what the corpus fingerprint hashes): links that lead to no file
        are left out here and rejected by :meth:`documents`."""
        return [p for p, problem in self._entries() if problem is None]

    def _entries(self) -> list[tuple[Path, tuple[str, str] | None]]:
        """Every name the patterns select, with (reason, detail) for a symbolic link that
        leads to no file: ``is_file()`` is False for those, so they would vanish unreported."""
        root = self.folder()
        if not root.is_dir():
            return []
        patterns = self.spec.get("patterns") or DEFAULT_PATTERNS
        exclude = self.spec.get("exclude") or []
        it = root.rglob("*") if self.spec.get("recursive", True) else root.glob("*")
        out = []
        for p in it:
            if p.name.startswith("."):
                continue
            rel = shown_name(p.relative_to(root).as_posix())
            linked = self.spec.get("recursive", True) and _linked_folder(p, rel)
            if linked and not any(fnmatch.fnmatch(rel, pat) for pat in exclude):
                out.append((p, linked))
                continue
            # a pattern selects a kind of file whatever the case of its name: SCAN001.TXT (a
            # scanner's or an old Windows name) was left out without a word
            if not any(fnmatch.fnmatchcase(p.name.lower(), pat.lower()) for pat in patterns) or \
                    any(fnmatch.fnmatch(rel, pat) for pat in exclude):
                continue
            problem = _link_problem(p, rel) or _special_problem(p, rel)
            if problem or p.is_file():
                out.append((p, problem))
        return sorted(out, key=lambda entry: entry[0])

    def _dates(self, name: str, row: dict[str, str], registry: dict[str, int]) -> dict[str, int]:
        """Every date seen for one file: the registry entry's, its MANIFEST.tsv row's, its
        file name's and the user's ``default_year`` (``dating.decide_year`` picks)."""
        dates = dict(registry)
        for column, rule in (("year_first_published", MANIFEST_FIRST_PUBLISHED), ("year", MANIFEST_YEAR)):
            value = manifest_year(row.get(column) or "")
            if value is not None:
                dates[rule] = value
                break
        m = _FILE_YEAR.search(name)
        if m:
            dates[FILE_NAME] = int(m.group(1))
        if self.spec.get("default_year") is not None:
            dates[DEFAULT_YEAR] = int(self.spec["default_year"])  # counts only when nothing else dates it
        return dates

    def documents(self, downloads_dir: Path | None = None, keep=None) -> Iterator[Document]:
        root = self.folder()
        if not root.is_dir():  # (a --source_dir is checked before; a registry's path is not)
            raise CorpusError(f"folder {root} (the source's path) does not exist or is not a folder")
        manifest = read_folder_manifest(root)
        base = self.meta()
        prefix = self.spec.get("id_prefix", "")
        entries = self._entries()
        n_files = sum(problem is None for _, problem in entries)
        for p, problem in entries:
            rel = shown_name(p.relative_to(root).as_posix())
            if not wanted(keep, f"{self.id}/{rel}"):
                continue
            stem = re.sub(r"\.gz$", "", rel, flags=re.IGNORECASE).rsplit(".", 1)[0]
            raw_id = prefix + stem.replace("/", "__")
            doc_id, changed = safe_id(raw_id)
            if problem:  # a rejection row says what happened to the name the user gave
                yield Document(id=doc_id, url=p.absolute().as_uri(), error=problem[0],
                               extra={"error_detail": problem[1], "relpath": rel}, **base)
                continue
            row = manifest.get(rel, {})
            meta: dict[str, Any] = dict(base)
            if row.get("title"):
                meta["title"] = row["title"]
            elif not meta["title"] or n_files > 1:
                # (white space in a name, a newline or a tab, is one space: a title is one line)
                meta["title"] = " ".join(shown_name(p.name).split(".")[0].replace("_", " ").split())
            if row.get("author"):
                meta["author"] = row["author"]
            meta["dates"] = self._dates(p.name, row, base["dates"])
            if row.get("london_related"):
                meta["london"] = _BOOL.get(row["london_related"].strip().lower(), base["london"])
            if row.get("license"):
                meta["license"] = row["license"]
            doc = Document(id=doc_id, url=p.resolve().as_uri(), **meta)
            doc.extra.update(raw_path=str(p), raw_format=_format_of(p), relpath=rel)
            if row.get("notes"):
                doc.extra["notes"] = row["notes"]
            if self.all_ocr():
                doc.extra["ocr"] = True
            if changed and re.search(r"[^A-Za-z0-9._/-]|\.\.", raw_id):
                doc.repairs.append("id_sanitised")
            yield doc
