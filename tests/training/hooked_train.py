#!/usr/bin/env python3
"""The training script with the test hooks (``testhooks.py`` beside this file) wired into every
Trainer it builds: the entry point the multi-process tests run under torchrun when they make a
rank misbehave or record what each rank trained on. Otherwise exactly
``04_training/train_model_slm.py``.

    LONDONLM_TEST_KILL=1:6 python -m torch.distributed.run --nproc_per_node=2 tests/training/hooked_train.py --preset micro
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]  # the repository root (config.py), then testhooks

import config  # noqa: E402
import testhooks  # noqa: E402
from londonlm.core.errors import run_main  # noqa: E402
from londonlm.training import run as run_module  # noqa: E402
from londonlm.training.cli import main  # noqa: E402

_build = run_module.build_trainer


def hooked_build_trainer(*args, **kwargs):
    trainer = _build(*args, **kwargs)
    testhooks.install(trainer)
    return trainer


run_module.build_trainer = hooked_build_trainer
testhooks.install_kill_points()

if __name__ == "__main__":
    run_main(lambda argv: main(argv, config.train_defaults("slm"), description=__doc__.splitlines()[0]))
