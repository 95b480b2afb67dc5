#!/usr/bin/env python3
"""Train the GPT-2 Small ("slm") London model with the Hugging Face Trainer.

Auto-resumes from the run's latest valid checkpoint; `--fresh` starts over (the old run is
moved aside). Every `transformers.TrainingArguments` flag works too.

    python 04_training/train_model_slm.py --preset tiny --max_steps 200
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, where config.py checks this Python
import config
from londonlm.core.errors import run_main
from londonlm.training.cli import main

if __name__ == "__main__":
    # the defaults (and the project root in them) are made inside run_main: a bad
    # $LONDONLM_ROOT is then one error line, not a traceback at import
    run_main(lambda argv: main(argv, config.train_defaults("slm"), description=__doc__.splitlines()[0]))
