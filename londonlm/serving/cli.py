"""``06_inference/serve.py``: the server's arguments and its run.

The script builds the parser here, parses, makes the project :class:`~londonlm.core.layout.Layout`
from ``--root`` and calls :func:`run`; this module never imports ``config.py``."""
from __future__ import annotations

import argparse

from ..core import Layout, StageParser, UsageError, non_negative_int, port, positive_float, positive_int
from ..generation import DTYPES
from .batching import CPU_KV_CACHE_MB, CUDA_FREE_FRACTION


def kv_cache_mb(text: str) -> float | str:
    """``--kv_cache_mb``: ``auto`` or a positive number of MB."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"{e}; use auto or a number of MB") from None


def build_parser(default_preset: str, prog: str | None = None,
                 description: str | None = None) -> argparse.ArgumentParser:
    p = StageParser(prog=prog, description=description)
    p.add_argument("--model", default=None, help="a run name, final, latest, best, checkpoint-N, "
                   "RUN/checkpoint-N, a model folder, or a Hub id in the local cache (default: the "
                   "run's final model, else its latest checkpoint)")
    p.add_argument("--run_name", default=None, help="run folder under 09_models/checkpoints/ "
                   "(default: the preset name)")
    p.add_argument("--preset", default=default_preset, help="preset naming the default run")
    p.add_argument("--root", default=None, help="project root (default: $LONDONLM_ROOT or the repo)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="the weights' dtype (auto: bfloat16 on a GPU that has it, else float16; float32 on CPU)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind; 127.0.0.1 keeps it local (0.0.0.0 exposes it)")
    p.add_argument("--port", type=port, default=8000)
    p.add_argument("--max_concurrency", type=positive_int, default=None,
                   help="requests generating together, sharing each forward pass (default: as many "
                        "sequences as --kv_cache_mb of KV cache holds, at most 64; 1 = one at a time)")
    p.add_argument("--max_queue", type=non_negative_int, default=None,
                   help="requests allowed to wait; more get 503 (default: 4 x max_concurrency, at least 64)")
    p.add_argument("--kv_cache_mb", type=kv_cache_mb, default="auto",
                   help="memory (MB) the batch's KV cache may use; sets the default --max_concurrency "
                        f"(auto: {CUDA_FREE_FRACTION * 100:.0f}%% of the GPU memory free once the model is "
                        f"loaded; {CPU_KV_CACHE_MB:.0f} on CPU)")
    p.add_argument("--request_timeout_s", type=positive_float, default=60.0,
                   help="per-request wall-clock limit (queue wait + generation)")
    p.add_argument("--max_prompt_chars", type=positive_int, default=4000)
    p.add_argument("--max_new_tokens_limit", type=positive_int, default=512)
    p.add_argument("--max_samples", type=positive_int, default=4, help="most samples one request may ask for")
    p.add_argument("--log_level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return p


def run(args: argparse.Namespace, layout: Layout) -> int:
    """Load the model, build the app and serve it until interrupted."""
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0-65535, got {args.port}")
    import uvicorn
    from transformers.utils import logging as hf_logging

    from .app import create_app
    from .httpio import uvicorn_options

    hf_logging.disable_progress_bar()
    app = create_app(args.model, layout=layout, run=args.run_name or args.preset, device=args.device,
                     dtype=args.dtype, max_concurrency=args.max_concurrency, max_queue=args.max_queue,
                     request_timeout_s=args.request_timeout_s, max_prompt_chars=args.max_prompt_chars,
                     max_new_tokens_limit=args.max_new_tokens_limit, max_samples=args.max_samples,
                     kv_cache_mb=args.kv_cache_mb)
    lm, limits = app.state.lm, app.state.limits
    print(limits.describe_budget(lm, args.kv_cache_mb), flush=True)
    print(f"serving {lm.model_id} ({lm.n_params:,} params, step {lm.step}, {lm.device}, {lm.dtype}) on "
          f"http://{args.host}:{args.port}/ (OpenAI-compatible API at /v1; batch of up to "
          f"{limits.max_concurrency}, queue {limits.max_queue})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, **uvicorn_options())
    return 0
