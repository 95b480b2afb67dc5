"""Tiny parquet files in the British Library books' layout (``biglam/blbooks-parquet``: one row
per page, ``data/train-NNNNN-of-NNNNN-<hash>.parquet``), written by the tests with pyarrow.

A book is a :class:`Book`; :func:`write_repo` lays books out over files (``files`` lists, per
file, the (book, page) pairs it holds, so a test can split a book over files, put its pages
out of order or twice); :func:`book_pages` gives each page a distinct, English, period text.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

WORDS = ("the of and a to in was his that it with for as watch street by Thames bridge fire market church "
         "house lane prisoner goods shillings coach tavern alderman Fleet parish vestry beadle wherry").split()
SCHEMA = pa.schema([
    ("record_id", pa.string()), ("date", pa.int32()), ("raw_date", pa.string()), ("title", pa.string()),
    ("place", pa.string()), ("empty_pg", pa.bool_()), ("text", pa.string()), ("pg", pa.int32()),
    ("mean_wc_ocr", pa.float32()), ("std_wc_ocr", pa.float64()), ("name", pa.string()),
    ("Language_1", pa.string()), ("Language_2", pa.string()), ("Language_3", pa.string()),
    ("Language_4", pa.string()), ("multi_language", pa.bool_()),
])


@dataclass
class Book:
    record_id: str
    date: int | None = 1790
    raw_date: str | None = None
    title: str = "A Book"
    place: str | None = "London"
    name: str | None = "Anon."
    languages: tuple[str, ...] = ("English",)
    confidence: float = 0.9
    pages: int = 4
    empty: tuple[int, ...] = ()          # page numbers that are blank
    null_text: tuple[int, ...] = ()      # page numbers whose text is null
    texts: dict[int, str] = field(default_factory=dict)

    def text(self, pg: int) -> str | None:
        if pg in self.null_text:
            return None
        if pg in self.empty:
            return ""
        return self.texts.get(pg) or page_text(self.record_id, pg)


def page_text(record_id: str, pg: int, sentences: int = 12) -> str:
    """A page of period-flavoured English, different for every (record, page), beginning with
    a marker that says which page it is."""
    rng = random.Random(f"{record_id}/{pg}")
    body = " ".join(" ".join(rng.choice(WORDS) for _ in range(10)).capitalize() + "." for _ in range(sentences))
    return f"[{record_id} p{pg}] {body}"


def page_row(book: Book, pg: int) -> dict:
    langs = list(book.languages) + [None] * (4 - len(book.languages))
    return {"record_id": book.record_id, "date": book.date, "raw_date": book.raw_date or (str(book.date) if book.date else None),
            "title": book.title, "place": book.place, "empty_pg": pg in book.empty, "text": book.text(pg), "pg": pg,
            "mean_wc_ocr": book.confidence, "std_wc_ocr": 0.1, "name": book.name, "Language_1": langs[0],
            "Language_2": langs[1], "Language_3": langs[2], "Language_4": langs[3],
            "multi_language": len(book.languages) > 1}


def write_file(path: Path, rows: list[dict], schema: pa.Schema = SCHEMA, row_group_size: int = 3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=row_group_size)
    return path


def write_repo(root: Path, books: list[Book], files: list[list[tuple[str, int]]] | None = None,
               row_group_size: int = 3) -> list[Path]:
    """Books as ``data/train-*.parquet`` under ``root``; by default one file per two books, each
    book's pages in order."""
    by_id = {b.record_id: b for b in books}
    if files is None:
        files = [[(b.record_id, pg) for b in books[i:i + 2] for pg in range(1, b.pages + 1)]
                 for i in range(0, len(books), 2)]
    out = []
    for n, pages in enumerate(files):
        rows = [page_row(by_id[rid], pg) for rid, pg in pages]
        out.append(write_file(root / "data" / f"train-{n:05d}-of-{len(files):05d}-0123456789abcdef.parquet", rows,
                              row_group_size=row_group_size))
    return out


def as_timestamps(path: Path) -> None:
    """Rewrite one file with ``date`` as ``timestamp[s]`` (how later versions of the BL dataset
    type it)."""
    t = pq.read_table(path)
    years = t.column("date").to_pylist()
    stamps = pa.array([None if y is None else datetime(y, 1, 1) for y in years], pa.timestamp("s"))
    pq.write_table(t.set_column(t.schema.get_field_index("date"), "date", stamps), path)
