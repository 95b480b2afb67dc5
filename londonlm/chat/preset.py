"""The chat stage's preset: :class:`ChatTrainOptions` (what a chat fine-tuning run trains
with) and :func:`chat_settings` (what a chat model depends on, so that a run made otherwise is
not resumed), apart from the fine-tuning code so that a command line is read, and a pipeline
planned, without importing the Trainer."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from ..training import JobRequest

CHAT_FORMAT = 1  # chat_info.json's and the recorded settings' format


@dataclass(frozen=True)
class ChatTrainOptions:
    """The chat preset: the schedule and batch of a chat fine-tuning run and how its rows are
    made. How fast it trains (precision, kernels, compile), its optimizer flag, its time budget
    and stops are the training package's, as for pre-training (:class:`~londonlm.training.JobRequest`)."""

    max_steps: int = 150
    batch_size: int = 16           # packed rows per device and step
    grad_accum: int = 1
    learning_rate: float = 1e-3
    min_lr_ratio: float = 0.1      # cosine decays to learning_rate * min_lr_ratio
    warmup_steps: int = 15
    weight_decay: float = 0.0      # a few epochs over a small set: no decay needed
    max_grad_norm: float = 1.0
    save_steps: int = 50
    eval_steps: int = 50
    logging_steps: int = 10
    save_total_limit: int = 3
    packing: bool = True
    max_length: int = 0            # tokens per row; 0 = the model's context
    seed: int = 42
    optimizer: str = "adamw"       # the preset's; --optim on the command line wins


def chat_settings(options: ChatTrainOptions, request: JobRequest) -> dict:
    """What the chat model depends on (JSON values): a run made with other settings is not
    resumed. The speed settings and this invocation's stops are not among them: a resumed run
    keeps the speed settings it was trained with unless the command line names others, as in
    pre-training."""
    kept = {**asdict(options), "optimizer": request.optimizer or options.optimizer,
            "time_budget": request.control.time_budget, "trainer": dict(request.trainer)}
    return json.loads(json.dumps({"format": CHAT_FORMAT, **kept}, default=str))
