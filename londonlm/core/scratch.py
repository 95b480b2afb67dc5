"""SQLite files that hold what would not fit in memory at scale: scratch tables that live as
long as one job (the merge's staged rows, the dedup's LSH bands), and the mapping of a SQLite
failure that is really the file system's (a full disk, a read-only one) to the OSError it
stands for, so the stages report it in one line like any other write."""
from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

# SQLite's primary result codes for the file system's refusals (Python 3.11+ also names them
# ``sqlite3.SQLITE_FULL``...), and the messages that carry them where the code is not exposed
_FS_ERRORS = {13: (errno.ENOSPC, "database or disk is full"),
              8: (errno.EROFS, "attempt to write a readonly database")}


def sqlite_os_error(exc: BaseException, path: str | Path) -> OSError | None:
    """The OSError naming ``path`` that a SQLite failure stands for, or None when it is not the
    file system's (a bug, or a damaged file, is left to its caller)."""
    if not isinstance(exc, sqlite3.Error):
        return None
    code = getattr(exc, "sqlite_errorcode", None)
    for primary, (err, message) in _FS_ERRORS.items():
        if (code is not None and code & 0xFF == primary) or (code is None and message in str(exc)):
            return OSError(err, message, str(path))
    return None


class ScratchTables:
    """Open with the subclass's ``SCHEMA`` on a fresh file at ``path`` (one a killed job left
    is replaced). No journal and no fsync: the file is rebuilt, never resumed, so a crash costs
    only the job in flight. Used as a context manager, the file goes when the block ends, and
    a full disk under it is an OSError naming the file."""

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

    def __exit__(self, kind, exc, tb) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)
        mapped = sqlite_os_error(exc, self.path)
        if mapped is not None:
            raise mapped from exc
