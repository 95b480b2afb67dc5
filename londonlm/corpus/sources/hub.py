"""Datasets on the Hugging Face Hub (kind ``hf_dataset``), read as parquet a row group at a
time and never downloaded whole: the British Library's digitised books (``bl_books``) and any
other dataset whose columns the registry entry maps.

1. The data files: ``datasets.load_dataset_builder`` resolves them the way ``load_dataset``
   does (the repository's ``configs``, else its file-name patterns: ``data/train-*.parquet``
   or the parquet converter's ``<config>/<split>/NNNN.parquet``), pinned to one revision
   (``hf://datasets/<repo>@<sha>/...``); ``local_dir`` (``--hf_dataset_dir``) reads a local copy
   laid out the same way.
2. Each file is opened through ``huggingface_hub``'s filesystem (HTTP range requests to the
   Hub's ``resolve`` endpoint) or from disk, and read one row group at a time with pyarrow.
   ``datasets``' own streaming reader is not used for the rows: it casts every file to the
   first file's schema, so a file without a column yields nulls silently and a column that was
   all null in the first file fails every later file. Here each file is checked against the
   column mapping on its own, and a file that cannot be read, or lacks a column, becomes one
   rejection row naming it.
3. Pages are grouped into one document per record (``record_id``) in a :class:`PageStore`
   (bounded memory, any order, repeats, resumable by row group), then each record is judged
   on its catalogue (:mod:`..catalogue`: London imprint, English, OCR confidence) and, if kept,
   becomes one document: its non-empty pages in ``pg`` order, dated by its ``date`` and its
   printed ``raw_date`` (:mod:`..dating`: the latest trace decides).

Registry fields: ``repo_id``, ``config``, ``split`` (train), ``revision`` (main), ``local_dir``,
``columns`` (role -> column; roles in :data:`ROLES`, ``languages`` a list), ``imprint``
(``london``, ``britain`` or null), ``languages_accepted`` ([English]), ``min_ocr_confidence``
(0), ``ocr`` (the text is OCR: cleaned with the OCR steps, flagged for OCR repair).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ...core import sha256_file, user_path
from ..catalogue import Catalogue, ImprintFilter, catalogue_filters, first_failure
from ..dating import CATALOGUE_DATE, CATALOGUE_DATE_TEXT, latest_year_stated
from .base import Document, Source, SourceError, distinct_id, safe_id, source_dir, wanted
from .page_store import EMPTY, NULL_TEXT, TEXT, UNNUMBERED, FileState, PageStore, StoredPage

# what a column can stand for; ``text`` is the one a dataset must have
ROLES = ("record_id", "page", "text", "empty", "date", "date_text", "place", "country", "title", "author",
         "ocr_confidence", "languages")
_CATALOGUE_ROLES = ("title", "author", "place", "country", "date", "date_text", "languages")
_MAX_LISTED_PROBLEMS = 5
# how cells are read (2: a NaN record id is no record, nested text columns refused): a page store
# a stopped run of other rules left is read again, not resumed with its records
CELL_RULES = 2
# a book's repairs when one of its cells was no number: the page kept unnumbered / its confidence left out
UNREADABLE_PAGE_NUMBER, UNREADABLE_CONFIDENCE = "unreadable_page_number", "unreadable_ocr_confidence"


@dataclass(frozen=True)
class DataFile:
    name: str       # path inside the repository (or the local copy)
    location: str   # hf://datasets/<repo>@<sha>/<name>, or a local path
    size: int


def column_mapping(spec: dict[str, Any]) -> dict[str, Any]:
    """The entry's ``columns`` checked: known roles, column names as strings, ``text`` present."""
    cols = spec.get("columns") or {"text": "text"}
    if not isinstance(cols, dict) or not cols.get("text"):
        raise SourceError("bad_registry", f"source {spec.get('id')!r}: columns must map at least text: <column>")
    unknown = sorted(set(cols) - set(ROLES))
    if unknown:
        raise SourceError("bad_registry", f"source {spec.get('id')!r}: unknown column roles {unknown}; "
                                          f"use {', '.join(ROLES)}")
    out = {}
    for role, name in cols.items():
        names = name if isinstance(name, list) else [name]
        if role != "languages" and isinstance(name, list) or not all(isinstance(n, str) and n for n in names):
            raise SourceError("bad_registry", f"source {spec.get('id')!r}: column for {role} must be a name"
                                              f"{' or a list of names' if role == 'languages' else ''}")
        out[role] = names if role == "languages" else name
    return out


def _year(value: Any) -> int | None:
    """A year column's value: an integer, a date or timestamp, or text naming a year."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 < value < 10000 else None
    if hasattr(value, "year"):
        return int(value.year)
    return latest_year_stated(str(value))


def _number(value: Any) -> int | float | None:
    """A numeric cell's value, or None when it is no finite number: NaN (what pandas writes for
    a missing integer), infinity, a boolean, text that is not a number (``"high"``)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        x = float(_text(value).strip()) if isinstance(value, (str, bytes)) else float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return x if math.isfinite(x) else None


def _page_number(value: Any) -> int | float | None:
    """A page-number cell to order pages by: an integer, or a fraction kept as it is (page 2.5
    lies between 2 and 3; truncated, it was dropped as a repeat of page 2). None when it is no
    number or too large to order by."""
    x = _number(value)
    if x is None or abs(x) >= UNNUMBERED:
        return None
    return int(x) if isinstance(x, float) and x.is_integer() else x


def _record_id(value: Any) -> str | None:
    """A record-id cell as text, or None when it names no record: a null, a blank, or a NaN, which
    pandas writes for a missing id in a float column (read as text, "nan" made every such page one
    book, the later books' pages dropped as repeats of the first's); 7.0 from such a column is 7."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if value.is_integer():
            value = int(value)
    rid = _text(value)
    return rid if rid is not None and rid.strip() else None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else str(value)


class HubDatasetSource(Source):
    kind = "hf_dataset"
    default_base_url = "https://huggingface.co"
    reads_in_place = True   # streamed or read where it lies: nothing is downloaded

    def __init__(self, spec: dict[str, Any], base_url: str | None = None):
        super().__init__(spec, base_url)
        self.columns = column_mapping(spec)
        if not spec.get("local_dir") and not spec.get("repo_id"):
            raise SourceError("bad_registry", f"source {self.id!r} needs repo_id (or local_dir)")
        self.filters = catalogue_filters(spec.get("imprint", "london") if "place" in self.columns else None,
                                         spec.get("languages_accepted", ["English"]) if "languages" in self.columns
                                         else None, float(spec.get("min_ocr_confidence") or 0.0))
        self._files: list[DataFile] | None = None
        self._fingerprint: str | None = None

    def all_ocr(self) -> bool:
        return bool(self.spec.get("ocr", True))   # page scans unless the entry says otherwise

    # ------------------------------------------------------------------ where the files are
    @property
    def local_dir(self) -> Path | None:
        return user_path(str(self.spec["local_dir"])) if self.spec.get("local_dir") else None

    def where(self) -> str:
        return str(self.local_dir) if self.local_dir else f"{self.spec['repo_id']} on {_endpoint()}"

    def data_files(self) -> list[DataFile]:
        """The split's parquet files, as ``load_dataset`` would read them."""
        if self._files is None:
            self._files = _resolve(self)
        return self._files

    def fingerprint(self) -> str:
        """What the corpus is built from: the local files' bytes, or the Hub revision's commit."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for f in self.data_files():
                h.update(f.name.encode() + b"\0")
                h.update((sha256_file(f.location) if self.local_dir else f.location).encode() + b"\0")
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def url(self) -> str:
        if self.local_dir:
            return self.local_dir.absolute().as_uri()
        return f"{_endpoint()}/datasets/{self.spec['repo_id']}"

    # ------------------------------------------------------------------ documents
    def documents(self, downloads_dir: Path, keep=None) -> Iterator[Document]:
        files = self.data_files()
        shard = getattr(keep, "name", "all")
        identity = json.dumps({"data": self.fingerprint(), "columns": self.columns, "shard": shard,
                               "cells": CELL_RULES}, sort_keys=True)
        store_path = source_dir(downloads_dir, self.kind, self.id) / "pages" / f"{shard}.sqlite"
        with PageStore(store_path, identity) as store:
            self._read_files(store, files, keep)
            yield from self._file_problems(store, keep)
            yield from self._books(store)
        store.remove()  # every record was handed on (a run stopped before keeps it, to resume)

    def _read_files(self, store: PageStore, files: list[DataFile], keep) -> None:
        from tqdm.auto import tqdm

        with tqdm(total=sum(f.size for f in files), unit="B", unit_scale=True, unit_divisor=1024,
                  desc=f"{self.id}: reading pages", disable=not self.progress) as bar:
            for file_no, f in enumerate(files):
                state = store.file_state(file_no, f.name)
                if state.done:
                    bar.update(f.size)
                    continue
                _FileReader(self, store, f, state, keep, bar).run()

    def _file_problems(self, store: PageStore, keep) -> Iterator[Document]:
        """One rejection row per data file that could not be read whole (reported by the
        shard that owns the file's name, so a merge lists it once)."""
        for state in store.files():
            if not state.problems or not wanted(keep, f"{self.id}/file/{state.name}"):
                continue
            reasons = [p["reason"] for p in state.problems]
            details = [p["detail"] for p in state.problems]
            more = len(details) - _MAX_LISTED_PROBLEMS
            detail = "; ".join(details[:_MAX_LISTED_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")
            yield Document(id=safe_id(f"{self.id}-file-{state.name}")[0], source=self.id, source_kind=self.kind,
                           url=self.url(), error=max(set(reasons), key=reasons.count),
                           extra={"error_detail": f"{state.name}: {detail}", "relpath": state.name})

    def _books(self, store: PageStore) -> Iterator[Document]:
        from tqdm.auto import tqdm

        total = sum(s.chars for s in store.files())
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"{self.id}: books",
                  disable=not self.progress) as bar:
            for record_id, meta, pages in store.records():
                yield self.book(record_id, meta, pages)
                bar.update(sum(len(p.text) for p in pages))

    def book(self, record_id: str, meta: dict[str, Any], pages: list[StoredPage]) -> Document:
        """One record as a document: rejected on its catalogue or for having no text, else its
        pages' text in page order (repeats dropped, the first read kept)."""
        kept, counts, repairs = _order_pages(pages)
        texts = [p for p in kept if p.state == TEXT]
        chars = sum(len(p.text) for p in texts if p.confidence is not None)
        conf = (sum(p.confidence * len(p.text) for p in texts if p.confidence is not None) / chars) if chars else None
        book = Catalogue(place=meta.get("place") or "", country=meta.get("country") or "",
                         languages=meta.get("languages") or [], ocr_confidence=conf)
        base = self.meta()
        dates = dict(base["dates"])
        for rule, year in ((CATALOGUE_DATE, meta.get("date")), (CATALOGUE_DATE_TEXT, latest_year_stated(meta.get("date_text")))):
            if year is not None:
                dates[rule] = year
        doc_id, changed = distinct_id(f"{self.id}-{record_id}")
        extra: dict[str, Any] = {"record_id": record_id, "pages": counts}
        extra.update({k: v for k, v in (("place", book.place), ("date", meta.get("date_text"))) if v})
        if conf is not None:
            extra["ocr_confidence"] = round(conf, 4)
        if self.all_ocr():
            extra["ocr"] = True
        doc = Document(id=doc_id, source=self.id, source_kind=self.kind, title=meta.get("title") or base["title"],
                       author=meta.get("author") or base["author"], dates=dates, license=base["license"],
                       url=self.url(), london=self._london(book, base["london"]), extra=extra, repairs=repairs)
        if changed:
            doc.repairs.append("id_sanitised")
        doc.repairs.extend(meta.get("notes") or [])
        failed = first_failure(book, self.filters)
        if not texts:
            doc.error, extra["error_detail"] = "empty", f"all {len(kept)} pages empty"
        elif failed is not None:
            doc.error, extra["error_detail"] = failed.reason, f"{failed.filter}: {failed.detail}"
        else:
            doc.text = ("\n\f\n" if extra.get("ocr") else "\n\n").join(p.text for p in texts)
        return doc

    def _london(self, book: Catalogue, default: bool) -> bool | None:
        """True for a London imprint; None (not London, which no later filter rejects) for a
        British one kept by ``--all_britain``; the entry's flag when there is no place rule."""
        if not any(isinstance(f, ImprintFilter) for f in self.filters):
            return default
        return True if ImprintFilter("london")(book).passed else None


def _order_pages(pages: list[StoredPage]) -> tuple[list[StoredPage], dict[str, int], list[str]]:
    """A record's pages in page order with repeats of a page number dropped (the first read
    kept); the counts for the manifest and the repairs to record."""
    kept: list[StoredPage] = []
    duplicates = differing = 0
    for p in pages:  # sorted by (pg, file, row): a repeat follows its first reading
        if kept and p.pg == kept[-1].pg and p.pg != UNNUMBERED:
            duplicates += 1
            differing += p.text != kept[-1].text
            continue
        kept.append(p)
    read_order = [(p.file_no, p.row_no) for p in kept]
    repairs = []
    if read_order != sorted(read_order):
        repairs.append("pages_reordered")
    if duplicates:
        repairs.append("duplicate_pages_dropped")
    if differing:
        repairs.append("duplicate_pages_differed")
    if any(p.pg == UNNUMBERED for p in kept):
        repairs.append("pages_unnumbered")
    counts = {"read": len(pages), "text": sum(p.state == TEXT for p in kept),
              "empty": sum(p.state == EMPTY for p in kept), "null_text": sum(p.state == NULL_TEXT for p in kept),
              "duplicates": duplicates}
    if counts["null_text"]:
        repairs.append("null_text_pages")
    return kept, counts, repairs


class _FileReader:
    """One data file into the page store, a row group at a time, from where it was left."""

    def __init__(self, src: HubDatasetSource, store: PageStore, f: DataFile, state: FileState, keep, bar):
        self.src, self.store, self.f, self.state, self.keep, self.bar = src, store, f, state, keep, bar
        self.cols = src.columns
        self._kept: dict[str, bool] = {}

    def run(self) -> None:
        try:
            handle, pf = _open_parquet(self.f)
        except Exception as e:  # noqa: BLE001 - any unreadable file is a rejection, not a crash
            return self._give_up("bad_parquet", f"cannot be read as parquet ({type(e).__name__}: {_short(e)})")
        try:
            have = set(pf.schema_arrow.names)
            missing = [c for c in self._column_names() if c not in have]
            if missing:
                return self._give_up("missing_column", f"no column {', '.join(map(repr, missing))} "
                                                       f"(has {', '.join(sorted(have))})")
            nested = _nested_text_columns(pf.schema_arrow, self.cols)
            if nested:
                return self._give_up("bad_column", nested)
            starts = [0]
            for g in range(pf.num_row_groups):
                starts.append(starts[-1] + pf.metadata.row_group(g).num_rows)
            for g in range(self.state.groups_done, pf.num_row_groups):
                self._group(pf, g, starts[g])
            self.state.done = True
            self.store.save_file(self.state)
        finally:
            if handle is not None:
                handle.close()

    def _column_names(self) -> list[str]:
        return [n for v in self.cols.values() for n in (v if isinstance(v, list) else [v])]

    def _give_up(self, reason: str, detail: str) -> None:
        self.state.problems.append({"reason": reason, "detail": detail})
        self.state.done = True
        self.store.save_file(self.state)
        self.bar.update(self.f.size)

    def _group(self, pf, g: int, first_row: int) -> None:
        meta = pf.metadata.row_group(g)
        size = sum(meta.column(i).total_compressed_size for i in range(meta.num_columns))
        try:
            table = pf.read_row_group(g, columns=sorted(set(self._column_names())))
            pages, records, notes, no_record = self._rows(table, first_row)
        except Exception as e:  # noqa: BLE001 - a damaged row group: the rest of the file is still read
            self.state.problems.append({"reason": "bad_parquet", "detail": f"row group {g} unreadable "
                                                                            f"({type(e).__name__}: {_short(e)})"})
            pages, records, notes, no_record = [], [], [], 0
        if no_record:
            self.state.problems.append({"reason": "page_without_record",
                                        "detail": f"row group {g}: {no_record} pages without a record id"})
        self.state.groups_done = g + 1
        self.state.pages += len(pages)
        self.state.chars += sum(len(p[6]) for p in pages)
        self.store.add_group(self.state, pages, records, notes)
        self.bar.update(size)

    def _wanted(self, record_id: str) -> bool:
        if self.keep is None:
            return True
        if record_id not in self._kept:
            self._kept[record_id] = self.keep(f"{self.src.id}/{record_id}")
        return self._kept[record_id]

    def _rows(self, table, first_row: int) -> tuple[list[tuple], list[tuple[str, str]], list[tuple[str, str]], int]:
        col = lambda role: table.column(self.cols[role]).to_pylist() if role in self.cols else None  # noqa: E731
        n = table.num_rows
        none = [None] * n
        ids, pgs, texts = col("record_id"), col("page") or none, col("text")
        empties, confs = col("empty") or none, col("ocr_confidence") or none
        catalogue = {role: col(role) for role in _CATALOGUE_ROLES if role in self.cols and role != "languages"}
        languages = [table.column(c).to_pylist() for c in self.cols.get("languages", [])]
        pages, records, notes, seen, no_record = [], [], [], set(), 0
        for i in range(n):
            row_no = first_row + i
            rid = f"{self.f.name}#{row_no}" if ids is None else _record_id(ids[i])
            if rid is None:
                no_record += 1
                continue
            if not self._wanted(rid):
                continue
            text = _text(texts[i])
            state = NULL_TEXT if text is None else EMPTY if empties[i] is True or not text.strip() else TEXT
            pg, conf = _page_number(pgs[i]), _number(confs[i])
            # a cell that is no number costs its own value only: the page is kept, the book says so
            if pg is None and pgs[i] is not None:
                notes.append((rid, UNREADABLE_PAGE_NUMBER))
            if conf is None and confs[i] is not None:
                notes.append((rid, UNREADABLE_CONFIDENCE))
            pages.append((rid, UNNUMBERED if pg is None else pg, self.state.file_no, row_no,
                          None if conf is None else float(conf), state, text or ""))
            if rid not in seen:
                seen.add(rid)
                fields = {role: (_year(v[i]) if role == "date" else _text(v[i])) for role, v in catalogue.items()}
                fields["languages"] = [t for t in (_text(c[i]) for c in languages) if t and t.strip()]
                records.append((rid, json.dumps(fields, ensure_ascii=False)))
        return pages, records, notes, no_record


# the roles whose cells are read as text: a list or record there was written as Python's repr of it
_TEXT_ROLES = ("record_id", "text", "date_text", "place", "country", "title", "author", "languages")


def _nested_text_columns(schema, cols: dict[str, Any]) -> str | None:
    """Why a column read as text holds lists or records (a page as a list of its lines), or None:
    its cells would become their repr (``['It was', ...]``) in the corpus."""
    import pyarrow as pa

    named = [(role, name) for role in _TEXT_ROLES if role in cols
             for name in (cols[role] if isinstance(cols[role], list) else [cols[role]])]
    bad = [f"{role} column {name!r} holds {schema.field(name).type}" for role, name in named
           if pa.types.is_nested(schema.field(name).type)]
    return (f"{'; '.join(bad)}, not text: map a column of text (the registry entry's columns)") if bad else None


def hub_entries(entries: list[dict[str, Any]], local_dir: str | None = None, all_britain: bool = False,
                min_ocr_confidence: float | None = None, offline: bool = False) -> list[dict[str, Any]]:
    """The selected registry entries with the collector's Hub flags applied to the
    ``hf_dataset`` ones: ``--hf_dataset_dir`` (a local copy), ``--all_britain`` (imprints
    anywhere in Britain), ``--min_ocr_confidence``; ``--offline`` needs a local copy."""
    from ...core import UsageError

    hub = [e for e in entries if e["kind"] == HubDatasetSource.kind]
    asked = [flag for flag, on in (("--hf_dataset_dir", local_dir), ("--all_britain", all_britain),
                                   ("--min_ocr_confidence", min_ocr_confidence is not None)) if on]
    if asked and not hub:
        raise UsageError(f"{', '.join(asked)} applies to Hub dataset sources; select one, e.g. --sources bl_books")
    if local_dir and len(hub) > 1:
        raise UsageError(f"--hf_dataset_dir is one dataset's local copy, but {len(hub)} Hub dataset sources are "
                         f"selected ({', '.join(e['id'] for e in hub)}); collect them one at a time")
    out = []
    for e in entries:
        if e["kind"] == HubDatasetSource.kind:
            e = dict(e)
            if local_dir:
                e["local_dir"] = str(user_path(local_dir).resolve())
            if all_britain:
                e["imprint"] = "britain"
            if min_ocr_confidence is not None:
                e["min_ocr_confidence"] = float(min_ocr_confidence)
            if offline and not e.get("local_dir"):
                raise UsageError(f"--offline: {e['id']} streams from the Hub; pass --hf_dataset_dir DIR with a "
                                 f"local copy of {e.get('repo_id', 'the dataset')} (its parquet files)")
        out.append(e)
    return out


# ---------------------------------------------------------------------- the Hub and the files
def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _resolve(src: HubDatasetSource) -> list[DataFile]:
    """The data files of the entry's config and split, with their sizes."""
    import fsspec
    from datasets import load_dataset_builder

    spec = src.spec
    where = str(src.local_dir) if src.local_dir else spec["repo_id"]
    if src.local_dir and not src.local_dir.is_dir():
        raise SourceError("not_found", f"--hf_dataset_dir {src.local_dir} is not a folder")
    if not src.local_dir and _offline():
        raise SourceError("dataset_unavailable", f"{src.where()}: Hugging Face offline mode is on (HF_HUB_OFFLINE "
                                                 f"or TRANSFORMERS_OFFLINE); unset it to stream the dataset, or pass "
                                                 f"--hf_dataset_dir DIR with a local copy")
    try:
        builder = load_dataset_builder(where, name=spec.get("config"),
                                       revision=None if src.local_dir else spec.get("revision"))
        files = builder.config.data_files or {}
    except Exception as e:  # noqa: BLE001 - the Hub, the network or the layout: said in one line
        raise SourceError("dataset_unavailable", f"{src.where()}: {type(e).__name__}: {_short(e)}") from e
    split = str(spec.get("split", "train"))
    chosen = next((v for k, v in files.items() if str(k) == split), None)
    if not chosen:
        raise SourceError("dataset_unavailable", f"{src.where()} has no split {split!r} "
                                                 f"(splits: {', '.join(map(str, files)) or 'none'})")
    out = []
    for location in chosen:
        if src.local_dir:
            name = Path(location).resolve().relative_to(src.local_dir.resolve()).as_posix()
            out.append(DataFile(name, str(location), os.path.getsize(location)))
        else:
            fs, path = fsspec.core.url_to_fs(location)
            out.append(DataFile(location.split("@", 1)[-1].split("/", 1)[-1], location, int(fs.info(path)["size"])))
    return out


def _open_parquet(f: DataFile):
    """(open handle or None, ``pyarrow.parquet.ParquetFile``): a local file, or one on the Hub
    read by byte ranges through ``huggingface_hub``'s filesystem."""
    import pyarrow.parquet as pq

    if "://" not in f.location:
        return None, pq.ParquetFile(f.location)
    import fsspec

    handle = fsspec.open(f.location, "rb").open()
    try:
        return handle, pq.ParquetFile(handle)
    except BaseException:
        handle.close()
        raise


def _short(e: BaseException, n: int = 200) -> str:
    s = " ".join(str(e).split())
    return s if len(s) <= n else s[:n] + "..."


__all__ = ["DataFile", "HubDatasetSource", "ROLES", "column_mapping", "hub_entries"]
