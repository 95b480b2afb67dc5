"""The corpus artifact as the later stages read it: ``manifest.jsonl``, the train/validation
split rule, the one statistics summary and :func:`place_texts`, which fills a corpus's ``texts/``.
The collection (``londonlm.corpus.collect``) writes it.

Layout under ``processed_dir``::

    texts/<doc_id>.txt     cleaned UTF-8 text, one file per document
    manifest.jsonl         one JSON object per document (id, path, split, year, title, source, ...)
    rejections.jsonl       one JSON object per rejected input, with its reason code
    duplicates.json        the near-duplicate clusters found by the merge
    shards/                staged work of each shard (resumable)
    sidecar.json           written last: inputs' hashes, settings, counts

The split is a pure function of the document id, so it is stable across re-runs, machines and
shards. :func:`summarize` is the corpus statistics every consumer uses: ``corpus_stats.json``,
the report, the sidecar counts and the Hub cards.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from ..core import (SIDECAR, LondonLMError, flock_holder, link_or_copy, lock_folder, read_json_object, read_unchanged, record_field,
                    require_input, sha256_file, sidecar_intact, write_json_atomic)
from .dating import row_year

MANIFEST = "manifest.jsonl"
REJECTIONS = "rejections.jsonl"
DUPLICATES = "duplicates.json"
TEXTS = "texts"
# what a corpus folder's sidecar vouches for (checked, cheaply, before a rerun skips)
CORPUS_OUTPUTS = (MANIFEST, REJECTIONS, TEXTS)
COLLECT_CMD = "python 02_data_collection/historical_data_collector.py"
# the stages whose sidecar vouches for a corpus folder: a collection, and a cutoff view of one
CORPUS_STAGE, CUTOFF_STAGE = "corpus", "corpus_cutoff"
CUTOFF_CMD = "python 10_scripts/run_pipeline.py --cutoff_year"
# the sidecar's key for its texts' fingerprint (:func:`texts_fingerprint`), and the file where a
# reader that found the texts as made under another fingerprint (a copy) remembers it
TEXTS_FINGERPRINT, TEXTS_CHECKED = "texts_fingerprint", "texts_checked.json"
SPLITS = ("train", "validation")


class CorpusError(LondonLMError, RuntimeError):
    """A corpus problem the user can fix; the message says how."""


# ---------------------------------------------------------------- the split rule
def _id_hash(doc_id: str) -> str:
    return hashlib.sha256(doc_id.encode("utf-8")).hexdigest()


def assign_split(doc_id: str, validation_percent: float) -> str:
    """Deterministic split from a hash of the id (independent of order and sharding)."""
    bucket = int(_id_hash(doc_id)[:8], 16) % 10000
    return "validation" if bucket < validation_percent * 100 else "train"


def ensure_both_splits(rows: list[dict[str, Any]], validation_percent: float) -> None:
    """With few documents the hash split can leave a split empty; then the document whose id
    hash is closest to the boundary moves over (in place), so both splits exist whatever the order."""
    move = split_to_move(((r["id"], r["split"]) for r in rows), validation_percent)
    if move is not None:
        next(r for r in rows if r["id"] == move[0])["split"] = move[1]


def split_to_move(splits: Iterable[tuple[str, str]], validation_percent: float) -> tuple[str, str] | None:
    """(id, its new split) of the one document ``ensure_both_splits`` moves, or None; one pass
    over (id, split) pairs, so a corpus of any size is never held to decide it."""
    n, seen, lowest, highest = 0, set(), None, None
    for doc_id, split in splits:
        n += 1
        seen.add(split)
        h = _id_hash(doc_id)
        if lowest is None or h < lowest[0]:
            lowest = (h, doc_id)
        if highest is None or h > highest[0]:
            highest = (h, doc_id)
    if n < 2 or validation_percent <= 0 or seen == set(SPLITS):
        return None
    return (lowest[1], "validation") if "validation" not in seen else (highest[1], "train")


# ---------------------------------------------------------------- reading
def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file the collection writes; a torn last line (crash mid-write) is ignored,
    as is any line that is no JSON object (not UTF-8 text, damaged since), rather than a
    traceback for the whole collection."""
    if not path.exists():
        return
    with open(path, "rb") as f:
        for raw in f:
            try:
                row = json.loads(raw.decode("utf-8")) if raw.strip() else None
            except (ValueError, RecursionError):  # (UnicodeDecodeError is a ValueError)
                continue
            if isinstance(row, dict):
                yield row


def read_manifest(processed_dir: str | Path, keys: Iterable[str] | None = None,
                  require: Iterable[str] = ()) -> list[dict]:
    """Every manifest row (only ``keys`` of each, when given: a reader of a large corpus that
    needs a few fields keeps a few); a missing manifest names the command that makes it, a bad
    line (:func:`row_problem`; one without a field of ``require``) names itself and the rebuild
    command."""
    return list(iter_manifest(processed_dir, keys, require))


def iter_manifest(processed_dir: str | Path, keys: Iterable[str] | None = None,
                  require: Iterable[str] = ()) -> Iterator[dict]:
    """``read_manifest``'s rows one at a time, for a reader that needs each row once (the
    statistics of a corpus of any size)."""
    path = require_input(Path(processed_dir) / MANIFEST, COLLECT_CMD, "corpus manifest")
    keep = None if keys is None else tuple(keys)
    require = tuple(require)
    with open(path, "rb") as f:  # decoded line by line: a line that is not UTF-8 is named
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _bad_row(path, n, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
            if line.strip():
                try:
                    row = json.loads(line)
                except (json.JSONDecodeError, RecursionError) as e:  # (nested past the parser's depth)
                    raise _bad_row(path, n, f"bad JSON ({e})") from None
                problem = row_problem(row, require) or _lone_surrogate(raw, row)
                if problem:
                    raise _bad_row(path, n, problem)
                yield row if keep is None else {k: row[k] for k in keep if k in row}


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # \ud800-\udfff: half of a pair, or alone


def _lone_surrogate(raw: bytes, row: dict) -> str | None:
    """Why a row holds a string that is no text, or None. JSON may escape half of a UTF-16 pair
    alone (\\ud800), which no file name, print or UTF-8 encoding takes: such an id, path or
    source ended every later stage in a UnicodeEncodeError traceback. The collection never
    writes one (its rows are UTF-8), so only a line with such an escape is checked, whole."""
    if not _SURROGATE_ESCAPE.search(raw):
        return None
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        return f"a lone surrogate ({e.object[e.start]!r}) in this row: text no file or print can hold"
    return None


def _bad_row(path: Path, n: int, problem: str) -> CorpusError:
    return CorpusError(f"{path}:{n}: {problem}; rebuild with `{COLLECT_CMD} --overwrite`")


def row_problem(row: Any, require: tuple[str, ...] = ()) -> str | None:
    """What makes a manifest row unusable, or None. Every reader indexes ``id``, ``path`` and
    ``split`` and adds up ``chars`` and ``year``: a row that would fail there (a hand edit, a
    foreign file) is refused where it is read, with its line. A few type checks a row (``type
    is``, not isinstance: a bool is no count), cheap next to the JSON parse, so a large
    manifest still streams at its speed. ``require``: the further fields a reader needs (older
    or hand-made manifests may lack ``chars``)."""
    if type(row) is not dict:
        return f"a JSON {type(row).__name__} where a document's object belongs"
    for key in ("id", "path"):
        if type(row.get(key)) is not str or not row[key]:
            return f"no {key!r} (a non-empty string) in this row"
    if row.get("split") not in SPLITS:
        return ("no 'split' in this row" if "split" not in row
                else f"'split' is {row['split']!r}, not one of {', '.join(SPLITS)}")
    rel = row["path"]
    # a text outside the corpus folder would be read (or, by the collection, removed) as its own
    if rel[0] == "/" or (".." in rel and ".." in rel.split("/")):
        return f"'path' {rel!r} leads outside the corpus folder"
    if "\x00" in rel:  # (no file name holds one: opening it raised ValueError, a traceback)
        return f"'path' {rel!r} holds a NUL character"
    chars = row.get("chars", 0)
    if type(chars) is not int or chars < 0:
        return f"'chars' is {chars!r}, not a count"
    year = row.get("year")
    if year is not None and type(year) is not int:
        return f"'year' is {year!r}, not a year"
    missing = next((k for k in require if k not in row), None) if require else None
    return None if missing is None else f"no {missing!r} in this row"


def read_rejections(processed_dir: str | Path, keys: Iterable[str] | None = None) -> list[dict]:
    return list(iter_rejections(processed_dir, keys))


def iter_rejections(processed_dir: str | Path, keys: Iterable[str] | None = None) -> Iterator[dict]:
    keep = None if keys is None else tuple(keys)
    for r in read_jsonl(Path(processed_dir) / REJECTIONS):
        yield r if keep is None else {k: r[k] for k in keep if k in r}


def corpus_inputs(processed_dir: str | Path) -> dict | None:
    """What a finished corpus was built from (its sidecar's inputs: the sources' hash and each
    ``source:<id>``'s fingerprint), or None when the folder holds no finished corpus."""
    side = Path(processed_dir) / SIDECAR
    return record_field(read_json_object(side), "inputs", kind=dict) or {} if side.is_file() else None


def collected_sources(processed_dir: str | Path) -> list[str] | None:
    """The ids of the sources a finished corpus was collected from, or None when there is none."""
    inputs = corpus_inputs(processed_dir)
    return None if inputs is None else sorted(k.split(":", 1)[1] for k in inputs if k.startswith("source:"))


def unfinished_corpus(processed_dir: str | Path) -> str | None:
    """Why the corpus in ``processed_dir`` is not one its stage finished, or None. Its sidecar is
    written last and removed before a rebuild writes anything, so a folder without one holds a
    collection (or a --merge) stopped part-way: the old manifest over some new texts, which the
    manifest's hash, all a later stage's currency looks at, cannot show. A sidecar whose recorded
    outputs no longer match (:func:`~londonlm.core.sidecar_intact`) vouches for another manifest
    or other texts than those there now."""
    side = Path(processed_dir) / SIDECAR
    if not side.exists() and not side.is_symlink():
        return (f"it has no {SIDECAR}, which its collection writes last: a collection or --merge stopped "
                f"before it finished (or a corpus made by hand, or by a version before sidecars)")
    record = read_json_object(side)
    inputs, settings = record_field(record, "inputs", kind=dict), record_field(record, "settings", kind=dict)
    if record.get("stage") not in (CORPUS_STAGE, CUTOFF_STAGE) or inputs is None or settings is None:
        return f"its {SIDECAR} is not a corpus's record (damaged, or another stage's)"
    intact, why = sidecar_intact(side)
    if not intact:
        return f"its {SIDECAR} does not vouch for what is there ({why})"
    return texts_not_as_made(processed_dir, record)


# ---------------------------------------------------------------- the texts as they were made
# A sidecar vouches for texts/ by its file count and bytes: a text edited by hand to the same
# size was read as the corpus's own by every later stage (the tokenizer "current"). Hashing
# every text at every check is not cheap at scale (many GB), so the sidecar also records a
# fingerprint of each text's path, size and mtime (make's and rsync's quick check; not the
# ctime, which every hard link a cutoff view makes to the texts changes: each view made would
# send its parent's readers through a hash pass). Only when that differs (an edit, a `cp -r`
# that gave the copies new mtimes) are the texts hashed against the manifest's
# sha256: a match is a copy, current, and its fingerprint is remembered beside the sidecar
# (TEXTS_CHECKED) so the next check is fast again; a mismatch names the text.
def texts_fingerprint(processed_dir: str | Path) -> str:
    """sha256 over every file under ``texts/``: its path, size and mtime (ns)."""
    folder = Path(processed_dir) / TEXTS
    entries = []
    for root, _dirs, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except OSError:  # a dangling link: a file of no bytes, as the sidecar counts it
                entries.append(f"{os.path.relpath(path, folder)}\0-")
                continue
            entries.append(f"{os.path.relpath(path, folder)}\0{st.st_size}\0{st.st_mtime_ns}")
    entries.sort()
    return hashlib.sha256("\n".join(entries).encode("utf-8", "surrogateescape")).hexdigest()


def texts_not_as_made(processed_dir: str | Path, record: Mapping[str, Any] | None = None) -> str | None:
    """The first text under ``processed_dir`` that is not the one its manifest row's ``sha256``
    names, in words, or None. ``record``: the corpus's sidecar, when read already. A sidecar
    written before fingerprints vouches by count and bytes, as it did."""
    processed_dir = Path(processed_dir)
    record = read_json_object(processed_dir / SIDECAR) if record is None else record
    recorded = record.get(TEXTS_FINGERPRINT)
    if not isinstance(recorded, str):
        return None
    now = texts_fingerprint(processed_dir)
    checked = processed_dir / TEXTS_CHECKED
    key = {"sidecar_sha256": sha256_file(processed_dir / SIDECAR), TEXTS_FINGERPRINT: now}
    if now == recorded or (checked.is_file() and read_json_object(checked) == key):
        return None
    for row in iter_manifest(processed_dir, keys=("path", "sha256")):
        made = row.get("sha256")
        try:
            same = not isinstance(made, str) or sha256_file(processed_dir / row["path"]) == made
        except OSError as e:
            return f"{row['path']} cannot be read ({e.strerror or e})"
        if not same:
            return f"{row['path']} is not the text it was made as (its sha256 is not its manifest row's: edited since)"
    try:  # every text as made (a copy): remembered, so the next check is fast again
        write_json_atomic(checked, key)
    except OSError:  # a read-only copy: hashed again at the next check
        pass
    return None


def require_finished_corpus(processed_dir: str | Path) -> None:
    """A :class:`CorpusError` naming the command that rebuilds the corpus when
    :func:`unfinished_corpus` finds it unfinished; a missing manifest names the collection."""
    processed_dir = Path(processed_dir)
    require_input(processed_dir / MANIFEST, COLLECT_CMD, "corpus manifest")
    why = unfinished_corpus(processed_dir)
    if why is None:
        return
    record = read_json_object(processed_dir / SIDECAR)
    if record.get("stage") == CUTOFF_STAGE:  # a view is made again by its own stage (its currency sees why)
        year = record_field(record, "settings", "cutoff_year", kind=int)
        fix = f"make the view again with `{CUTOFF_CMD} {year if year is not None else '<year>'}`"
    else:  # (with --merge, --overwrite merges the staged shards again: no shard is restaged)
        fix = (f"collect it again with `{COLLECT_CMD} --overwrite` and the options it was collected with "
               f"(a stopped --merge: with --merge)")
    raise CorpusError(f"the corpus in {processed_dir} is unfinished or changed since it was made: {why}; "
                      f"nothing was read from it; {fix}")


# ---------------------------------------------------------------- reading while another makes
# A stage that reads a corpus for minutes (a tokenizer, a token cache, a cutoff view of it) read
# the manifest first and the texts after: a view remade meanwhile from a corpus collected again
# (a second family, a pipeline) pruned or replaced texts under it, and the reader vouched for a
# mixture of two corpora under the first manifest's hash, exit 0. A view's maker takes the
# folder's flock exclusively (:func:`.cutoff.cutoff_view`), and so does the collection once its
# merge is decided (:func:`.collect.changing_corpus`), so a reader holds it shared: readers never
# block each other, and a maker finds the corpus busy rather than changing it. Where no flock can
# be taken, the reader still sees a corpus made again by its sidecar, which every build removes
# first and writes last.
def _sidecar_stamp(processed_dir: Path) -> tuple | None:
    try:
        st = os.stat(processed_dir / SIDECAR)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


@contextlib.contextmanager
def reading_corpus(processed_dir: str | Path) -> Iterator[Callable[[], None]]:
    """A shared ``flock`` on the corpus folder while a stage reads it; yields ``unchanged()``, for
    the reader to call before it vouches for what it read: a :class:`CorpusError` naming the rerun
    when the corpus was made again since reading began. An error raised inside because it changed
    (a text pruned under it) is named as that change. A folder not there yields at once (the
    reader's own checks name the command that makes it), and so does one that cannot be opened or
    locked (no read permission, a file system without ``flock``): it is read as before."""
    processed_dir = Path(processed_dir)
    try:
        fd = lock_folder(processed_dir, shared=True)
    except OSError:
        fd = -1
    if fd == -1:
        yield lambda: None
        return
    if fd is None:
        raise CorpusError(f"{flock_holder(processed_dir)} is making the corpus {processed_dir} now; wait for it "
                          f"to end, then run again; nothing was read from it")
    made_again = lambda: CorpusError(f"the corpus in {processed_dir} was made again while it was read (another "
                                     f"process collected it or remade the view): what was read is of two corpora, "
                                     f"so nothing made from it was kept; run the same command again")
    try:
        with read_unchanged(lambda: _sidecar_stamp(processed_dir), made_again) as unchanged:
            yield unchanged
    finally:
        os.close(fd)


def manifest_sha256(processed_dir: str | Path) -> str:
    return sha256_file(require_input(Path(processed_dir) / MANIFEST, COLLECT_CMD, "corpus manifest"))


def iter_split_texts(processed_dir: str | Path, split: str,
                     rows: list[dict] | None = None) -> Iterator[tuple[dict, str]]:
    """(manifest row, text) for every document of one split, in manifest order."""
    processed_dir = Path(processed_dir)
    for row in rows if rows is not None else read_manifest(processed_dir):
        if row["split"] == split:
            yield row, document_text(processed_dir, row)


def read_split_texts(processed_dir: str | Path, split: str) -> list[tuple[dict, str]]:
    """Every (manifest row, text) of one split, read whole under :func:`reading_corpus`: a reader
    that holds the texts in memory (an evaluation's validation split) scores one corpus, not the
    old manifest's texts mixed with a new collection's. Held only while reading: the work after
    it, from memory, does not keep a collection waiting."""
    with reading_corpus(processed_dir) as unchanged:
        docs = list(iter_split_texts(processed_dir, split))
        unchanged()
    return docs


def missing_text(processed_dir: str | Path, row: Mapping[str, Any]) -> CorpusError:
    """The error of a text the manifest lists that is gone (the folder was pruned or half copied)."""
    return CorpusError(f"text file missing: {Path(processed_dir) / row['path']} is listed in "
                       f"{Path(processed_dir) / MANIFEST} but gone; rebuild the corpus with `{COLLECT_CMD} --overwrite`")


def text_sizes(processed_dir: str | Path, rows: list[dict]) -> list[int]:
    """Each row's text size in bytes (a progress bar's total), taken before any work: a text
    the manifest lists that is gone is one line naming it and the rebuild, not a traceback."""
    sizes = []
    for r in rows:
        try:
            sizes.append((Path(processed_dir) / r["path"]).stat().st_size)
        except FileNotFoundError:
            raise missing_text(processed_dir, r) from None
    return sizes


def split_sizes(processed_dir: str | Path) -> dict[str, tuple[int, int]]:
    """(bytes of text, documents) of each split the manifest lists, from the files' sizes
    (:func:`text_sizes`: a text that is gone is a :class:`CorpusError` naming it)."""
    rows = read_manifest(processed_dir, keys=("path", "split"))
    out: dict[str, tuple[int, int]] = {}
    for row, size in zip(rows, text_sizes(processed_dir, rows)):
        total, docs = out.get(row["split"], (0, 0))
        out[row["split"]] = (total + size, docs + 1)
    return out


def document_text(processed_dir: str | Path, row: Mapping[str, Any]) -> str:
    """The text of a manifest row, read whole; a missing one names itself and the rebuild (the
    corpus folder was pruned or half copied: its manifest no longer describes it)."""
    path = Path(processed_dir) / row["path"]
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise missing_text(processed_dir, row) from None
    except UnicodeDecodeError as e:  # the collection writes UTF-8: another file took its place
        raise CorpusError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); rebuild the corpus "
                          f"with `{COLLECT_CMD} --overwrite`") from None


# ---------------------------------------------------------------- writing
def place_texts(out_dir: Path, texts: Mapping[str, Path] | Iterable[tuple[str, Path]],
                kept: Callable[[str], bool] | None = None, prune: bool = True) -> None:
    """Hard-link (else copy) each text to its manifest ``path`` under ``out_dir`` (``texts``
    maps ``"texts/<id>.txt"`` to the source file), then remove the texts an earlier build left
    there that are no longer kept: the folder must hold only what its new manifest lists.
    ``kept(rel)`` says whether a path is one of ``texts`` (a caller with a corpus too large to
    hold its paths in memory asks its own index); without it, the paths placed are remembered.
    ``prune=False`` leaves the stale texts for :func:`prune_texts` (with ``kept``), called once the
    new manifest is in place: until then the old manifest's texts are all still there."""
    placed: set[str] = set()
    for rel, src in (texts.items() if isinstance(texts, Mapping) else texts):
        link_or_copy(src, out_dir / rel)
        if kept is None:
            placed.add(os.path.normpath(rel))
    (out_dir / TEXTS).mkdir(parents=True, exist_ok=True)  # an empty corpus still has its texts folder
    if prune:
        prune_texts(out_dir, kept if kept is not None else (lambda rel: os.path.normpath(rel) in placed))


def prune_texts(out_dir: Path, kept: Callable[[str], bool]) -> None:
    """Remove the texts under ``out_dir/texts`` whose manifest path ``kept(rel)`` denies."""
    for p in _text_files(out_dir / TEXTS):
        if not kept(p.relative_to(out_dir).as_posix()):
            p.unlink()


def _text_files(folder: Path) -> Iterator[Path]:
    """The ``.txt`` files under ``folder``, one at a time (``Path.rglob`` lists a folder's
    entries first: a corpus's worth of them)."""
    subfolders = []
    with os.scandir(folder) as entries:
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                subfolders.append(e.path)
            elif e.name.endswith(".txt"):
                yield Path(e.path)
    for sub in subfolders:
        yield from _text_files(Path(sub))


# ---------------------------------------------------------------- statistics
def jsonl_text(rows: Iterable[dict]) -> str:
    """Rows as JSON Lines, keys sorted (what every corpus file of rows holds)."""
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)


def _span(years: list[int]) -> list[int | None]:
    return [min(years, default=None), max(years, default=None)]


def year_rule_key(row: dict) -> str:
    """The rule that dated a row; ``"undated"`` without a year, ``"unrecorded"`` for a row of a
    manifest written before the collection recorded its date evidence."""
    return str(row.get("year_rule") or ("undated" if row_year(row) is None else "unrecorded"))


def decade_key(row: dict) -> str:
    """``"1670"`` for a row of the 1670s, ``"undated"`` when it has no decade."""
    return str(row["decade"]) if row.get("decade") is not None else "undated"


# the fields of a row that summarize reads (of a rejection: its reason): a reader of a large
# corpus's statistics keeps these, a few hundred bytes a row where the whole row is a few KiB
SUMMARY_KEYS = ("source", "source_kind", "license", "year", "chars", "words", "decade", "london", "split",
                "year_rule")


def summarize(rows: Iterable[dict], rejections: Iterable[dict] = (),
              registry_entries: Iterable[dict] | None = None) -> dict[str, Any]:
    """The corpus statistics: totals, splits, years, and documents/chars/words per source (with
    its kind, licences and years), per source kind and per decade; documents by the rule that
    dated them; rejections by reason. One pass over each: the rows may be a stream of a corpus
    too large to hold."""
    count = lambda: {"documents": 0, "chars": 0, "words": 0}  # noqa: E731
    total = {**count(), "london_documents": 0}
    by_source: dict[str, dict] = {}
    by_kind: dict[str, dict] = defaultdict(count)
    by_decade: dict[str, dict] = defaultdict(count)
    source_years: dict[str, list[int]] = defaultdict(list)   # each source's [first, last] year
    splits, rules = Counter(), Counter()
    for r in rows:
        name = str(r.get("source", "?"))
        src = by_source.setdefault(name, {"kind": r.get("source_kind", "?"), **count(), "licenses": set()})
        src["licenses"].add(str(r.get("license") or "unknown"))
        year = row_year(r)
        if year is not None:
            span = source_years[name]
            source_years[name] = [min(span[0], year), max(span[1], year)] if span else [year, year]
        for agg in (total, src, by_kind[r.get("source_kind", "?")], by_decade[decade_key(r)]):
            agg["documents"] += 1
            agg["chars"] += int(r.get("chars") or 0)
            agg["words"] += int(r.get("words") or 0)
        total["london_documents"] += bool(r.get("london"))
        splits[r.get("split", "?")] += 1
        rules[year_rule_key(r)] += 1
    for name, src in by_source.items():
        src.update(licenses=sorted(src["licenses"]), years=_span(source_years[name]))
    reasons = Counter(r.get("reason", "?") for r in rejections)
    stats: dict[str, Any] = {
        **total,
        "splits": dict(sorted(splits.items())),
        "years": _span([y for span in source_years.values() for y in span]),
        "by_source": dict(sorted(by_source.items())),
        "by_source_kind": dict(sorted(by_kind.items())),
        "by_decade": dict(sorted(by_decade.items())),
        "by_year_rule": dict(sorted(rules.items())),
        "rejected": sum(reasons.values()),
        "rejections_by_reason": dict(sorted(reasons.items())),
    }
    if registry_entries is not None:
        stats["registry_sources_by_kind"] = dict(sorted(Counter(e["kind"] for e in registry_entries).items()))
    return stats
