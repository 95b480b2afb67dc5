"""Hostile round 17 on what a demanding client expects from the server's *results* when many
requests share its batches: a seeded prompt gives one text whether it is sent alone, in a list of
prompts or beside other requests of other lengths, settings, stops and lengths (some cancelled
mid-way); greedy batched equals greedy alone; a stop string completed only by the text taken in
at a row's end is reported as a stop."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

import httpx
import pytest

from conftest import serving_in_thread
from londonlm.generation import GenerationSettings, encode_prompt, generate, load_model
from londonlm.serving import create_app
from londonlm.serving.batching import BatchEngine, Job

pytestmark = pytest.mark.network_local
SAMPLED = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0}


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def base(lm):
    with serving_in_thread(create_app(lm=lm, max_new_tokens_limit=48, max_concurrency=8)) as url:
        yield url


def complete(base, lm, **body) -> dict:
    r = httpx.post(f"{base}/v1/completions", json={"model": lm.model_id, **body}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def streamed(base, lm, **body) -> tuple[dict[int, str], dict[int, str]]:
    """The streamed answer's text and finish reason per choice."""
    r = httpx.post(f"{base}/v1/completions", json={"model": lm.model_id, "stream": True, **body}, timeout=60)
    text, finish = {}, {}
    for line in r.text.splitlines():
        if line.startswith("data: {"):
            for c in json.loads(line[6:])["choices"]:
                text[c["index"]] = text.get(c["index"], "") + c["text"]
                finish[c["index"]] = c["finish_reason"] or finish.get(c["index"])
    return text, finish


# --------------------------------------------------------------------------- seeds and prompt lists


def test_a_prompt_in_a_list_gives_the_text_it_gives_alone(base, lm):
    # was: prompt k of a list drew with seed + k*n + i, so a seeded prompt's text depended on
    # where the client put it: lm-evaluation-harness (which sends seed 1234 with every batch of
    # prompts) got other generations at batch_size 4 than at batch_size 1, and the same prompt
    # twice in one list got two different texts. vLLM seeds every prompt of a list alike.
    prompts = ["London", "The prisoner was indicted for", "London"]
    body = dict(max_tokens=10, seed=5, n=2, **SAMPLED)
    listed = complete(base, lm, prompt=prompts, **body)["choices"]
    for k, prompt in enumerate(prompts):
        alone = [c["text"] for c in complete(base, lm, prompt=prompt, **body)["choices"]]
        assert [c["text"] for c in listed[2 * k:2 * k + 2]] == alone, prompt
        assert [c["index"] for c in listed[2 * k:2 * k + 2]] == [2 * k, 2 * k + 1]
    assert alone[0] != alone[1]  # n samples still differ (seed, seed + 1)
    text, _ = streamed(base, lm, prompt=prompts, **body)
    assert [text[i] for i in range(6)] == [c["text"] for c in listed]
    again = complete(base, lm, prompt=prompts[:2], **{**body, "seed": 6})["choices"]
    assert again[0]["text"] == listed[1]["text"]  # seed 6's first sample is seed 5's second


def test_a_token_id_prompt_list_is_seeded_per_prompt_too(base, lm):
    ids = [encode_prompt(lm.tokenizer, p) for p in ("Up betimes", "Cheapside")]
    body = dict(max_tokens=8, seed=11, **SAMPLED)
    listed = [c["text"] for c in complete(base, lm, prompt=ids, **body)["choices"]]
    assert listed == [complete(base, lm, prompt=one, **body)["choices"][0]["text"] for one in ids]


# --------------------------------------------------------------------------- stop strings


def _seed_ending_in_a_half_character(lm, settings: GenerationSettings) -> tuple[int, str]:
    """A seed whose sample ends in a character still arriving (U+FFFD, once only, at the end)."""
    for seed in range(200):
        text = generate(lm, "London", replace(settings, seed=seed))[0].text
        if text.endswith("\ufffd") and text.count("\ufffd") == 1:
            return seed, text
    pytest.skip("no sample of this model ends in a half character")


def test_a_stop_string_completed_only_at_the_end_is_a_stop(base, lm):
    # was: the text was cut at the stop string but finish_reason said "length": the stop was
    # found only when the row's last, unfinished character was taken in at its end (a stop "\ufffd",
    # or a stop ending in a token that also starts a character), after the reason was chosen
    settings = GenerationSettings(max_new_tokens=6, **SAMPLED)
    seed, text = _seed_ending_in_a_half_character(lm, settings)
    body = dict(prompt="London", max_tokens=6, seed=seed, stop=["\ufffd"], **SAMPLED)
    choice = complete(base, lm, **body)["choices"][0]
    assert (choice["text"], choice["finish_reason"]) == (text[:-1], "stop")
    assert streamed(base, lm, **body) == ({0: text[:-1]}, {0: "stop"})
    plain = complete(base, lm, **{**body, "stop": None})["choices"][0]
    assert (plain["text"], plain["finish_reason"]) == (text, "length")  # without the stop: as before


# --------------------------------------------------------------------------- shared batches


class _Gather:
    """A job's events, as the server's bridge gathers them."""

    def __init__(self, job: Job, cancel_after: int | None = None):
        self.job, self.cancel_after = job, cancel_after
        self.text = {i: "" for i in range(len(job.seeds))}
        self.samples, self.errors, self.done = {}, [], threading.Event()
        job.emit = self

    def __call__(self, event):
        kind, i, payload = event
        if kind == "text":
            self.text[i] += payload
            if self.cancel_after is not None and len(self.text[i]) >= self.cancel_after:
                self.job.cancel.set()  # the client hangs up mid-way
        elif kind == "done":
            self.samples[i] = payload
        else:
            self.errors.append(payload)
        if len(self.samples) == len(self.job.seeds) or self.errors:
            self.done.set()


def test_each_request_in_a_mixed_batch_gets_its_text_alone(lm):
    """Greedy and seeded requests of other lengths, temperatures, top-k/top-p, penalties, n-gram
    blocks, stops and token limits (one exactly at the context's edge beside a longer prompt), with
    a neighbour cancelled mid-way, each give generate()'s text, tokens and finish alone."""
    long_prompt = "The prisoner was indicted for stealing a silver watch, value 40 s. the goods of John Smith"
    ctx = lm.context_length
    edge = ctx - len(encode_prompt(lm.tokenizer, "Up betimes"))  # fills the context to its last position
    cases = [  # (prompt, settings, n, stop)
        ("London", GenerationSettings(max_new_tokens=20, temperature=0.0, repetition_penalty=1.3), 1, ()),
        (long_prompt, GenerationSettings(max_new_tokens=ctx - len(encode_prompt(lm.tokenizer, long_prompt)),
                                         temperature=0.9, top_k=5, top_p=0.8, seed=3), 2, ()),
        ("Up betimes", GenerationSettings(max_new_tokens=edge, temperature=1.3, top_k=0, top_p=0.9,
                                          repetition_penalty=2.0, seed=8), 1, ()),
        ("", GenerationSettings(max_new_tokens=30, temperature=0.7, top_k=50, top_p=1.0,
                                no_repeat_ngram_size=2, repetition_penalty=0.5, seed=1), 2, ()),
        ("Cheapside", GenerationSettings(max_new_tokens=25, temperature=0.0, no_repeat_ngram_size=3), 1, ("e", " t")),
        ("It was the best", GenerationSettings(max_new_tokens=3, temperature=2.0, top_k=1, seed=4), 1, ()),
    ]
    engine = BatchEngine(lm, max_batch=6)
    eos = frozenset({lm.tokenizer.eos_token_id})
    gathered = []
    try:
        noisy = _Gather(Job(encode_prompt(lm.tokenizer, long_prompt), GenerationSettings(
            max_new_tokens=20, temperature=1.5, top_k=0, top_p=1.0, seed=9), [9, 10], eos), cancel_after=2)
        engine.submit(noisy.job)
        for prompt, settings, n, stop in cases:
            job = Job(encode_prompt(lm.tokenizer, prompt), settings, [(settings.seed or 0) + i for i in range(n)],
                      eos, stop)
            gathered.append(_Gather(job))
            engine.submit(job)
            time.sleep(0.005)  # rows join while others are under way
        for g in [noisy, *gathered]:
            assert g.done.wait(60) and not g.errors
    finally:
        engine.close()
    assert engine.peak_rows >= 4  # they really shared the batch
    assert {s.finish_reason for s in noisy.samples.values()} <= {"cancelled", "eos"}
    for (prompt, settings, n, stop), g in zip(cases, gathered):
        alone = generate(lm, prompt, replace(settings, num_samples=n))
        for i, a in enumerate(alone):
            got = g.samples[i]
            assert g.text[i] == got.text  # the streamed pieces join up to the text
            hits = [a.text.find(s) for s in stop if s in a.text]
            if hits:  # cut at the first stop; the tokens up to it are generate()'s
                assert (got.text, got.finish_reason) == (a.text[:min(hits)], "stop"), prompt
                assert got.token_ids == a.token_ids[:got.new_tokens]
            else:
                assert (got.text, got.token_ids, got.finish_reason) == (a.text, a.token_ids, a.finish_reason), prompt
    assert gathered[5].samples[0].new_tokens <= 3
    assert gathered[2].samples[0].prompt_tokens + gathered[2].samples[0].new_tokens <= ctx


def test_usage_and_finish_reasons_are_the_same_batched_and_alone(base, lm):
    """Requests sent together (streamed and not) answer with the text, finish reasons and usage
    each gets alone."""
    bodies = [dict(prompt="London", max_tokens=12, seed=2, n=2, stop=["e"], **SAMPLED),
              dict(prompt="The prisoner was indicted for stealing", max_tokens=40, temperature=0),
              dict(prompt=["Up betimes", "Cheapside"], max_tokens=7, seed=4, temperature=0.8, top_k=20, top_p=0.9),
              dict(prompt="It was", max_tokens=30, seed=6, **{**SAMPLED, "repetition_penalty": 1.5})]
    alone = [complete(base, lm, **b) for b in bodies]
    together: list = [None] * len(bodies)

    def send(k):
        together[k] = complete(base, lm, **bodies[k])

    threads = [threading.Thread(target=send, args=(k,)) for k in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for a, t in zip(alone, together):
        assert [(c["text"], c["finish_reason"]) for c in t["choices"]] == \
               [(c["text"], c["finish_reason"]) for c in a["choices"]]
        assert t["usage"] == a["usage"]
