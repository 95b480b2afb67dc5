#!/usr/bin/env python3
"""Generate text with a trained londonlm model: one prompt, several samples, streaming, or a REPL;
or talk to a period chat model (--chat: history, /year 1790, /reset, /help, streamed answers).

    python 06_inference/inference_unified.py --model final --run_name tiny --prompt "Up betimes, and" --seed 1
    python 06_inference/inference_unified.py --chat --model tiny-chat --year 1790 --prompt "Where do you live?"

Sampling defaults come from the model's generation_config.json; flags override them. Text goes
to stdout, model and timing information to stderr. Special-token strings typed in a prompt are
plain text unless --allow_control_tokens.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, where config.py checks this Python
import config
from londonlm.core.errors import run_main
from londonlm.serving.inference_cli import build_parser, parse, run


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(config.DEFAULT_PRESET, prog="inference_unified.py",
                          description=__doc__.splitlines()[0])
    args = parse(parser, argv)
    return run(args, config.get_layout(args.root), default_prompt=config.EVALUATION.sample_prompts[0])


if __name__ == "__main__":
    run_main(main)
