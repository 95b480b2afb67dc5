"""Byte-level BPE tokenizer (Hugging Face ``tokenizers``) that round-trips any UTF-8 exactly.

Special tokens, each used by the pipeline:
- ``<|endoftext|>``: document separator in the token cache, and bos/eos/unk for the model.
- ``<|pad|>``: padding for batched generation/evaluation (never in the training stream).
- era tokens ``<|1650s|>`` (one per half-century that occurs in the corpus, optional per run):
  prepended to each document by pretokenization so generation can be conditioned on a period.

Text never becomes a control token: corpus text is encoded with :func:`plain_backend`, which
reads ``<|endoftext|>`` or ``<|1650s|>`` inside a document as the characters they are. Only
the pipeline adds special ids, by id.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ..core import (SIDECAR, LondonLMError, NativePanic, naming, native_panics, read_json_object, record_field,
                    sidecar_intact)

EOT = "<|endoftext|>"
PAD = "<|pad|>"
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                   "special_tokens_map.json")


class TokenizerNotFound(LondonLMError, FileNotFoundError):
    """No tokenizer.json in the folder given; the message names the command that trains one."""


class TokenizerUnreadable(LondonLMError, ValueError):
    """A tokenizer folder whose files cannot be read as a tokenizer (emptied, truncated, edited);
    the message names the file and the command that rebuilds it."""


class TokenizerSaveFailed(LondonLMError, RuntimeError):
    """Writing a tokenizer failed; the previous one, if any, is left as it was."""


TRAIN_CMD = "python 03_tokenizer/train_historical_tokenizer.py"


# The years one era token covers unless the tokenizer says otherwise: the half-century of the
# guide, and the width of every tokenizer saved before the width was recorded in it
ERA_WIDTH = 50
MAX_ERA_WIDTH = 1000  # a millennium: any wider and every year of the corpus shares one era


def era_of(year: int | None, width: int = ERA_WIDTH) -> int | None:
    """The first year of the ``width``-year period holding ``year`` (1666 -> 1650)."""
    if year is None:
        return None
    return (int(year) // width) * width


def era_token(year: int | None, width: int = ERA_WIDTH) -> str | None:
    era = era_of(year, width)
    return None if era is None else f"<|{era}s|>"


def era_tokens_for_years(years: Iterable[int | None], width: int = ERA_WIDTH) -> list[str]:
    """Sorted era tokens for the periods that actually occur (no dead tokens)."""
    eras = sorted({era_of(y, width) for y in years if y is not None})
    return [f"<|{e}s|>" for e in eras]


def era_width_of(tokenizer) -> int:
    """The years each of this loaded tokenizer's era tokens covers, as its folder records it
    (``era_width`` in tokenizer_config.json, written by :func:`save_tokenizer`; kept by every
    ``save_pretrained`` of it, so a model folder's tokenizer says the same). Every stage maps a
    year to an era with this width, never with a setting of its own."""
    return checked_era_width(getattr(tokenizer, "init_kwargs", {}).get("era_width", ERA_WIDTH),
                             getattr(tokenizer, "name_or_path", "") or "the tokenizer")


def era_width_in(folder: str | os.PathLike) -> int:
    """:func:`era_width_of` for a tokenizer folder, read without loading it (the token cache's
    identity, checked before anything heavy is imported)."""
    config = Path(folder) / "tokenizer_config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ERA_WIDTH
    except (OSError, ValueError, RecursionError) as e:  # (UnicodeDecodeError is a ValueError)
        raise TokenizerUnreadable(f"cannot read the tokenizer in {folder}: {config.name}: {e}; rebuild it with "
                                  f"`{TRAIN_CMD} --overwrite`") from None
    return checked_era_width(data.get("era_width", ERA_WIDTH) if isinstance(data, dict) else ERA_WIDTH,
                             str(folder))


def checked_era_width(value, where: str) -> int:
    if type(value) is not int or not 1 <= value <= MAX_ERA_WIDTH:
        raise TokenizerUnreadable(f"cannot read the tokenizer in {where}: tokenizer_config.json's era_width is "
                                  f"{value!r}, not a number of years; rebuild it with `{TRAIN_CMD} --overwrite`")
    return value


def era_token_for(tokenizer, year: int | None) -> str | None:
    """The era token this tokenizer gives a document of ``year`` (its own width), or None
    when the year is unknown."""
    return era_token(year, era_width_of(tokenizer))


# Pieces are encoded at most this many characters at a time. The Rust encodings of one
# batch (ids, offsets, token strings) cost ~100 bytes a token; batching by documents alone
# let peak RSS follow the largest documents (1.6 GiB on the shared corpus, whose longest
# text is 2.9 MB). A character budget keeps it bounded whatever the corpus holds.
PIECE_CHARS = 256 * 1024


def split_exact(text: str, max_chars: int = PIECE_CHARS) -> list[str]:
    """TEXT in pieces of about MAX_CHARS whose encodings concatenate to the encoding of the
    whole. Each cut is placed just before a space or newline that is followed by a letter
    or digit. The byte-level pre-tokenizer's regex builds every pre-token either from
    whitespace only or from one optional leading space plus non-space characters, and looks
    ahead only through ``\\s+(?!\\S)``; so such a place is always a pre-token boundary in the
    whole text, the piece before it ends the same way, and BPE never merges across
    pre-tokens. A text with no such place stays whole."""
    if len(text) <= max_chars:
        return [text]
    pieces, start, n = [], 0, len(text)
    while n - start > max_chars:
        cut = start + max_chars
        while cut < n - 1 and not (text[cut] in " \n" and text[cut + 1].isalnum()):
            cut += 1
        if cut >= n - 1:
            break
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


_MAX_COUNT = 2**64 - 1  # the Rust trainer's counts are u64


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2,
              era_tokens: Sequence[str] = (), show_progress: bool = True):
    """Train a byte-level BPE ``tokenizers.Tokenizer`` on an iterator of documents.

    No normalizer and ``add_prefix_space=False`` so decode(encode(x)) == x for every string."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    special = [EOT, PAD, *era_tokens]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        # the trainer's threshold is a 64-bit count, which a larger int overflowed (a traceback);
        # no pair occurs 2**64 times, so any larger threshold means what this one does: no merges
        min_frequency=min(min_frequency, _MAX_COUNT),
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def wrap_fast(tok, model_max_length: int = 1024, era_tokens: Sequence[str] = (), era_width: int = ERA_WIDTH):
    """Wrap a raw ``tokenizers.Tokenizer`` as a transformers fast tokenizer; a tokenizer with era
    tokens records their width (:func:`era_width_of`)."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        **({"era_width": int(era_width)} if era_tokens else {}),
        tokenizer_object=tok,
        bos_token=EOT, eos_token=EOT, unk_token=EOT, pad_token=PAD,
        additional_special_tokens=list(era_tokens) or None,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    return fast


def save_tokenizer(tok, out_dir: str | os.PathLike, model_max_length: int = 1024,
                   era_tokens: Sequence[str] = (), era_width: int = ERA_WIDTH) -> Path:
    """Write a Hugging Face tokenizer folder (tokenizer.json, vocab.json, merges.txt,
    tokenizer_config.json, special_tokens_map.json), loadable with AutoTokenizer. The files are
    written into a temporary folder inside ``out_dir`` and renamed into place once all are
    complete: a save that fails (a full disk) leaves the previous tokenizer whole."""
    out = Path(out_dir)
    with naming(out):
        out.mkdir(parents=True, exist_ok=True)
    _remove_stale_saves(out)
    tmp = out / f"{_SAVING}{secrets.token_hex(4)}"
    try:
        with naming(out):
            tmp.mkdir()
        _write_tokenizer_files(tok, tmp, model_max_length, era_tokens, era_width)
        with naming(out):
            for f in sorted(tmp.iterdir()):
                os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


_SAVING = ".saving-"  # the temporary folder of a save; one left by a killed run goes at the next


def not_tokenizer_files(folder: Path) -> list[str]:
    """The names in ``folder`` that no tokenizer save writes (a model's weights and config, a
    project's files), sorted; [] for a tokenizer folder, one a save left half-done, or none."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if p.name not in (*TOKENIZER_FILES, SIDECAR) and not p.name.startswith(_SAVING))


def _remove_stale_saves(out: Path) -> None:
    for p in out.glob(f"{_SAVING}*"):
        shutil.rmtree(p, ignore_errors=True)


def _write_tokenizer_files(tok, folder: Path, model_max_length: int, era_tokens: Sequence[str],
                           era_width: int) -> None:
    """The tokenizer's files in ``folder``; an OS error names the tokenizer folder, not the
    temporary one. The Rust writer reports a failed write (a full disk) as a plain Exception
    whose text ends "(os error N)": made one line; any other exception is a bug."""
    with naming(folder.parent):
        try:
            fast = wrap_fast(tok, model_max_length=model_max_length, era_tokens=era_tokens, era_width=era_width)
            fast.save_pretrained(str(folder))
            tok.model.save(str(folder))  # vocab.json + merges.txt, the GPT-2 file pair
            stm = folder / "special_tokens_map.json"
            if not stm.exists():  # transformers 5 no longer writes it; other tools still read it
                stm.write_text(json.dumps({
                    "bos_token": EOT, "eos_token": EOT, "unk_token": EOT, "pad_token": PAD,
                    "additional_special_tokens": list(era_tokens)}, indent=2) + "\n")
        except OSError:
            raise
        except Exception as e:
            if not re.search(r"\(os error \d+\)", str(e)):
                raise
            raise TokenizerSaveFailed(
                f"cannot write the tokenizer in {folder.parent}: {e}; free space there (or mend its permissions), "
                f"or name another --output_dir; the previous tokenizer there, if any, is unchanged") from None


def load_tokenizer(path: str | os.PathLike):
    """AutoTokenizer over a tokenizer or model folder, with a clear error when absent or
    unreadable (a file emptied, truncated or edited: one line naming it and the rebuild)."""
    from transformers import AutoTokenizer

    p = Path(path)
    if not (p / "tokenizer.json").exists():
        raise TokenizerNotFound(
            f"no tokenizer at {p}: run `{TRAIN_CMD}` first")
    problem = tokenizer_file_problem(p / "tokenizer.json")
    if problem is None:
        try:
            return AutoTokenizer.from_pretrained(str(p))
        # another file of the folder is damaged; a field of another JSON kind in
        # tokenizer_config.json (added_tokens_decoder: 0, tokenizer_class: -1) fails inside
        # transformers as an AttributeError (it calls .items(), .removesuffix() on it)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            problem = f"{type(e).__name__}: {e}"
    raise TokenizerUnreadable(f"cannot read the tokenizer in {p}: {problem}; rebuild it with "
                              f"`{TRAIN_CMD} --overwrite` (or point to a folder holding a whole one)")


def unfinished_save(folder: Path) -> str | None:
    """Why ``folder``, written by the tokenizer stage, is not the one tokenizer it saved, or None.
    A save killed between its renames (:func:`save_tokenizer`) left a new tokenizer.json beside
    the old tokenizer_config.json (the era width) and vocab/merges; the stage, whose sidecar is
    gone, retrains, but a run and the token cache read the mixture as a tokenizer. Its mark is the
    save's temporary folder, left with the files not yet renamed. A tokenizer sidecar whose files
    changed since (an edit, a copy over part of it) vouches for a folder that is no longer what
    was trained. A folder with no sidecar (a tokenizer of the user's own, a Hub download, one
    saved by ``save_tokenizer`` alone) is read as it is: nothing says what it should hold."""
    left = sorted(p.name for p in Path(folder).glob(f"{_SAVING}*"))
    if left:
        return f"a save into it stopped part-way ({left[0]} is left): its files are of two tokenizers"
    if read_json_object(Path(folder) / SIDECAR).get("stage") != "tokenizer":
        return None
    intact, why = sidecar_intact(Path(folder) / SIDECAR)
    # (an edit made on purpose is kept by deleting the sidecar: the folder is then the user's own)
    return None if intact else (f"{why}, so its {SIDECAR} vouches for other files (delete {SIDECAR} "
                                f"to use the folder as it is now)")


def require_whole_save(folder: str | os.PathLike) -> None:
    """Refuse, in one line naming the rebuild, a tokenizer folder :func:`unfinished_save` rejects:
    what reads a tokenizer folder to train on (a run, the token cache) asks this first."""
    problem = unfinished_save(Path(folder))
    if problem:
        raise TokenizerUnreadable(f"the tokenizer in {folder} is not the one its stage saved: {problem}; "
                                  f"rebuild it with `{TRAIN_CMD} --overwrite`")


def tokenizer_file_problem(file: Path) -> str | None:
    """Why ``tokenizer.json`` is no tokenizer, or None. Parsed by the Rust library first, whose
    errors say where the file breaks, before transformers (whose errors say nothing of the file).
    An OSError (no permission) is left for run_main to word."""
    from tokenizers import Tokenizer

    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        return f"{file} is not UTF-8 text: {e.reason} at byte {e.start}"
    try:
        # ... and panics on some it parses but cannot build (a BPE subword prefix its merges do
        # not carry), its report kept off the console
        with native_panics():
            Tokenizer.from_str(text)
    except NativePanic as e:
        return f"{file}: the tokenizers library cannot build it ({e})"
    except Exception as e:  # the library raises a plain Exception for a file it cannot parse
        return f"{file}: {e}"
    obj = json.loads(text)
    if not isinstance(obj.get("added_tokens"), list):  # what transformers reads first
        return f"{file} has no 'added_tokens' list"
    # two tokens given one id parse, but the tokenizer's own save keeps one of them, and a
    # merge naming the other no longer parses: every private copy (plain_backend) failed so,
    # as a traceback from the tokenizers library
    vocab = obj["model"].get("vocab") if isinstance(obj.get("model"), dict) else None
    if isinstance(vocab, dict) and len(set(vocab.values())) < len(vocab):
        seen: dict = {}
        a, b = next((seen[i], t) for t, i in vocab.items() if seen.setdefault(i, t) != t)
        return f"{file}: tokens {a!r} and {b!r} share id {vocab[a]} in its vocabulary (edited or damaged)"
    return None


def plain_backend(tokenizer):
    """A private copy of the tokenizer's Rust ``tokenizers.Tokenizer`` (a transformers fast
    tokenizer or a raw one) that encodes special-token strings in text as plain text, without
    truncation or padding. A copy, because the flag on a shared backend would also change
    how every other user of that tokenizer encodes."""
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    plain = Tokenizer.from_str(backend.to_str())
    plain.encode_special_tokens = True
    plain.no_truncation()
    plain.no_padding()
    return plain


def special_ids(tokenizer) -> set[int]:
    """Ids of every added special token (<|endoftext|>, <|pad|>, era tokens)."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    return {i for i, t in backend.get_added_tokens_decoder().items() if t.special}


def era_tokens_of(tokenizer) -> list[str]:
    """Era tokens present in a loaded tokenizer, in vocabulary order."""
    specials = getattr(tokenizer, "additional_special_tokens", None) or []
    if not specials:
        specials = [t for t in tokenizer.get_vocab() if t.startswith("<|") and t.endswith("s|>")]
    return sorted((t for t in specials if t.startswith("<|") and t.endswith("s|>")),
                  key=tokenizer.convert_tokens_to_ids)


def roundtrip_failures(tokenizer, docs: Iterable[tuple[str, str]],
                       batch: int = 16) -> Iterator[tuple[str, int]]:
    """Yield (doc_id, first differing char offset) for every doc that does not round-trip.

    Encodes as the token cache does (:func:`plain_backend`: special-token strings are text)
    and decodes with special tokens kept, so a document whose text turned into a control
    token fails at that token's offset instead of hiding behind an exact decode. Goes
    through the Rust backend in batches (parallel across threads)."""
    plain = plain_backend(tokenizer)
    specials = special_ids(plain)

    def check(chunk):
        encs = plain.encode_batch([t for _, t in chunk], add_special_tokens=False)
        backs = plain.decode_batch([e.ids for e in encs], skip_special_tokens=False)
        for (doc_id, text), enc, back in zip(chunk, encs, backs):
            control = next((enc.offsets[i][0] for i, t in enumerate(enc.ids) if t in specials), None)
            if control is not None:
                yield doc_id, control
            elif back != text:
                n = next((i for i, (a, b) in enumerate(zip(back, text)) if a != b),
                         min(len(back), len(text)))
                yield doc_id, n

    chunk: list[tuple[str, str]] = []
    for item in docs:
        chunk.append(item)
        if len(chunk) >= batch:
            yield from check(chunk)
            chunk = []
    if chunk:
        yield from check(chunk)


# --------------------------------------------------------------------------- what decides token ids

def _token_ids(vocab: dict | None) -> bool:
    """Whether ``vocab`` is a vocabulary: token -> id, not empty."""
    return bool(vocab) and all(type(i) is int for i in vocab.values())


def tokenizer_identity(folder: Path) -> dict | None:
    """What decides token ids: BPE vocabulary, merges and (when known) added tokens, from
    ``tokenizer.json`` or a slow tokenizer's ``vocab.json`` + ``merges.txt``; padding or
    truncation settings do not count. None when the folder holds no tokenizer, or one too damaged
    to read (cut, another JSON shape): then the run's record of its tokenizer decides, as for a
    checkpoint saved without one (a damaged file there was a traceback mid-resume)."""
    folder = Path(folder)
    if (folder / "tokenizer.json").exists():
        d = read_json_object(folder / "tokenizer.json")
        model = record_field(d, "model", kind=dict)
        if not _token_ids(record_field(model, "vocab", kind=dict)):
            return None
        added = [t for t in record_field(d, "added_tokens", kind=list) or []
                 if type(record_field(t, "id")) is int and isinstance(record_field(t, "content"), str)]
        return {"vocab": model["vocab"],
                "merges": [" ".join(map(str, m)) if isinstance(m, list) else m
                           for m in record_field(model, "merges", kind=list) or []],
                "added": sorted((t["id"], t["content"]) for t in added)}
    if (folder / "vocab.json").exists():
        vocab = read_json_object(folder / "vocab.json")
        if not _token_ids(vocab):
            return None
        merges = []
        if (folder / "merges.txt").exists():
            merges = [ln for ln in (folder / "merges.txt").read_text(encoding="utf-8", errors="replace").splitlines()
                      if ln and not ln.startswith("#version")]
        return {"vocab": vocab, "merges": merges, "added": None}
    return None


def same_tokenizer(a: dict, b: dict) -> bool:
    return (a["vocab"] == b["vocab"] and a["merges"] == b["merges"]
            and (a["added"] is None or b["added"] is None or a["added"] == b["added"]))


def tokenizer_identity_sha256(folder: str | os.PathLike) -> str | None:
    """sha256 of :func:`tokenizer_identity` (two saves of one tokenizer, with other padding
    settings or by another transformers, agree; tokenizers of other ids differ), or None where
    the folder holds no readable tokenizer."""
    identity = tokenizer_identity(Path(folder))
    if identity is None:
        return None
    return hashlib.sha256(json.dumps(identity, sort_keys=True, ensure_ascii=False)
                          .encode("utf-8", "surrogatepass")).hexdigest()
