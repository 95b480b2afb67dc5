#!/usr/bin/env python3
"""Inspect a GPT-2 Small (slm) run's checkpoints: list them, or load one (default latest), print its
step and validation loss and generate from a prompt.

    python 04_training/test_checkpoint_slm.py --preset tiny --list-checkpoints
"""
import sys

import config
from londonlm.checkpoint_cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], get_paths=config.get_paths, default_preset="slm",
                  presets=list(config.PRESETS), prompt=config.EVALUATION.sample_prompts[0],
                  prog="test_checkpoint_slm.py"))
