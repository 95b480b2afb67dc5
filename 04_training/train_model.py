#!/usr/bin/env python3
"""Train the GPT-2 Medium ("regular") London model with the Hugging Face Trainer.

Same implementation as train_model_slm.py with the Medium preset; for several GPUs use
`./launch_training.sh regular` (torchrun), and `--fsdp "full_shard auto_wrap"` for FSDP.

    python 04_training/train_model.py --preset micro --max_steps 20
"""
import sys

import config
from londonlm.train_cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], presets={k: config.asdict(v) for k, v in config.PRESETS.items()},
                  default_preset="regular", get_paths=config.get_paths,
                  tokenizer_name=config.TOKENIZER.name, seed=config.TRAINING.seed,
                  wandb_project=config.TRAINING.wandb_project,
                  dataloader_workers=config.TRAINING.dataloader_workers, prog="train_model.py",
                  description=__doc__.splitlines()[0]))
