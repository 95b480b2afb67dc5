"""The race's data, prepared once on a CPU: a part of a source folder chosen by a fixed rule,
split three ways, the project's tokenizer trained on its training part, our token cache, and
copies of the two reference scripts. One folder holds it all, so that it can travel to a GPU
machine (which gets the working tree and the carried ignored paths, 64 MiB in all, and not
``../shared``); ``race_data.json`` in it says what it holds.

The three parts: the held-out files, whole files chosen by a hash of their names (up to a tenth
of the bytes, at least one file), are the text both recipes are scored on, and nothing of them is
trained or evaluated on; the rest is built into the project's corpus, whose own split (by a
hash of each document's id) gives the training documents (both recipes train on them) and the
validation documents (ours evaluates on them while it trains; a run that keeps its best
checkpoint chooses it by them, never by the scored text)."""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

RECORD = "race_data.json"
FORMAT = 2  # 2: the scored text is whole files apart from the corpus (1 scored its validation split)
SOURCE_SUFFIXES = (".txt", ".xml")
VALIDATION_PERCENT = 10.0  # the corpus stage's rule; with few documents it still holds one out
HELDOUT_SHARE = 0.1  # of the chosen files' bytes: scored, never trained or evaluated on
HELDOUT = "heldout"  # the held-out files' own corpus (its texts), beside processed/
REFERENCE_SCRIPTS = ("baseline_clm.py", "bpb.py")


class RaceDataError(Exception):
    """The race's data folder cannot be made or used (the message says why)."""


@dataclass(frozen=True)
class RaceData:
    """A prepared folder's paths and record."""

    dir: Path
    record: dict

    @property
    def processed(self) -> Path:
        return self.dir / "processed"

    @property
    def tokenizer(self) -> Path:
        return self.dir / "tokenizer"

    @property
    def cache(self) -> Path:
        return self.dir / "cache"

    def script(self, name: str) -> Path:
        return self.dir / "bench" / name

    def files(self, split: str) -> list[Path]:
        """The documents of ``split`` ("train", "validation" or "heldout"), as text files."""
        root = self.dir / HELDOUT if split == "heldout" else self.processed
        return [root / d["path"] for d in self.record[split]]


def name_rank(name: str) -> str:
    """The fixed order sources are taken in: a hash of the file name (not the alphabet, which
    would take one author's books first)."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def choose_sources(source_dir: Path, max_bytes: int) -> list[Path]:
    """Whole files of ``source_dir`` (its top level, .txt and .xml, none starting with ``_`` or
    ``.``) in :func:`name_rank` order while their total stays within ``max_bytes`` (0: all);
    at least three: one held out, two for the corpus's training and validation parts."""
    if not Path(source_dir).is_dir():
        raise RaceDataError(f"--source_dir {source_dir} is not a folder")
    files = sorted((p for p in Path(source_dir).iterdir() if p.is_file() and p.suffix in SOURCE_SUFFIXES
                    and not p.name.startswith(("_", "."))), key=lambda p: name_rank(p.name))
    chosen, total = [], 0
    for p in files:
        size = p.stat().st_size
        if max_bytes and total + size > max_bytes and len(chosen) >= 3:
            continue
        chosen.append(p)
        total += size
    if len(chosen) < 3:
        raise RaceDataError(f"{source_dir} has {len(chosen)} text file(s) (.txt/.xml); the race needs "
                            f"at least three: one held out, two to train and validate on")
    return chosen


def split_heldout(sources: list[Path]) -> tuple[list[Path], list[Path]]:
    """(corpus files, held-out files): whole files in the order of a hash of their names (another
    hash than :func:`name_rank`'s), each taken while the held-out bytes stay within
    ``HELDOUT_SHARE`` of all (a larger one is passed over: the text trained on is scarce, and
    the race scores only the first part of each held-out file); at least one file, and never
    more than leaves two for the corpus."""
    total = sum(p.stat().st_size for p in sources)
    ranked = sorted(sources, key=lambda p: name_rank("heldout:" + p.name))
    held, size = [], 0
    for p in ranked:
        if len(sources) - len(held) <= 2:
            break
        if size + p.stat().st_size <= HELDOUT_SHARE * total:
            held.append(p)
            size += p.stat().st_size
    held = held or ranked[:1]
    return [p for p in sources if p not in held], held


def wanted(preset, sources: list[Path]) -> dict:
    """What a prepared folder must have been made from to be reused."""
    return {"format": FORMAT, "preset": preset.name, "vocab_size": preset.vocab_size,
            "context_length": preset.context_length, "validation_percent": VALIDATION_PERCENT,
            "heldout_share": HELDOUT_SHARE,
            "sources": [{"name": p.name, "bytes": p.stat().st_size} for p in sources]}


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def read_record(data_dir: Path) -> dict:
    """A prepared folder's record; one cut short or damaged (a copy stopped part-way) is a
    RaceDataError saying to prepare it again, not a traceback."""
    path = Path(data_dir) / RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise RaceDataError(f"{path} cannot be read ({type(e).__name__}: {e}); prepare it again "
                            f"(--prepare --source_dir DIR)") from None
    if not isinstance(record, dict):
        raise RaceDataError(f"{path} is no race data record (a JSON {type(record).__name__}); prepare it again")
    return record


def load(data_dir: Path) -> RaceData:
    record_path = Path(data_dir) / RECORD
    if not record_path.exists():
        raise RaceDataError(f"{data_dir} holds no prepared race data ({RECORD}); make it with "
                            f"`python benchmarks/gpu_race.py --prepare --data {data_dir} --source_dir DIR`")
    data = RaceData(Path(data_dir), read_record(data_dir))
    if data.record.get("format") != FORMAT:
        raise RaceDataError(f"{data_dir} was prepared by an older race (format {data.record.get('format')}, "
                            f"now {FORMAT}); prepare it again (--prepare --source_dir DIR)")
    missing = [p for p in (*data.files("train"), *data.files("heldout"), data.tokenizer / "tokenizer.json",
                           data.cache / "metadata.json", *map(data.script, REFERENCE_SCRIPTS)) if not p.exists()]
    if missing:
        raise RaceDataError(f"{data_dir} is incomplete ({missing[0]} is missing); prepare it again")
    return data


def prepare(data_dir: Path, source_dir: Path, preset, bench_dir: Path, max_source_bytes: int,
            log=print) -> RaceData:
    """The race's folder at ``data_dir`` (reused when made from the same sources and preset)."""
    data_dir = Path(data_dir)
    sources = choose_sources(source_dir, max_source_bytes)
    want = wanted(preset, sources)
    if (data_dir / RECORD).exists():
        try:
            old = read_record(data_dir)
        except RaceDataError:  # the race's own folder, its record damaged: made again
            old = {}
        if {k: old.get(k) for k in want} == want:
            log(f"race data: {data_dir} is current ({len(sources)} source files)")
            return load(data_dir)
    elif data_dir.exists() and any(data_dir.iterdir()):
        raise RaceDataError(f"{data_dir} exists and is not a race data folder; name another --data")
    for name in REFERENCE_SCRIPTS:
        if not (Path(bench_dir) / name).exists():
            raise RaceDataError(f"the reference script {Path(bench_dir) / name} is missing (../shared/bench)")
    t0 = time.time()
    _build(data_dir, sources, preset, bench_dir, log)
    record = {**want, **_splits(data_dir), "made": time.strftime("%Y-%m-%d %H:%M:%S"),
              "prepare_seconds": round(time.time() - t0, 1)}
    record["bytes"] = folder_bytes(data_dir)
    (data_dir / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    log(f"race data: {data_dir}, {record['bytes'] / 2**20:.1f} MiB ({len(record['train'])} training, "
        f"{len(record['validation'])} validation and {len(record['heldout'])} held-out documents)")
    return load(data_dir)


def _build(data_dir: Path, sources: list[Path], preset, bench_dir: Path, log) -> None:
    """Corpus, tokenizer and token cache with the project's own stages, built in a scratch
    folder (the corpus stage's staging copies stay there); what the race reads is kept."""
    from londonlm.corpus import CollectionOptions, build_corpus
    from londonlm.tokens import ensure_cache
    from londonlm.tokens.stage import train_tokenizer_stage

    for sub in ("processed", HELDOUT, "tokenizer", "cache", "bench"):
        shutil.rmtree(data_dir / sub, ignore_errors=True)  # the race's own outputs, remade
    data_dir.mkdir(parents=True, exist_ok=True)
    corpus, held = split_heldout(sources)
    # the held-out files are cleaned as the corpus is (all of them one split: none is validation)
    for files, out, percent in ((corpus, "processed", VALIDATION_PERCENT), (held, HELDOUT, 0.0)):
        with tempfile.TemporaryDirectory(prefix="race_corpus_") as scratch:
            src = Path(scratch) / "src"
            src.mkdir()
            for p in files:
                (src / p.name).symlink_to(p.resolve())
            build_corpus(Path(scratch) / "processed", Path(scratch) / "metadata",
                         options=CollectionOptions(validation_percent=percent, log=lambda *_: None), source_dir=src)
            # the corpus as its readers see it (manifest, texts, sidecar); not the build's staging
            # copies in shards/, which would double what travels
            shutil.copytree(Path(scratch) / "processed", data_dir / out, ignore=shutil.ignore_patterns("shards"))
    log(f"race data: corpus built from {len(corpus)} files, {len(held)} held out")
    # era tokens off: the reference reads plain text, and bpb.py scores text without them
    train_tokenizer_stage(data_dir / "processed", data_dir / "tokenizer", vocab_size=preset.vocab_size,
                          min_frequency=preset.min_frequency, era_tokens=False,
                          model_max_length=preset.context_length, log=lambda *_: None)
    ensure_cache(data_dir / "cache", data_dir / "tokenizer", data_dir / "processed", preset.context_length,
                 era_tokens=False, progress=False, log=lambda *_: None)
    (data_dir / "bench").mkdir()
    for name in REFERENCE_SCRIPTS:
        shutil.copy2(Path(bench_dir) / name, data_dir / "bench" / name)


def _splits(data_dir: Path) -> dict:
    """The documents of each part, with their sizes, and the cache's token counts (training and
    validation: the held-out files are in no cache)."""
    from londonlm.corpus import read_manifest

    docs = {"train": [], "validation": [], "heldout": []}
    for folder in ("processed", HELDOUT):
        for row in read_manifest(data_dir / folder):
            part = HELDOUT if folder == HELDOUT else row["split"]
            docs[part].append({"id": row["id"], "path": row["path"],
                               "bytes": (data_dir / folder / row["path"]).stat().st_size})
    meta = json.loads((data_dir / "cache" / "metadata.json").read_text())
    tokens = {split: s.get("tokens") for split, s in meta["splits"].items()}
    return {**docs, "tokens": tokens, "tokenizer_vocab": meta["vocab_size"]}
