"""What every training step shares: the user-error class and rank-0 logging."""
from __future__ import annotations

from ..core import LondonLMError
from .ranks import rank, world_size  # noqa: F401  (world_size: re-exported)


class TrainingError(LondonLMError, RuntimeError):
    """A training set-up problem the user can fix; the message says how."""


def is_main_process() -> bool:
    """Rank 0 of a torchrun job (or the only process)."""
    return rank() == 0


def log(msg: str) -> None:
    """Print once per job, not once per rank."""
    if is_main_process():
        print(msg, flush=True)
