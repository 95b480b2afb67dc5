#!/usr/bin/env python3
"""The data stages at scale: a synthetic corpus of a given size in the British Library books'
parquet layout, then collection, tokenizer, token cache and a few training steps, each stage as
its own process, with its seconds and peak RSS.

    python benchmarks/scale.py --size_gb 1 --work /work/scratch47/scale1
    python benchmarks/scale.py --size_gb 10 --work /work/scratch47/scale10
    python benchmarks/scale.py --compare /work/scratch47/scale1 /work/scratch47/scale10

The corpus (``WORK/blbooks/data/train-NNNNN-of-NNNNN-synthetic.parquet``, the columns of
``biglam/blbooks-parquet``) is made from ``../shared/corpus`` (its .txt files, Gutenberg headers
cut, ``_negatives`` left out) and never copied into the repository: each page is a window of a
random text, with OCR-like character errors at random places (1 in 200 characters), so no two
pages are the same and the near-duplicate filter finds no two books alike, and the
vocabulary keeps growing with size as a real OCR corpus's does. Its books have 40-600 pages,
70% printed in London (or Westminster, Southwark, ...), 92% in English, dates 1600-1899 with
the catalogue's printed forms (``[1790?]``, ``1843-1845``, ``184-``); about 1% of books are split
over two files, 1% have their pages shuffled, 0.5% of pages repeat, 3% are empty.

Each stage runs the real stage script (or, for the token cache, ``ensure_cache`` exactly as
training calls it) in a process of its own, measured by ``os.wait4``: ``ru_maxrss`` is that
process's peak (its worker processes counted as the largest of them, not summed). Results go
to ``WORK/results.json`` after every stage, so a stopped benchmark resumes at the next stage.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "corpus"
PY = sys.executable
STAGES = ("make", "collect", "tokenizer", "cache", "train")
PAGE_CHARS = (1200, 3200)
ROWS_PER_GROUP = 1000
FILE_TEXT_BYTES = 256 << 20
LONDON = ["London", "London", "London", "London : printed for J. Johnson", "London : Longman, Hurst, Rees",
          "Westminster", "Southwark", "London [Westminster]", "Lond.", "London ; Edinburgh"]
ELSEWHERE = ["Edinburgh", "Dublin", "Oxford", "Cambridge", "Glasgow", "Bath", "Paris", "New York", "Philadelphia",
             "Leipzig", "Boston, Mass.", None]
OTHER_LANGUAGES = ["French", "German", "Latin", "Italian", "Dutch", "Spanish"]
CONFUSIONS = {"s": "f", "e": "c", "m": "rn", "h": "li", "l": "1", "o": "0", "u": "n", "n": "u", "i": "l", "c": "e",
              "a": "o", "t": "f", "r": "v", "d": "cl", "w": "vv", "f": "ſ"}
CACHE_SNIPPET = """
import sys, time
from pathlib import Path
from londonlm.tokens.cache import ensure_cache
root, tok = Path(sys.argv[1]), Path(sys.argv[2])
t0 = time.perf_counter()
meta = ensure_cache(root / "run" / "pretokenized_data", tok, root / "data/london_historical/processed", 128, True,
                    mode="auto", progress=False)
print({"seconds": time.perf_counter() - t0, "tokens": {k: v["tokens"] for k, v in meta["splits"].items()}})
"""


# ---------------------------------------------------------------------------- the corpus
def pool_texts(shared: Path = SHARED) -> list[str]:
    texts = []
    for p in sorted(shared.glob("*.txt")):
        t = p.read_text(encoding="utf-8", errors="replace")
        start = re.search(r"\*\*\* ?START OF .*?\*\*\*", t)
        end = re.search(r"\*\*\* ?END OF ", t)
        texts.append(t[start.end() if start else 0: end.start() if end else len(t)])
    return texts


def noisy(text: str, rng: random.Random, rate: float = 1 / 200) -> str:
    """OCR-like errors: a confusable character (or pair) at random places."""
    out, last = [], 0
    for pos in sorted(rng.sample(range(len(text)), max(1, int(len(text) * rate)))):
        c = text[pos]
        if c.lower() in CONFUSIONS:
            out.append(text[last:pos])
            out.append(CONFUSIONS[c.lower()])
            last = pos + 1
    out.append(text[last:])
    return "".join(out)


def raw_date(year: int, rng: random.Random) -> str:
    r = rng.random()
    if r < 0.7:
        return str(year)
    if r < 0.8:
        return f"[{year}?]"
    if r < 0.9:
        return f"{year}-{year + rng.randint(1, 3)}"
    return f"{str(year)[:3]}-"


def book_meta(n: int, rng: random.Random) -> dict:
    year = rng.randint(1600, 1899)
    words = "history account voyage sermon letters poems survey trial memoirs treatise London city river".split()
    return {"record_id": f"{n:09d}", "date": year, "raw_date": raw_date(year, rng),
            "title": " ".join(rng.choice(words) for _ in range(rng.randint(2, 6))).capitalize(),
            "place": rng.choice(LONDON) if rng.random() < 0.7 else rng.choice(ELSEWHERE),
            "name": f"Author {rng.randint(1, 5000)}", "langs": ["English"] if rng.random() < 0.92
            else [rng.choice(OTHER_LANGUAGES)], "conf": min(0.99, max(0.3, rng.gauss(0.85, 0.08)))}


def book_rows(meta: dict, pages: int, texts: list[str], rng: random.Random) -> list[dict]:
    rows = []
    src = rng.choice(texts)
    pos = rng.randrange(len(src))
    for pg in range(1, pages + 1):
        n = rng.randint(*PAGE_CHARS)
        if pos + n > len(src):
            src, pos = rng.choice(texts), 0
        text = noisy(src[pos:pos + n], rng)
        pos += n
        empty = rng.random() < 0.03
        langs = meta["langs"] + [None] * (4 - len(meta["langs"]))
        rows.append({"record_id": meta["record_id"], "date": meta["date"], "raw_date": meta["raw_date"],
                     "title": meta["title"], "place": meta["place"], "empty_pg": empty,
                     "text": None if rng.random() < 0.001 else ("" if empty else text), "pg": pg,
                     "mean_wc_ocr": round(meta["conf"] + rng.gauss(0, 0.03), 3), "std_wc_ocr": 0.1,
                     "name": meta["name"], "Language_1": langs[0], "Language_2": langs[1],
                     "Language_3": langs[2], "Language_4": langs[3], "multi_language": False})
    if rng.random() < 0.01:
        rng.shuffle(rows)
    rows += [dict(r) for r in rows if rng.random() < 0.005]   # repeated pages
    return rows


def make_corpus(out: Path, size_bytes: int, shared: Path = SHARED, seed: int = 0) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    texts = pool_texts(shared)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    n_files = max(1, round(size_bytes / FILE_TEXT_BYTES))
    made = {"text_bytes": 0, "pages": 0, "books": 0, "files": n_files, "parquet_bytes": 0}
    carry: list[dict] = []  # the tail of a book split over two files
    book = 0
    for f in range(n_files):
        path = data / f"train-{f:05d}-of-{n_files:05d}-synthetic.parquet"
        target = size_bytes * (f + 1) // n_files
        writer = None
        rows, written = carry, 0
        carry = []
        while made["text_bytes"] < target:
            pages = book_rows(book_meta(book, rng), rng.randint(40, 600), texts, rng)
            book += 1
            made["books"] += 1
            if made["text_bytes"] + sum(len(r["text"] or "") for r in pages) >= target and rng.random() < 0.5 \
                    and f + 1 < n_files:
                cut = len(pages) // 2
                pages, carry = pages[:cut], pages[cut:]
            rows.extend(pages)
            made["text_bytes"] += sum(len((r["text"] or "").encode()) for r in pages)
            while len(rows) >= ROWS_PER_GROUP:
                table = pa.Table.from_pylist(rows[:ROWS_PER_GROUP])
                writer = writer or pq.ParquetWriter(path, table.schema)
                writer.write_table(table)
                rows, written = rows[ROWS_PER_GROUP:], written + ROWS_PER_GROUP
        if rows:
            table = pa.Table.from_pylist(rows)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
        made["pages"] += written + len(rows)
        writer.close()
        made["parquet_bytes"] += path.stat().st_size
        print(f"make: {path.name} ({made['text_bytes'] / 1e9:.2f} GB of text so far)", flush=True)
    made["text_bytes"] += sum(len((r["text"] or "").encode()) for r in carry)
    return made


# ---------------------------------------------------------------------------- the stages
def run(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Seconds and peak RSS (MiB) of one child process, and a timeline of its own RSS and its
    worker processes' (sampled every 2 s, to see which phase peaks); stops the benchmark if it
    fails."""
    import threading

    import psutil

    t0 = time.perf_counter()
    timeline: list[tuple[float, int, int]] = []
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "true",
                                     **(env or {})})
        done = threading.Event()

        def sample() -> None:
            p = psutil.Process(proc.pid)
            while not done.wait(2.0):
                try:
                    kids = [c.memory_info() for c in p.children(recursive=True)]
                    me = p.memory_info()
                    # anonymous memory (rss less the file-backed ``shared`` pages: mapped libraries,
                    # whose resident share depends on the page cache, not on the corpus)
                    timeline.append((round(time.perf_counter() - t0, 1), me.rss >> 20, sum(k.rss for k in kids) >> 20,
                                     (me.rss - me.shared) >> 20, max((k.rss - k.shared for k in kids), default=0) >> 20))
                except psutil.Error:
                    break

        threading.Thread(target=sample, daemon=True).start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed (exit {rc}); see {log}")
    (log.with_suffix(".rss.json")).write_text(json.dumps({"columns": ["seconds", "main_mib", "workers_mib", "main_anon_mib",
                                                                      "largest_worker_anon_mib"],
                                                          "samples": timeline}))
    # CPU seconds (user + system, the stage's worker processes included): on a machine shared with
    # other work, wall seconds measure the neighbours too
    return {"seconds": round(time.perf_counter() - t0, 1), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mib": round(usage.ru_maxrss / 1024)}


def stage(name: str, work: Path, res: dict) -> dict:
    root, logs = work / "root", work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    tok = root / "tok"
    script = lambda *p: str(REPO.joinpath(*p))  # noqa: E731
    if name == "collect":
        return run([PY, script("02_data_collection", "historical_data_collector.py"), "--root", str(root),
                    "--sources", "bl_books", "--hf_dataset_dir", str(work / "blbooks"), "--workers", "2",
                    "--overwrite"], logs / "collect.log")
    if name == "tokenizer":
        return run([PY, script("03_tokenizer", "train_historical_tokenizer.py"), "--root", str(root),
                    "--preset", "tiny", "--output_dir", str(tok), "--overwrite"], logs / "tokenizer.log")
    if name == "cache":
        return run([PY, "-c", CACHE_SNIPPET, str(root), str(tok)], logs / "cache.log")
    if name == "train":
        # the fixed speed rules: no probe (its one-off cost is measured by benchmarks/train_memory.py),
        # and the same settings at every size
        return run([PY, script("04_training", "train_model_slm.py"), "--preset", "tiny", "--root", str(root),
                    "--tokenizer_dir", str(tok), "--output_dir", str(root / "run"), "--max_steps", "5",
                    "--eval_steps", "5", "--save_steps", "5", "--logging_steps", "1", "--autotune", "off"],
                   logs / "train.log")
    raise ValueError(name)


def corpus_facts(work: Path) -> dict:
    processed = work / "root" / "data" / "london_historical" / "processed"
    rows = [json.loads(x) for x in (processed / "manifest.jsonl").read_text().splitlines() if x.strip()]
    rej = [json.loads(x) for x in (processed / "rejections.jsonl").read_text().splitlines() if x.strip()]
    reasons: dict[str, int] = {}
    for r in rej:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    return {"kept_books": len(rows), "kept_chars": sum(r["chars"] for r in rows), "rejected": reasons}


def commit() -> str:
    """The checkout's commit: which code a figure measured."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=REPO).stdout.strip()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size_gb", type=float, help="text in the synthetic corpus, in GB (10^9 bytes)")
    p.add_argument("--work", type=Path, help="folder for the corpus, the stages' outputs and results.json")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    p.add_argument("--shared", type=Path, default=SHARED, help="the shared corpus the pages are cut from")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("SMALL", "LARGE"),
                   help="print the table of two finished WORK folders and the LARGE/SMALL ratios")
    a = p.parse_args()
    if a.compare:
        return compare(*a.compare)
    if not (a.size_gb and a.work):
        p.error("--size_gb and --work are needed (or --compare)")
    if not a.shared.is_dir():
        p.error(f"no shared corpus at {a.shared} (pass --shared)")
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    out = work / "results.json"
    res = json.loads(out.read_text()) if out.exists() else {
        "size_gb": a.size_gb, "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python "
                   f"{platform.python_version()}", "stages": {},
        "commit": commit()}
    for name in a.stages.split(","):
        if name in res["stages"]:
            print(f"{name}: done before ({res['stages'][name]})", flush=True)
            continue
        t0 = time.perf_counter()
        if name == "make":
            made = make_corpus(work / "blbooks", int(a.size_gb * 1e9), a.shared)
            res["corpus"] = made
            res["stages"][name] = {"seconds": round(time.perf_counter() - t0, 1)}
        else:
            res["stages"][name] = {**stage(name, work, res), "commit": commit()}
            if name == "collect":
                res["corpus"].update(corpus_facts(work))
        print(f"{name}: {res['stages'][name]}", flush=True)
        out.write_text(json.dumps(res, indent=1))
    return 0


def compare(small: Path, large: Path) -> int:
    a, b = (json.loads((w / "results.json").read_text()) for w in (small, large))
    print(f"| stage | {a['size_gb']:g} GB: wall s (CPU s) | peak RSS MiB | {b['size_gb']:g} GB: wall s (CPU s) | "
          f"peak RSS MiB | wall ratio | CPU ratio | RSS ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for name in STAGES[1:]:
        x, y = a["stages"].get(name), b["stages"].get(name)
        if x and y:
            print(f"| {name} | {x['seconds']:,} ({x['cpu_seconds']:,}) | {x['peak_rss_mib']:,} | {y['seconds']:,} "
                  f"({y['cpu_seconds']:,}) | {y['peak_rss_mib']:,} | {y['seconds'] / x['seconds']:.2f}x | "
                  f"{y['cpu_seconds'] / x['cpu_seconds']:.2f}x | {y['peak_rss_mib'] / x['peak_rss_mib']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
