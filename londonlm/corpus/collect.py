"""The corpus stage: registry entries, a local folder or the embedded sample -> downloads ->
documents -> cleaned, filtered, deduplicated texts + manifest + rejection log + report.

:func:`build_corpus` turns a script's arguments (embedded sample, local folder, registry
entries) into source entries; :func:`run_collection` is the one code path for all of them:
download, skip when current, stage shards (``londonlm.corpus.processing``), merge (``londonlm.corpus.shards``),
report (``londonlm.corpus.report``), and the sidecar last. What it writes is read through
``londonlm.corpus.manifest``.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..core import (SIDECAR, UsageError, flock_holder, hold, holder_pid, large_blocks_from_the_system, lock_folder,
                    nearest_existing, read_json, read_json_object, record_field, sidecar_current, user_path, write_sidecar)
from .cutoff import time_facts_of
from .manifest import (CORPUS_OUTPUTS, CORPUS_STAGE, REJECTIONS, SUMMARY_KEYS, TEXTS_FINGERPRINT, CorpusError,
                       collected_sources, corpus_inputs, read_jsonl, iter_manifest, summarize, texts_fingerprint,
                       texts_not_as_made)
from .ocr import OCR_DIR, OcrOptions, bounded_workers, collection_lexicon, period_corpus_id
from .processing import process_documents
from .shards import PLAN_FILE, NoDocuments, ShardKeep, merge_shards, prepare_shard, shard_dir
from .sources import Document, load_registry, make_source, select_sources


SAMPLE_SOURCE_ID = "first_folio"
LOCAL_SOURCE_ID = "local"
# kinds read straight from a folder on disk; every other kind reads files it downloaded
_LOCAL_KINDS = ("local", "sample")
_MAX_LOGGED_REJECTIONS = 20
# the libraries that shape the corpus, for the sidecar (only those already imported)
CORPUS_LIBRARIES = ("londonlm", "numpy", "datasketch", "ftfy", "trafilatura", "lxml")


class CollectionError(CorpusError):
    """The collection produced nothing usable, or shards disagree; the message says why."""


class CollectionBusy(CollectionError):
    """Another collection is writing to the same output folder now."""


@dataclass(frozen=True)
class CollectionOptions:
    """How the stage runs: built once (from the collector's flags, the pipeline's plan) and
    passed whole to :func:`build_corpus`, :func:`run_collection` or :func:`collect_from_registry`;
    checked when built."""

    offline: bool = False                    # download nothing; use files already downloaded
    workers: int = 1                         # download threads and cleaning processes
    year_range: Sequence[int] = (1500, 1900)
    min_chars: int = 200
    validation_percent: float = 5.0
    shard: int | None = None                 # run only shard K (merge later with merge_only)
    num_shards: int = 1
    merge_only: bool = False
    overwrite: bool = False
    progress: bool = False
    cutoff_year: int | None = None           # keep only documents dated up to this year (undated ones too go)
    base_urls: dict[str, str] | None = None  # kind -> host override (mirrors, test servers)
    ocr: OcrOptions = field(default_factory=OcrOptions)  # how OCR documents are repaired and filtered
    downloader: Any = None                   # a londonlm.corpus.download.Downloader (default: built here)
    download_options: dict[str, Any] | None = None
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        if self.num_shards < 1 or (self.shard is not None and not 0 <= int(self.shard) < self.num_shards):
            raise UsageError(f"--shard must be in [0, {self.num_shards - 1}] for --num_shards {self.num_shards}")
        if self.cutoff_year is not None and int(self.cutoff_year) < int(self.year_range[0]):
            raise UsageError(f"--cutoff_year {self.cutoff_year} is before the corpus period, which starts in "
                             f"{int(self.year_range[0])}: no document could be kept")

    @property
    def finishing(self) -> bool:
        """Whether this run writes the merged corpus (not one shard of several)."""
        return self.shard is None or self.merge_only or self.num_shards == 1

    def shards_to_stage(self) -> list[int]:
        if self.merge_only:
            return []
        return list(range(self.num_shards)) if self.shard is None else [int(self.shard)]

    def settings(self) -> dict[str, Any]:
        """What the outputs depend on besides the inputs (recorded in the sidecar). The cutoff
        is there only when set, so the sidecars of corpora without one stay current."""
        out = {"validation_percent": float(self.validation_percent), "min_chars": int(self.min_chars),
               "year_range": [int(y) for y in self.year_range]}
        if self.cutoff_year is not None:
            out["cutoff_year"] = int(self.cutoff_year)
        if self.ocr.settings():
            out["ocr"] = self.ocr.settings()
        return out


# ---------------------------------------------------------------- source entries
def sample_entry(limit_chars: int | None = None, source_id: str = SAMPLE_SOURCE_ID) -> dict[str, Any]:
    """Registry entry of the embedded offline sample (1623 First Folio)."""
    from .sources import SampleMissing, sample_dir

    try:
        sample_dir()
    except SampleMissing as e:
        raise CorpusError(str(e)) from e
    return {"id": source_id, "kind": "sample", "limit_chars": limit_chars, "title": "First Folio (1623)",
            "year": 1623, "license": "public-domain", "london": True}


def local_entry(source_dir: str | Path, default_year: int | None = None,
                source_id: str = LOCAL_SOURCE_ID, ocr: bool = False) -> dict[str, Any]:
    """Registry entry of a local folder of .txt (.xml/.html/.gz) files, checked to exist;
    ``ocr``: the user says its files are OCR (repaired, quality-filtered)."""
    from .sources import LocalSource
    from .sources.local import read_folder_manifest

    folder = user_path(source_dir).resolve()
    if not folder.is_dir():
        raise CorpusError(f"source folder {source_dir} does not exist; pass --source_dir with a "
                          f"folder of .txt files")
    entry = {"id": source_id, "kind": "local", "path": str(folder), "id_prefix": "local_",
             "license": "unknown (user supplied)", "london": True, "default_year": default_year}
    if ocr:
        entry["ocr"] = True
    read_folder_manifest(folder)  # a MANIFEST.tsv it cannot read stops here, named, not file by file
    if not LocalSource(entry).files():
        raise CorpusError(f"source folder {source_dir} holds no .txt files (nor .xml/.html/.gz); add some "
                          f"or omit --source_dir to use the embedded sample")
    return entry


def build_corpus(processed_dir: str | Path, metadata_dir: str | Path, options: CollectionOptions | None = None, *,
                 source_dir: str | Path | None = None, use_sample: bool | None = None,
                 sample_limit_chars: int | None = None, default_year: int | None = None,
                 entries: Sequence[dict[str, Any]] = (), downloads_dir: str | Path | None = None,
                 keep_other_sources: bool = False, source_dir_ocr: bool = False) -> dict:
    """Build (or skip, when current) the corpus from the embedded sample, a local folder and
    registry ``entries``; returns counts (documents, train/validation documents, words, chars,
    rejected by reason). ``use_sample`` defaults to True when neither ``source_dir`` nor
    ``entries`` is given. ``downloads_dir`` defaults to ``<processed_dir>/../downloads``.
    ``options``: how the stage runs (default: :class:`CollectionOptions`). ``keep_other_sources``: refuse to
    replace a corpus collected from other sources (the embedded sample's own corpus excepted).
    ``source_dir_ocr``: the local folder's files are OCR."""
    processed_dir = Path(processed_dir)
    if use_sample is None:
        use_sample = source_dir is None and not entries
    chosen: list[dict[str, Any]] = []
    if use_sample:
        chosen.append(sample_entry(sample_limit_chars))
    if source_dir is not None:
        _refuse_reading_own_outputs(processed_dir, source_dir)
        chosen.append(local_entry(source_dir, default_year, ocr=source_dir_ocr))
    taken = {e["id"] for e in chosen}
    for e in entries:
        if e["id"] in taken:
            raise CorpusError(f"source id {e['id']!r} is reserved for the built-in sample/local folder; "
                              f"rename it in the registry")
        chosen.append(dict(e))
    if not chosen:
        raise CorpusError("no sources: pass --sources, --source_dir or --sample")
    if keep_other_sources:
        _refuse_replacing(processed_dir, chosen)
    downloads = Path(downloads_dir) if downloads_dir is not None else processed_dir.parent / "downloads"
    options = options or CollectionOptions()
    stats = run_collection(chosen, downloads, processed_dir, metadata_dir, options)
    return stats.get("counts", {"shard": options.shard, "shards": stats.get("shards")})


def _refuse_reading_own_outputs(processed_dir: Path, source_dir: str | Path) -> None:
    """A corpus written inside the folder it reads would read its own texts back as new
    documents at every rerun (duplicates, and never current)."""
    folder = user_path(source_dir).resolve()
    if processed_dir.resolve().is_relative_to(folder):
        raise CorpusError(f"the corpus would be written to {processed_dir}, inside --source_dir {source_dir}, "
                          f"and read back as new texts: give a --root outside {source_dir}")
    _refuse_deleting_inputs(processed_dir, source_dir, "--source_dir")


def _refuse_deleting_inputs(processed_dir: Path, source_dir: str | Path, what: str) -> None:
    """The corpus folder is the collection's own (its texts/ keeps only what the new manifest
    lists, its shards are reset): files read from a folder inside it would be deleted."""
    if user_path(source_dir).resolve().is_relative_to(processed_dir.resolve()):
        raise CorpusError(f"{what} {source_dir} lies inside the corpus folder {processed_dir}, which the "
                          f"collection rewrites (its files there would be deleted): copy them elsewhere first, "
                          f"or give another --root")


def _refuse_replacing(processed_dir: Path, chosen: list[dict[str, Any]]) -> None:
    """A finished corpus collected from other sources than ``chosen`` is not rebuilt from them:
    it may have taken hours of downloads (the sample's own corpus is rebuilt freely)."""
    inputs, have = corpus_inputs(processed_dir) or {}, collected_sources(processed_dir)
    if inputs and inputs.get("sources") != _json_hash([dict(e) for e in chosen]) and have != [SAMPLE_SOURCE_ID]:
        asked = ", ".join(e.get("path") or e["id"] for e in chosen)
        raise CorpusError(f"{processed_dir} holds a corpus collected from {', '.join(have)}; building one from "
                          f"{asked} would replace it. Pass --overwrite to replace it, or --root to build elsewhere")


# ---------------------------------------------------------------- fingerprints
def _hash_files(files: Iterable[Path], root: Path) -> str:
    """One hash of every file's name and bytes. A file that cannot be read (no permission, gone
    since the listing, an I/O error) counts by the reason instead of its bytes: the stage goes
    on, and the document is rejected as ``unreadable`` with that reason, as for any other
    input it cannot use (``sources.materialise``); one stray unreadable file among thousands
    must not stop a collection. Once it can be read the hash changes, so the corpus is rebuilt
    with it."""
    h = hashlib.sha256()
    for p in sorted(files):
        h.update(os.fsencode(p.relative_to(root).as_posix()) + b"\0")  # (a name's bytes, UTF-8 or not)
        fh = hashlib.sha256()
        try:
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    fh.update(block)
        except OSError as e:
            fh = hashlib.sha256(f"unreadable: {errno.errorcode.get(e.errno, e.errno)}".encode())
        h.update(fh.digest())
    return h.hexdigest()


def source_fingerprint(src, downloads_dir: Path) -> str:
    """Hash of the raw bytes a source reads: its folder (local), the sample's files, or what it
    downloaded. A changed byte anywhere makes the corpus stale."""
    from .sources import sample_files
    from .sources.base import source_dir
    from .sources.local import FOLDER_MANIFEST

    if hasattr(src, "fingerprint"):  # a source that knows what it reads (a Hub dataset's revision)
        return src.fingerprint()
    if src.kind == "local":
        # with its MANIFEST.tsv: a title, year or London flag mended there changes the documents
        # (a year out of the period rejects one), and a corpus built before is no longer current
        files, table = src.files(), src.folder() / FOLDER_MANIFEST
        return _hash_files(files + [table] if table.is_file() and table not in files else files, src.folder())
    if src.kind == "sample":
        files = sample_files(src.spec.get("limit_chars"))
        return _hash_files(files, files[0].parent) if files else "empty"
    d = source_dir(downloads_dir, src.kind, src.id)
    if not d.is_dir():
        return "none"
    return _hash_files((p for p in d.rglob("*") if p.is_file() and not p.name.startswith(".")
                        and not p.name.endswith((".part", ".tmp", ".sha256"))), d)


def _json_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def summary_counts(merge: dict[str, Any], rows: Iterable[dict], cutoff_year: int | None = None) -> dict[str, Any]:
    """The corpus counts every caller gets (also stored in the sidecar), with its time facts
    (cutoff, first and last year, words by decade)."""
    s = summarize(rows)
    return {"documents": s["documents"], "train_documents": s["splits"].get("train", 0),
            "validation_documents": s["splits"].get("validation", 0), "chars": s["chars"], "words": s["words"],
            "rejected": dict(sorted(merge.get("rejections_by_reason", {}).items())),
            "duplicate_clusters": merge.get("duplicate_clusters", 0), "corpus_time": time_facts_of(s, cutoff_year)}


# ---------------------------------------------------------------- the stage
def run_collection(entries: Sequence[dict[str, Any]], downloads_dir: str | Path, processed_dir: str | Path,
                   metadata_dir: str | Path, options: CollectionOptions | None = None) -> dict[str, Any]:
    """The corpus stage, the one code path for every source (registry, local folder, sample).

    1. download (unless ``offline``; files already complete are skipped);
    2. skip when ``sidecar.json`` says the outputs are current for these inputs and settings;
    3. clean, filter and sign documents into shard(s) (resuming staged work of the same plan);
    4. merge: dedup, split, ``manifest.jsonl`` + ``texts/`` + ``rejections.jsonl``, report and
       ``corpus_stats.json`` in ``metadata_dir``, then the sidecar, last and atomically.

    ``shard=None`` runs every shard then merges; ``shard=K`` runs shard K only (merge later with
    ``merge_only=True``). ``options``: how the stage runs (:class:`CollectionOptions`). Returns stats
    with ``counts`` (documents, words, rejected by reason, ...). One collection at a time writes
    to one ``processed_dir`` (:func:`collection_lock`)."""
    o = options or CollectionOptions()
    if not entries:
        raise CollectionError("no sources selected; pass --sources, --source_dir or --sample")
    for e in entries:
        if e.get("kind") == "local" and e.get("path"):
            _refuse_deleting_inputs(Path(processed_dir), str(e["path"]), f"the folder of source {e['id']!r},")
    for what, folder in (("corpus", processed_dir), ("metadata", metadata_dir), ("downloads", downloads_dir)):
        _refuse_file_in_the_way(Path(folder), what)
    with collection_lock(Path(processed_dir), o.shard, o.num_shards):
        return _collect(entries, Path(downloads_dir), Path(processed_dir), Path(metadata_dir), o)


def _collect(entries: Sequence[dict[str, Any]], downloads_dir: Path, processed_dir: Path, metadata_dir: Path,
             o: CollectionOptions) -> dict[str, Any]:
    large_blocks_from_the_system()  # books pass through this process one by one: no heap creep
    t0 = time.time()
    srcs = [make_source(dict(e), o.base_urls) for e in entries]
    for s in srcs:
        s.progress = o.progress
    stats: dict[str, Any] = {"sources": len(srcs), "shards": {}, "downloads": {}, "skipped": False}
    remote = [s for s in srcs if not _in_place(s)]
    if remote and not o.offline and not o.merge_only:
        stats["downloads"] = _download(remote, downloads_dir, o)

    entries_hash = _json_hash([dict(e) for e in entries])
    local_inputs = {f"source:{s.id}": source_fingerprint(s, downloads_dir) for s in srcs if _in_place(s)}
    if o.ocr.period_corpus and any(s.all_ocr() for s in srcs):  # (its words repair the OCR; a lexicon
        local_inputs["period_corpus"] = period_corpus_id(o.ocr.period_corpus)  # rebuilt in place was "current")
    # the staging plan leaves downloads out, so shards run on machines with different
    # downloads still merge; a changed download is picked up with --overwrite
    plan = _json_hash({"sources": entries_hash, **local_inputs, "settings": o.settings()})
    inputs: dict[str, str] = {}
    if o.finishing:
        inputs = {"sources": entries_hash, **local_inputs,
                  **{f"source:{s.id}": source_fingerprint(s, downloads_dir) for s in remote}}
        if _outputs_current(processed_dir, inputs, o):
            stats.update(skipped=True, counts=record_field(read_json_object(processed_dir / SIDECAR), "counts", kind=dict) or {})
            return stats

    lexicon = None  # the period lexicon of the collection's OCR documents (None: it has none)
    if o.shards_to_stage():
        fingerprints = inputs or {f"source:{s.id}": source_fingerprint(s, downloads_dir) for s in srcs}
        lexicon = _period_lexicon(srcs, downloads_dir, processed_dir, _json_hash(fingerprints), o)
    processes = bounded_workers(o.workers)
    if o.shards_to_stage() and processes < o.workers:
        o.log(f"corpus: --workers {o.workers} is more than the {processes} CPUs this process may use: "
              f"cleaning with {processes} processes (more would only wait their turn)")
    for k in o.shards_to_stage():
        stats["shards"][k] = _stage_shard(srcs, downloads_dir, processed_dir, k, plan, o, lexicon, processes)
    if not o.finishing:
        o.log(f"corpus: shard {o.shard} of {o.num_shards} done ({stats['shards'][int(o.shard)]['accepted']} "
              f"accepted); merge with --merge --num_shards {o.num_shards} once every shard is done")
        return stats
    _check_plans(processed_dir, plan, o.num_shards)
    with changing_corpus(processed_dir) as alone:
        def before_writing() -> None:
            alone()
            (processed_dir / SIDECAR).unlink(missing_ok=True)

        try:  # a merge that keeps nothing raises before it writes: the corpus there stays whole, and current
            stats["merge"] = merge_shards(processed_dir, o.num_shards, o.validation_percent, require_documents=True,
                                          before_writing=before_writing)
        except NoDocuments as e:
            _log_rejections(e.rejections, sum(e.reasons.values()), "the shards' staged.jsonl", o)
            raise CollectionError(str(e)) from None
        return _finish(stats, entries, inputs, processed_dir, metadata_dir, o, t0)


def _refuse_file_in_the_way(folder: Path, what: str) -> None:
    """One line, before any work, when ``folder`` or a folder on its way is a file: making it
    raised FileExistsError (a traceback), after the downloads for the metadata folder."""
    p = nearest_existing(folder.absolute())
    if os.path.exists(p) and not p.is_dir():
        raise CollectionError(f"the {what} folder {folder} cannot be made: {p} is a file, not a folder; "
                              f"move it aside or give another --root")


LOCK_FILE = ".collection.lock"


@contextlib.contextmanager
def collection_lock(processed_dir: Path, shard: int | None, num_shards: int) -> Iterator[None]:
    """Hold ``processed_dir`` for one collection: two at once both exited 0 with the same book
    staged twice in the rejections. The runs of a Slurm array's shards share the folder (each
    takes a shared hold on it) but a shard is run once at a time, and a whole run or a merge
    holds the folder alone. The holds go with the process, however it ends (kill -9 included:
    its workers die with it). A folder this user may not write needs no hold: the collection
    either finds it current or fails at its first write, naming it."""
    names = [(LOCK_FILE, shard is not None)] + ([] if shard is None else [(_shard_lock(shard, num_shards), False)])
    holds = []
    try:
        for name, shared in names:
            try:
                h = hold(processed_dir / name, shared=shared)
            except OSError as e:
                if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise
                break
            if h is None:
                raise CollectionBusy(_busy_message(processed_dir, shard, None if shared or shard is None else num_shards))
            holds.append(h)
        yield
    finally:
        for h in reversed(holds):
            h.release()


@contextlib.contextmanager
def changing_corpus(processed_dir: Path) -> Iterator[Callable[[], None]]:
    """Yields ``alone()``, which takes the corpus folder's own ``flock`` exclusively, without
    waiting, for the rest of the block; called once the merge is decided, before it replaces
    anything a reader sees. The readers of a corpus hold it shared (:func:`.manifest.reading_corpus`:
    a tokenizer, a token cache, a cutoff view, an evaluation), so a re-collection no longer
    replaces texts under one of them, whose work was then lost at its end ("made again while it
    was read"): it is refused in one line before it writes, while the corpus is still whole and
    current. Taken only here, not for the staging: a collection that would only skip, and the
    shards of a Slurm array (they write only their own folders in ``shards/``), run beside readers.
    A folder that cannot be opened or locked (no ``flock``) is written as before."""
    fd: list[int] = []

    def alone() -> None:
        try:
            got = lock_folder(processed_dir)
        except OSError:
            return
        if got is None:
            raise CollectionBusy(f"{flock_holder(processed_dir)} is reading the corpus in {processed_dir} now (a "
                                 f"tokenizer, token cache, cutoff view or evaluation made from it); wait for it to "
                                 f"end, then run the same command again; the corpus there was not changed")
        fd.append(got)
    try:
        yield alone
    finally:
        for f in fd:
            os.close(f)


def _shard_lock(shard: int, num_shards: int) -> str:
    return f".collection-shard-{shard}-of-{num_shards}.lock"


def _busy_message(processed_dir: Path, shard: int | None, num_shards: int | None = None) -> str:
    """Who holds the folder (their PIDs, as their lock files say), and what the user can do."""
    if num_shards is not None:   # this shard is being collected
        pids = [holder_pid(processed_dir / _shard_lock(shard, num_shards))]
        what = f"shard {shard} of {num_shards} is being collected into {processed_dir}"
    else:                        # a whole run or a merge holds it, or (for those) some shard runs do
        pids = [holder_pid(processed_dir / LOCK_FILE)] + [holder_pid(p) for p in
                                                           sorted(processed_dir.glob(".collection-shard-*.lock"))]
        what = f"another collection is writing to {processed_dir}"
    pids = sorted({p for p in pids if p is not None})
    by = f" by process {', '.join(map(str, pids))}" if pids else ""
    stop = f"stop it (kill {' '.join(map(str, pids))}) or " if pids else ""
    return f"{what}{by}; wait for it to end, {stop}collect elsewhere (--root)"


def _in_place(src) -> bool:
    """A source read where it lies (a folder, the sample, a dataset streamed from the Hub):
    nothing to download, and its fingerprint is part of the staging plan."""
    return src.kind in _LOCAL_KINDS or getattr(src, "reads_in_place", False)


def _download(remote: list, downloads_dir: Path, o: CollectionOptions) -> dict[str, Any]:
    """Fetch every remote source (a broken one is reported, not fatal); returns the summary."""
    from .download import Downloader, DownloadResult, failure_summary

    keep = None if o.shard is None else ShardKeep(int(o.shard), o.num_shards)
    dl = o.downloader or Downloader(workers=o.workers, progress=o.progress, **(o.download_options or {}))

    def fetch(src):
        try:
            return src.fetch(dl, downloads_dir, keep)
        except Exception as e:  # noqa: BLE001 - a broken source must not stop the run
            return [DownloadResult(src.id, "", False, "failed", error=f"{type(e).__name__}: {e}")]

    results = []
    with ThreadPoolExecutor(max_workers=max(1, min(o.workers, len(remote)))) as pool:
        for res in pool.map(fetch, remote):
            results.extend(res)
    summary = failure_summary(results)
    o.log(f"corpus: {summary}")
    return {"summary": summary, "failed": [r.to_dict() for r in results if not r.ok],
            "ok": sum(r.ok for r in results)}


def _outputs_current(processed_dir: Path, inputs: dict[str, str], o: CollectionOptions) -> bool:
    """True when the sidecar vouches for these inputs and settings (and no --overwrite). Else
    the sidecar stays until the merge starts replacing what it vouches for: a rebuild refused
    or failed before then (shards of other settings, a full disk while staging) leaves the
    old corpus whole and current."""
    sidecar = processed_dir / SIDECAR
    current, why = sidecar_current(sidecar, inputs, o.settings())
    if current:  # (a text edited to its own size is not seen by the sidecar's count and bytes)
        why = texts_not_as_made(processed_dir)
        current = why is None
    if current and not o.overwrite:
        o.log(f"corpus: outputs are current ({processed_dir}); skipping (use --overwrite to rebuild)")
        return True
    if sidecar.exists():
        o.log(f"corpus: rebuilding ({'--overwrite' if o.overwrite else why})")
    return False


def _stage_shard(srcs: list, downloads_dir: Path, processed_dir: Path, k: int, plan: str,
                 o: CollectionOptions, lexicon: str | None, processes: int) -> dict[str, Any]:
    state = prepare_shard(processed_dir, k, o.num_shards, plan, fresh=o.overwrite)
    if o.num_shards > 1 or state.startswith("resumed"):
        o.log(f"corpus: shard {k} of {o.num_shards}: {state}")
    keep = ShardKeep(k, o.num_shards)

    def docs() -> Iterator[Document]:
        for src in srcs:
            try:
                yield from src.documents(downloads_dir, keep)
            except Exception as e:  # noqa: BLE001
                yield Document(id=f"{src.id}-source-error", source=src.id, source_kind=src.kind,
                               error="source_error", extra={"error_detail": f"{type(e).__name__}: {e}"})

    return process_documents(docs(), processed_dir, year_range=o.year_range, min_chars=o.min_chars,
                             workers=processes, shard=k, num_shards=o.num_shards, progress=o.progress,
                             cutoff_year=o.cutoff_year, ocr=o.ocr, ocr_lexicon=lexicon)


def _period_lexicon(srcs: list, downloads_dir: Path, processed_dir: Path, key: str, o: CollectionOptions) -> str | None:
    """The period lexicon OCR documents are repaired with (None when there are none)."""
    def docs() -> Iterator[Document]:
        for src in srcs:
            if src.all_ocr():   # no transcribed text to learn from, and no need to stream it twice
                continue
            try:
                yield from src.documents(downloads_dir)
            except Exception:  # noqa: BLE001 - the staging reports a broken source
                continue

    path = collection_lexicon(docs, processed_dir / OCR_DIR, key, o.ocr, o.log,
                              has_ocr=any(src.all_ocr() for src in srcs))
    return None if path is None else str(path)


def _check_plans(processed_dir: Path, plan: str, num_shards: int) -> None:
    for k in range(num_shards):
        marker = shard_dir(processed_dir, k, num_shards) / PLAN_FILE
        if marker.exists() and json.loads(marker.read_text(encoding="utf-8")).get("plan") != plan:
            raise CollectionError(f"shard {k} of {num_shards} was staged with other sources or settings; "
                                  f"re-run it with --shard {k} --num_shards {num_shards} --overwrite")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _log_rejections(rows: Iterable[dict], total: int | None, where_all: Any, o: CollectionOptions) -> None:
    """The first rejections, one line each, then how many more (``total``: all of them, when
    ``rows`` holds only the first)."""
    n_rejected = 0
    for n_rejected, r in enumerate(rows, 1):
        if n_rejected <= _MAX_LOGGED_REJECTIONS:
            where = r.get("relpath") or r.get("url") or r.get("source", "")
            line = f"rejected {r.get('id')} [{r.get('reason')}] {where} {r.get('detail', '')}".rstrip()
            # one line a rejection: a control character in a file's name (a newline) shown escaped
            o.log(_CONTROL.sub(lambda m: repr(m.group())[1:-1], line))
    n_rejected = max(n_rejected, total or 0)
    if n_rejected > _MAX_LOGGED_REJECTIONS:
        o.log(f"... and {n_rejected - _MAX_LOGGED_REJECTIONS} more rejections: see {where_all}")


def _finish(stats: dict[str, Any], entries: Sequence[dict[str, Any]], inputs: dict[str, str],
            processed_dir: Path, metadata_dir: Path, o: CollectionOptions, t0: float) -> dict[str, Any]:
    """Log the rejections, write the report and statistics, then the sidecar (last)."""
    from .report import CORPUS_STATS, format_summary, write_report

    counts = summary_counts(stats["merge"], iter_manifest(processed_dir, keys=SUMMARY_KEYS), o.cutoff_year)
    _log_rejections(read_jsonl(processed_dir / REJECTIONS), None, processed_dir / REJECTIONS, o)
    if not counts["documents"]:  # (the merge refuses to write a corpus of none: not reached)
        raise CollectionError(f"no usable documents: every input was empty, unreadable or rejected "
                              f"({counts['rejected'] or 'no input'}); see {processed_dir / REJECTIONS}")
    stats["seconds"] = counts["seconds"] = round(time.time() - t0, 2)
    stats["counts"] = counts
    registry_entries = [e for e in entries if e["kind"] not in _LOCAL_KINDS] or None
    report = write_report(processed_dir, metadata_dir, registry_entries=registry_entries,
                          extra={"collection": dict(stats), "cutoff_year": o.cutoff_year})
    stats["report"] = str(report)
    write_sidecar(processed_dir / SIDECAR, CORPUS_STAGE, inputs, o.settings(), counts, libraries=CORPUS_LIBRARIES,
                  outputs=CORPUS_OUTPUTS, extra={TEXTS_FINGERPRINT: texts_fingerprint(processed_dir)})  # last
    o.log(format_summary(read_json(Path(metadata_dir) / CORPUS_STATS)))
    o.log(f"corpus: {counts['documents']} documents ({counts['train_documents']} train, "
          f"{counts['validation_documents']} validation), {counts['words']:,} words, {counts['chars']:,} chars, "
          f"{sum(counts['rejected'].values())} rejected, {stats['seconds']:.1f}s -> {processed_dir}")
    return stats


def collect_from_registry(registry_path: str | Path, downloads_dir: str | Path, processed_dir: str | Path,
                          metadata_dir: str | Path, options: CollectionOptions | None = None, *,
                          sources: Sequence[str] | None = None, max_sources: int | None = None) -> dict[str, Any]:
    """``run_collection`` for the registry file's sources (see ``select_sources``)."""
    entries = select_sources(load_registry(registry_path), sources, max_sources)
    return run_collection(entries, downloads_dir, processed_dir, metadata_dir, options)


__all__ = ["CollectionBusy", "CollectionError", "CollectionOptions", "build_corpus", "collect_from_registry", "local_entry",
           "collection_lock", "run_collection", "sample_entry", "select_sources", "source_fingerprint", "summary_counts"]
