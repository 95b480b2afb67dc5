#!/usr/bin/env python3
"""Train the GPT-2 Small ("slm") London model with the Hugging Face Trainer.

Auto-resumes from the run's latest valid checkpoint; `--fresh` starts over (the old run is
moved aside). Every `transformers.TrainingArguments` flag works too.

    python 04_training/train_model_slm.py --preset tiny --max_steps 200
"""
import sys

import config
from londonlm.train_cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], presets={k: config.asdict(v) for k, v in config.PRESETS.items()},
                  default_preset="slm", get_paths=config.get_paths,
                  tokenizer_name=config.TOKENIZER.name, seed=config.TRAINING.seed,
                  wandb_project=config.TRAINING.wandb_project,
                  dataloader_workers=config.TRAINING.dataloader_workers, prog="train_model_slm.py",
                  description=__doc__.splitlines()[0]))
