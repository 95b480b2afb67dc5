#!/usr/bin/env python3
"""Measure the data stages on the shared corpus: collection (documents kept/rejected by reason,
MB/s, peak RSS), tokenizer training time, bytes per token on the validation split,
pretokenization MB/s and peak RSS, and token-cache load time for a small corpus (the embedded
sample) and a ~10x larger one (the shared corpus).

    python benchmarks/data_stages.py --work /tmp/londonlm_data_bench

Each stage runs as its own process through the real scripts, so peak RSS is that stage's own
(os.wait4). Writes WORK/results.json and prints a summary.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PY = sys.executable

# Loads a cache exactly as training does (compatibility check, then memory-maps) and touches
# one random block, so the figure covers what a resumed or new run pays before step one.
LOAD_SNIPPET = """
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
from londonlm.tokens.cache import ensure_cache, load_tokens, load_offsets
t1 = time.perf_counter()
root = Path(sys.argv[1])
meta = ensure_cache(root / "cache", root / "tok", root / "data/london_historical/processed", 128,
                    False, mode="require", log=lambda *_: None)
tr, va = load_tokens(root / "cache", "train"), load_tokens(root / "cache", "validation")
off = load_offsets(root / "cache", "train")
i = len(tr) // 2
s = int(tr[i:i + 129].astype("int64").sum())
t2 = time.perf_counter()
print(json.dumps({"load_seconds": t2 - t1, "import_seconds": t1 - t0, "train_tokens": len(tr),
                  "validation_tokens": len(va)}))
"""

PRETOK_SNIPPET = """
import json, sys, time
from pathlib import Path
from londonlm.tokens.cache import ensure_cache
root = Path(sys.argv[1])
t0 = time.perf_counter()
meta = ensure_cache(root / "cache", root / "tok", root / "data/london_historical/processed", 128,
                    False, mode="rebuild", progress=False, log=lambda *_: None)
print(json.dumps({"seconds": time.perf_counter() - t0, "build_seconds": meta["build_seconds"],
                  "splits": meta["splits"]}))
"""


def run(cmd: list[str], log: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of one child process; fails loudly."""
    t0 = time.perf_counter()
    with open(log, "w") as errf:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, text=True, cwd=REPO,
                                env=dict(os.environ, TOKENIZERS_PARALLELISM="true", HF_HUB_OFFLINE="1"))
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed (exit {rc}); see {log}")
    return wall, usage.ru_maxrss / 1024, out


def tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def stage_root(root: Path, source_dir: Path | None, vocab: int, logs: Path) -> dict:
    """Collect + tokenizer for one corpus under ROOT; returns the figures."""
    processed = root / "data" / "london_historical" / "processed"
    cmd = [PY, str(REPO / "02_data_collection" / "historical_data_collector.py"), "--root", str(root),
           "--overwrite"]
    if source_dir:
        cmd += ["--source_dir", str(source_dir)]
    wall, rss, _ = run(cmd, logs / f"collect_{root.name}.log")
    rows = [json.loads(x) for x in (processed / "manifest.jsonl").read_text().splitlines() if x.strip()]
    rej = [json.loads(x) for x in (processed / "rejections.jsonl").read_text().splitlines() if x.strip()]
    in_bytes = tree_bytes(source_dir) if source_dir else sum(r.get("chars", 0) for r in rows)
    out = {"collect": {"seconds": round(wall, 1), "peak_rss_mib": round(rss), "input_mb": round(in_bytes / 1e6, 2),
                       "mb_per_s": round(in_bytes / 1e6 / wall, 2), "documents_kept": len(rows),
                       "rejected_by_reason": dict(Counter(r.get("reason", "?") for r in rej)),
                       "kept_chars": sum(r.get("chars", 0) for r in rows)}}
    tok = root / "tok"
    wall, rss, _ = run([PY, str(REPO / "03_tokenizer" / "train_historical_tokenizer.py"), "--root", str(root),
                        "--vocab_size", str(vocab), "--no_era_tokens", "--output_dir", str(tok), "--overwrite"],
                       logs / f"tokenizer_{root.name}.log")
    out["tokenizer"] = {"seconds": round(wall, 1), "peak_rss_mib": round(rss), "vocab_size": vocab}
    # bytes/token on the validation split, with the tokenizer just trained
    from transformers import AutoTokenizer

    from londonlm.corpus import iter_split_texts

    t = AutoTokenizer.from_pretrained(str(tok))
    nbytes = ntok = 0
    for _, text in iter_split_texts(processed, "validation"):
        nbytes += len(text.encode("utf-8"))
        ntok += len(t(text)["input_ids"])
    out["tokenizer"]["validation_bytes_per_token"] = round(nbytes / max(1, ntok), 3)
    text_mb = tree_bytes(processed / "texts") / 1e6
    wall, rss, res = run([PY, "-c", PRETOK_SNIPPET, str(root)], logs / f"pretok_{root.name}.log")
    r = json.loads(res.strip().splitlines()[-1])
    tokens = sum(s["tokens"] for s in r["splits"].values()) if all("tokens" in s for s in r["splits"].values()) else None
    out["pretokenize"] = {"seconds": round(r["seconds"], 2), "text_mb": round(text_mb, 2),
                          "mb_per_s": round(text_mb / r["seconds"], 2), "peak_rss_mib": round(rss),
                          "tokens": tokens}
    loads = []
    for _ in range(5):
        _, _, res = run([PY, "-c", LOAD_SNIPPET, str(root)], logs / f"load_{root.name}.log")
        loads.append(json.loads(res.strip().splitlines()[-1]))
    out["cache_load"] = {"median_seconds": round(statistics.median(x["load_seconds"] for x in loads), 4),
                         "runs": [round(x["load_seconds"], 4) for x in loads],
                         "train_tokens": loads[0]["train_tokens"]}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/londonlm_data_bench"))
    p.add_argument("--corpus", type=Path, default=SHARED / "corpus", help="the large corpus folder")
    p.add_argument("--vocab", type=int, default=30000, help="tokenizer vocabulary (the slm preset's)")
    a = p.parse_args()
    if not a.corpus.is_dir():
        raise SystemExit(f"{a.corpus} not found: pass --corpus (e.g. ../shared/corpus)")
    work = a.work.resolve()
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results = {"meta": {"command": " ".join(["benchmarks/data_stages.py", *sys.argv[1:]]),
                        "date": time.strftime("%Y-%m-%d"),
                        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}"}}
    results["small_sample"] = stage_root(work / "sample", None, a.vocab, logs)
    print(json.dumps({"small_sample": results["small_sample"]}, indent=1), flush=True)
    results["shared_corpus"] = stage_root(work / "shared", a.corpus.resolve(), a.vocab, logs)
    print(json.dumps({"shared_corpus": results["shared_corpus"]}, indent=1), flush=True)
    s, l = results["small_sample"]["cache_load"], results["shared_corpus"]["cache_load"]
    results["cache_load_ratio_large_over_small"] = {
        "tokens": round(l["train_tokens"] / max(1, s["train_tokens"]), 1),
        "load_time": round(l["median_seconds"] / s["median_seconds"], 2)}
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results["cache_load_ratio_large_over_small"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
