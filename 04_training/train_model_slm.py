#!/usr/bin/env python3
"""Train the GPT-2 Small ("slm") London model with the Hugging Face Trainer.

Auto-resumes from the run's latest valid checkpoint; `--fresh` starts over (the old run is
moved aside). Every `transformers.TrainingArguments` flag works too.

    python 04_training/train_model_slm.py --preset tiny --max_steps 200
"""
try:
    import config  # the project's settings; importable once `bash install.sh` has run
except ModuleNotFoundError:  # started by an interpreter without the project installed
    raise SystemExit("error: londonlm is not installed for this Python: run `bash install.sh`, "
                     "then use .venv/bin/python (or `source .venv/bin/activate` first)")
from londonlm.core.errors import run_main
from londonlm.training.cli import main

DEFAULTS = config.train_defaults("slm")

if __name__ == "__main__":
    run_main(lambda argv: main(argv, DEFAULTS, description=__doc__.splitlines()[0]))
