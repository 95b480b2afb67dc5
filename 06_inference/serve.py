#!/usr/bin/env python3
"""Serve a londonlm model over HTTP: JSON + server-sent-events API and a browser playground.

    python 06_inference/serve.py --model final --run_name tiny --port 8000
    # then open http://127.0.0.1:8000/  or:
    curl -s 127.0.0.1:8000/v1/generate -H 'Content-Type: application/json' \
         -d '{"prompt": "Up betimes, and", "max_new_tokens": 40, "seed": 1}'
"""
from __future__ import annotations

import argparse
import sys

import config


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="serve.py", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="a run name, final, latest, best, checkpoint-N, "
                   "RUN/checkpoint-N, a model folder, or a Hub id in the local cache (default: the "
                   "run's final model, else its latest checkpoint)")
    p.add_argument("--run_name", default=None, help="run folder under 09_models/checkpoints/ "
                   "(default: the preset name)")
    p.add_argument("--preset", default=config.DEFAULT_PRESET, help="preset naming the default run")
    p.add_argument("--root", default=None, help="project root (default: $LONDONLM_ROOT or the repo)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind; 127.0.0.1 keeps it local (0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max_concurrency", type=int, default=1, help="generations running at once")
    p.add_argument("--max_queue", type=int, default=8, help="requests allowed to wait; more get 503")
    p.add_argument("--request_timeout_s", type=float, default=60.0,
                   help="per-request wall-clock limit (queue wait + generation)")
    p.add_argument("--max_prompt_chars", type=int, default=4000)
    p.add_argument("--max_new_tokens_limit", type=int, default=512)
    p.add_argument("--max_samples", type=int, default=4, help="most samples one request may ask for")
    p.add_argument("--log_level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not 0 <= args.port <= 65535:
        print(f"error: --port must be in 0-65535, got {args.port}", file=sys.stderr)
        return 2
    import uvicorn
    from transformers.utils import logging as hf_logging

    from londonlm.generation import GenerationError
    from londonlm.serving import create_app

    hf_logging.disable_progress_bar()
    paths = config.get_paths(args.root)
    try:
        app = create_app(args.model, device=args.device,
                         run_dir=paths.run_dir(args.run_name or args.preset),
                         runs_root=paths.checkpoints_dir, max_concurrency=args.max_concurrency,
                         max_queue=args.max_queue, request_timeout_s=args.request_timeout_s,
                         max_prompt_chars=args.max_prompt_chars,
                         max_new_tokens_limit=args.max_new_tokens_limit, max_samples=args.max_samples)
    except (GenerationError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    lm = app.state.lm
    print(f"serving {lm.model_id} ({lm.n_params:,} params, step {lm.step}, {lm.device}) on "
          f"http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
