"""Bookkeeping for resumed downloads: is a ``.part`` file a part of what the server now serves?

``.<name>.part.json`` (hidden, so the collector's input hashing skips it) records the URL,
validators (ETag, Last-Modified) and total size of the response a ``.part`` started from. A
resume sends them as ``If-Range``; an answer naming another validator or size means the file
changed upstream, and the part is discarded rather than spliced onto the new file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/200"
    if not value or not value.startswith("bytes "):
        return None
    try:
        return int(value[6:].split("-", 1)[0])
    except ValueError:
        return None


def content_range_total(value: str | None) -> int | None:
    if not value or "/" not in value:
        return None
    tail = value.rsplit("/", 1)[1]
    return int(tail) if tail.isdigit() else None


def content_length(headers) -> int | None:
    value = headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def part_info_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.part.json")


def part_info(url: str, r) -> dict[str, Any]:
    return {"url": url, "etag": r.headers.get("ETag"), "last_modified": r.headers.get("Last-Modified"),
            "total": content_length(r.headers) if r.status_code == 200 else
            content_range_total(r.headers.get("Content-Range"))}


def read_part_info(path: Path, url: str) -> dict[str, Any] | None:
    """The stored record when it is for ``url``; {} when there is none (a part written by an
    older version: resumed as before, guarded by Content-Range and the final checksum)."""
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError):
        return None
    return info if isinstance(info, dict) and info.get("url") == url else None


def if_range_value(stored: dict[str, Any]) -> str | None:
    """The If-Range value: a strong ETag, else the Last-Modified date (RFC 9110 13.1.5 forbids
    weak ETags there)."""
    etag = stored.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    return stored.get("last_modified")


def changed_upstream(stored: dict[str, Any] | None, headers, total: int | None) -> str | None:
    """Why a 206/416 answer is not for the file the part was cut from, or None. Catches
    servers that ignore If-Range."""
    if not stored:
        return None
    for key, header in (("etag", "ETag"), ("last_modified", "Last-Modified")):
        # a validator on one side only proves nothing either way: the part was cut from an
        # answer that named no version (and this one does), or the other way round; spliced,
        # a part of one version got the rest of another, of the same size, as the whole file
        if (stored.get(key) or headers.get(header)) and headers.get(header) != stored.get(key):
            return f"the file changed upstream ({header} {stored.get(key)} -> {headers.get(header)})"
    if stored.get("total") is not None and total is not None and total != stored["total"]:
        return f"the file changed upstream (size {stored['total']} -> {total})"
    return None


def discard_part(dest: Path) -> None:
    dest.with_name(dest.name + ".part").unlink(missing_ok=True)
    part_info_path(dest).unlink(missing_ok=True)
