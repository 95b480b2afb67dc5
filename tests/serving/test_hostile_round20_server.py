"""Hostile round 20: the server and the inference command run for real at the generation flags'
limits and under concurrency (many streams at once, clients that hang up mid-stream or while
queued, a client that reads its stream slowly)."""
from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from conftest import uvicorn_in_thread
from londonlm.generation import load_model
from londonlm.serving import create_app

pytestmark = pytest.mark.network_local


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu")


def active_slots(url: str) -> int:
    return httpx.get(url + "/health", timeout=10).json()["queue"]["active"]


def test_a_stream_read_in_a_trickle_frees_its_slot_soon_after_its_time_limit(lm):
    # was: a client that read its stream slowly but never stopped long enough for the send-stall
    # limit (the transport's writing paused, then resumed by each read) held its admission slot
    # until the whole stream was out: with a 3 s time limit, a 64 KB/s reader held it 9 s, and
    # however long a slower trickle lasted, the engine idle. As many such clients as
    # --max_concurrency had every later request refused as busy.
    limit_s, stall_s = 3.0, 2.0
    app = create_app(lm=lm, max_concurrency=64, request_timeout_s=limit_s, max_new_tokens_limit=60)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)  # (accepted sockets take it)
    with uvicorn_in_thread(app, listener, send_stall_s=stall_s) as (url, _):
        host, port = url.removeprefix("http://").split(":")
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect((host, int(port)))
        body = json.dumps({"model": lm.model_id, "prompt": ["London"] * 16, "n": 4, "max_tokens": 60,
                           "temperature": 0, "stream": True}).encode()
        client.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(body) + body)
        started, got, ended = time.monotonic(), b"", False
        client.setblocking(False)
        while time.monotonic() - started < limit_s + stall_s + 1 and not ended:
            time.sleep(0.33)
            want = len(got) + 16384  # ~48 KB/s: the paused transport resumes well within the stall limit
            try:
                while len(got) < want and not ended:
                    chunk = client.recv(want - len(got))
                    ended, got = not chunk, got + chunk
            except BlockingIOError:
                pass
            except ConnectionError:
                ended = True
        assert b"data: [DONE]" not in got  # the stream was still being read, not finished
        assert active_slots(url) == 0  # its slot is free: later requests are served
        client.close()
        r = httpx.post(url + "/v1/completions", json={"model": lm.model_id, "prompt": "London", "max_tokens": 2},
                       timeout=30)
        assert r.status_code == 200, r.text


def test_an_era_with_a_token_id_prompt_is_a_400_not_dropped(lm):
    # was: 200, the era taken and dropped without a word (the same text and prompt_tokens as
    # without it): token-id prompts are never changed, so nothing put the era token first
    from fastapi.testclient import TestClient

    client = TestClient(create_app(lm=lm, max_new_tokens_limit=8))
    body = {"model": lm.model_id, "prompt": [5, 6, 7], "max_tokens": 2, "temperature": 0}
    r = client.post("/v1/completions", json={**body, "era": "1650s"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "era", r.text
    era_id = lm.tokenizer.convert_tokens_to_ids("<|1650s|>")
    assert f"({'<|1650s|>'} is {era_id})" in r.json()["error"]["message"]
    assert client.post("/v1/completions", json=body).status_code == 200  # without it, as before
    r = client.post("/v1/completions", json={**body, "prompt": "London", "era": "1650s"})
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 3  # text: <|endoftext|>, era, London
