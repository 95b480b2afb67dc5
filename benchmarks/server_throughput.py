#!/usr/bin/env python3
"""Server throughput, serial vs batched: 06_inference/serve.py with `--max_concurrency 1` (one
sequence at a time, as the server ran before dynamic batching) against its defaults (dynamic
batching), the same model, 1, 8 and 32 concurrent clients; then a burst of 40 short requests
against the defaults (how many got 503).

    python benchmarks/server_throughput.py --model 09_models/checkpoints/tiny/final
    python benchmarks/server_throughput.py --fresh          # no trained model: tiny shape, random weights
    python benchmarks/server_throughput.py --model MODEL --device cuda   # the servers on the GPU

Clients post `/v1/generate` (sampling, temperature 0.8, a different seed per request) from one
asyncio loop; each keeps one request in flight. Throughput counts the new tokens the server
reports (a random-weight model may end early on <|endoftext|>), latency is per request. Both
servers run alternately in one run; before each timed client count, each server answers one
untimed round at that count, so a batch size's first use (on a GPU: kernel selection, the
caching allocator growing) is not timed. Writes WORK/results.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from train_throughput import cpu_description  # noqa: E402  (names the CPU family/model)
TINY = dict(n_layer=4, n_head=4, n_embd=256, n_positions=128)  # config.py's tiny preset
PROMPT = "Up betimes, and to the office, where"


def fresh_model(work: Path) -> Path:
    """A tiny-preset GPT-2 with random weights and a 4096-token BPE trained on the built-in texts."""
    out = work / "fresh-tiny" / "final"
    if (out / "config.json").exists():
        return out
    from londonlm.training.model import ModelShape, build_model, padded_vocab
    from londonlm.corpus.sources.sample import sample_files
    from londonlm.tokens.tokenizer import save_tokenizer, train_bpe
    from transformers import AutoTokenizer

    texts = [f.read_text(encoding="utf-8", errors="replace") for f in sample_files()[:8]]
    save_tokenizer(train_bpe(texts, vocab_size=4096, min_frequency=2, show_progress=False), out,
                   model_max_length=TINY["n_positions"])
    tok = AutoTokenizer.from_pretrained(str(out))
    model = build_model(ModelShape(**TINY, vocab_size=padded_vocab(len(tok))), tok.bos_token_id,
                        tok.eos_token_id, tok.pad_token_id, seed=0)
    model.save_pretrained(str(out))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, extra: list[str], log: Path, device: str = "cpu") -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "06_inference" / "serve.py"), "--model", str(model),
                             "--port", str(port), "--device", device, "--log_level", "warning", *extra],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    for _ in range(480):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"server exited (code {proc.returncode}); see {log}")
        time.sleep(0.25)
    proc.terminate()
    raise SystemExit(f"server did not answer within 2 minutes; see {log}")


async def race(url: str, clients: int, per_client: int, new_tokens: int, timeline: bool = False) -> dict:
    """``clients`` clients, each sending ``per_client`` requests one after another. ``timeline``:
    also the server's /health every 50 ms and each request's span (:func:`stalls` reads them)."""
    import httpx

    spans, tokens, codes = [], [], []

    async def client(c: httpx.AsyncClient, k: int, t0: float):
        for j in range(per_client):
            body = {"prompt": PROMPT, "max_new_tokens": new_tokens, "temperature": 0.8, "seed": k * 1000 + j}
            start = time.perf_counter() - t0
            r = await c.post(url + "/v1/generate", json=body)
            spans.append((start, time.perf_counter() - t0))
            codes.append(r.status_code)
            tokens.append(r.json()["samples"][0]["new_tokens"] if r.status_code == 200 else 0)

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients + 4)) as c:
        done = asyncio.Event()
        t0 = time.perf_counter()
        watcher = asyncio.create_task(watch(c, url, t0, done)) if timeline else None
        await asyncio.gather(*[client(c, k, t0) for k in range(clients)])
        wall = time.perf_counter() - t0
        done.set()
        polls = await watcher if watcher else None
    lat = sorted(b - a for a, b in spans)
    out = {"clients": clients, "requests": len(lat), "errors": sum(code != 200 for code in codes),
           "new_tokens": sum(tokens), "tokens_per_s": round(sum(tokens) / wall, 1),
           "p50_seconds": round(statistics.median(lat), 3),
           "p95_seconds": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 3), "wall_seconds": round(wall, 2)}
    if polls is not None:
        out["stalls"] = stalls(polls, spans)
        out["timeline"] = {"polls": polls, "spans": [[round(a, 3), round(b, 3)] for a, b in spans]}
    return out


async def watch(c, url: str, t0: float, done: asyncio.Event, every: float = 0.05) -> list[dict]:
    """The engine's counters from /health every ``every`` seconds until ``done``: when asked (s
    after ``t0``), how long the answer took (a busy event loop answers late), decode steps so
    far, rows decoding, rows waiting to join."""
    polls = []
    while not done.is_set():
        asked = time.perf_counter()
        batch = (await c.get(url + "/health")).json().get("batch", {})
        polls.append({"t": round(asked - t0, 3), "answer_s": round(time.perf_counter() - asked, 3),
                      "steps": batch.get("steps"), "rows": batch.get("rows"), "pending": batch.get("pending_rows")})
        try:
            await asyncio.wait_for(done.wait(), every)
        except asyncio.TimeoutError:
            pass
    return polls


def stalls(polls: list[dict], spans: list[tuple[float, float]]) -> dict:
    """Where a slow request waited: the longest stretch of polls over which the engine made no
    decode step while a request was in flight (with the rows decoding and waiting then), and
    the slowest /health answer (the server's event loop busy or blocked)."""
    longest, start, at = 0.0, None, None
    for a, b in zip(polls, polls[1:]):
        busy = any(s < a["t"] and e > b["t"] for s, e in spans)
        if busy and a["steps"] == b["steps"]:
            start = a if start is None else start
            if b["t"] - start["t"] > longest:
                longest, at = b["t"] - start["t"], start
        else:
            start = None
    slowest = max(polls, key=lambda p: p["answer_s"], default=None)
    return {"no_step_seconds": round(longest, 3), "no_step_from": at and at["t"],
            "rows_then": at and at["rows"], "pending_then": at and at["pending"],
            "slowest_health_s": slowest and slowest["answer_s"], "slowest_health_at": slowest and slowest["t"],
            **slowest_rate(polls, spans)}


def slowest_rate(polls: list[dict], spans: list[tuple[float, float]], window: float = 0.5) -> dict:
    """The fewest decode steps per second over any ``window`` seconds a request was in flight
    throughout: an engine that crawls (on the first GPU runs, cuDNN compiling attention plans
    for each new shape: a step every 0.2-0.5 s for seconds) never stops outright, so
    ``no_step_seconds`` alone misses it."""
    worst, at = None, None
    for i, a in enumerate(polls):
        b = next((p for p in polls[i + 1:] if p["t"] - a["t"] >= window), None)
        if b is None:
            break
        if any(s < a["t"] and e > b["t"] for s, e in spans):
            rate = (b["steps"] - a["steps"]) / (b["t"] - a["t"])
            if worst is None or rate < worst:
                worst, at = rate, a["t"]
    return {"slowest_steps_per_s": worst if worst is None else round(worst, 1), "slowest_rate_from": at}


async def burst(url: str, n: int, new_tokens: int) -> dict:
    import httpx

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=n)) as c:
        rs = await asyncio.gather(*[c.post(url + "/v1/generate", json={
            "prompt": "The prisoner", "max_new_tokens": new_tokens, "seed": i}) for i in range(n)])
    codes = [r.status_code for r in rs]
    return {"requests": n, "answered": codes.count(200), "busy_503": codes.count(503)}


def markdown(res: dict) -> str:
    rows = ["| mode | clients | requests | tokens/s | p50 latency | p95 latency |", "|---|---:|---:|---:|---:|---:|"]
    for mode in ("serial", "batched"):
        for r in res[mode]:
            rows.append(f"| {mode} | {r['clients']} | {r['requests']} | {r['tokens_per_s']} | "
                        f"{r['p50_seconds']} s | {r['p95_seconds']} s |")
    speedups = [f"{b['clients']} clients: {b['tokens_per_s'] / max(s['tokens_per_s'], 1e-9):.2f}x"
                for s, b in zip(res["serial"], res["batched"])]
    b = res["burst"]
    return "\n".join(rows + ["", "batched / serial throughput: " + ", ".join(speedups),
                             f"burst of {b['requests']} (defaults): {b['answered']} answered, {b['busy_503']} 503"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="model folder (a trained tiny model for the real race)")
    p.add_argument("--fresh", action="store_true", help="no model: build a random-weight tiny-shape one")
    p.add_argument("--work", type=Path, default=Path("/tmp/londonlm_server_bench"))
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests_per_client", type=int, default=4)
    p.add_argument("--new_tokens", type=int, default=32)
    p.add_argument("--burst", type=int, default=40)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the servers run the model")
    p.add_argument("--timeline", action="store_true", help="poll each server's /health during the timed rounds "
                   "and report where slow requests waited (results.json: each round's stalls and timeline)")
    a = p.parse_args()
    if not a.model and not a.fresh:
        p.error("pass --model FOLDER, or --fresh")
    a.work.mkdir(parents=True, exist_ok=True)
    model = a.model.resolve() if a.model else fresh_model(a.work)
    import torch

    res = {"meta": {"command": " ".join(["benchmarks/server_throughput.py", *sys.argv[1:]]),
                    "date": time.strftime("%Y-%m-%d"), "model": str(model),
                    "machine": f"{cpu_description()}, torch {torch.__version__}", "device": a.device},
           "serial": [], "batched": []}
    modes = {"serial": ["--max_concurrency", "1", "--max_queue", "256"], "batched": []}
    servers = {m: start_server(model, extra, a.work / f"{m}.log", a.device) for m, extra in modes.items()}
    import httpx

    health = httpx.get(servers["batched"][1] + "/health", timeout=10).json()
    res["meta"].update(dtype=health.get("dtype"), kv_cache_mb=health.get("limits", {}).get("kv_cache_mb"),
                       max_concurrency=health.get("limits", {}).get("max_concurrency"))
    try:
        for n in a.clients:  # alternate the two servers client count by client count
            for mode, (_, url) in servers.items():
                asyncio.run(race(url, n, 1, a.new_tokens))  # warm-up at this count, untimed
                r = asyncio.run(race(url, n, a.requests_per_client, a.new_tokens, a.timeline))
                res[mode].append(r)
                print(json.dumps({"mode": mode, **{k: v for k, v in r.items() if k != "timeline"}}), flush=True)
        res["burst"] = asyncio.run(burst(servers["batched"][1], a.burst, 8))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)
    (a.work / "results.json").write_text(json.dumps(res, indent=2))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
