"""Command-line front end of ``04_training/train_model_slm.py`` and ``train_model.py``:
parses ``ModelArguments``, ``DataArguments`` and every ``TrainingArguments`` flag
(:func:`~londonlm.training.options.parse_train_flags`), fills what the user did not set from the
preset (:func:`~londonlm.training.make_job`, with config.py's :class:`TrainDefaults` passed
in by the script), then runs :func:`londonlm.training.run_training`.

Errors a user can fix raise :class:`~londonlm.core.errors.LondonLMError`; the scripts wrap
:func:`main` in :func:`~londonlm.core.errors.run_main`."""
from __future__ import annotations

from ..core import describe_checkpoints
from .options import TrainDefaults, make_job, parse_train_flags, run_of
from .run import run_training

__all__ = ["TrainDefaults", "main"]


def main(argv: list[str], defaults: TrainDefaults, prog: str | None = None,
         description: str | None = None) -> int:
    """Train (or resume) the run a command line names; ``--list_checkpoints`` lists it."""
    flags = parse_train_flags(argv, prog=prog, description=description)
    if flags.data.list_checkpoints:
        run, _, _ = run_of(flags, defaults)
        print(describe_checkpoints(run.dir))
        return 0
    job = make_job(flags, defaults)
    run_training(job.opts, job.args)
    return 0
