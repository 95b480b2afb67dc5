"""A derived binary copy of a period lexicon's tables, kept in the user's cache directory so a
process that repairs OCR starts in a fraction of a second.

The ``.json.gz`` file stays the source of truth (its format is :meth:`.PeriodLexicon.save`'s). Decoding
it and deriving what the corrector reads (log-probabilities of 56 k words and 312 k pairs, the
character model, the known words and their prefixes) took ~1.5 s of a ~6.5 s repair of 3.3 MB on 2
cores; reading the same tables back from a pickle takes ~0.2 s. The copy is filed under the
sha256 of the lexicon file's bytes and carries a key of everything that derives it (the bytes'
hash, the source of :mod:`.lexicon`, the Python version), so an edited lexicon or changed code is
a miss, never a stale answer. A copy that cannot be read is rebuilt with a warning; a cache
directory that cannot be written leaves the lexicon loaded as before. ``LONDONLM_LEXICON_CACHE=off``
turns it off (the tests do, except the cache's own).
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import sys
from pathlib import Path
from typing import Any, Callable

from ...core import write_bytes_atomic

CACHE_FORMAT = "londonlm-lexicon-tables"
CACHE_VERSION = 1
KEEP = 4          # copies kept (the most recently used): one per lexicon a user repairs with
ENV = "LONDONLM_LEXICON_CACHE"


def cache_dir() -> Path | None:
    """Where the copies live (``$XDG_CACHE_HOME/londonlm/lexicons``); None when turned off."""
    if os.environ.get(ENV, "").lower() in ("off", "0", "no", "false"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "londonlm" / "lexicons"


def _code_digest(code: str | Path) -> str:
    """The source of the module that derives the tables: a change there makes every copy stale."""
    return hashlib.sha256(Path(code).read_bytes()).hexdigest()


def cache_key(raw: bytes, code: str | Path) -> dict[str, Any]:
    """What a copy must have been built from: the lexicon file's bytes, the code (``code``: the
    source file that derives the tables), this Python."""
    return {"format": CACHE_FORMAT, "version": CACHE_VERSION, "source": hashlib.sha256(raw).hexdigest(),
            "code": _code_digest(code), "python": list(sys.version_info[:2])}


class _TablesOnly(pickle.Unpickler):
    """Reads dicts, strings, numbers and sets only: a copy is never a way to run code."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"not a lexicon table: {module}.{name}")


def read_tables(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The tables of the copy at ``path`` if it holds ``key``'s; None when there is none or it is stale;
    raises ``ValueError`` when it is damaged."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        got = _TablesOnly(io.BytesIO(data)).load()
    except Exception as e:  # (a truncated or foreign file raises any of a dozen kinds)
        raise ValueError(f"unreadable ({type(e).__name__}: {e})") from e
    if not (isinstance(got, dict) and isinstance(got.get("key"), dict) and isinstance(got.get("tables"), dict)):
        raise ValueError("not a lexicon tables file")
    return got["tables"] if got["key"] == key else None


def write_tables(folder: Path, name: str, key: dict[str, Any], tables: dict[str, Any]) -> None:
    """Keep ``tables`` under ``name``, and only the ``KEEP`` most recently used copies."""
    write_bytes_atomic(folder / name, pickle.dumps({"key": key, "tables": tables}, protocol=pickle.HIGHEST_PROTOCOL))
    copies = sorted(folder.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in copies[KEEP:]:
        old.unlink(missing_ok=True)


def cached_tables(raw: bytes, build: Callable[[], dict[str, Any]], source: str, code: str | Path,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The tables of the lexicon whose file bytes are ``raw`` (``source`` names it in a warning),
    derived by the module at ``code``: from the cache when it holds them, else ``build()`` (which
    raises what a bad lexicon raises), kept for the next process."""
    folder = cache_dir()
    if folder is None:
        return build()
    warn = log or (lambda m: print(m, file=sys.stderr))
    key = cache_key(raw, code)
    path = folder / f"{key['source']}.pickle"
    try:
        tables = read_tables(path, key)
    except (OSError, ValueError) as e:
        warn(f"warning: the cached tables of {source} ({path}) are {e}; rebuilt")
        tables = None
    if tables is not None:
        try:
            os.utime(path)  # (most recently used: pruned last)
        except OSError:
            pass
        return tables
    tables = build()
    try:
        write_tables(folder, path.name, key, tables)
    except OSError:
        pass  # (a read-only home: the lexicon is loaded as before, every time)
    return tables
