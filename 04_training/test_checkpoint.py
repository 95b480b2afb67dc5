#!/usr/bin/env python3
"""Inspect a GPT-2 Medium (regular) run's checkpoints: list them, or load one (default latest), print its
step and validation loss and generate from a prompt.

    python 04_training/test_checkpoint.py --preset tiny --list-checkpoints
"""
try:
    import config  # the project's settings; importable once `bash install.sh` has run
except ModuleNotFoundError:  # started by an interpreter without the project installed
    raise SystemExit("error: londonlm is not installed for this Python: run `bash install.sh`, "
                     "then use .venv/bin/python (or `source .venv/bin/activate` first)")
from londonlm.serving.checkpoint_cli import main
from londonlm.core.errors import run_main

if __name__ == "__main__":
    run_main(lambda argv: main(argv, config.get_layout(), "regular", list(config.PRESETS),
                               config.EVALUATION.sample_prompts[0],
                               config.EVALUATION.sample_max_new_tokens))
