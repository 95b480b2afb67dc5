#!/usr/bin/env python3
"""Inspect a GPT-2 Medium (regular) run's checkpoints: list them, or load one (default latest), print its
step and validation loss and generate from a prompt.

    python 04_training/test_checkpoint.py --preset tiny --list-checkpoints
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, where config.py checks this Python
import config
from londonlm.serving.checkpoint_cli import main
from londonlm.core.errors import run_main

if __name__ == "__main__":
    run_main(lambda argv: main(argv, config.get_layout(), "regular", list(config.PRESETS),
                               config.EVALUATION.sample_prompts[0],
                               config.EVALUATION.sample_max_new_tokens))
