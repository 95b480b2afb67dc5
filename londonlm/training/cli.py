"""Command-line front end of ``04_training/train_model_slm.py`` and ``train_model.py``:
parses the training flags and every ``TrainingArguments`` flag (:func:`~.flags.parse_train_flags`),
builds the run's configuration tree with what the user did not set from the preset
(:func:`~.job.build_config`, with config.py's :class:`~.defaults.TrainDefaults` passed in by the
script), then runs :func:`~.run.run_training`.

Errors a user can fix raise :class:`~londonlm.core.errors.LondonLMError`; the scripts wrap
:func:`main` in :func:`~londonlm.core.errors.run_main`."""
from __future__ import annotations

from ..core import UsageError, describe_checkpoints
from .defaults import TrainDefaults
from .flags import parse_train_flags
from .job import build_config, run_of

__all__ = ["TrainDefaults", "main"]


def main(argv: list[str], defaults: TrainDefaults, prog: str | None = None,
         description: str | None = None) -> int:
    """Train (or resume) the run a command line names; ``--list_checkpoints`` lists it."""
    flags = parse_train_flags(argv, prog=prog, description=description)
    if flags.run.list_checkpoints:
        run, _, _ = run_of(flags, defaults)
        if not run.dir.is_dir():  # a mistyped name or --root listed as "(no checkpoints)", exit 0
            raise UsageError(f"no run folder at {run.dir}: check --run_name_dir/--run_name/--preset, "
                             f"--output_dir and --root (or $LONDONLM_ROOT)")
        print(describe_checkpoints(run.dir))
        return 0
    config = build_config(flags, defaults)
    # imported once the command line stands: the Trainer and model code take ~4 s to import,
    # which --help and a refused flag need not wait for
    from .run import run_training

    run_training(config)
    return 0
