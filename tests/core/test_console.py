"""A clean console: the third-party messages every run printed without telling the user
anything to act on are gone from a script's output, and only those."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from londonlm.core.console import KNOWN_NOISE, NativePanic, native_panics, quiet_known_noise

REPO = Path(__file__).resolve().parents[2]

# What a training, evaluation or serving run does that used to print them: tokenize a
# corpus-length text, compute a loss (stock and fused), and serve a request through the
# batching engine's KV cache.
WORK = textwrap.dedent('''
    import sys, threading
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def work(argv):
        model_dir = argv[0]
        tok = AutoTokenizer.from_pretrained(model_dir)
        tok("It was a cold morning in Cheapside. " * 400)
        ids = torch.tensor([[5, 6, 7, 8]])
        from londonlm.training.model import with_causal_lm_loss
        with_causal_lm_loss(AutoModelForCausalLM.from_pretrained(model_dir))(input_ids=ids, labels=ids)
        from londonlm.training.step.fused_loss import enable_fused_loss
        enable_fused_loss(AutoModelForCausalLM.from_pretrained(model_dir))(input_ids=ids, labels=ids)
        from londonlm.generation import GenerationSettings, encode_prompt, load_model
        from londonlm.serving.batching import BatchEngine, Job
        lm = load_model(model_dir, device="cpu")
        done = threading.Event()
        job = Job(encode_prompt(lm.tokenizer, "It was"), GenerationSettings(max_new_tokens=4, seed=0), [0],
                  frozenset({lm.tokenizer.eos_token_id}), emit=lambda e: e[0] != "text" and done.set())
        BatchEngine(lm, max_batch=2).submit(job)
        assert done.wait(120), "the engine did not answer"
        print("worked")

    if sys.argv[1] == "script":
        from londonlm.core import run_main
        run_main(work, sys.argv[2:])
    work(sys.argv[2:])
''')


def _run(tmp_path, how: str, model_dir) -> subprocess.CompletedProcess:
    script = tmp_path / "work.py"
    script.write_text(WORK)
    return subprocess.run([sys.executable, str(script), how, str(model_dir)], capture_output=True,
                          text=True, timeout=300)


def test_a_script_prints_none_of_the_known_noise(tmp_path, tiny_model_dir):
    r = _run(tmp_path, "script", tiny_model_dir)
    assert r.returncode == 0 and "worked" in r.stdout, r.stderr
    for needle in ("loss_type", "Token indices sequence length", "past_key_values", "cache_params",
                   "deprecated"):
        assert needle not in r.stderr, r.stderr


def test_without_the_filter_transformers_prints_it(tmp_path, tiny_model_dir):
    """The control: the same work outside ``run_main`` still prints the filtered messages (so
    the test above can fail), but not those fixed where our code caused them: the KV-cache
    deprecation and the unnamed loss (tests/training/test_modeling.py has its control)."""
    r = _run(tmp_path, "bare", tiny_model_dir)
    assert r.returncode == 0 and "worked" in r.stdout, r.stderr
    assert "Token indices sequence length is longer" in r.stderr
    assert "past_key_values" not in r.stderr and "cache_params" not in r.stderr
    assert "loss_type" not in r.stderr


def test_the_filter_is_narrow():
    """Only the listed messages are dropped; anything else on those loggers gets through."""
    quiet_known_noise()
    quiet_known_noise()   # idempotent: one filter per logger
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    for name, prefix, why in KNOWN_NOISE:
        logger = logging.getLogger(name)
        assert len(logger.filters) == 1 and why
        handler = Keep()
        logger.addHandler(handler)
        level = logger.level  # (another test in this process may have quietened transformers' loggers)
        logger.setLevel(logging.WARNING)
        try:
            logger.warning(prefix + " (and the rest of the message)")
            logger.warning("something a user should read")
        finally:
            logger.setLevel(level)
            logger.removeHandler(handler)
    assert seen == ["something a user should read"] * len(KNOWN_NOISE)


# --- native panics --------------------------------------------------------------------------

PanicException = type("PanicException", (BaseException,), {})  # pyo3's, as the check sees it


def _panicking_tokenizer_json() -> str:
    """A BPE whose subword prefix its merges do not carry: the tokenizers library panics."""
    from tokenizers import Tokenizer, models

    data = json.loads(Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")])).to_str())
    data["model"]["continuing_subword_prefix"] = "##"
    return json.dumps(data)


def test_a_real_panic_is_an_ordinary_exception_without_its_report(capfd, monkeypatch):
    """Was: pyo3's PanicException (a BaseException, past every ``except Exception``), below the
    panic hook's report on file descriptor 2 (with RUST_BACKTRACE, some sixty frames)."""
    from tokenizers import Tokenizer

    monkeypatch.setenv("RUST_BACKTRACE", "1")
    with pytest.raises(NativePanic, match="slice index"):
        with native_panics():
            Tokenizer.from_str(_panicking_tokenizer_json())
    err = capfd.readouterr().err
    assert "panicked" not in err and "backtrace" not in err, err


def test_the_control_a_panic_prints_its_report_unguarded(capfd):
    from tokenizers import Tokenizer

    with pytest.raises(BaseException) as raised:
        Tokenizer.from_str(_panicking_tokenizer_json())
    assert type(raised.value).__name__ == "PanicException" and not isinstance(raised.value, Exception)
    assert "panicked" in capfd.readouterr().err


def test_what_a_call_writes_to_stderr_is_kept_unless_it_panics(capfd):
    with native_panics():
        os.write(2, b"a warning the user should see\n")
    with pytest.raises(ValueError):
        with native_panics():
            os.write(2, b"before a Python error\n")
            raise ValueError("plain")
    with pytest.raises(NativePanic, match="^first line$"):
        with native_panics():
            os.write(2, b"thread '<unnamed>' panicked at model.rs:1\n")
            raise PanicException("first line\nsecond line")
    with pytest.raises(KeyboardInterrupt):  # other BaseExceptions pass as they are
        with native_panics():
            raise KeyboardInterrupt
    assert capfd.readouterr().err == "a warning the user should see\nbefore a Python error\n"
    os.write(2, b"after\n")  # file descriptor 2 is back where it was
    assert capfd.readouterr().err == "after\n"


def test_a_closed_stderr_is_no_error():
    saved = os.dup(2)
    os.close(2)
    try:
        with pytest.raises(NativePanic):
            with native_panics():
                raise PanicException("boom")
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def test_inference_on_a_panicking_tokenizer_prints_one_line(tiny_model_dir, tmp_path):
    """As the user sees it (a subprocess: the report went to file descriptor 2, past capsys)."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    data["model"]["continuing_subword_prefix"] = "##"
    (folder / "tokenizer.json").write_text(json.dumps(data))
    r = subprocess.run([sys.executable, str(REPO / "06_inference" / "inference_unified.py"), "--model", str(folder),
                        "--prompt", "Up betimes", "--max_new_tokens", "2"], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "RUST_BACKTRACE": "1"})
    assert r.returncode == 2 and r.stderr.splitlines() == [r.stderr.strip()], r.stderr
    assert r.stderr.startswith("error:") and "the tokenizers library cannot build it" in r.stderr
