"""``06_inference/serve.py``: the server's arguments and its run.

The script builds the parser here, parses, makes the project :class:`~londonlm.core.layout.Layout`
from ``--root`` and calls :func:`run`; this module never imports ``config.py``."""
from __future__ import annotations

import argparse
import errno
import socket
from contextlib import contextmanager

from ..core import (Layout, StageParser, UsageError, non_negative_int, number_in, port, positive_float,
                    positive_int)
from ..generation import DTYPES
from .batching import CPU_KV_CACHE_MB, CUDA_FREE_FRACTION
from .service import LIMIT_CAPS

STARTUP_FAILED = 3  # uvicorn's own exit code when the server never started


def kv_cache_mb(text: str) -> float | str:
    """``--kv_cache_mb``: ``auto`` or a positive number of MB."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"{e}; use auto or a number of MB") from None


def _capped(name: str):
    """A positive integer up to the limit's cap (LIMIT_CAPS)."""
    return number_in(1, LIMIT_CAPS[name])


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
    p.add_argument("--max_prompt_chars", type=_capped("max_prompt_chars"), default=4000)
    p.add_argument("--max_new_tokens_limit", type=_capped("max_new_tokens_limit"), default=512)
    p.add_argument("--max_samples", type=_capped("max_samples"), default=4,
                   help=f"most samples one request may ask for (at most {LIMIT_CAPS['max_samples']})")
    p.add_argument("--log_level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return p


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port``, or one UsageError line: taken before the model loads
    and before "serving ... on" is printed, so a port in use or a bad --host is said first and
    only (uvicorn would print its own traceback-less error after our announcement, exit 3)."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise UsageError(f"--host {host}: not an address this machine can bind ({e}); use "
                         f"127.0.0.1, 0.0.0.0 or one of its own addresses") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}; "
                         + ("pick another --port, or stop what is serving there"
                            if e.errno == errno.EADDRINUSE else "check --host and --port")) from None
    sock.set_inheritable(True)
    return sock


def run(args: argparse.Namespace, layout: Layout) -> int:
    """Bind the port, load the model, build the app and serve it until interrupted."""
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0-65535, got {args.port}")
    import uvicorn
    from transformers.utils import logging as hf_logging

    from .app import create_app
    from .httpio import uvicorn_options

    layout.check_run_name_used(args.run_name, args.model)
    sock = bind_socket(args.host, args.port)
    hf_logging.disable_progress_bar()
    with _closed_on_error(sock):
        app = create_app(args.model, layout=layout, run=args.run_name or args.preset, device=args.device,
                         dtype=args.dtype, max_concurrency=args.max_concurrency, max_queue=args.max_queue,
                         request_timeout_s=args.request_timeout_s, max_prompt_chars=args.max_prompt_chars,
                         max_new_tokens_limit=args.max_new_tokens_limit, max_samples=args.max_samples,
                         kv_cache_mb=args.kv_cache_mb)
    lm, limits = app.state.lm, app.state.limits
    port = sock.getsockname()[1]  # the one the system picked for --port 0
    print(limits.describe_budget(lm, args.kv_cache_mb), flush=True)
    print(f"serving {lm.model_id} ({lm.n_params:,} params, step {lm.step}, {lm.device}, {lm.dtype}) on "
          f"http://{args.host}:{port}/ (OpenAI-compatible API at /v1; batch of up to "
          f"{limits.max_concurrency}, queue {limits.max_queue})", flush=True)
    server = _server_stopped_cleanly_by_signals(uvicorn.Config(app, host=args.host, port=port,
                                                               log_level=args.log_level, **uvicorn_options()))
    server.run(sockets=[sock])
    return 0 if server.started else STARTUP_FAILED


def _server_stopped_cleanly_by_signals(config):
    """A uvicorn Server whose shutdown on SIGINT/SIGTERM ends the run with exit 0. uvicorn drains
    the requests in flight, then raises the signal again once its handlers are gone: Ctrl-C became
    a KeyboardInterrupt (exit 130) and SIGTERM killed the process (143), so every orderly stop of a
    supervised server (docker stop, systemctl stop, kill) was reported as a failure. The stop the
    signal asked for is complete by then; nothing is left for the signal to do."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self):
            with super().capture_signals():
                try:
                    yield
                finally:  # before uvicorn's own exit re-raises what it caught
                    captured = getattr(self, "_captured_signals", None)  # (uvicorn's own; absent in others)
                    if captured is not None:
                        captured.clear()

    return Server(config)


@contextmanager
def _closed_on_error(sock: socket.socket):
    """Give the port back when the model cannot be served (a caller in-process may retry)."""
    try:
        yield
    except BaseException:
        sock.close()
        raise
