"""Pages of many records, arriving in any order and any number of times, grouped on disk and
read back one record at a time in page order: an SQLite file (the standard library's), so
memory stays bounded by one record whatever the dataset's size.

Why a store and not the dataset's order: a dataset published as parquet promises nothing
about it. The British Library's pages of one book may sit in two files, in two row groups, out
of ``pg`` order or twice; grouping them in memory would hold every open book until the last
file is read. The store costs one extra write and read of the text (measured in
BENCHMARKS.md) and gives three things at once: grouping, ordering and resumability.

- ``pages``: one row per page read (record, page number, where it was read: file and row,
  mean OCR word confidence, whether it is empty, its text); a unique index on (record, page,
  file, row) orders the read-back and makes reading a row group twice a no-op, so a run
  killed mid-file resumes without duplicating a page. A page that really is in the dataset
  twice (another file or row) is kept twice and resolved when its record is read back.
- ``records``: each record's catalogue fields, from the first of its pages read.
- ``notes``: what was wrong with a record's cells (a page number or confidence that is no
  number), once per kind: the page is kept, the cell's value is not, and the book says so.
- ``files``: each data file's state (row groups done, pages, characters, problems), so a
  resumed run starts at the first row group not yet stored.
- ``meta``: the identity (dataset, revision or file hashes, columns, shard) the store was
  built for; another identity empties it.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from ...core import sqlite_os_error

# a page without a number sorts after the numbered pages of its record, in the order read. A
# page number is an integer or, for a page between two (2.5), a real: SQLite's INTEGER column
# keeps a fraction as a real and orders both by value.
UNNUMBERED = 1 << 62
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS files (file_no INTEGER PRIMARY KEY, name TEXT NOT NULL, groups_done INTEGER NOT NULL,
    pages INTEGER NOT NULL, chars INTEGER NOT NULL, done INTEGER NOT NULL, problems TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (record_id TEXT PRIMARY KEY, meta TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pages (record_id TEXT NOT NULL, pg INTEGER NOT NULL, file_no INTEGER NOT NULL,
    row_no INTEGER NOT NULL, confidence REAL, state INTEGER NOT NULL, text TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS page_order ON pages (record_id, pg, file_no, row_no);
CREATE TABLE IF NOT EXISTS notes (record_id TEXT NOT NULL, note TEXT NOT NULL, PRIMARY KEY (record_id, note));
"""
# a page's state
TEXT, EMPTY, NULL_TEXT = 0, 1, 2


@dataclass
class FileState:
    file_no: int
    name: str
    groups_done: int = 0
    pages: int = 0
    chars: int = 0
    done: bool = False
    problems: list[dict[str, Any]] | None = None


@dataclass
class StoredPage:
    pg: int | float
    file_no: int
    row_no: int
    confidence: float | None
    state: int
    text: str


class PageStore:
    """One SQLite file of pages; ``with PageStore(path, identity) as store:``."""

    def __init__(self, path: str | Path, identity: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None)  # transactions by hand
        # 64 KiB pages: a page of 1-4 KB of text alone in a 4 KiB page wasted half the file (a
        # 10 GB dataset made a 15 GB store); fixed when the file is made, so set first. WAL: a
        # crash loses at most the group being written. The cache is bounded (32 MiB).
        for pragma in ("page_size=65536", "journal_mode=WAL", "synchronous=NORMAL", "cache_size=-32768",
                       "temp_store=FILE"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.executescript(_SCHEMA)
        row = self.db.execute("SELECT value FROM meta WHERE key='identity'").fetchone()
        if row is not None and row[0] != identity:
            self._reset()
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('identity', ?)", (identity,))

    def _reset(self) -> None:
        self.db.executescript("DROP TABLE meta; DROP TABLE files; DROP TABLE records; DROP TABLE pages; "
                              "DROP TABLE IF EXISTS notes; VACUUM;")
        self.db.executescript(_SCHEMA)

    def __enter__(self) -> "PageStore":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self.close()
        mapped = sqlite_os_error(exc, self.path)   # a full disk is the user's to mend: one line
        if mapped is not None:
            raise mapped from exc

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def remove(self) -> None:
        """Close and delete the store (its job is done: every record was read back)."""
        self.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)

    # ------------------------------------------------------------------ storing
    def file_state(self, file_no: int, name: str) -> FileState:
        row = self.db.execute("SELECT name, groups_done, pages, chars, done, problems FROM files WHERE file_no=?",
                              (file_no,)).fetchone()
        if row is None or row[0] != name:
            return FileState(file_no, name, problems=[])
        return FileState(file_no, name, row[1], row[2], row[3], bool(row[4]), json.loads(row[5]))

    def add_group(self, state: FileState, pages: Sequence[tuple], records: Sequence[tuple[str, str]],
                  notes: Sequence[tuple[str, str]] = ()) -> None:
        """Store one row group's pages (``(record_id, pg, file_no, row_no, confidence, state,
        text)``), its records' catalogue fields and notes (``(record_id, note)``), and count
        the group done: all or nothing."""
        self.db.execute("BEGIN")
        try:
            self.db.executemany("INSERT OR IGNORE INTO pages VALUES (?, ?, ?, ?, ?, ?, ?)", pages)
            self.db.executemany("INSERT OR IGNORE INTO records VALUES (?, ?)", records)
            self.db.executemany("INSERT OR IGNORE INTO notes VALUES (?, ?)", notes)
            self._save(state)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def save_file(self, state: FileState) -> None:
        self._save(state)

    def _save(self, s: FileState) -> None:
        self.db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (s.file_no, s.name, s.groups_done, s.pages, s.chars, int(s.done), json.dumps(s.problems or [])))

    # ------------------------------------------------------------------ reading back
    def files(self) -> list[FileState]:
        rows = self.db.execute("SELECT file_no, name, groups_done, pages, chars, done, problems FROM files "
                               "ORDER BY file_no").fetchall()
        return [FileState(r[0], r[1], r[2], r[3], r[4], bool(r[5]), json.loads(r[6])) for r in rows]

    def records(self) -> Iterator[tuple[str, dict[str, Any], list[StoredPage]]]:
        """(record id, catalogue fields and ``notes`` when it has any, its pages in (page,
        file, row) order) for every record, by record id; one record's pages in memory at a time."""
        meta = self.db.cursor()  # a second cursor: the page scan stays open while it looks up
        cur = self.db.execute("SELECT record_id, pg, file_no, row_no, confidence, state, text FROM pages "
                              "INDEXED BY page_order ORDER BY record_id, pg, file_no, row_no")
        current, pages = None, []
        for rid, pg, file_no, row_no, conf, state, text in cur:
            if rid != current:
                if current is not None:
                    yield current, self._meta(meta, current), pages
                current, pages = rid, []
            pages.append(StoredPage(pg, file_no, row_no, conf, state, text))
        if current is not None:
            yield current, self._meta(meta, current), pages

    @staticmethod
    def _meta(cur: sqlite3.Cursor, record_id: str) -> dict[str, Any]:
        row = cur.execute("SELECT meta FROM records WHERE record_id=?", (record_id,)).fetchone()
        meta = json.loads(row[0]) if row else {}
        notes = [n for (n,) in cur.execute("SELECT note FROM notes WHERE record_id=? ORDER BY note", (record_id,))]
        if notes:
            meta["notes"] = notes
        return meta


__all__ = ["EMPTY", "FileState", "NULL_TEXT", "PageStore", "StoredPage", "TEXT", "UNNUMBERED"]
