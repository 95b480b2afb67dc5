"""Hostile round 21: the chat route run at its limits on the fine-tuned chat fixture, and a
``logprobs`` request whose scoring outlives the request's time limit."""
from __future__ import annotations

import time

import httpx
import pytest

from conftest import serving_in_thread
from londonlm.generation import load_model
from londonlm.serving import create_app

pytestmark = pytest.mark.network_local
QUESTION = [{"role": "user", "content": "Where were you on the night of the robbery?"}]


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu")


def test_logprobs_scoring_stops_at_the_requests_time_limit(lm, monkeypatch):
    # was: each choice's scoring ran after the generation whatever the time left, holding the
    # request's slot: 16 prompts x n 256 with logprobs under a 20 s limit answered after 34 s
    # (a real model's 4,096 scorings for minutes); a client cannot tell how long it may wait
    import londonlm.serving.openai_api as openai_api

    real = openai_api.score_tokens

    def slow_score(*args, **kwargs):  # a large model's scoring, on the tiny one
        time.sleep(0.2)
        return real(*args, **kwargs)

    monkeypatch.setattr(openai_api, "score_tokens", slow_score)
    body = {"model": lm.model_id, "prompt": "London", "max_tokens": 2, "n": 16, "logprobs": 1}
    with serving_in_thread(create_app(lm=lm, request_timeout_s=1.0, max_samples=16, max_new_tokens_limit=8)) as url:
        started = time.monotonic()
        r = httpx.post(f"{url}/v1/completions", json=body, timeout=30)
        took = time.monotonic() - started
        assert r.status_code == 503 and r.json()["error"]["code"] == "timeout", r.text
        assert "of 16 choices' logprobs scored" in r.json()["error"]["message"]
        assert took < 2.0  # (was 16 x 0.2 s past the generation)
        assert httpx.get(f"{url}/health", timeout=10).json()["queue"]["active"] == 0
        r = httpx.post(f"{url}/v1/completions", json={**body, "n": 2}, timeout=30)  # within the limit: scored
        assert r.status_code == 200 and all(c["logprobs"]["token_logprobs"] for c in r.json()["choices"]), r.text


def test_the_chat_route_at_its_limits_answers_or_refuses_by_name(chat_model_dir):
    """Held (pinned): the chat route's edges on the fine-tuned fixture (context 128)."""
    chat = load_model(str(chat_model_dir), device="cpu")
    with serving_in_thread(create_app(lm=chat, max_samples=256, max_new_tokens_limit=100000)) as url:
        def ask(**body):
            return httpx.post(f"{url}/v1/chat/completions", timeout=60,
                              json={"model": chat.model_id, "messages": QUESTION, **body})

        r = ask(max_completion_tokens=100000, temperature=0).json()  # cut to the room left
        assert r["usage"]["total_tokens"] <= 128 and r["choices"][0]["finish_reason"] in ("stop", "length")
        r, one = ask(n=256, max_tokens=2).json(), ask(max_tokens=1).json()
        assert len(r["choices"]) == 256 and r["usage"]["prompt_tokens"] == one["usage"]["prompt_tokens"]  # once
        parts = [{"type": "text", "text": "Where were you "}, {"type": "text", "text": "on the night of the robbery?"}]
        as_parts = ask(messages=[{"role": "user", "content": parts}], max_tokens=3, seed=1, year=1800).json()
        assert as_parts["choices"] == ask(max_tokens=3, seed=1, year=1800).json()["choices"]  # parts are the text
        for body, param in (({"max_completion_tokens": 0}, "max_completion_tokens"), ({"year": True}, "year"),
                            ({"year": 1800.0}, "year"), ({"year": 1914}, "year"), ({"year": 1673}, "year"),
                            ({"messages": [{"role": "user", "content": None}]}, "messages"),
                            ({"messages": [{"role": "system", "content": "x"}]}, "messages"),
                            ({"messages": [{"role": "tool", "content": "x"}, *QUESTION]}, "messages"),
                            ({"messages": QUESTION * 65}, "messages")):
            r = ask(**body)
            assert r.status_code == 400 and r.json()["error"]["param"] == param, (body, r.text)
        assert ask(messages=[{"role": "user", "content": "a " * 500_000}]).status_code == 413
        assert httpx.get(f"{url}/health", timeout=10).json()["queue"]["active"] == 0
