"""Stage 03: train the tokenizer on the corpus's training split, and report on it."""
from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

from ..core import SIDECAR, LondonLMError, UsageError, folder_lock, read_json, read_json_object, refuse_foreign_folder, refuse_output_over_inputs, sidecar_current, write_sidecar
from ..corpus import (COLLECT_CMD, MANIFEST, CorpusError, corpus_time_facts, iter_split_texts, manifest_sha256,
                      read_manifest, reading_corpus, require_finished_corpus, text_sizes)
from .tokenizer import (ERA_WIDTH, MAX_ERA_WIDTH, TOKENIZER_FILES, TokenizerUnreadable, era_tokens_for_years, load_tokenizer,
                        not_tokenizer_files, plain_backend, require_whole_save,
                        roundtrip_failures, save_tokenizer, split_exact, train_bpe)

TRAIN_TOKENIZER_CMD = "python 03_tokenizer/train_historical_tokenizer.py"
# The BPE trainer holds every distinct pre-token it has seen, and an OCR corpus keeps making
# new ones (misread words) as it grows: trained on everything, its memory grows with the
# corpus. Merges learnt from a few hundred million characters are those of the whole for a
# vocabulary of 4k-50k, so a larger training split is sampled (and the log and sidecar say so).
SAMPLE_CHARS = 300_000_000
PERIOD_WORDS = ["thou", "thee", "thy", "hath", "doth", "'tis", "whilst", "prithee", "methinks",
                "ſo", "ſhall", "moſt", "Westminster", "Cheapside", "Southwark", "Newgate",
                "Tyburn", "shilling", "farthing", "guinea", "hackney", "apothecary", "Thames"]


def train_tokenizer_stage(processed_dir: str | Path, out_dir: str | Path, *, vocab_size: int,
                          min_frequency: int = 2, era_tokens: bool = True, era_width: int = ERA_WIDTH,
                          model_max_length: int = 1024, overwrite: bool = False,
                          sample_chars: int | None = SAMPLE_CHARS, progress: bool | None = None,
                          log=print) -> dict:
    """Train on the training split only (validation stays unseen), on a sample of at most
    ``sample_chars`` characters of it (None or 0: all of it); skip when current."""
    processed_dir, out_dir = Path(processed_dir), Path(out_dir)
    if era_tokens and not (type(era_width) is int and 1 <= era_width <= MAX_ERA_WIDTH):
        raise UsageError(f"--era_width: must be a whole number of years from 1 to {MAX_ERA_WIDTH} (got {era_width!r})")
    refuse_foreign_folder(out_dir / SIDECAR, "tokenizer", "--output_dir")  # (says whose folder it is)
    refuse_output_over_inputs("--output_dir", out_dir, {"the corpus folder": processed_dir})
    _refuse_another_artifacts_folder(out_dir)
    # the corpus held (shared) from its manifest to the sidecar: a view is not remade under the training
    with reading_corpus(processed_dir) as unchanged:
        return _train_if_stale(processed_dir, out_dir, vocab_size, min_frequency, era_tokens, era_width,
                               model_max_length, overwrite, sample_chars, progress, log, unchanged)


def _train_if_stale(processed_dir: Path, out_dir: Path, vocab_size: int, min_frequency: int, era_tokens: bool,
                    era_width: int, model_max_length: int, overwrite: bool, sample_chars: int | None,
                    progress: bool | None, log, unchanged) -> dict:
    """:func:`train_tokenizer_stage` with the corpus held and ``unchanged()`` its check."""
    rows = read_manifest(processed_dir, keys=("id", "split", "path", "chars", "year"),  # held while training
                         require=("chars",))
    require_finished_corpus(processed_dir)  # before the currency check: a stopped merge keeps the old manifest
    eras = era_tokens_for_years((r.get("year") for r in rows), era_width) if era_tokens else []
    _refuse_no_room(vocab_size, eras, era_width)
    inputs = {"manifest_sha256": manifest_sha256(processed_dir)}
    settings = {"vocab_size": vocab_size, "min_frequency": min_frequency,
                "era_tokens": eras, "model_max_length": model_max_length}
    train_rows = [r for r in rows if r["split"] == "train"]
    train_chars = sum(r["chars"] for r in train_rows)
    _refuse_empty(processed_dir, train_rows, train_chars)
    sample = sample_rows(train_rows, sample_chars)
    if len(sample) < len(train_rows):  # only then: a corpus under the budget keeps its sidecar current
        settings["sample_chars"] = int(sample_chars)
    if eras and era_width != ERA_WIDTH:  # (likewise: a tokenizer of the default width stays current)
        settings["era_width"] = int(era_width)
    with _training_lock(out_dir):  # from the currency check to the sidecar: one training at a time
        current, why = sidecar_current(out_dir / SIDECAR, inputs, settings)
        if current and not overwrite:
            log(f"tokenizer: outputs are current ({out_dir}); skipping (use --overwrite to rebuild)")
            return read_json_object(out_dir / SIDECAR)
        if (out_dir / SIDECAR).exists():
            log(f"tokenizer: rebuilding ({'--overwrite' if overwrite else why})")
            (out_dir / SIDECAR).unlink()
        return _train_and_save(processed_dir, out_dir, train_rows, sample, inputs, settings, era_width, progress, log,
                               unchanged)


def _train_and_save(processed_dir: Path, out_dir: Path, train_rows: list[dict], sample: list[dict], inputs: dict,
                    settings: dict, era_width: int, progress: bool | None, log, unchanged=lambda: None) -> dict:
    """Train on ``sample`` (of ``train_rows``) with ``settings``, save, then the sidecar."""
    t0 = time.time()
    train_chars, sampled = sum(r["chars"] for r in train_rows), sum(r["chars"] for r in sample)
    eras, vocab_size = settings["era_tokens"], settings["vocab_size"]
    if len(sample) < len(train_rows):
        log(f"tokenizer: training on a sample of the training split: {len(sample):,} of {len(train_rows):,} "
            f"documents, {sampled:,} of {train_chars:,} chars ({100 * sampled / max(train_chars, 1):.1f}%), "
            f"chosen by a hash of their id (--sample_chars {settings['sample_chars']:,})")
    tok = train_bpe(_pieces(processed_dir, sample, progress, log, vocab_size), vocab_size=vocab_size,
                    min_frequency=settings["min_frequency"], era_tokens=eras, show_progress=False)
    unchanged()  # merges learnt from a corpus made again under the training: never saved, nor vouched for
    save_tokenizer(tok, out_dir, model_max_length=settings["model_max_length"], era_tokens=eras, era_width=era_width)
    seconds = time.time() - t0
    counts = {"vocab_size": tok.get_vocab_size(), "train_documents": len(train_rows), "train_chars": train_chars,
              "sample_documents": len(sample), "sample_chars": sampled,
              "train_seconds": round(seconds, 2),
              # the years its merges were learnt from: a time-locked run refuses a later corpus's
              "corpus_time": corpus_time_facts(processed_dir)}
    # the files later stages read: one deleted or damaged since makes the stage not current
    write_sidecar(out_dir / SIDECAR, "tokenizer", inputs, settings, counts, outputs=TOKENIZER_FILES)
    log(f"tokenizer: vocab {tok.get_vocab_size()} ({len(eras)} era tokens) trained on "
        f"{sampled:,} chars{' (a sample)' if len(sample) < len(train_rows) else ''} in {seconds:.1f}s -> {out_dir}")
    return read_json(out_dir / SIDECAR)


class TokenizerBusy(LondonLMError):
    """Another training is writing the same tokenizer folder now."""


@contextlib.contextmanager
def _training_lock(out_dir: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``out_dir`` itself (no file is made in it) for one training. Two
    at once (a second preset started beside the first) each removed the other's save in
    progress, or mixed their files: the sidecar one wrote then vouched for the other's
    vocabulary, and the next run skipped as current."""
    busy = lambda who: TokenizerBusy(f"another tokenizer training ({who}) is writing {out_dir}; wait for it "
                                     f"to end, or name another --output_dir (or --name); nothing was written")
    with folder_lock(out_dir, busy):
        yield


def _refuse_another_artifacts_folder(out_dir: Path) -> None:
    """A folder that holds files no tokenizer writes and no tokenizer sidecar (a model's final/,
    a project's root) is refused: the new tokenizer.json would replace a model's own, which then
    encodes with ids its embeddings were never trained on, and exit 0."""
    strays = [] if (out_dir / SIDECAR).is_file() else not_tokenizer_files(out_dir)
    if strays:
        shown = ", ".join(strays[:4]) + (f" and {len(strays) - 4} more" if len(strays) > 4 else "")
        raise UsageError(f"--output_dir {out_dir} holds files that are not a tokenizer's ({shown}): the "
                         f"tokenizer's files would mix with them, or replace a model's own; name an empty "
                         f"or new folder (or an earlier tokenizer's); nothing was written")


BYTE_ALPHABET = 256  # the byte-level alphabet every tokenizer holds, whatever --vocab_size says


def _refuse_no_room(vocab_size: int, eras: list[str], era_width: int) -> None:
    """A vocabulary smaller than the byte alphabet, <|endoftext|>, <|pad|> and the corpus's era
    tokens (--era_width 1 over a century: one a year) came out larger than asked, with no merge
    learnt, exit 0: a byte-level tokenizer of a size nobody asked for, under a sidecar saying it."""
    fixed = BYTE_ALPHABET + 2 + len(eras)
    if vocab_size < fixed:
        raise UsageError(f"--vocab_size {vocab_size} is smaller than the tokens every tokenizer of this corpus "
                         f"holds before any merge: {BYTE_ALPHABET} bytes, 2 special tokens and {len(eras)} era "
                         f"tokens (--era_width {era_width}) make {fixed}; ask for more, a wider --era_width, or "
                         f"--no_era_tokens; nothing was written")


def _refuse_empty(processed_dir: Path, train_rows: list[dict], train_chars: int) -> None:
    """A tokenizer trained on no text holds the 256 bytes and nothing learnt from the corpus,
    which every later stage would take as this corpus's tokenizer."""
    if not train_chars:
        raise CorpusError(f"the corpus in {processed_dir} has no training text ({len(train_rows)} training "
                          f"documents in {processed_dir / MANIFEST}): nothing to train a tokenizer on; "
                          f"collect a corpus with `{COLLECT_CMD} --overwrite`")


def sample_rows(rows: list[dict], max_chars: int | None) -> list[dict]:
    """Documents of ``rows`` (in their order) up to ``max_chars`` characters, chosen by a hash
    of their id: the same sample on every run and machine, spread over sources and years
    as the corpus is; all of them when they fit (or ``max_chars`` is None or 0)."""
    if not max_chars or sum(r["chars"] for r in rows) <= max_chars:
        return rows
    chosen, total = set(), 0
    for r in sorted(rows, key=lambda r: hashlib.sha256(r["id"].encode("utf-8")).digest()):
        if total >= max_chars:
            break
        chosen.add(r["id"])
        total += r["chars"]
    return [r for r in rows if r["id"] in chosen]


# The BPE trainer's merge step costs time quadratic in the length of each distinct pre-token:
# one run of 200,000 letters without a space (a rule of dashes, an OCR smear, an encoded blob)
# took 51 s, one of 2 MB hours. No word of any language is near this long, so for training only
# a run of more than MAX_RUN characters of non-space (or of space) is cut every MAX_RUN characters;
# the text encodes as it is (the cache, the round trip), and the merges of ordinary text are those
# the whole text gives.
MAX_RUN = 256


def cut_long_runs(text: str, max_run: int = MAX_RUN) -> Iterator[str]:
    """TEXT in pieces, cut every ``max_run`` characters inside each run longer than that. The
    lookbehinds match a run at its start only: each character is scanned once, not once for
    every start inside a word (``re`` keeps the compiled pattern)."""
    pattern = r"(?<!\S)\S{%d,}|(?<!\s)\s{%d,}" % (max_run + 1, max_run + 1)
    start = 0
    for m in re.finditer(pattern, text):
        for cut in range(m.start() + max_run, m.end(), max_run):
            yield text[start:cut]
            start = cut
    yield text[start:]


def _pieces(processed_dir: Path, rows: list[dict], progress: bool | None, log=print,
            vocab_size: int = 0) -> Iterator[str]:
    """The sample's texts in ``split_exact`` pieces, with a progress bar in bytes read (the
    trainer's own bar counts pieces, without a total). Pieces cut at pre-token boundaries
    count the same words as whole documents, so the merges are the same, while the trainer
    holds one piece's pre-tokens at a time; runs longer than any word are cut too
    (:func:`cut_long_runs`)."""
    from tqdm.auto import tqdm

    sizes = text_sizes(processed_dir, rows)
    with tqdm(total=sum(sizes), unit="B", unit_scale=True, unit_divisor=1024, desc="tokenizer: reading",
              disable=None if progress is None else not progress) as bar:
        for (_, text), size in zip(iter_split_texts(processed_dir, "train", rows), sizes):
            for piece in split_exact(text):
                yield from cut_long_runs(piece)
            bar.update(size)
    log(f"tokenizer: text read; computing merges up to a vocabulary of {vocab_size:,}")


def _merges(tokenizer_dir: str | Path) -> list[str]:
    """The merges of the tokenizer's merges.txt ([] when it has none)."""
    merges_path = Path(tokenizer_dir) / "merges.txt"
    if not merges_path.exists():
        return []
    try:
        text = merges_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TokenizerUnreadable(
            f"cannot read the tokenizer in {tokenizer_dir}: {merges_path} is not UTF-8 text ({e.reason} at "
            f"byte {e.start}); rebuild it with `{TRAIN_TOKENIZER_CMD} --overwrite`") from None
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#")]


def tokenizer_report(tokenizer_dir: str | Path, processed_dir: str | Path,
                     top_merges: int = 20) -> dict:
    """Round trip over every document, bytes/token and tokens/word on validation,
    fertility on period words, most frequent merges. Text is encoded as the token cache
    encodes it (special-token strings as plain text)."""
    tok = load_tokenizer(tokenizer_dir)
    merges = _merges(tokenizer_dir)
    # a save killed between its renames left files of two tokenizers: the report passed the
    # mixture (exit 0) that every run and token cache refuses (after the reads: damage is named first)
    require_whole_save(tokenizer_dir)
    plain = plain_backend(tok)
    rows = read_manifest(processed_dir)
    require_finished_corpus(processed_dir)  # a report on a half-merged corpus would describe neither
    failures = []
    n_docs = 0
    for split in ("train", "validation"):
        docs = ((r["id"], t) for r, t in iter_split_texts(processed_dir, split, rows))
        for doc_id, offset in roundtrip_failures(tok, docs):
            failures.append({"id": doc_id, "first_diff_char": offset})
        n_docs += sum(r["split"] == split for r in rows)
    n_bytes = n_tokens = n_words = 0
    merge_use: Counter = Counter()
    for _, text in iter_split_texts(processed_dir, "validation", rows):
        ids = [i for piece in split_exact(text) for i in plain.encode(piece, add_special_tokens=False).ids]
        n_bytes += len(text.encode("utf-8"))
        n_tokens += len(ids)
        n_words += len(text.split())
        merge_use.update(ids)
    fertility = {w: len(plain.encode(" " + w, add_special_tokens=False).ids) for w in PERIOD_WORDS}
    inv = {v: k for k, v in tok.get_vocab().items()}
    frequent = [{"token": inv.get(i, "?"), "text": tok.decode([i]), "count": c}
                for i, c in merge_use.most_common(top_merges * 3) if len(inv.get(i, "")) > 1][:top_merges]
    return {
        "tokenizer": str(tokenizer_dir), "vocab_size": len(tok),
        "roundtrip": {"documents": n_docs, "failures": failures,
                      "exact_percent": 100.0 * (n_docs - len(failures)) / max(n_docs, 1)},
        "validation": {"bytes": n_bytes, "tokens": n_tokens, "words": n_words,
                       "bytes_per_token": n_bytes / max(n_tokens, 1),
                       "tokens_per_word": n_tokens / max(n_words, 1)},
        "period_word_fertility": fertility,
        "first_merges": merges[:top_merges],
        "most_frequent_tokens": frequent,
    }


def format_report(rep: dict) -> str:
    rt, v = rep["roundtrip"], rep["validation"]
    lines = [f"tokenizer {rep['tokenizer']} (vocab {rep['vocab_size']})",
             f"round trip: {rt['exact_percent']:.2f}% of {rt['documents']} documents exact",
             f"validation: {v['bytes_per_token']:.3f} bytes/token, {v['tokens_per_word']:.3f} tokens/word",
             "period-word fertility (tokens): " + ", ".join(
                 f"{w}={n}" for w, n in rep["period_word_fertility"].items()),
             "first merges: " + " | ".join(rep["first_merges"][:10]),
             "most frequent multi-char tokens: " + ", ".join(
                 repr(t["text"]) for t in rep["most_frequent_tokens"][:15])]
    for f in rt["failures"]:
        lines.append(f"ROUND TRIP FAILURE: {f['id']} differs at char {f['first_diff_char']}")
    return "\n".join(lines)
