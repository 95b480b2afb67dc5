"""The period-dialogue dataset: Old Bailey examinations as chat conversations, written as a
Hugging Face ``datasets`` DatasetDict (``train`` / ``validation``, split by trial so no trial
is on both sides), loadable with ``datasets.load_from_disk``, with a dataset card
(README.md), statistics per source file, every rejected exchange with its reason, and the
stage sidecar written last. The whole folder is built beside the old one and swapped in,
so a failed build leaves the previous dataset as it was.
"""
from __future__ import annotations

import codecs
import gzip
import hashlib
import json
import os
import re
import shutil
import time
import zlib
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from ..core import (CHAT_REJECTED, CHAT_STATS, LondonLMError, SIDECAR, StageInputMissing, UsageError,
                    folder_lock, refuse_foreign_folder, refuse_output_over_inputs, sha256_file, sidecar_current,
                    write_sidecar, write_text_atomic)
from ..corpus import read_folder_manifest
from .card import dataset_card
from .extract import PLACE, Conversation, extract_conversations
from .filters import REASONS, ExchangeRules, rejection_reason

DATASET_FORMAT = 4   # bump when extraction or filter rules change: a current dataset is rebuilt
# (4: TEI in UTF-16, or cp1252 without a declaration, decoded as the corpus stage decodes text)
STAGE = "chat_dataset"
OBO_LICENSE = ("CC BY-NC 4.0 (Old Bailey Proceedings Online v7.2 transcription and markup; "
               "the printed Proceedings are public domain)")
BUILD_COMMAND = "python 07_finetuning/build_chat_dataset.py --source_dir DIR"
# what a build writes beside its sidecar (the splits' folders, the DatasetDict's index, the reports)
DATASET_OUTPUTS = ("train", "validation", "dataset_dict.json", CHAT_STATS, CHAT_REJECTED, "README.md")


class ChatDataError(LondonLMError, ValueError):
    """The dialogue dataset cannot be built or read; the message says what to run."""


@dataclass(frozen=True)
class ChatDatasetOptions:
    validation_percent: float = 10.0   # share of trials held out (by a hash of the trial id)
    place: str = PLACE                 # the system line's place: "<place>, <year>."
    min_exchanges: int = 1             # conversations with fewer kept exchanges are dropped
    rules: ExchangeRules = field(default_factory=ExchangeRules)


def system_line(year: int | None, place: str = PLACE) -> str:
    """The system message that sets the era: "Old Bailey, London, 1818."."""
    return f"{place}, {year}." if year else f"{place}."


@dataclass
class SourceFile:
    path: Path
    name: str
    sha256: str
    title: str
    license: str


def source_files(source_dir: Path) -> list[Path]:
    """Candidate TEI files: ``*.xml`` and ``*.xml.gz`` (those with no trials are skipped later)
    that are regular files or links to one (:func:`not_files`: the others)."""
    return [p for p in _candidates(source_dir) if p.is_file()]


def not_files(source_dir: Path) -> list[Path]:
    """The candidates that are no file to read: a dangling link (FileNotFoundError, the whole
    build gone), a named pipe (read for ever: the build hung), a folder named ``x.xml``."""
    return [p for p in _candidates(source_dir) if not p.is_file()]


def _candidates(source_dir: Path) -> list[Path]:
    return sorted([*source_dir.rglob("*.xml"), *source_dir.rglob("*.xml.gz")])


def _license_of(row: dict) -> str:
    if row.get("license"):
        return row["license"]
    # (a MANIFEST.tsv row with fewer cells than its header has None in the rest: a TypeError here)
    m = re.search(r"CC BY[-A-Z]* \d\.\d", row.get("notes") or "")
    return m.group(0) if m else OBO_LICENSE


def describe_source(path: Path, source_dir: Path, manifest: dict) -> SourceFile:
    name = path.relative_to(source_dir).as_posix()
    row = manifest.get(name, {})
    return SourceFile(path, name, sha256_file(path), row.get("title") or path.name, _license_of(row))


def split_of(trial_id: str, validation_percent: float) -> str:
    h = int(hashlib.sha256(trial_id.encode()).hexdigest()[:8], 16) % 10_000
    return "validation" if h < validation_percent * 100 else "train"


def conversation_record(conv: Conversation, src: SourceFile, place: str) -> dict:
    """One dataset row: the messages in chat form plus where every word came from."""
    messages = [{"role": "system", "content": system_line(conv.year, place), "speaker": "", "name": ""}]
    for ex in conv.exchanges:
        messages.append({"role": "user", "content": ex.question, "speaker": ex.questioner,
                         "name": ex.questioner_name})
        messages.append({"role": "assistant", "content": ex.answer, "speaker": ex.answerer,
                         "name": ex.answerer_name})
    return {"id": conv.id, "trial_id": conv.trial_id, "date": conv.date, "year": conv.year or 0,
            "witness": conv.witness, "witness_role": conv.witness_role, "source_file": src.name,
            "source_sha256": src.sha256, "source_title": src.title, "license": src.license,
            "n_exchanges": len(conv.exchanges), "messages": messages}


class _Build:
    """Extraction + filtering over all files, with counts per file and reason."""

    def __init__(self, options: ChatDatasetOptions):
        self.options = options
        self.records: list[dict] = []
        self.rejected: list[dict] = []
        self.per_file: dict[str, dict] = {}
        self.seen: set[tuple[str, str]] = set()
        self.trial_files: dict[str, str] = {}   # trial id -> the file that first had it

    def _reject(self, stats: dict, src: SourceFile, reason: str, trial_id: str, q: str, a: str) -> None:
        stats["rejected"][reason] += 1
        self.rejected.append({"source_file": src.name, "trial_id": trial_id, "reason": reason,
                              "question": q[:300], "answer": a[:300]})

    def add_file(self, src: SourceFile, data: bytes) -> None:
        stats = {"title": src.title, "license": src.license, "sha256": src.sha256,
                 "trials": 0, "conversations": 0, "exchanges": 0, "rejected": Counter(),
                 "conversations_rejected": 0, "questioner": Counter(), "answerer": Counter()}
        self.per_file[src.name] = stats
        if b"trialAccount" not in data:
            stats["skipped"] = "no Old Bailey trials (div1 type=trialAccount) in the file"
            return
        convs, unanswered = extract_conversations(data)
        stats["trials"] = len(re.findall(rb'type="trialAccount"', data))
        for conv in convs:  # (before the rejections: those name the trial as its rows do)
            conv.trial_id = self._trial_id(conv.trial_id, src.name)
        for u in unanswered:
            u["trial_id"] = self._trial_id(u["trial_id"], src.name)
        for u in unanswered:
            self._reject(stats, src, "missing_answer", u["trial_id"], u["question"], "")
        for conv in convs:
            kept = []
            for ex in conv.exchanges:
                reason = rejection_reason(ex, self.options.rules)
                key = (ex.question.lower(), ex.answer.lower())
                if reason is None and key in self.seen:
                    reason = "duplicate"
                if reason:
                    self._reject(stats, src, reason, conv.trial_id, ex.question, ex.answer)
                    continue
                self.seen.add(key)
                kept.append(ex)
                stats["questioner"][ex.questioner] += 1
                stats["answerer"][ex.answerer] += 1
            if len(kept) < self.options.min_exchanges:
                stats["conversations_rejected"] += 1
                continue
            conv.exchanges = kept
            self.records.append(conversation_record(conv, src, self.options.place))
            stats["conversations"] += 1
            stats["exchanges"] += len(kept)

    def _trial_id(self, trial_id: str, name: str) -> str:
        """A trial id unique in the dataset: one another file had too (the same sessions paper
        twice, as .xml and .xml.gz, or two papers that number their trials alike) is qualified by
        this file's name, so no two rows share an id and the two trials are split apart."""
        first = self.trial_files.setdefault(trial_id, name)
        return trial_id if first == name else f"{name}:{trial_id}"

    def splits(self) -> dict[str, list[dict]]:
        out = {"train": [], "validation": []}
        for r in self.records:
            out[split_of(r["trial_id"], self.options.validation_percent)].append(r)
        trials = sorted({r["trial_id"] for r in out["train"]},
                        key=lambda t: hashlib.sha256(t.encode()).hexdigest())
        if not out["validation"] and len(trials) > 1 and self.options.validation_percent > 0:
            moved = trials[0]  # a held-out set must exist: the trial with the lowest hash
            out["validation"] = [r for r in out["train"] if r["trial_id"] == moved]
            out["train"] = [r for r in out["train"] if r["trial_id"] != moved]
        return out

    def statistics(self, splits: dict[str, list[dict]]) -> dict:
        files = {name: {**s, "rejected": dict(s["rejected"]), "questioner": dict(s["questioner"]),
                        "answerer": dict(s["answerer"])} for name, s in self.per_file.items()}
        rejected = Counter()
        for s in self.per_file.values():
            rejected.update(s["rejected"])
        answers = [m["content"] for r in self.records for m in r["messages"] if m["role"] == "assistant"]
        return {"conversations": len(self.records), "exchanges": sum(r["n_exchanges"] for r in self.records),
                "rejected": {k: rejected.get(k, 0) for k in REASONS},
                "splits": {k: {"conversations": len(v), "exchanges": sum(r["n_exchanges"] for r in v)}
                           for k, v in splits.items()},
                "answer_words_mean": round(sum(len(a.split()) for a in answers) / len(answers), 1) if answers else 0,
                "years": sorted({r["year"] for r in self.records if r["year"]}),
                "files": files}


def _features():
    from datasets import Features, Value

    turn = {"role": Value("string"), "content": Value("string"), "speaker": Value("string"),
            "name": Value("string")}
    cols = {k: Value("string") for k in ("id", "trial_id", "date", "witness", "witness_role",
                                         "source_file", "source_sha256", "source_title", "license")}
    return Features({**cols, "year": Value("int32"), "n_exchanges": Value("int32"), "messages": [turn]})


def _split_dataset(rows: list[dict]):
    """One split with the dataset's columns, an empty one too: ``Dataset.from_list([])`` has no
    columns to match the features and raised ValueError (one trial, or --validation_percent 0 or
    100, left a split empty and the build ended in a traceback)."""
    from datasets import Dataset

    features = _features()
    if not rows:
        return Dataset.from_dict({name: [] for name in features}, features=features)
    return Dataset.from_list(rows, features=features)


def _read(path: Path) -> bytes:
    data = path.read_bytes()
    if not path.name.endswith(".gz"):
        return as_utf8_xml(data)
    try:
        return as_utf8_xml(gzip.decompress(data))
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:  # a download cut short, or no gzip at all
        raise ChatDataError(f"{path} is not a whole gzip file ({e}); download it again, or move it out of "
                            f"the --source_dir folder; nothing was written") from None


_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_DECLARATION = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([^"']+)["']""")
_DECLARATION_TEXT = re.compile(r"^\ufeff?\s*<\?xml[^>]*\?>")


def as_utf8_xml(data: bytes) -> bytes:
    """TEI bytes as UTF-8, decoded as the corpus stage decodes text (a UTF-16/32 BOM, UTF-8, else
    cp1252). A UTF-16 file (saved by a Windows editor) was skipped whole as "no trials": its
    bytes hold no ASCII ``trialAccount``; a cp1252/Latin-1 file without an encoding declaration
    was read as broken UTF-8, each accented answer rejected as ``ocr_noise``. A file whose
    declaration names its encoding is left to the parser, which honours it."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError:
                return data  # the parser's recovery makes what it can of it, as before
            return _DECLARATION_TEXT.sub("", text).encode("utf-8")
    declared = _DECLARATION.match(data)
    if declared and declared.group(1).decode("ascii", "replace").lower().replace("_", "-") not in ("utf-8", "utf8"):
        return data
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace").encode("utf-8")  # (cp1252 leaves 5 bytes undefined)
    return data


def _recorded_stats(out_dir: Path) -> dict | None:
    """The statistics a current dataset's build wrote, or None (rebuilt) when they are gone or
    unreadable: the skip read them unguarded, and a stats.json deleted by hand was a traceback on
    every later build (a dataset of an older build records no outputs that would show it)."""
    try:
        stats = json.loads((out_dir / CHAT_STATS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stats if isinstance(stats, dict) and isinstance(stats.get("files"), dict) else None


def _settings(options: ChatDatasetOptions) -> dict:
    return {"format": DATASET_FORMAT, **asdict(options)}


def build_chat_dataset(source_dir: str | Path, out_dir: str | Path,
                       options: ChatDatasetOptions = ChatDatasetOptions(), *,
                       overwrite: bool = False, log=print) -> dict:
    """Extract, filter and write the dataset; returns its statistics (skips when current)."""
    # made absolute, '.' and '..' folded: the build sits beside the folder, named after it, and
    # is renamed onto it; `--out_dir .` built inside the folder itself, then renaming '.' failed
    # (EBUSY, a traceback)
    source_dir, out_dir = Path(source_dir), Path(os.path.abspath(out_dir))
    if not source_dir.is_dir():
        raise StageInputMissing(f"source folder not found: {source_dir}; pass --source_dir with "
                                f"Old Bailey TEI files (oldbailey_proceedings_*.xml)")
    _refuse_unsafe_out_dir(source_dir, out_dir)
    manifest = read_folder_manifest(source_dir)
    sources = [describe_source(p, source_dir, manifest) for p in source_files(source_dir)]
    skipped = not_files(source_dir)
    if skipped:  # (said, not refused: a stray link among a folder of downloads costs only itself)
        log(f"chat dataset: {len(skipped)} *.xml name(s) that are no file skipped (a dangling link, a pipe, "
            f"a folder), e.g. {skipped[0]}")
    inputs = {s.name: s.sha256 for s in sources}
    current, why = sidecar_current(out_dir / SIDECAR, inputs, _settings(options))
    stats = _recorded_stats(out_dir) if current and not overwrite else None
    if stats is not None:
        log(f"chat dataset: {why} ({out_dir}); skipping (use --overwrite to rebuild)")
        return stats
    t0 = time.time()
    build = _Build(options)
    for src in sources:
        build.add_file(src, _read(src.path))
    if not build.records:
        raise ChatDataError(f"no question/answer exchanges found in {len(sources)} XML file(s) under "
                            f"{source_dir}: the dataset needs Old Bailey Proceedings TEI with "
                            f"examinations (e.g. the 1750s-1850s sessions papers)")
    splits = build.splits()
    stats = build.statistics(splits)
    with _build_lock(out_dir):
        _write_dataset(build, splits, stats, sources, inputs, options, out_dir)
    log(f"chat dataset: {stats['conversations']:,} conversations, {stats['exchanges']:,} exchanges, "
        f"{sum(stats['rejected'].values()):,} exchanges rejected, {time.time() - t0:.1f}s -> {out_dir}")
    return stats


@contextmanager
def _build_lock(out_dir: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the folder that holds ``out_dir`` (no file is made) while one
    build writes there: two builds at once shared the build folder beside it, one deleted the
    other's half-written files (a traceback), and the swap could leave the dataset moved aside."""
    busy = lambda who: ChatDataError(f"another chat dataset build ({who}) is writing in {out_dir.parent}; "
                                     f"wait for it to finish, or name another --out_dir; nothing was written")
    with folder_lock(out_dir.parent, busy):
        yield


def _write_dataset(build: "_Build", splits: dict, stats: dict, sources: list[SourceFile], inputs: dict,
                   options: ChatDatasetOptions, out_dir: Path) -> None:
    """The dataset written whole beside ``out_dir``, then swapped in (under the build lock)."""
    from datasets import DatasetDict

    tmp = out_dir.parent / f".{out_dir.name}.building"
    shutil.rmtree(tmp, ignore_errors=True)
    # an empty split written as one shard of no rows: as none (datasets' default for 0 rows),
    # load_from_disk could not read it back (IndexError), and the dataset was never usable
    DatasetDict({k: _split_dataset(v) for k, v in splits.items()}).save_to_disk(
        str(tmp), num_shards={k: None if v else 1 for k, v in splits.items()})
    write_text_atomic(tmp / CHAT_STATS, json.dumps(stats, indent=2) + "\n")
    write_text_atomic(tmp / CHAT_REJECTED, "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                   for r in build.rejected))
    write_text_atomic(tmp / "README.md", dataset_card(stats, sources, options))
    # last, vouching for what it wrote as written: a split's arrow file cut short or deleted since
    # is then rebuilt by the next build, not skipped as current (fine-tuning then refused it)
    write_sidecar(tmp / SIDECAR, STAGE, inputs, _settings(options),
                  counts={k: stats[k] for k in ("conversations", "exchanges")},
                  libraries=("londonlm", "datasets"), outputs=DATASET_OUTPUTS)
    _swap_in(tmp, out_dir)


def _refuse_unsafe_out_dir(source_dir: Path, out_dir: Path) -> None:
    """The finished dataset replaces ``out_dir`` whole: refused (before any work) when that
    would delete the TEI sources or a folder that is not an earlier build of this dataset."""
    refuse_output_over_inputs("--out_dir", out_dir, {"the source folder": source_dir})
    real_out = os.path.realpath(out_dir)
    if os.path.realpath(source_dir).startswith(real_out.rstrip(os.sep) + os.sep):
        raise UsageError(f"--out_dir {out_dir} holds the source folder {source_dir}, and the dataset "
                         f"replaces that folder whole: name a folder outside it; nothing was written")
    refuse_foreign_folder(out_dir / SIDECAR, STAGE, "--out_dir")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / SIDECAR).is_file():
        raise UsageError(f"--out_dir {out_dir} holds files that are not a chat dataset, and the dataset "
                         f"replaces that folder whole: name an empty or new folder; nothing was written")


def _swap_in(tmp: Path, out_dir: Path) -> None:
    old = out_dir.parent / f".{out_dir.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def load_chat_dataset(data_dir: str | Path):
    """The DatasetDict at ``data_dir``; a missing or half-written folder names the command."""
    from datasets import load_from_disk

    data_dir = Path(data_dir)
    if not (data_dir / SIDECAR).exists():
        raise StageInputMissing(f"chat dataset not found (or incomplete) at {data_dir}. "
                                f"Run `{BUILD_COMMAND}` first.")
    dataset_place(data_dir)  # read at the end of a fine-tuning: damage is said before the work
    try:  # a file of it emptied, cut short or deleted since: one line, not the library's traceback
        data = load_from_disk(str(data_dir))
    except (OSError, ValueError, KeyError, TypeError) as e:  # pyarrow's ArrowInvalid is a ValueError
        why = f"{type(e).__name__}: {e}"
    else:
        missing = [s for s in ("train", "validation") if s not in getattr(data, "keys", lambda: ())()]
        if not missing:
            return data
        why = f"no {' or '.join(missing)} split"
    raise ChatDataError(f"the chat dataset at {data_dir} is damaged ({why:.160}); rebuild it with "
                        f"`{BUILD_COMMAND} --overwrite`")


def dataset_place(data_dir: str | Path) -> str:
    """The place the dataset's system lines name (its sidecar's settings), or ChatDataError."""
    path = Path(data_dir) / SIDECAR
    try:
        place = json.loads(path.read_text(encoding="utf-8"))["settings"]["place"]
    except (ValueError, KeyError, TypeError) as e:  # not JSON, or not the shape the build writes
        place = e
    if not isinstance(place, str):
        raise ChatDataError(f"the chat dataset's {path} is damaged (no settings.place); rebuild it with "
                            f"`{BUILD_COMMAND} --overwrite`")
    return place


def format_statistics(stats: dict) -> Iterable[str]:
    """Lines of a per-file table: conversations, exchanges and rejects by reason."""
    yield f"{'file':44} {'trials':>6} {'convs':>6} {'exch.':>6}  rejected (by reason)"
    for name, s in stats["files"].items():
        rej = ", ".join(f"{k}={v}" for k, v in sorted(s["rejected"].items())) or "-"
        yield f"{name[:44]:44} {s['trials']:>6} {s['conversations']:>6} {s['exchanges']:>6}  {rej}"
    rej = ", ".join(f"{k}={v}" for k, v in stats["rejected"].items() if v) or "-"
    yield f"{'total':44} {'':>6} {stats['conversations']:>6} {stats['exchanges']:>6}  {rej}"
