"""A clean console: the third-party messages every run printed without telling the user
anything to act on are gone from a script's output, and only those."""
from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

from londonlm.core.console import KNOWN_NOISE, quiet_known_noise

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
        try:
            logger.warning(prefix + " (and the rest of the message)")
            logger.warning("something a user should read")
        finally:
            logger.removeHandler(handler)
    assert seen == ["something a user should read"] * len(KNOWN_NOISE)
