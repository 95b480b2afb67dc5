#!/usr/bin/env python3
"""Train the GPT-2 Small ("slm") London model with the Hugging Face Trainer.

Auto-resumes from the run's latest valid checkpoint; `--fresh` starts over (the old run is
moved aside). Every `transformers.TrainingArguments` flag works too.

    python 04_training/train_model_slm.py --preset tiny --max_steps 200
"""
import config
from londonlm.errors import run_main
from londonlm.train_cli import TrainDefaults, main

DEFAULTS = TrainDefaults(config.PRESETS, "slm", config.get_layout(), config.TOKENIZER.name,
                         config.TRAINING.seed, config.TRAINING.wandb_project,
                         config.TRAINING.dataloader_workers)

if __name__ == "__main__":
    run_main(lambda argv: main(argv, DEFAULTS, description=__doc__.splitlines()[0]))
