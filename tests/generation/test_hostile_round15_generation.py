"""Hostile round 15 on generation: the ids past the tokenizer that pad the model's vocabulary (to a
multiple of 64) are no token's, and are never chosen, by the library's ``generate()``, the server's
batches, or a chat answer, however hot the sampling."""
from __future__ import annotations

import threading

import pytest

from londonlm.chat.respond import ChatSettings, _generation
from londonlm.generation import GenerationSettings, encode_prompt, generate, load_model
from londonlm.serving.batching import BatchEngine, Job

HOT = GenerationSettings(max_new_tokens=40, temperature=5.0, top_k=0, top_p=1.0, repetition_penalty=1.0)


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), device="cpu")
    assert len(lm.tokenizer) < lm.model.config.vocab_size, "the fixture's vocabulary is padded"
    return lm


@pytest.mark.parametrize("settings", [HOT, GenerationSettings(max_new_tokens=40, temperature=0)])
def test_generate_never_chooses_an_id_past_the_tokenizer(lm, settings):
    """The random fixture model drew them about one token in ten at this heat."""
    samples = generate(lm, "London", GenerationSettings(**{**settings.__dict__, "num_samples": 4, "seed": 3}))
    assert all(s.token_ids and max(s.token_ids) < len(lm.tokenizer) for s in samples)
    assert sum(s.new_tokens for s in samples) > 40


def test_the_servers_batches_never_choose_an_id_past_the_tokenizer(lm):
    engine = BatchEngine(lm, max_batch=4)
    try:
        done, samples = threading.Event(), {}

        def emit(event):
            kind, i, payload = event
            if kind == "done":
                samples[i] = payload
            elif kind != "text":
                samples[i] = payload
            if len(samples) == 4:
                done.set()
        job = Job(encode_prompt(lm.tokenizer, "London"), HOT, [3, 4, 5, 6], frozenset({lm.tokenizer.eos_token_id}))
        job.emit = emit
        engine.submit(job)
        assert done.wait(60)
    finally:
        engine.close()
    assert all(max(samples[i].token_ids) < len(lm.tokenizer) for i in range(4))


def test_a_chat_answer_never_chooses_an_id_past_the_tokenizer(chat_model_dir):
    chat = load_model(str(chat_model_dir), device="cpu")
    vocab = len(chat.tokenizer)
    assert vocab < chat.model.config.vocab_size
    messages = [{"role": "system", "content": "Old Bailey, London, 1790."}, {"role": "user", "content": "Who?"}]
    chosen = []
    for seed in range(4):
        prompt, kwargs, *_ = _generation(chat.model, chat.tokenizer, messages,
                                        ChatSettings(max_new_tokens=30, temperature=5.0, top_k=0, top_p=1.0, seed=seed))
        chosen += chat.model.generate(**kwargs)[0, len(prompt):].tolist()
    assert len(chosen) > 30 and max(chosen) < vocab
