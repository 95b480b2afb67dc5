"""A clean console: the third-party messages every run would print although they tell the
user nothing to act on, dropped at one place (:func:`quiet_known_noise`, called by
:func:`~londonlm.core.errors.run_main` for every script). Each entry says why it is noise;
everything else those libraries log still gets through. The messages our own code caused are
fixed where they arose instead: a KV cache passed as ``past_key_values``, and the unnamed loss
of a GPT-2 (``training.model.with_causal_lm_loss``, a graph break under torch.compile).

A panic inside a native (Rust) library is the other console mess: :func:`native_panics`
keeps its report off the console and turns it into an ordinary exception.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from contextlib import contextmanager
from typing import Iterator

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


class NativePanic(Exception):
    """A panic inside a native library (the tokenizers library's Rust), as an ordinary
    exception; its message is the panic's first line."""


@contextmanager
def native_panics() -> Iterator[None]:
    """Run a call into a native library with its panics made a :class:`NativePanic`.

    A Rust panic reaches Python as pyo3's ``PanicException``, which derives from
    BaseException: every ``except Exception`` lets it through as a traceback. And before Python
    sees it, Rust's panic hook has printed its own report to file descriptor 2 (with
    ``RUST_BACKTRACE`` set, a stack of some sixty frames), above whatever one-line error the
    caller then prints. So the call's standard error goes to a temporary file: written out
    afterwards when the call returns or fails in Python, dropped after a panic (its words are
    the NativePanic's). Anything another thread writes to standard error during the call waits
    with it; keep the call short (a parse or a load)."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no standard error at all (closed): nothing to keep off it
        saved = None
    capture = tempfile.TemporaryFile() if saved is not None else None
    if capture is not None:
        os.dup2(capture.fileno(), 2)
    panicked = False
    try:
        yield
    except BaseException as e:
        if type(e).__name__ != "PanicException":
            raise
        panicked = True
        lines = str(e).strip().splitlines() or ["(no message)"]
        raise NativePanic(lines[0]) from None
    finally:
        if capture is not None:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not panicked:
                capture.seek(0)
                _write_all(2, capture.read())
            capture.close()


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]
