"""A clean console: the third-party messages every run would print although they tell the
user nothing to act on, dropped at one place (:func:`quiet_known_noise`, called by
:func:`~londonlm.core.errors.run_main` for every script). Each entry says why it is noise;
everything else those libraries log still gets through. The messages our own code caused are
fixed where they arose instead: a KV cache passed as ``past_key_values``, and the unnamed loss
of a GPT-2 (``training.model.with_causal_lm_loss``, a graph break under torch.compile).
"""
from __future__ import annotations

import logging

# (logger, start of the message, why it is noise here)
KNOWN_NOISE = (
    ("transformers.tokenization_utils_base", "Token indices sequence length is longer than the specified",
     "the corpus, cache and evaluation stages tokenize whole documents on purpose and cut them "
     "into context-length blocks; prompts are fitted to the context by the model interface"),
    ("transformers.training_args", "The speedups for torchdynamo mostly come with GPU Ampere",
     "printed for any --torch_compile without an Ampere GPU, CPUs included, where our own "
     "measurements decide compiling (BENCHMARKS.md); it came before the one line refusing a bad "
     "--torch_compile_mode, as if it were the cause"),
)


class _DropKnownNoise(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_known_noise() -> None:
    """Drop :data:`KNOWN_NOISE` from the loggers that print it (idempotent)."""
    by_logger: dict[str, tuple[str, ...]] = {}
    for name, prefix, _why in KNOWN_NOISE:
        by_logger[name] = by_logger.get(name, ()) + (prefix,)
    for name, prefixes in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnownNoise) for f in logger.filters):
            logger.addFilter(_DropKnownNoise(prefixes))
