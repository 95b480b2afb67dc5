#!/usr/bin/env python3
"""Tokenizer quality: bytes per token of the project's tokenizer vs a stock ``tokenizers``
ByteLevelBPE of the same vocabulary, side by side on the shared corpus's validation split.

    python benchmarks/tokenizer_quality.py --work /tmp/londonlm_tok_bench

Builds the processed corpus from ``../shared/corpus`` with the collector under WORK/root (a
current one is reused), then trains, each with the same vocabulary size and min_frequency:

- ``ours``: stage 03 as the pipeline runs it (training split of the processed corpus, era
  tokens reserved);
- ``stock, processed train``: ``ByteLevelBPETokenizer().train(files)`` on the same processed
  training files (isolates the trainer: same text, stock defaults, no reserved ids);
- ``stock, raw train``: the same on the raw source files of the training documents
  (Gutenberg headers, CRLF and XML markup left in);
- ``stock, raw all``: on every raw file of the corpus folder, as a quick comparison would do,
  which includes the validation novels themselves.

Every tokenizer is scored on the processed validation split (what the model is evaluated on)
and on the raw validation files; ours encodes as the token cache does (special-token strings
as text). Writes WORK/tokenizer_quality.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")


def collect(root: Path, corpus: Path) -> float:
    """The processed corpus under ROOT (the collector skips when current); seconds taken."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(REPO / "02_data_collection" / "historical_data_collector.py"),
                           "--root", str(root), "--source_dir", str(corpus)], cwd=REPO, stdout=subprocess.DEVNULL)
    if done.returncode:  # it said why on stderr, one error line: not a traceback of ours after it
        raise SystemExit(done.returncode)
    return time.perf_counter() - t0


def train_stock(files: list[Path], vocab: int, min_frequency: int):
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train([str(f) for f in files], vocab_size=vocab, min_frequency=min_frequency,
              show_progress=False)
    return tok


def bytes_per_token(encoder, texts: list[str]) -> tuple[float, int]:
    """(UTF-8 bytes / tokens, tokens) over TEXTS, no special tokens added."""
    n = sum(len(e.ids) for e in encoder.encode_batch(texts, add_special_tokens=False))
    return sum(len(t.encode("utf-8")) for t in texts) / n, n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/londonlm_tok_bench", help="scratch folder")
    p.add_argument("--corpus", default=str(REPO.parent / "shared" / "corpus"), help="raw corpus folder")
    p.add_argument("--vocab_size", type=int, default=None, help="default: the slm preset's")
    p.add_argument("--min_frequency", type=int, default=None, help="default: the slm preset's")
    a = p.parse_args(argv)
    for flag, v in (("--vocab_size", a.vocab_size), ("--min_frequency", a.min_frequency)):
        if v is not None and v < 1:  # (0 was read as "the default" by the `or` below)
            p.error(f"{flag} must be positive")
    if not Path(a.corpus).is_dir():
        p.error(f"--corpus {a.corpus} is not a folder")
    import config
    from londonlm.corpus import iter_split_texts, read_manifest
    from londonlm.tokens.tokenizer import load_tokenizer, plain_backend
    from londonlm.tokens.stage import train_tokenizer_stage

    preset = config.get_preset("slm")
    vocab, min_freq = a.vocab_size or preset.vocab_size, a.min_frequency or preset.min_frequency
    work, corpus = Path(a.work), Path(a.corpus)
    root = work / "root"
    collect_s = collect(root, corpus)
    processed = config.get_layout(root).processed_dir
    rows = read_manifest(processed)
    raw = sorted(f for f in corpus.iterdir() if f.is_file() and f.suffix in (".txt", ".xml"))
    by_name = {f.name: f for f in raw}
    train_rows = [r for r in rows if r["split"] == "train"]
    val_rows = [r for r in rows if r["split"] == "validation"]
    val_texts = [t for _, t in iter_split_texts(processed, "validation", rows)]
    # as the files are: CRLF and BOMs kept (read_text would translate newlines)
    val_raw = [by_name[r["relpath"]].read_bytes().decode("utf-8-sig", "replace") for r in val_rows]

    contenders = {}
    t0 = time.perf_counter()
    train_tokenizer_stage(processed, work / "ours", vocab_size=vocab, min_frequency=min_freq,
                          era_tokens=True, overwrite=True, log=lambda *_: None)
    contenders["ours (stage 03, processed train split)"] = (
        plain_backend(load_tokenizer(work / "ours")), time.perf_counter() - t0)
    for name, files in (
            ("stock, processed train files", [processed / r["path"] for r in train_rows]),
            ("stock, raw train files", [by_name[r["relpath"]] for r in train_rows]),
            ("stock, raw files incl. validation", raw)):
        t0 = time.perf_counter()
        contenders[name] = (train_stock(files, vocab, min_freq), time.perf_counter() - t0)

    results = []
    for name, (enc, seconds) in contenders.items():
        bpt, n = bytes_per_token(enc, val_texts)
        bpt_raw, _ = bytes_per_token(enc, val_raw)
        results.append({"tokenizer": name, "vocab_size": enc.get_vocab_size(), "train_seconds": round(seconds, 1),
                        "validation_tokens": n, "validation_bytes_per_token": round(bpt, 4),
                        "raw_validation_bytes_per_token": round(bpt_raw, 4)})
    ours = results[0]["validation_bytes_per_token"]
    out = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
           "cpus": os.cpu_count(), "vocab_size": vocab, "min_frequency": min_freq,
           "collect_seconds": round(collect_s, 1),
           "validation_documents": [r["id"] for r in val_rows],
           "validation_bytes": sum(len(t.encode("utf-8")) for t in val_texts), "results": results}
    work.mkdir(parents=True, exist_ok=True)
    (work / "tokenizer_quality.json").write_text(json.dumps(out, indent=1))
    print(f"validation split: {len(val_rows)} documents, {out['validation_bytes']:,} bytes; "
          f"vocab {vocab}, min_frequency {min_freq}; collect {collect_s:.1f} s")
    print("| tokenizer | bytes/token (validation split) | vs ours | bytes/token (raw validation files) | train s |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['tokenizer']} | {r['validation_bytes_per_token']:.4f} | "
              f"{r['validation_bytes_per_token'] / ours - 1:+.2%} | {r['raw_validation_bytes_per_token']:.4f} | "
              f"{r['train_seconds']} |")
    return 0


if __name__ == "__main__":
    from londonlm.core import run_main

    run_main(main)  # a refusal of the project's stages (a vocabulary too small) is one error line
