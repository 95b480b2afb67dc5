#!/usr/bin/env python3
"""Train the GPT-2 Medium ("regular") London model with the Hugging Face Trainer.

Same implementation as train_model_slm.py with the Medium preset; for several GPUs use
`./launch_training.sh regular` (torchrun), and `--fsdp "full_shard auto_wrap"` for FSDP.

    python 04_training/train_model.py --preset micro --max_steps 20
"""
import config
from londonlm.errors import run_main
from londonlm.train_cli import TrainDefaults, main

DEFAULTS = TrainDefaults(config.PRESETS, "regular", config.get_layout(), config.TOKENIZER.name,
                         config.TRAINING.seed, config.TRAINING.wandb_project,
                         config.TRAINING.dataloader_workers)

if __name__ == "__main__":
    run_main(lambda argv: main(argv, DEFAULTS, description=__doc__.splitlines()[0]))
