"""The pretokenized token cache: uint16 memmaps + document offsets + metadata.

Files of the cache folder (``layout.CACHE`` of a run)::

    train.bin, val.bin          uint16 token ids, documents back to back, each
                                ``[era token] + text tokens + <|endoftext|>``
    train.idx.npy, val.idx.npy  int64 start offset of every document (+ final length)
    metadata.json               written last: format version, tokenizer/manifest sha256,
                                context length, counts, era flag, checksums (whole file,
                                sampled, and a CRC-32 per 1 MiB chunk)

Loading is a memory map plus O(1) checks (sizes and a fixed number of sampled
blocks), so start-up time does not grow with the corpus. Every byte is still checked
before training reads it: :func:`load_checked_tokens` verifies each chunk's CRC-32 the first
time a block is read from it (one pass over the data, spread over the first epoch). The full
sha256 is verified on demand (``verify_full=True``).

Document text is encoded with special-token strings read as plain characters: a book that
quotes ``<|endoftext|>`` or ``<|1650s|>`` never injects a document boundary or an era; only
the ids this module adds around each document are control tokens.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ..core import LondonLMError, link_or_copy, now_iso, require_input, sha256_file, write_json_atomic
from ..corpus import (MANIFEST, corpus_time_facts, iter_split_texts, read_manifest, reading_corpus,
                      require_finished_corpus, split_sizes, text_sizes, texts_not_as_made)
from .chunks import CHUNK_BYTES, PRETOKENIZE_CMD, CacheError, CheckedTokens, ChunkSums
from .tokenizer import (EOT, ERA_WIDTH, PIECE_CHARS, era_token, era_width_in, era_width_of, load_tokenizer,
                        plain_backend, require_whole_save, split_exact)

# 3: sampled checksum over 64 KiB blocks (was 1 MiB): start-up reads at most 1 MiB of
# tokens, so a cache 8x larger loaded in 29 ms instead of 11 ms with 1 MiB blocks.
# 4: a CRC-32 per 1 MiB chunk, checked as training first reads each chunk; text encoded
# with special-token strings as plain text. An older cache is rebuilt as stale.
CACHE_FORMAT = 4
SPLITS = {"train": "train", "validation": "val"}
_SAMPLE_BLOCKS = 16
_BLOCK = 64 << 10


def sampled_sha256(path: Path) -> str:
    """Hash of the file size and up to 16 evenly spaced 64 KiB blocks: O(1) in file size,
    catches truncation and most corruption without reading everything."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    n = max(1, min(_SAMPLE_BLOCKS, size // _BLOCK + 1))
    with open(path, "rb") as f:
        for i in range(n):
            off = 0 if n == 1 else (size - _BLOCK) * i // (n - 1) if size > _BLOCK else 0
            f.seek(max(0, off))
            h.update(f.read(_BLOCK))
    return h.hexdigest()


@dataclass
class CacheRequest:
    """What the training run needs from the cache."""

    tokenizer_sha256: str
    manifest_sha256: str
    context_length: int
    era_tokens: bool
    era_width: int = ERA_WIDTH  # the tokenizer's (a cache from before it was recorded: the default)
    vocab_size: int | None = None  # the tokenizer's; None: unread (loading the tokenizer says why)
    texts_changed: str | None = None  # a corpus text edited since it was made (``texts_not_as_made``)


def incompatibility(meta: dict, req: CacheRequest) -> str | None:
    if meta.get("format_version") != CACHE_FORMAT:
        return f"format version {meta.get('format_version')} != {CACHE_FORMAT}"
    if meta.get("tokenizer_sha256") != req.tokenizer_sha256:
        return "tokenizer mismatch"
    if meta.get("manifest_sha256") != req.manifest_sha256:
        return "corpus mismatch (manifest changed)"
    if req.texts_changed:
        return f"corpus mismatch (texts changed since it was made: {req.texts_changed})"
    if req.vocab_size is not None and meta.get("vocab_size") != req.vocab_size:
        # (the tokenizer's hash matched: a metadata.json edited or copied over another cache's
        # tokens, whose ids the model's embeddings may not have, or may not have trained)
        return f"vocabulary mismatch (cache built for {_shown(meta.get('vocab_size'))} tokens, tokenizer {req.vocab_size})"
    if meta.get("context_length") != req.context_length:
        return f"max length mismatch (cache {meta.get('context_length')}, run {req.context_length})"
    if bool(meta.get("era_tokens")) != bool(req.era_tokens):
        return f"era token mismatch (cache {meta.get('era_tokens')}, run {req.era_tokens})"
    if req.era_tokens and meta.get("era_width", ERA_WIDTH) != req.era_width:
        return f"era width mismatch (cache {meta.get('era_width', ERA_WIDTH)} years, tokenizer {req.era_width})"
    return None


def damage(cache_dir: Path, meta: dict, verify_full: bool = False) -> str | None:
    """Size / checksum disagreement between files and metadata, or None."""
    for split, stem in SPLITS.items():
        info = meta.get("splits", {}).get(split)
        if info is None:
            return f"metadata lacks split {split}"
        bin_path, idx_path = cache_dir / f"{stem}.bin", cache_dir / f"{stem}.idx.npy"
        if not bin_path.exists() or not idx_path.exists():
            return f"{bin_path.name} or {idx_path.name} missing"
        if bin_path.stat().st_size != info["tokens"] * 2:
            return (f"{bin_path.name} is {bin_path.stat().st_size} bytes, metadata says "
                    f"{info['tokens'] * 2} (truncated or overwritten)")
        if sampled_sha256(bin_path) != info["sampled_sha256"]:
            return f"{bin_path.name} checksum disagrees with metadata (corrupted)"
        if verify_full and sha256_file(bin_path) != info["sha256"]:
            return f"{bin_path.name} full checksum disagrees with metadata (corrupted)"
    return None


def _is_count(v) -> bool:
    return type(v) is int and v >= 0  # bool is an int subclass, and no count


def _shown(v) -> str:
    """A value for a one-line message: whatever a damaged file holds, at most 40 characters."""
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def split_problem(split: str, info) -> str | None:
    """What is wrong with one split's entry of the metadata (the fields that sizes, sampled
    hashes and the chunk reader compute with), or None."""
    if not isinstance(info, dict):
        return f"splits.{split} is not an object"
    for key in ("tokens", "documents"):
        if not _is_count(info.get(key)):
            return f"splits.{split}.{key} is {_shown(info.get(key))}, not a count"
    for key in ("sha256", "sampled_sha256"):
        if not isinstance(info.get(key), str):
            return f"splits.{split}.{key} is {_shown(info.get(key))}, not a hash"
    size, chunk, sums = 2 * info["tokens"], info.get("chunk_bytes"), info.get("chunk_crc32")
    if not (_is_count(chunk) and chunk > 0 and chunk % 2 == 0):  # whole tokens per chunk
        return f"splits.{split}.chunk_bytes is {_shown(chunk)}, not a positive even count"
    if not (isinstance(sums, list) and all(_is_count(c) for c in sums)):
        return f"splits.{split}.chunk_crc32 is not a list of checksums"
    if len(sums) != -(-size // chunk):
        return f"splits.{split} lists {len(sums)} chunk checksums for {size} bytes"
    return None


def metadata_problem(meta) -> str | None:
    """Why parsed metadata.json is not what this cache format writes, or None. An older format
    is not judged here: :func:`incompatibility` calls it stale by its version."""
    if not isinstance(meta, dict):
        return f"metadata.json holds a {type(meta).__name__}, not an object"
    if meta.get("format_version") != CACHE_FORMAT:
        return None
    splits = meta.get("splits")
    if not isinstance(splits, dict):
        return f"metadata.json splits is {_shown(splits)}, not an object"
    if not isinstance(meta.get("corpus_time"), (dict, type(None))):  # read on resume (timelock)
        return "metadata.json corpus_time is not an object"
    return next(filter(None, (split_problem(s, splits.get(s)) for s in SPLITS)), None)


def read_metadata(cache_dir: Path) -> dict | None:
    """The cache's metadata; None when there is none. Metadata that is not JSON, or not the
    shape this format writes, comes back as ``{"unreadable": why}``: every reader (the checks
    here, a resumed run's data checks) then treats the cache as absent and rebuilds it, as it
    does a truncated .bin, instead of computing with a wrong value."""
    try:
        meta = json.loads((cache_dir / "metadata.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested beyond the parser
        return {"unreadable": "metadata.json unreadable"}
    problem = metadata_problem(meta)
    return {"unreadable": f"{problem} (damaged)"} if problem else meta


def check_cache(cache_dir: Path, req: CacheRequest, verify_full: bool = False) -> str | None:
    """None when the cache can be trained on, else the reason it cannot."""
    meta = read_metadata(cache_dir)
    if meta is None:
        return "no cache (metadata.json missing)"
    if meta.get("unreadable"):
        return meta["unreadable"]
    return incompatibility(meta, req) or damage(cache_dir, meta, verify_full)


# what the build reads of each manifest row (the rest, for a book corpus a few KiB a row, is left unread)
_CACHE_KEYS = ("id", "split", "path", "year")
# Pieces of documents (:func:`.tokenizer.split_exact`) are batched through the Rust tokenizer
# up to this many characters at a time.
BATCH_CHARS = 4 * 1024 * 1024


def _encode_stream(tokenizer, docs: Iterable[tuple[dict, str]], use_era: bool,
                   batch_chars: int = BATCH_CHARS, piece_chars: int = PIECE_CHARS
                   ) -> Iterator[list[int]]:
    """Encoded documents, in order. Pieces of documents are batched through the Rust
    tokenizer (parallel across its threads) under a character budget, so memory stays
    bounded even for one huge document; a document's pieces are joined before it is
    yielded. Special-token strings in the text are encoded as text (``plain_backend``)."""
    backend = plain_backend(tokenizer)
    eot_id = tokenizer.convert_tokens_to_ids(EOT)
    width = era_width_of(tokenizer)
    texts: list[str] = []
    marks: list[tuple[dict, bool, bool]] = []  # per piece: (row, first piece, last piece)
    chars = 0
    current: list[int] = []

    def prefix_for(row: dict) -> list[int]:
        if not (use_era and row.get("year") is not None):
            return []
        tok = era_token(row["year"], width)
        tid = tokenizer.convert_tokens_to_ids(tok)
        if tid is None or tid == tokenizer.unk_token_id and tok != EOT:
            raise CacheError(f"tokenizer has no era token {tok} for document {row['id']}; "
                             f"retrain it: python 03_tokenizer/train_historical_tokenizer.py "
                             f"--overwrite")
        return [tid]

    def flush():
        nonlocal current
        encs = backend.encode_batch(texts, add_special_tokens=False)
        for (row, first, last), enc in zip(marks, encs):
            if first:
                current = prefix_for(row)
            current.extend(enc.ids)
            if last:
                current.append(eot_id)
                yield current
                current = []

    for row, text in docs:
        pieces = split_exact(text, piece_chars)
        for i, piece in enumerate(pieces):
            texts.append(piece)
            marks.append((row, i == 0, i == len(pieces) - 1))
            chars += len(piece)
            if chars >= batch_chars:
                yield from flush()
                texts, marks, chars = [], [], 0
    if texts:
        yield from flush()


# A stopped build keeps what it wrote up to its last checkpoint, one every 64 MiB of tokens:
# a resumed build starts at the next document (a 10 GB corpus takes an hour to encode on 2 cores).
CHECKPOINT_BYTES = 64 << 20


class _SplitWriter:
    """One split's ``.bin`` and document offsets, written as documents arrive, resumable.

    Beside the outputs, while building: ``<stem>.bin.tmp`` (the tokens), ``<stem>.idx.tmp``
    (int64 offsets, raw) and ``<stem>.progress.json`` (what the build is for, and how many
    documents and tokens the files held at the last checkpoint, taken after they were synced).
    A build for the same tokenizer, manifest and settings cuts the files back to that
    checkpoint, re-reads them once for their hashes and goes on from the next document; a
    finished split (``done``) is kept whole until the build writes its metadata."""

    def __init__(self, out_bin: Path, out_idx: Path, identity: dict):
        self.out_bin, self.out_idx, self.identity = out_bin, out_idx, identity
        self.bin_tmp = out_bin.with_name(out_bin.name + ".tmp")
        self.idx_tmp = out_idx.with_name(out_idx.stem.removesuffix(".idx") + ".idx.tmp")
        self.state_path = out_bin.with_name(out_bin.stem + ".progress.json")
        self.sha, self.chunks = hashlib.sha256(), ChunkSums()
        self.docs = self.tokens = self._since = 0
        self.info: dict | None = None

    def resume(self) -> int:
        """Open the files, keeping a matching earlier build's work; returns its documents."""
        state = _progress_state(read_json_or_none(self.state_path), self.identity)
        if state and state.get("done"):
            if self.out_idx.exists() and _size(self.out_bin) == 2 * state["info"]["tokens"]:
                self.info = state["info"]
                return -1
            state = None  # the finished files are gone or changed since: encode the split again
        elif state and not (_size(self.bin_tmp) >= 2 * state["tokens"] and
                            _size(self.idx_tmp) >= 8 * (state["docs"] + 1)):
            state = None
        if state and _linked(self.bin_tmp, self.idx_tmp):
            state = None  # another cache's file too (a copy linked mid-build): never written through
        if not state:  # a new file, not one truncated: an older name of it may be another cache's
            self.bin_tmp.unlink(missing_ok=True)
            self.idx_tmp.unlink(missing_ok=True)
        self.docs, self.tokens = (state["docs"], state["tokens"]) if state else (0, 0)
        mode = "r+b" if state else "w+b"
        self.f, self.fi = open(self.bin_tmp, mode), open(self.idx_tmp, mode)
        self.f.truncate(2 * self.tokens)
        self.fi.truncate(8 * (self.docs + 1) if state else 0)
        for block in iter(lambda: self.f.read(CHUNK_BYTES), b""):  # the kept part's hashes
            self.sha.update(block)
            self.chunks.update(block)
        self.f.seek(0, os.SEEK_END)
        self.fi.seek(0, os.SEEK_END)
        if not state:
            self.fi.write(np.int64(0).tobytes())
        return self.docs

    def write(self, ids: list[int]) -> None:
        if len(ids) and max(ids) >= 65536:
            raise CacheError("token id >= 65,536 does not fit uint16")
        b = np.asarray(ids, dtype=np.uint16).tobytes()
        self.f.write(b)
        self.sha.update(b)
        self.chunks.update(b)
        self.docs += 1
        self.tokens += len(ids)
        self.fi.write(np.int64(self.tokens).tobytes())
        self._since += len(b)
        if self._since >= CHECKPOINT_BYTES:
            self.checkpoint()

    def _sync(self) -> None:
        for f in (self.f, self.fi):
            f.flush()
            os.fsync(f.fileno())

    def checkpoint(self) -> None:
        self._sync()  # the data first: the state never claims bytes the disk may not have
        write_json_atomic(self.state_path, {"identity": self.identity, "docs": self.docs, "tokens": self.tokens})
        self._since = 0

    def finish(self, vocab: int) -> dict:
        self._sync()
        self.f.close()
        self.fi.close()
        os.replace(self.bin_tmp, self.out_bin)
        tmp_idx = self.out_idx.with_name(self.out_idx.name + ".tmp.npy")
        np.save(tmp_idx, np.fromfile(self.idx_tmp, dtype=np.int64))
        os.replace(tmp_idx, self.out_idx)
        self.idx_tmp.unlink()
        self.info = {"tokens": self.tokens, "documents": self.docs, "sha256": self.sha.hexdigest(),
                     "sampled_sha256": sampled_sha256(self.out_bin), "vocab_size": vocab,
                     "chunk_bytes": self.chunks.chunk_bytes, "chunk_crc32": self.chunks.finish()}
        write_json_atomic(self.state_path, {"identity": self.identity, "done": True, "info": self.info})
        return self.info

    def close(self) -> None:
        for f in (getattr(self, "f", None), getattr(self, "fi", None)):
            if f is not None and not f.closed:
                f.close()


def _progress_state(state, identity: dict) -> dict | None:
    """A build's progress record when it is for ``identity`` and has the shape the build
    writes (a finished split's info, or counts of documents and tokens), else None: a torn,
    hand-edited or foreign record starts the split afresh instead of failing mid-build."""
    if not isinstance(state, dict) or state.get("identity") != identity:
        return None
    if state.get("done"):
        return state if split_problem("split", state.get("info")) is None else None
    return state if _is_count(state.get("docs")) and _is_count(state.get("tokens")) else None


def _linked(*paths: Path) -> bool:
    """Whether any of ``paths`` has another name (a hard link) too."""
    return any(p.exists() and p.stat().st_nlink > 1 for p in paths)


def _size(path: Path) -> int:
    """A file's size in bytes; -1 when there is none."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def read_json_or_none(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_split(tokenizer, processed_dir: Path, rows: list[dict], out_bin: Path, out_idx: Path,
                 use_era: bool, progress: bool, desc: str, identity: dict, log=print) -> dict:
    """Encode one split's documents (manifest ``rows`` of that split, in order) into its files,
    resuming a stopped build of the same identity; a progress bar in bytes of text read."""
    from tqdm.auto import tqdm

    w = _SplitWriter(out_bin, out_idx, identity)
    start = w.resume()
    if start < 0:
        log(f"token cache: {desc}: kept from a stopped build ({w.info['tokens']:,} tokens)")
        return w.info
    try:
        if start:
            log(f"token cache: {desc}: resuming at document {start:,} of {len(rows):,} "
                f"({w.tokens:,} tokens kept from a stopped build)")
        sizes = text_sizes(processed_dir, rows)  # a missing text: one line, before any work
        with tqdm(total=sum(sizes), initial=sum(sizes[:start]), unit="B", unit_scale=True, unit_divisor=1024,
                  desc=desc, disable=not progress) as bar:
            docs = iter_split_texts(processed_dir, identity["split"], rows[start:])
            for size, ids in zip(sizes[start:], _encode_stream(tokenizer, docs, use_era)):
                w.write(ids)
                bar.update(size)
        return w.finish(len(tokenizer))
    finally:
        w.close()


@contextlib.contextmanager
def build_lock(cache_dir: Path, log=print):
    """An exclusive file lock: under torchrun (or any two processes) one builds, the
    others wait here and then find a current cache."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".build.lock", "w") as lf:
        try:
            fcntl.flock(lf, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"token cache: another process is building {cache_dir}; waiting")
            fcntl.flock(lf, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lf, fcntl.LOCK_UN)


# A finished cache's files: what another run may share (a grid's next run, a family's twin)
CACHE_FILES = (*(f"{stem}{ext}" for stem in SPLITS.values() for ext in (".bin", ".idx.npy")), "metadata.json")


def share_built_cache(src: Path, dst: Path, log=print) -> bool:
    """Hard-link the finished cache in ``src`` into ``dst`` (made here; metadata.json last), under
    ``src``'s build lock, without waiting for it. Linked between a rebuild's start and its end, the
    other run got the rebuild's half-written ``.bin.tmp``, one file with two names: its own build
    wrote its tokens into the other's, and the two caches' files became one. False when nothing
    was linked (no finished cache, ``dst`` there already, or a build running: ``dst`` builds its own)."""
    src, dst = Path(src), Path(dst)
    if not (src / "metadata.json").is_file() or dst.exists():
        return False
    try:
        lf = open(src / ".build.lock", "a")
    except OSError:  # a run folder this user may only read: nothing is shared, the next run builds its own
        return False
    with lf:
        try:
            fcntl.flock(lf, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"token cache: {src} is being built by another process now; not shared")
            return False
        if not (src / "metadata.json").is_file():  # (a build stopped since: nothing finished to share)
            return False
        dst.mkdir(parents=True)
        for name in CACHE_FILES:
            link_or_copy(src / name, dst / name)
    return True


def build_cache(cache_dir: Path, tokenizer, tokenizer_sha256: str, processed_dir: Path,
                manifest_rows: list[dict], manifest_sha256: str, context_length: int,
                era_tokens: bool, progress: bool = True, log=print,
                unchanged: Callable[[], None] = lambda: None) -> dict:
    """Encode both splits to disk (resuming a stopped build for the same inputs and
    settings); metadata.json is written last (once ``unchanged()``, the corpus's
    :func:`~londonlm.corpus.reading_corpus` check, passes), and the build's progress files then go."""
    if len(tokenizer) >= 65536:
        raise CacheError(f"vocabulary of {len(tokenizer)} does not fit uint16 (< 65,536)")
    eot_id = tokenizer.get_vocab().get(EOT)
    if eot_id is None:  # the boundary each document ends with
        raise CacheError(f"the tokenizer has no {EOT} token, which ends every document of the cache: "
                         f"not one this pipeline trains; train one: python 03_tokenizer/train_historical_tokenizer.py")
    cache_dir.mkdir(parents=True, exist_ok=True)
    meta_path = cache_dir / "metadata.json"
    if meta_path.exists():
        meta_path.unlink()  # outputs below are about to change; never leave stale metadata
    t0 = time.time()
    splits = {}
    width = {"era_width": era_width_of(tokenizer)} if era_tokens else {}  # (what the documents' era tokens span)
    for split, stem in SPLITS.items():
        identity = {"format_version": CACHE_FORMAT, "tokenizer_sha256": tokenizer_sha256,
                    "manifest_sha256": manifest_sha256, "context_length": context_length,
                    "era_tokens": bool(era_tokens), "split": split,
                    **width}
        splits[split] = _write_split(
            tokenizer, Path(processed_dir), [r for r in manifest_rows if r["split"] == split],
            cache_dir / f"{stem}.bin", cache_dir / f"{stem}.idx.npy", era_tokens, progress,
            desc=f"pretokenize {split}", identity=identity, log=log)
    meta = {"format_version": CACHE_FORMAT, "tokenizer_sha256": tokenizer_sha256,
            "manifest_sha256": manifest_sha256, "context_length": context_length,
            # the id every document ends with, which is <|endoftext|>'s whatever the tokenizer's
            # eos token is (unset, or another token, in a foreign tokenizer)
            "era_tokens": bool(era_tokens), **width,
            "dtype": "uint16", "eot_id": eot_id,
            "vocab_size": len(tokenizer), "splits": splits, "created": now_iso(),
            # the cutoff and years of the text these tokens hold: a resumed time-locked run
            # checks them even when the run stopped before writing run_info.json
            "corpus_time": corpus_time_facts(processed_dir),
            "build_seconds": round(time.time() - t0, 2)}
    unchanged()  # tokens of a corpus made again under the build are of two corpora: never vouched for
    write_json_atomic(meta_path, meta)
    for stem in SPLITS.values():
        (cache_dir / f"{stem}.progress.json").unlink(missing_ok=True)
    return meta


def tokenizer_vocab_size(tokenizer_dir: Path) -> int | None:
    """The vocabulary of the tokenizer saved in ``tokenizer_dir`` (what ``len()`` of it loaded
    gives, and the cache records: its model's tokens and its added ones), read from its
    tokenizer.json without loading transformers; None when that file cannot be read so (the
    load, when a build needs it, names the problem)."""
    try:
        obj = json.loads((Path(tokenizer_dir) / "tokenizer.json").read_text(encoding="utf-8"))
        added = {a["content"] for a in obj.get("added_tokens") or ()}
        return len(set(obj["model"]["vocab"]) | added)
    except (OSError, ValueError, RecursionError, TypeError, KeyError, AttributeError):
        return None


def cache_request(tokenizer_dir: Path, processed_dir: Path, context_length: int,
                  era_tokens: bool) -> CacheRequest:
    """What a cache for these inputs and settings must record; a missing input is one line
    naming the command that makes it."""
    tok_file = require_input(Path(tokenizer_dir) / "tokenizer.json",
                             "python 03_tokenizer/train_historical_tokenizer.py", "tokenizer")
    # a cache hit loads no tokenizer: the hash of tokenizer.json alone vouched for a folder whose
    # other files (the era width) a stopped save left from the tokenizer before
    require_whole_save(tokenizer_dir)
    man = require_input(Path(processed_dir) / MANIFEST,
                        "python 02_data_collection/historical_data_collector.py", "corpus manifest")
    # The cache records the manifest's hash, and a text edited by hand since keeps it: the cache of
    # the old text was called current and trained on. The corpus's own check sees it (a stat per
    # text while nothing changed); a build is then refused by it, naming the text.
    return CacheRequest(sha256_file(tok_file), sha256_file(man), context_length, era_tokens,
                        era_width_in(tokenizer_dir), tokenizer_vocab_size(tokenizer_dir),
                        texts_not_as_made(processed_dir))


def cached_split_tokens(cache_dir: Path, tokenizer_dir: Path, processed_dir: Path,
                        era_tokens: bool) -> dict[str, int] | None:
    """Tokens per split that a cache of this tokenizer, corpus and era setting recorded, whatever
    its context (the counts do not depend on it); None without such a cache. Reads only."""
    meta = read_metadata(Path(cache_dir)) or {}
    if not isinstance(meta.get("splits"), dict):
        return None
    req = cache_request(tokenizer_dir, processed_dir, 0, era_tokens)
    if (meta.get("tokenizer_sha256"), meta.get("manifest_sha256"), bool(meta.get("era_tokens"))) != (
            req.tokenizer_sha256, req.manifest_sha256, bool(era_tokens)):
        return None
    counts = {s: (meta["splits"].get(s) or {}).get("tokens") for s in SPLITS}
    return {s: n for s, n in counts.items() if isinstance(n, int)}


def split_token_ceiling(processed_dir: Path) -> dict[str, int]:
    """The most tokens each split of a corpus can encode to, without encoding it: a byte-level
    BPE token covers at least one byte of UTF-8, and each document adds at most two (its era
    token and the end-of-text after it). For refusing a split too small for one block before
    any data work; {} when the corpus cannot be read (the cache build then says why). A corpus its
    stage did not finish is refused here, as the build would refuse it, before the work ahead."""
    try:
        sizes = split_sizes(processed_dir)
    except (OSError, LondonLMError):
        return {}
    require_finished_corpus(processed_dir)
    return {split: size + 2 * docs for split, (size, docs) in sizes.items()}


def refuse_unfinished_build(cache_dir: Path, tokenizer_dir: Path, processed_dir: Path, context_length: int,
                            era_tokens: bool, mode: str = "auto") -> None:
    """:func:`ensure_cache`'s refusal to build from a corpus its stage did not finish, said before
    the work ahead of it (reads only, builds nothing): when a build would follow, under
    ``--no_pretokenized`` or with no cache current for this context. A cache current for another
    ``--max_length`` gives the split counts a block check reads, but not this run's tokens: its
    rebuild was refused only after the speed probe, and after ``--fresh`` moved the run aside."""
    if mode == "require":  # (never builds: its refusal of a cache that is not current is its own)
        return
    if mode == "rebuild" or check_cache(Path(cache_dir), cache_request(tokenizer_dir, processed_dir, context_length,
                                                                       era_tokens)) is not None:
        require_finished_corpus(processed_dir)


def ensure_cache(cache_dir: Path, tokenizer_dir: Path, processed_dir: Path, context_length: int,
                 era_tokens: bool, mode: str = "auto", progress: bool = True,
                 verify_full: bool = False, log=print) -> dict | None:
    """The guide's three modes: ``auto`` uses a compatible cache else rebuilds saying why;
    ``require`` (--use_pretokenized) fails when absent/incompatible; ``rebuild``
    (--no_pretokenized) always rebuilds. Returns the metadata. A fourth, ``current``, is for a
    side tool that may read a run's cache but must never replace it with one the run's
    checkpoints were not trained on: the metadata when current, else None; it only reads (no
    lock file, no build)."""
    cache_dir = Path(cache_dir)
    if mode == "current":
        req = cache_request(tokenizer_dir, processed_dir, context_length, era_tokens)
        return None if check_cache(cache_dir, req, verify_full) else read_metadata(cache_dir)
    # the corpus held (shared) from its manifest's hash to the metadata: not remade under the build
    with reading_corpus(processed_dir) as unchanged:
        return _ensure_locked(cache_dir, tokenizer_dir, processed_dir, context_length, era_tokens, mode, progress,
                              verify_full, log, unchanged)


def _ensure_locked(cache_dir: Path, tokenizer_dir: Path, processed_dir: Path, context_length: int,
                   era_tokens: bool, mode: str, progress: bool, verify_full: bool, log,
                   unchanged: Callable[[], None]) -> dict | None:
    """:func:`ensure_cache` with the corpus held and ``unchanged()`` its check."""
    req = cache_request(tokenizer_dir, processed_dir, context_length, era_tokens)
    with build_lock(cache_dir, log):
        problem = check_cache(cache_dir, req, verify_full)
        if mode == "require":
            if problem:
                raise CacheError(f"--use_pretokenized: cache at {cache_dir} cannot be used: "
                                 f"{problem}. Run without --use_pretokenized to rebuild it.")
            log(f"token cache: using {cache_dir}")
            return read_metadata(cache_dir)
        if mode == "auto" and problem is None:
            log(f"token cache: compatible cache found at {cache_dir}; using it")
            return read_metadata(cache_dir)
        why = "--no_pretokenized" if mode == "rebuild" else problem
        rows = read_manifest(processed_dir, keys=_CACHE_KEYS)  # (a damaged row names its line first)
        # loaded only here: a cache hit should not pay for importing torch/transformers (~3 s);
        # a damaged tokenizer is one line naming it and the rebuild
        tokenizer = load_tokenizer(tokenizer_dir)
        # A build reads the texts, so only a corpus its stage finished may be built from: a stopped
        # --merge keeps the old manifest over new texts (a mixture of two corpora). A current
        # cache, used above, reads no text: it holds the tokens of the finished corpus whose
        # manifest is still there, and stays usable while the collection is rerun.
        require_finished_corpus(processed_dir)
        log(f"token cache: building {cache_dir} ({why})")
        return build_cache(cache_dir, tokenizer, req.tokenizer_sha256, Path(processed_dir), rows,
                           req.manifest_sha256, context_length, era_tokens, progress, log=log, unchanged=unchanged)


def load_tokens(cache_dir: Path, split: str) -> np.memmap:
    """Memory-map one split (O(1) in its size), unchecked: training reads
    :func:`load_checked_tokens`."""
    path = Path(cache_dir) / f"{SPLITS[split]}.bin"
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(path, dtype=np.uint16, mode="r")


def load_offsets(cache_dir: Path, split: str) -> np.ndarray:
    return np.load(Path(cache_dir) / f"{SPLITS[split]}.idx.npy", mmap_mode="r")


def load_checked_tokens(cache_dir: Path, split: str) -> "CheckedTokens":
    """One split's tokens for training: O(1) to open, and every chunk's CRC-32 is verified
    the first time any of its tokens is read (see :class:`CheckedTokens`)."""
    cache_dir = Path(cache_dir)
    meta = read_metadata(cache_dir) or {}
    if meta.get("unreadable"):
        raise CacheError(f"{cache_dir / 'metadata.json'}: {meta['unreadable']}; rebuild it: {PRETOKENIZE_CMD}")
    info = meta.get("splits", {}).get(split) or {}
    path = cache_dir / f"{SPLITS[split]}.bin"
    if "chunk_crc32" not in info:
        raise CacheError(f"{cache_dir / 'metadata.json'} has no chunk checksums for {split} "
                         f"(cache format {meta.get('format_version')}, expected {CACHE_FORMAT}); "
                         f"rebuild it: {PRETOKENIZE_CMD}")
    vocab = meta.get("vocab_size")  # (ensure_cache found it the tokenizer's)
    return CheckedTokens(path, info["tokens"], info["chunk_crc32"], info["chunk_bytes"],
                         vocab if type(vocab) is int and vocab > 0 else None)

