#!/usr/bin/env python3
"""Peak memory of encoding and tokenizer training with long texts whole (the old way) and in
``split_exact`` pieces (today), side by side on the shared corpus.

    python benchmarks/text_in_pieces.py --runs 3 --vocab_size 4096

Two jobs, each in its own process so peak RSS (os.wait4) is the job's own:
- ``encode``: ``generation.encode_text`` of the longest shared text (what evaluation and the
  server do with a whole document), with the tiny-preset tokenizer trained in the first job;
- ``train``: the BPE trainer over every shared text (what stage 03 does over the training split).
"Whole" runs the same code with ``split_exact`` replaced by ``[text]``. Both give the same ids
and the same merges (checked here, and by tests); only memory and time may differ.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "corpus"

JOB = """
import hashlib, json, sys, time
from pathlib import Path
job, mode, tok_dir, vocab = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
files = sorted(p for p in Path(sys.argv[5]).glob("*.txt"))
import londonlm.generation.model as gm
import londonlm.tokens.stage as stage
from londonlm.tokens import load_tokenizer, split_exact
from londonlm.tokens.tokenizer import save_tokenizer, train_bpe
cut = split_exact if mode == "pieces" else (lambda t: [t])
t0 = time.perf_counter()
if job == "train":
    texts = (p for f in files for p in cut(f.read_text(encoding="utf-8")))
    tok = train_bpe(texts, vocab_size=vocab, show_progress=False)
    if not (tok_dir / "tokenizer.json").exists():
        save_tokenizer(tok, tok_dir)
    digest = hashlib.sha256(tok.to_str().encode()).hexdigest()[:16]
else:
    gm.split_exact = cut
    longest = max(files, key=lambda f: f.stat().st_size).read_text(encoding="utf-8")
    ids = gm.encode_text(load_tokenizer(tok_dir), longest)
    digest = hashlib.sha256(str(ids).encode()).hexdigest()[:16]
print(json.dumps({"seconds": time.perf_counter() - t0, "digest": digest}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--vocab_size", type=int, default=4096)
    a = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"error: no shared corpus at {SHARED}")
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = Path(tmp) / "tok"
        for job in ("train", "encode"):
            for r in range(a.runs):
                for mode in ("pieces", "whole"):
                    res = run_job_isolated(job, mode, tok_dir, a.vocab_size)
                    results.setdefault(job, {}).setdefault(mode, []).append(res)
                    print(f"{job:6s} {mode:6s} run {r + 1}: {res['seconds']:.1f}s  "
                          f"peak {res['peak_mb']:.0f} MB  {res['digest']}", flush=True)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    for job, modes in results.items():
        digests = {res["digest"] for runs in modes.values() for res in runs}
        med = {m: (statistics.median(x["seconds"] for x in runs), statistics.median(x["peak_mb"] for x in runs))
               for m, runs in modes.items()}
        print(f"{job}: whole {med['whole'][0]:.1f}s {med['whole'][1]:.0f} MB | pieces {med['pieces'][0]:.1f}s "
              f"{med['pieces'][1]:.0f} MB | peak ratio {med['whole'][1] / med['pieces'][1]:.2f}x | "
              f"same output: {len(digests) == 1}")
    return 0


def run_job_isolated(job: str, mode: str, tok_dir: Path, vocab: int) -> dict:
    """One job in a process of its own, measured by a wrapper that waits on it with wait4, so
    the peak is this job's alone (RUSAGE_CHILDREN would keep the largest so far)."""
    wrapper = ("import os, subprocess, sys, json\n"
               "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, text=True)\n"
               "out = p.stdout.read()\n"
               "_, status, ru = os.wait4(p.pid, 0)\n"
               "if status: sys.exit(1)\n"
               "r = json.loads(out.strip().splitlines()[-1]); r['peak_mb'] = ru.ru_maxrss / 1024\n"
               "print(json.dumps(r))\n")
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-c", JOB, job, mode, str(tok_dir),
                          str(vocab), str(SHARED)], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "TOKENIZERS_PARALLELISM": "true"})
    if out.returncode:
        sys.exit(f"error: {job}/{mode} failed after {time.perf_counter() - t:.0f}s: {out.stderr[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
