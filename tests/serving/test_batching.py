"""The batching engine (londonlm.serving.batching): requests decoded together pick the tokens
generate() picks alone (greedy and seeded sampling), rows join and leave mid-flight, text
arrives in pieces that join up, stop strings, limits, cancel and deadlines end rows."""
from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
import torch

from londonlm.generation import GenerationSettings, encode_prompt, generate, load_model
from londonlm.serving.batching import BatchEngine, Job, kv_bytes_per_row, rows_for_memory
from londonlm.serving.textout import TextTracker, decoder_of

PROMPTS = ["Up betimes, and", "The prisoner was indicted for stealing a silver watch, value 40 s. the goods",
           "London", "", "It was the best of times, it was the worst", "Thou hast ſeen the Cheapside"]
GREEDY = GenerationSettings(max_new_tokens=20, temperature=0.0)


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu")


class Collector:
    """Runs jobs through an engine and gathers their events (as the server's bridge does)."""

    def __init__(self, lm, engine):
        self.lm, self.engine, self.events, self.lock = lm, engine, [], threading.Lock()

    def job(self, prompt: str, settings: GenerationSettings, n: int = 1, **kw) -> Job:
        ids = encode_prompt(self.lm.tokenizer, prompt)
        seeds = [(settings.seed or 0) + i for i in range(n)]
        job = Job(ids, settings, seeds, frozenset({self.lm.tokenizer.eos_token_id}), **kw)
        job.done = threading.Event()
        job.got = {"text": {i: [] for i in range(n)}, "samples": {}, "errors": []}

        def emit(event, job=job, n=n):
            kind, i, payload = event
            if kind == "text":
                job.got["text"][i].append(payload)
            elif kind == "done":
                job.got["samples"][i] = payload
            else:
                job.got["errors"].append(payload)
            if len(job.got["samples"]) == n or job.got["errors"]:
                job.done.set()

        job.emit = emit
        return job

    def run(self, jobs: list[Job], timeout: float = 120, submit: bool = True) -> list[Job]:
        for j in jobs:
            if submit:
                self.engine.submit(j)
        for j in jobs:
            assert j.done.wait(timeout), "engine did not finish"
        return jobs


@pytest.fixture
def engine(lm):
    eng = BatchEngine(lm, max_batch=8)
    yield eng
    eng.close()


def test_concurrent_greedy_requests_equal_generate_one_by_one(lm, engine):
    """Prompts of different lengths decoded in one batch give generate()'s tokens and text."""
    c = Collector(lm, engine)
    jobs = c.run([c.job(p, GREEDY) for p in PROMPTS])
    assert engine.peak_rows == len(PROMPTS)  # they really shared the batch
    for p, job in zip(PROMPTS, jobs):
        alone = generate(lm, p, GREEDY)[0]
        got = job.got["samples"][0]
        assert (got.text, got.new_tokens, got.finish_reason) == (alone.text, alone.new_tokens, alone.finish_reason), p
        assert "".join(job.got["text"][0]) == got.text


def test_seeded_sampling_in_a_batch_equals_generate(lm, engine):
    settings = GenerationSettings(max_new_tokens=16, temperature=0.9, top_p=0.9, top_k=40,
                                  repetition_penalty=1.2, no_repeat_ngram_size=2, seed=7)
    c = Collector(lm, engine)
    jobs = c.run([c.job(p, replace(settings, seed=7 + k), n=2) for k, p in enumerate(PROMPTS[:3])])
    for k, (p, job) in enumerate(zip(PROMPTS, jobs)):
        alone = generate(lm, p, replace(settings, seed=7 + k, num_samples=2))
        assert [job.got["samples"][i].text for i in range(2)] == [s.text for s in alone]
        assert [job.got["samples"][i].seed for i in range(2)] == [7 + k, 8 + k]


def test_a_job_that_does_not_stream_gets_only_its_samples(lm, engine):
    """No text pieces cross threads when only the end is wanted (the server's JSON answers)."""
    c = Collector(lm, engine)
    job = c.job("London", GREEDY)
    job.stream = False
    c.run([job])
    assert job.got["text"][0] == [] and job.got["samples"][0].text == generate(lm, "London", GREEDY)[0].text

def test_rows_join_and_leave_mid_flight(lm):
    """Short requests finish and new ones join while a long one runs; a batch of 1 gives the same."""
    outputs = {}
    for max_batch in (3, 1):
        engine = BatchEngine(lm, max_batch=max_batch)
        c = Collector(lm, engine)
        long = c.job(PROMPTS[1], replace(GREEDY, max_new_tokens=40))
        engine.submit(long)
        short = c.run([c.job(p, replace(GREEDY, max_new_tokens=3 + k)) for k, p in enumerate(PROMPTS)])
        c.run([long], submit=False)
        outputs[max_batch] = [j.got["samples"][0].text for j in (long, *short)]
        assert engine.stats()["rows"] == 0 and engine.stats()["peak_rows"] <= max_batch
        engine.close()
    assert outputs[3] == outputs[1]
    assert outputs[1][0] == generate(lm, PROMPTS[1], replace(GREEDY, max_new_tokens=40))[0].text


def test_stop_strings_cut_the_text_and_are_never_sent(lm, engine):
    c = Collector(lm, engine)
    full = generate(lm, "London", GREEDY)[0].text
    stop = full[5:8]
    assert stop and full.find(stop) == 5
    job, = c.run([c.job("London", GREEDY, stop=(stop, "never-appears"))])
    s = job.got["samples"][0]
    assert s.text == full[:5] and s.finish_reason == "stop" and s.new_tokens < 20
    assert "".join(job.got["text"][0]) == full[:5]


def test_cancel_and_deadline_end_rows(lm):
    slow = load_model(str(lm.path), device="cpu")
    slow.model.register_forward_pre_hook(lambda m, a: time.sleep(0.02))
    engine = BatchEngine(slow, max_batch=4)
    c = Collector(slow, engine)
    cancelled = c.job("London", replace(GREEDY, max_new_tokens=40))
    timed = c.job("London", replace(GREEDY, max_new_tokens=40), deadline=time.monotonic() + 0.5)
    for j in (cancelled, timed):
        engine.submit(j)
    for _ in range(500):  # cancel once it is under way (the client leaves mid-stream)
        if cancelled.got["text"][0]:
            break
        time.sleep(0.01)
    cancelled.cancel.set()
    c.run([cancelled, timed], submit=False)
    a, b = cancelled.got["samples"][0], timed.got["samples"][0]
    assert a.finish_reason == "cancelled" and 0 < a.new_tokens < 40
    assert b.finish_reason == "time_limit" and b.new_tokens < 40
    late = c.job("London", GREEDY, deadline=time.monotonic() - 1)  # expired before it started
    c.run([late])
    assert late.got["samples"][0].finish_reason == "time_limit" and late.got["samples"][0].new_tokens == 0
    engine.close()


def test_a_failing_step_fails_its_jobs_and_the_engine_goes_on(lm, caplog):
    """The step's error goes to the server's log with its traceback; the client learns its kind
    only (the text of an error may name the server's files)."""
    broken = load_model(str(lm.path), device="cpu")
    fail = {"on": True}

    def hook(module, args):
        if fail["on"]:
            raise RuntimeError("boom at /srv/secret/weights")

    broken.model.register_forward_pre_hook(hook)
    engine = BatchEngine(broken, max_batch=2)
    c = Collector(broken, engine)
    with caplog.at_level("ERROR", logger="uvicorn.error"):
        job, = c.run([c.job("London", GREEDY)])
    said = job.got["errors"][0]
    assert "RuntimeError" in said and "server's log" in said and "/srv/secret" not in said
    assert "boom at /srv/secret/weights" in caplog.text and "Traceback" in caplog.text
    fail["on"] = False
    job, = c.run([c.job("London", GREEDY)])
    assert job.got["samples"][0].text == generate(lm, "London", GREEDY)[0].text
    engine.close()


def test_memory_bounds_the_batch(lm):
    per_row = kv_bytes_per_row(lm)
    cfg = lm.model.config
    assert per_row == 2 * cfg.n_layer * lm.context_length * cfg.n_embd * 4
    assert rows_for_memory(lm, per_row * 5 / 2**20) == 5
    assert rows_for_memory(lm, 0.0001) == 1 and rows_for_memory(lm, 10**6) == 64


def test_text_pieces_never_split_a_character(lm):
    tok = lm.tokenizer
    text = "ſeen £1 æther — Cheapside"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    tracker, pieces = TextTracker(decoder_of(tok)), []
    for t in ids:
        tracker.add(t)
        pieces.append(tracker.release())
    tracker.finish()
    pieces.append(tracker.release())
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)
    assert torch.tensor(ids).numel() > len(text.split())  # multi-token words were really split


def test_closing_the_engine_tells_the_jobs_it_leaves(lm):
    slow = load_model(str(lm.path), device="cpu")
    slow.model.register_forward_pre_hook(lambda m, a: time.sleep(0.02))
    engine = BatchEngine(slow, max_batch=1)
    c = Collector(slow, engine)
    running, waiting = c.job("London", replace(GREEDY, max_new_tokens=40)), c.job("Up", GREEDY)
    for j in (running, waiting):
        engine.submit(j)
    engine.close()
    c.run([running, waiting], submit=False)
    assert all("shutting down" in j.got["errors"][0] for j in (running, waiting))
    with pytest.raises(RuntimeError):
        engine.submit(c.job("London", GREEDY))


def test_prompts_waiting_together_are_prefilled_in_one_pass(lm):
    """Queued requests with prompts of different lengths share one left-padded prefill, and still
    give generate()'s tokens."""
    engine = BatchEngine(lm, max_batch=8)
    prefills = []

    def spy(module, args, kwargs):
        if kwargs["input_ids"].shape[1] > 1:
            prefills.append(kwargs["input_ids"].shape[0])

    hook = lm.model.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        c = Collector(lm, engine)
        jobs = [c.job(p, GREEDY) for p in PROMPTS]
        with engine._cond:  # the worker takes nothing until every job waits
            for j in jobs:
                engine.submit(j)
        c.run(jobs, submit=False)
    finally:
        hook.remove()
        engine.close()
    assert prefills == [len(PROMPTS)]
    for p, job in zip(PROMPTS, jobs):
        assert job.got["samples"][0].text == generate(lm, p, GREEDY)[0].text, p


def test_the_kv_cache_is_written_in_place_while_rows_come_and_go(lm):
    """A long prompt joins a short one (the window moves right), rows leave and join for longer
    than the context (the window moves back to column 0): decode steps use the same buffers
    throughout, and every output is still generate()'s."""
    slow = load_model(str(lm.path), device="cpu")
    buffers = set()

    def spy(module, args, kwargs):
        time.sleep(0.01)  # the test joins rows while the first one runs
        layer = (kwargs["cache"] if "cache" in kwargs else kwargs["past_key_values"]).layers[0]
        if hasattr(layer, "kbuf"):
            buffers.add(layer.kbuf.data_ptr())

    slow.model.register_forward_pre_hook(spy, with_kwargs=True)
    engine = BatchEngine(slow, max_batch=2)
    moves, move = [], engine._batch._move
    engine._batch._move = lambda shift: (moves.append(shift), move(shift))
    c = Collector(slow, engine)
    first = c.job("London", replace(GREEDY, max_new_tokens=20))
    engine.submit(first)
    for _ in range(500):
        if first.got["text"][0]:
            break
        time.sleep(0.01)
    rest = c.run([c.job(p, replace(GREEDY, max_new_tokens=30)) for p in (PROMPTS[1], "", PROMPTS[4], PROMPTS[0])])
    c.run([first], submit=False)
    engine.close()
    assert engine.steps > lm.context_length and any(s > 0 for s in moves) and any(s < 0 for s in moves)
    assert 1 <= len(buffers) <= 2  # allocated for one row, then grown once to two
    for p, job, n in zip(["London", PROMPTS[1], "", PROMPTS[4], PROMPTS[0]], [first, *rest], [20, 30, 30, 30, 30]):
        assert job.got["samples"][0].text == generate(lm, p, replace(GREEDY, max_new_tokens=n))[0].text, p


def test_batch_sampler_picks_what_the_transformers_processors_and_multinomial_pick():
    """Each row of one batch, with its own settings and seed, picks the token of generate()'s
    processors (repetition penalty, temperature, top-k, top-p), softmax and torch.multinomial:
    also where top-p is computed from top-k's survivors and where those tie."""
    from transformers import (RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
                              TopPLogitsWarper)

    from londonlm.serving.sampler import BatchSampler, RowSampling

    rows = [GenerationSettings(temperature=0.0), GenerationSettings(temperature=0.8),
            GenerationSettings(temperature=1.3, top_k=5, top_p=0.5, repetition_penalty=1.3),
            GenerationSettings(temperature=0.7, top_k=0, top_p=0.9),
            GenerationSettings(temperature=1.0, top_k=3, top_p=1.0)]
    rng = torch.Generator().manual_seed(0)
    for trial in range(12):
        logits = torch.randn(len(rows), 300, generator=rng) * 3
        logits = logits.round() if trial % 3 == 2 else logits  # ties among the survivors
        history = torch.randint(0, 300, (len(rows), 8), generator=rng)
        seen = torch.zeros(len(rows), 300, dtype=torch.bool).scatter(1, history, True)
        sampler = BatchSampler([RowSampling(s, torch.Generator().manual_seed(trial * 10 + i) if s.sampling else None)
                                for i, s in enumerate(rows)], "cpu")
        got = sampler.choose(logits, seen, history.tolist())
        for i, s in enumerate(rows):
            ids, scores = history[i:i + 1], logits[i:i + 1].clone()
            scores = RepetitionPenaltyLogitsProcessor(s.repetition_penalty)(ids, scores)
            if not s.sampling:
                assert got[i] == int(scores.argmax()), (trial, i)
                continue
            scores = TemperatureLogitsWarper(s.temperature)(ids, scores)
            scores = TopKLogitsWarper(s.top_k)(ids, scores) if s.top_k else scores
            scores = TopPLogitsWarper(s.top_p)(ids, scores) if s.top_p < 1 else scores
            draw = torch.multinomial(scores.softmax(dim=-1), 1, generator=torch.Generator().manual_seed(trial * 10 + i))
            assert got[i] == int(draw), (trial, i)


def test_the_cache_goes_by_the_name_forward_takes():
    """``cache`` where transformers renamed it (the old name warns on every step), else
    ``past_key_values`` (the releases before)."""
    from londonlm.serving.kv_slots import cache_argument

    class New:
        def forward(self, input_ids=None, cache=None, **kwargs): ...

    class Old:
        def forward(self, input_ids=None, past_key_values=None, **kwargs): ...

    assert cache_argument(New()) == "cache" and cache_argument(Old()) == "past_key_values"

