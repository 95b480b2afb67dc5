"""A client that hangs up before its non-streamed answer, against a real loopback server: its
generation stops and its admission slot (or its place in the queue) is free again at once. The
answer is one send at the end, so before it nothing noticed the client gone: the generation ran
to its end or its time limit, holding the slot for nobody."""
from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from conftest import serving_in_thread
from londonlm.generation import load_model
from londonlm.serving import create_app

pytestmark = pytest.mark.network_local
SEED = 1  # with the prompt "London", the tiny model's first 48 tokens hold no <|endoftext|>


@pytest.fixture(scope="module")
def slow_lm(tiny_model_dir):
    """A model instance of its own whose every forward pass takes 0.2 s: 48 tokens take ~10 s."""
    lm = load_model(str(tiny_model_dir), device="cpu")
    lm.model.register_forward_pre_hook(lambda module, args: time.sleep(0.2))
    return lm


def send_and_keep(url: str, path: str, body: dict) -> socket.socket:
    """A connection that has sent one whole POST and reads nothing."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    data = json.dumps(body).encode()
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def wait_for(url: str, ok, within_s: float) -> dict:
    """/health once ``ok(health)`` holds, or the last one seen after ``within_s``."""
    give_up = time.monotonic() + within_s
    while True:
        health = httpx.get(url + "/health", timeout=10).json()
        if ok(health) or time.monotonic() > give_up:
            return health
        time.sleep(0.05)


@pytest.mark.parametrize("path, tokens", [("/v1/completions", "max_tokens"), ("/v1/generate", "max_new_tokens")])
def test_a_client_that_hangs_up_frees_its_slot_and_its_queue_place(slow_lm, path, tokens):
    app = create_app(lm=slow_lm, max_concurrency=1, max_queue=1, request_timeout_s=60, max_new_tokens_limit=48)
    body = {"prompt": "London", tokens: 48, "seed": SEED, **({"model": slow_lm.model_id} if "max_tokens" == tokens else {})}
    with serving_in_thread(app) as url:
        running = send_and_keep(url, path, body)
        assert wait_for(url, lambda h: h["batch"]["rows"] == 1, 10)["queue"]["active"] == 1
        queued = send_and_keep(url, path, body)
        assert wait_for(url, lambda h: h["queue"]["waiting"] == 1, 10)["queue"]["waiting"] == 1
        queued.close()  # hung up while waiting its turn: its place in the queue is free
        health = wait_for(url, lambda h: h["queue"]["waiting"] == 0, 3)
        assert health["queue"]["waiting"] == 0 and health["queue"]["active"] == 1
        running.close()  # hung up mid-generation (~10 s of it left): slot free, generation stopped
        started = time.monotonic()
        health = wait_for(url, lambda h: h["queue"]["active"] == 0, 3)
        assert health["queue"]["active"] == 0 and time.monotonic() - started < 3
        # the forward pass under way ends, and its row with it
        batch = wait_for(url, lambda h: h["batch"]["rows"] + h["batch"]["pending_rows"] == 0, 3)["batch"]
        assert batch["rows"] == 0 and batch["pending_rows"] == 0
        time.sleep(0.6)  # three forward passes' time: none may run for the gone client
        assert httpx.get(url + "/health", timeout=10).json()["batch"]["steps"] == batch["steps"]
        r = httpx.post(url + path, json={**body, tokens: 2}, timeout=30)
        assert r.status_code == 200, r.text  # the server goes on serving
