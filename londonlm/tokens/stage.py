"""Stage 03: train the tokenizer on the corpus's training split, and report on it."""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from ..core import SIDECAR, read_json, sidecar_current, write_sidecar
from ..corpus import corpus_time_facts, iter_split_texts, manifest_sha256, read_manifest
from .tokenizer import (era_tokens_for_years, load_tokenizer, plain_backend, roundtrip_failures,
                        save_tokenizer, split_exact, train_bpe)

TRAIN_TOKENIZER_CMD = "python 03_tokenizer/train_historical_tokenizer.py"
PERIOD_WORDS = ["thou", "thee", "thy", "hath", "doth", "'tis", "whilst", "prithee", "methinks",
                "ſo", "ſhall", "moſt", "Westminster", "Cheapside", "Southwark", "Newgate",
                "Tyburn", "shilling", "farthing", "guinea", "hackney", "apothecary", "Thames"]


def train_tokenizer_stage(processed_dir: str | Path, out_dir: str | Path, *, vocab_size: int,
                          min_frequency: int = 2, era_tokens: bool = True, era_width: int = 50,
                          model_max_length: int = 1024, overwrite: bool = False,
                          log=print) -> dict:
    """Train on the training split only (validation stays unseen); skip when current."""
    processed_dir, out_dir = Path(processed_dir), Path(out_dir)
    rows = read_manifest(processed_dir)
    eras = era_tokens_for_years((r.get("year") for r in rows), era_width) if era_tokens else []
    inputs = {"manifest_sha256": manifest_sha256(processed_dir)}
    settings = {"vocab_size": vocab_size, "min_frequency": min_frequency,
                "era_tokens": eras, "model_max_length": model_max_length}
    current, why = sidecar_current(out_dir / SIDECAR, inputs, settings)
    if current and not overwrite:
        log(f"tokenizer: outputs are current ({out_dir}); skipping (use --overwrite to rebuild)")
        return read_json(out_dir / SIDECAR)
    if (out_dir / SIDECAR).exists():
        log(f"tokenizer: rebuilding ({'--overwrite' if overwrite else why})")
        (out_dir / SIDECAR).unlink()
    t0 = time.time()
    train_chars = sum(r["chars"] for r in rows if r["split"] == "train")
    # Pieces cut at pre-token boundaries count the same words as whole documents, so the
    # merges are the same, while the trainer holds one piece's pre-tokens at a time.
    pieces = (p for _, t in iter_split_texts(processed_dir, "train", rows) for p in split_exact(t))
    tok = train_bpe(pieces,
                    vocab_size=vocab_size, min_frequency=min_frequency, era_tokens=eras)
    save_tokenizer(tok, out_dir, model_max_length=model_max_length, era_tokens=eras)
    seconds = time.time() - t0
    counts = {"vocab_size": tok.get_vocab_size(), "train_documents":
              sum(r["split"] == "train" for r in rows), "train_chars": train_chars,
              "train_seconds": round(seconds, 2),
              # the years its merges were learnt from: a time-locked run refuses a later corpus's
              "corpus_time": corpus_time_facts(processed_dir)}
    write_sidecar(out_dir / SIDECAR, "tokenizer", inputs, settings, counts)
    log(f"tokenizer: vocab {tok.get_vocab_size()} ({len(eras)} era tokens) trained on "
        f"{train_chars:,} chars in {seconds:.1f}s -> {out_dir}")
    return read_json(out_dir / SIDECAR)


def tokenizer_report(tokenizer_dir: str | Path, processed_dir: str | Path,
                     top_merges: int = 20) -> dict:
    """Round trip over every document, bytes/token and tokens/word on validation,
    fertility on period words, most frequent merges. Text is encoded as the token cache
    encodes it (special-token strings as plain text)."""
    tok = load_tokenizer(tokenizer_dir)
    plain = plain_backend(tok)
    rows = read_manifest(processed_dir)
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
    merges_path = Path(tokenizer_dir) / "merges.txt"
    merges = []
    if merges_path.exists():
        merges = [ln for ln in merges_path.read_text(encoding="utf-8").splitlines()
                  if ln and not ln.startswith("#")]
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
