"""Source kinds behind one interface (see ``base.Source``), the registry loader, and
``materialise``: raw bytes -> text for one document, run inside worker processes."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ...core import LondonLMError, user_path

from ..dating import LONDON_LIVES
from .archive_org import ArchiveOrgSource
from .base import MAX_RAW_BYTES, Document, Source, SourceError, decode_bytes, gunzip, read_text_file, safe_id
from .gutenberg import GutenbergSource, gutenberg_urls
from .html import HtmlSource, html_to_text
from .hub import HubDatasetSource
from .local import LocalSource
from .london_lives import LondonLivesSource, london_lives_to_text
from .old_bailey import OldBaileySource, materialise_tei, tei_to_text
from .sample import SampleMissing, SampleSource, sample_dir, sample_files

KINDS: dict[str, type[Source]] = {
    "gutenberg": GutenbergSource,
    "archive_org": ArchiveOrgSource,
    "old_bailey": OldBaileySource,
    "london_lives": LondonLivesSource,
    "html": HtmlSource,
    "hf_dataset": HubDatasetSource,
    "local": LocalSource,
    "sample": SampleSource,
}


class RegistryError(LondonLMError, ValueError):
    """The registry file is missing or malformed; the message names the fix."""


# fields shown and copied as text (into every document's manifest row): a list or mapping there is a mistake
_TEXT_FIELDS = ("title", "author", "license")
# kinds whose ``urls`` may be paths on their ``base_url``
_RELATIVE_URL_KINDS = ("old_bailey", "london_lives")


def load_registry(path: str | Path) -> list[dict[str, Any]]:
    """Entries of ``data_sources.yaml`` (a ``sources:`` list, or a bare list; .json also read),
    each checked: ``id`` and ``kind`` text, a known kind, ids unique, titles text, URLs http(s)."""
    p = Path(path)
    if not p.exists():
        raise RegistryError(f"registry {p} not found; pass --registry or create 02_data_collection/data_sources.yaml")
    data = _parse_registry(p)
    entries = data.get("sources", []) if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise RegistryError(f"registry {p}: expected a list of sources under 'sources:'")
    seen: set[str] = set()
    for i, e in enumerate(entries):
        _check_entry(p, i, e, seen)
        if e["kind"] == "local" and e.get("path") and not user_path(str(e["path"])).is_absolute():
            # relative folders are relative to the registry file, not to the working directory
            e["path"] = str((p.parent / str(e["path"])).resolve())
    return entries


def _parse_registry(p: Path) -> Any:
    """The registry file's data: JSON, or YAML without aliases (a 9-level alias bomb of a few
    lines as a ``title:`` took 50 s and 3.1 GB to list, and wrote a 624 MB manifest)."""
    import yaml

    try:
        text = p.read_text(encoding="utf-8")
        if p.suffix == ".json":
            import json

            return json.loads(text, object_pairs_hook=_once_each)
        return yaml.load(text, Loader=_no_aliases())  # noqa: S506 - a SafeLoader, less aliases
    except _NotRead as e:
        raise RegistryError(f"registry {p}: {e}") from e
    except UnicodeDecodeError as e:
        raise RegistryError(f"registry {p} is not UTF-8 text ({e.reason} at byte {e.start})") from e
    except RecursionError as e:
        raise RegistryError(f"registry {p} is nested too deeply to read") from e
    except (ValueError, yaml.YAMLError) as e:
        raise RegistryError(f"registry {p} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: "
                            f"{' '.join(str(e).split())}") from e


def _once_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are each given once: ``"year"`` twice in one entry kept the last
    without a word (the YAML reader refuses it)."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _NotRead(f"the key {key!r} is given twice in one object; keep one")
        seen[key] = value
    return seen


class _NotRead(Exception):
    """A registry the loader does not read: an alias, a key twice in one mapping."""


def _no_aliases():
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """YAML's safe loader refusing aliases (``*name``) and keys given twice: a registry spells
        every value out, once."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise _NotRead(f"line {event.start_mark.line + 1}: the YAML alias *{event.anchor} is not read: "
                               f"write the value out in full (aliases can make a few lines gigabytes)")
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):
            # a key given twice in one entry (``year:`` copied in and edited) kept the last
            # without a word
            seen: set[str] = set()
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                    if key.value in seen:
                        raise _NotRead(f"line {key.start_mark.line + 1}: the key {key.value!r} is given twice "
                                       f"in one mapping; keep one")
                    seen.add(key.value)
            return super().construct_mapping(node, deep)

    return NoAliasLoader


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_entry(p: Path, i: int, e: Any, seen: set[str]) -> None:
    """One entry's shape, refused in one line naming it (a list as an id was a traceback)."""
    if not isinstance(e, dict) or "id" not in e or "kind" not in e:
        raise RegistryError(f"registry {p}: entry {i} needs at least 'id' and 'kind'")
    for field in ("id", "kind"):
        if not isinstance(e[field], str) or not e[field].strip():
            raise RegistryError(f"registry {p}: entry {i}: {field} must be text, not {_shown(e[field])}")
    if e["kind"] not in KINDS:
        raise RegistryError(f"registry {p}: entry {e['id']!r} has unknown kind {e['kind']!r}; "
                            f"use one of {sorted(KINDS)}")
    # the id names the source's download folder and its documents once cleaned ("a/b" and "a b"
    # are both a_b): two such sources shared a folder, the second's files found "complete"
    folder = safe_id(e["id"])[0]
    if folder in seen:
        raise RegistryError(f"registry {p}: duplicate source id {e['id']!r}"
                            + (f" (ids are file names: it is {folder!r} as one, as another entry is)"
                               if folder != e["id"] else ""))
    seen.add(folder)
    for field in _TEXT_FIELDS:
        if isinstance(e.get(field), (list, dict, bytes)):
            raise RegistryError(f"registry {p}: entry {e['id']!r}: {field} must be text, not {_shown(e[field])}")
    urls = e.get("urls")
    if urls is not None and not isinstance(urls, list):
        raise RegistryError(f"registry {p}: entry {e['id']!r}: urls must be a list of http(s) URLs")
    for url in urls or []:
        _check_url(p, e, "urls", url, relative=e["kind"] in _RELATIVE_URL_KINDS)
    if e.get("base_url") is not None:
        _check_url(p, e, "base_url", e["base_url"], relative=False)
    _check_years(p, e)
    _check_settings(p, e)
    if e["kind"] == "local" and (not isinstance(e.get("path"), str) or not e["path"].strip()):
        raise RegistryError(f"registry {p}: entry {e['id']!r}: a local source needs 'path', the folder of its texts")


def _year(v: Any) -> int | None:
    """``v`` as a year from 1000 to 2100 (the command line's range), else None: a superscript
    "²" passed ``isdigit`` and then failed ``int``; -5 or 99999 dated every document so."""
    if isinstance(v, str) and v.strip().isdecimal():
        v = int(v)
    return v if isinstance(v, int) and not isinstance(v, bool) and 1000 <= v <= 2100 else None


def _check_years(p: Path, e: dict[str, Any]) -> None:
    """``year`` and ``default_year`` a year, ``year_range`` two in order (``[1674, 1913]``): every
    document of the source is dated by them, so a malformed one would reject each with a bare
    Python error, and a range written backwards dated its undated texts by its start (a text of
    up to 1913 kept under a cutoff of 1700)."""
    for field in ("year", "default_year"):
        if e.get(field) is not None and _year(e[field]) is None:
            raise RegistryError(f"registry {p}: entry {e['id']!r}: {field} must be a year such as 1782, "
                                f"not {_shown(e[field])} (a year from 1000 to 2100)")
    span = e.get("year_range")
    if span is not None and not (isinstance(span, list) and len(span) == 2 and None not in map(_year, span)
                                 and _year(span[0]) <= _year(span[1])):
        raise RegistryError(f"registry {p}: entry {e['id']!r}: year_range must be two years such as "
                            f"[1674, 1913], not {_shown(span)} (the first first, each from 1000 to 2100)")


# settings a kind reads, by the type they must have: a string "false" for ``london`` or
# ``enabled`` is true to Python (the source read as London's, a disabled one run), a string
# pattern is read letter by letter ("*" of "*.txt" selects every file), a float book id is cut
# to another book, and the rest ended the source's documents with a bare Python error
_FLAGS = ("enabled", "london", "ocr", "recursive")
_TEXT_LISTS = ("patterns", "exclude")
_COUNTS = ("gutenberg_id", "rows", "max_items")


def _check_settings(p: Path, e: dict[str, Any]) -> None:
    where = f"registry {p}: entry {e['id']!r}"
    for field in _FLAGS:
        if e.get(field) is not None and not isinstance(e[field], bool):
            raise RegistryError(f"{where}: {field} must be true or false, not {_shown(e[field])}")
    for field in _TEXT_LISTS:
        value = e.get(field)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) and v for v in value)):
            raise RegistryError(f"{where}: {field} must be a list of file name patterns such as ['*.txt'], "
                                f"not {_shown(value)}")
    if e.get("id_prefix") is not None and not isinstance(e["id_prefix"], str):
        raise RegistryError(f"{where}: id_prefix must be text, not {_shown(e['id_prefix'])}")
    for field in _COUNTS:
        value = e.get(field)
        if isinstance(value, str) and value.strip().isdecimal():
            value = int(value)
        if (value is not None or field == "gutenberg_id" and e["kind"] == "gutenberg") and \
                not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise RegistryError(f"{where}: {field} must be a whole number above 0, not {_shown(e.get(field))}")


def _check_url(p: Path, e: dict[str, Any], field: str, url: Any, relative: bool) -> None:
    """Only http(s) is fetched: a ``file:`` URL read the machine's own files (and stopped the
    rest of its source). Old Bailey and London Lives paths may be relative to their base_url."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url) if isinstance(url, str) else None
    except ValueError:
        parts = None
    if parts is not None and (parts.scheme.lower() in ("http", "https") and parts.netloc
                              or relative and not parts.scheme and not parts.netloc and url.strip()):
        return
    raise RegistryError(f"registry {p}: entry {e['id']!r}: {field} {_shown(url)} is not an http(s) URL; "
                        f"only http:// and https:// are fetched")


def select_sources(entries: list[dict[str, Any]], sources: Sequence[str] | None = None,
                   max_sources: int | None = None) -> list[dict[str, Any]]:
    """Entries named in ``sources`` (ids or kinds; named entries run even when disabled),
    else every enabled entry; then the first ``max_sources``."""
    if sources:
        wanted = set(sources)
        chosen = [e for e in entries if e["id"] in wanted or e["kind"] in wanted]
        unknown = wanted - {e["id"] for e in entries} - {e["kind"] for e in entries}
        if unknown:
            raise RegistryError(f"unknown source id or kind: {', '.join(sorted(unknown))}; "
                                f"see the ids in the registry file")
    else:
        chosen = [e for e in entries if e.get("enabled", True)]
    return chosen[:max_sources] if max_sources else chosen


def make_source(spec: dict[str, Any], base_urls: dict[str, str] | None = None) -> Source:
    cls = KINDS[spec["kind"]]
    return cls(spec, base_url=(base_urls or {}).get(spec["kind"]))


def materialise(doc: Document, max_bytes: int = MAX_RAW_BYTES) -> Document:
    """Load and parse ``doc``'s raw file into ``doc.text`` (or set ``doc.error``)."""
    if doc.error or doc.text is not None:
        return doc
    fmt = doc.extra.get("raw_format", "text")
    try:
        data = doc.extra.pop("raw_bytes", None)
        if data is None:
            path = Path(doc.extra["raw_path"])
            size = path.stat().st_size
            if size > max_bytes:
                raise SourceError("too_large", f"{size} bytes > limit {max_bytes}")
            data = path.read_bytes()
        if fmt in ("tei", "london_lives"):
            if not data:
                raise SourceError("empty", "the file has no bytes")
            if data[:2] == b"\x1f\x8b":
                # unpacked only: decoding it here (and writing it back as UTF-8) left the XML's own
                # declaration behind, so a gzipped UTF-16 file was xml_invalid and a Latin-1 one
                # declared ISO-8859-1 came out as mojibake; the XML reader decodes as declared
                data = gunzip(data, max_bytes)
                doc.repairs.append("gunzipped")
            if fmt == "tei":
                materialise_tei(doc, data)
            else:
                text, meta, reps = london_lives_to_text(data)
                doc.text = text
                doc.repairs.extend(reps)
                doc.add_date(LONDON_LIVES, meta.pop("year", None))
                doc.extra.update(meta)
        else:
            text, reps = decode_bytes(data, max_bytes)
            doc.repairs.extend(reps)
            doc.text = html_to_text(text) if fmt == "html" else text
    except SourceError as e:
        doc.error = e.reason
        doc.extra["error_detail"] = e.detail
    except OSError as e:
        doc.error = "unreadable"
        doc.extra["error_detail"] = str(e)
    except UnicodeDecodeError as e:
        if fmt not in ("tei", "london_lives"):
            raise
        # lxml's recovery keeps some damage as bytes that are no text (a reference to a surrogate
        # in UTF-16 XML), and reading that element raised: the document rejected, not the collection ended
        doc.error = "xml_invalid"
        doc.extra["error_detail"] = f"the recovered XML holds bytes that are no text ({e.reason})"
    return doc


__all__ = [
    "KINDS", "ArchiveOrgSource", "Document", "GutenbergSource", "HtmlSource", "HubDatasetSource", "LocalSource", "LondonLivesSource",
    "OldBaileySource", "RegistryError", "SampleMissing", "SampleSource", "Source", "SourceError", "decode_bytes", "gutenberg_urls", "html_to_text",
    "load_registry", "make_source", "select_sources", "materialise", "sample_dir", "sample_files", "read_text_file", "safe_id", "tei_to_text",
]
