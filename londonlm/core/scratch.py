"""Scratch tables: a SQLite file that lives as long as one job and holds what would not fit
in memory at scale (the merge's staged rows, the dedup's LSH bands). No journal and no fsync:
the file is rebuilt, never resumed, so a crash costs only the job in flight."""
from __future__ import annotations

import sqlite3
from pathlib import Path


class ScratchTables:
    """Open with the subclass's ``SCHEMA`` on a fresh file at ``path`` (one a killed job left
    is replaced); used as a context manager, the file goes when the block ends."""

    SCHEMA = ""
    BATCH = 256   # rows per insert or fetch: a batch is the most a user holds in memory

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; BEGIN;" + self.SCHEMA)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)
