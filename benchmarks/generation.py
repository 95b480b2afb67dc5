#!/usr/bin/env python3
"""Generation speed on this machine: new tokens/s for the `tiny` and `slm` model shapes with and
without the KV cache (greedy, batch 1, a fixed number of new tokens), and HTTP server latency for
1 and 8 concurrent clients against 06_inference/serve.py serving a trained model.

    python benchmarks/generation.py --model 09_models/checkpoints/tiny/final

Models for the speed table are freshly initialised (speed does not depend on the weights);
the server test needs a real model folder (--model). Writes WORK/results.json.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAPES = {  # the presets' shapes (config.py); vocab as the presets' tokenizers
    "tiny": dict(n_layer=4, n_head=4, n_embd=256, n_positions=128, vocab_size=4096),
    "slm": dict(n_layer=12, n_head=12, n_embd=768, n_positions=512, vocab_size=30016),
}


def gen_speed(shape: str, use_cache: bool, prompt_len: int, new_tokens: int, repeats: int) -> dict:
    import torch

    from londonlm.training.model import ModelShape, build_model

    model = build_model(ModelShape(**SHAPES[shape]), 0, 0, 0, seed=0).eval()
    ids = torch.randint(1, SHAPES[shape]["vocab_size"], (1, prompt_len))
    times = []
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False, use_cache=use_cache)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                 use_cache=use_cache, eos_token_id=None, pad_token_id=0)
            times.append(time.perf_counter() - t0)
            assert out.shape[1] == prompt_len + new_tokens
    med = statistics.median(times)
    return {"shape": shape, "kv_cache": use_cache, "prompt_tokens": prompt_len, "new_tokens": new_tokens,
            "median_seconds": round(med, 3), "tokens_per_s": round(new_tokens / med, 1),
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_latency(model: Path, clients: list[int], requests_per_client: int, new_tokens: int,
                   log: Path) -> list[dict]:
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "06_inference" / "serve.py"), "--model", str(model),
                             "--port", str(port), "--max_queue", "64", "--log_level", "warning"],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise SystemExit(f"server exited (code {proc.returncode}); see {log}")
            time.sleep(0.5)
        body = {"prompt": "Up betimes, and to the office, where", "max_new_tokens": new_tokens,
                "temperature": 0.8, "seed": 1}

        def one(_):
            t0 = time.perf_counter()
            r = httpx.post(url + "/v1/generate", json=body, timeout=600)
            r.raise_for_status()
            return time.perf_counter() - t0

        one(0)  # warm-up
        out = []
        for n in clients:
            t0 = time.perf_counter()
            with cf.ThreadPoolExecutor(n) as ex:
                lat = sorted(ex.map(one, range(n * requests_per_client)))
            wall = time.perf_counter() - t0
            out.append({"clients": n, "requests": len(lat), "new_tokens": new_tokens,
                        "p50_seconds": round(statistics.median(lat), 3),
                        "p95_seconds": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 3),
                        "requests_per_s": round(len(lat) / wall, 2),
                        "tokens_per_s": round(len(lat) * new_tokens / wall, 1)})
            print(json.dumps(out[-1]), flush=True)
        return out
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="trained model folder for the server test (skipped without)")
    p.add_argument("--work", type=Path, default=Path("/tmp/londonlm_gen_bench"))
    p.add_argument("--prompt_tokens", type=int, default=32)
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--server_new_tokens", type=int, default=32)
    p.add_argument("--requests_per_client", type=int, default=3)
    a = p.parse_args()
    import torch

    a.work.mkdir(parents=True, exist_ok=True)
    res = {"meta": {"command": " ".join(["benchmarks/generation.py", *sys.argv[1:]]), "date": time.strftime("%Y-%m-%d"),
                    "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                               f"{torch.get_num_threads()} threads"}, "generation": [], "server": []}
    for shape in SHAPES:
        for cache in (True, False):
            r = gen_speed(shape, cache, a.prompt_tokens, a.new_tokens, a.repeats)
            res["generation"].append(r)
            print(json.dumps(r), flush=True)
    if a.model:
        res["server"] = server_latency(a.model.resolve(), [1, 8], a.requests_per_client, a.server_new_tokens,
                                       a.work / "server.log")
    (a.work / "results.json").write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
