#!/usr/bin/env python3
"""Train the GPT-2 Medium ("regular") London model with the Hugging Face Trainer.

Same implementation as train_model_slm.py with the Medium preset; for several GPUs use
`./launch_training.sh regular` (torchrun), and `--fsdp "full_shard auto_wrap"` for FSDP.

    python 04_training/train_model.py --preset micro --max_steps 20
"""
try:
    import config  # the project's settings; importable once `bash install.sh` has run
except ModuleNotFoundError:  # started by an interpreter without the project installed
    raise SystemExit("error: londonlm is not installed for this Python: run `bash install.sh`, "
                     "then use .venv/bin/python (or `source .venv/bin/activate` first)")
from londonlm.core.errors import run_main
from londonlm.training.cli import main

DEFAULTS = config.train_defaults("regular")

if __name__ == "__main__":
    run_main(lambda argv: main(argv, DEFAULTS, description=__doc__.splitlines()[0]))
