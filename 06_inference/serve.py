#!/usr/bin/env python3
"""Serve a londonlm model over HTTP: JSON + server-sent-events API, an OpenAI-compatible API
(/v1/models, /v1/completions, /v1/chat/completions for chat models) and a browser playground.
Concurrent requests are batched together (dynamic batching).

    python 06_inference/serve.py --model final --run_name tiny --port 8000
    # then open http://127.0.0.1:8000/  or:
    curl -s 127.0.0.1:8000/v1/generate -H 'Content-Type: application/json' \
         -d '{"prompt": "Up betimes, and", "max_new_tokens": 40, "seed": 1}'
    curl -s 127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \
         -d '{"model": "tiny/final", "prompt": "Up betimes, and", "max_tokens": 40}'
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, where config.py checks this Python
import config
from londonlm.core.errors import run_main
from londonlm.serving.cli import build_parser, run


def main(argv: list[str] | None = None) -> int:
    args = build_parser(config.DEFAULT_PRESET, prog="serve.py",
                        description=__doc__.splitlines()[0]).parse_args(argv)
    return run(args, config.get_layout(args.root))


if __name__ == "__main__":
    run_main(main)
