"""Hostile round 15 on the server, against real loopback servers over raw sockets: request heads
past h11's limits or that h11 cannot read (answered in the API's error shape, one limit however the
bytes arrive), a client that half-closes after a request that said it would, streams, and the
answering side of the inference and chat commands."""
from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import script_as_module, serving_in_thread
from londonlm.core.errors import run_main
from londonlm.generation import load_model
from londonlm.serving import create_app
from londonlm.serving.httpio import MAX_HEAD_BYTES

pytestmark = pytest.mark.network_local
SCRIPT = Path(__file__).resolve().parents[2] / "06_inference" / "inference_unified.py"


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def base(lm):
    with serving_in_thread(create_app(lm=lm, max_new_tokens_limit=8)) as url:
        yield url


def exchange(url: str, *parts: bytes, half_close: bool = False, pause_s: float = 0.0, wait_s: float = 10) -> bytes:
    """Send ``parts`` on one connection (``pause_s`` between them), optionally shut the sending
    side, and read until the server closes (or ``wait_s`` passes: what came by then)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=wait_s)
    got = b""
    try:
        for i, part in enumerate(parts):
            if i and pause_s:
                time.sleep(pause_s)
            sock.sendall(part)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            got += chunk
    except socket.timeout:
        pass
    finally:
        sock.close()
    return got


def error_of(answer: bytes) -> tuple[int, dict]:
    """(status, the error object) of a raw answer that must be in the API's JSON error shape."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), head
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    return status, error


def get_with_header(size: int) -> bytes:
    """A GET /health whose line and headers are ``size`` bytes in all (one long header)."""
    start, end = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: ", b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


def still_serving(url: str) -> None:
    assert httpx.get(url + "/health", timeout=10).status_code == 200


# --------------------------------------------------------------------------- request heads

@pytest.mark.parametrize("size, pieces", [
    (MAX_HEAD_BYTES + 40_000, 1),    # one write: read whole on loopback, h11 took it (was a 200)
    (MAX_HEAD_BYTES + 40_000, 6),    # trickled: h11 refused it as incomplete, in plain text
    (2_000_000, 1),                  # still being sent when refused: the reset lost the answer
])
def test_a_head_over_the_limit_is_a_431_in_the_error_shape_however_it_arrives(base, size, pieces):
    head = get_with_header(size)
    step = -(-len(head) // pieces)
    answer = exchange(base, *[head[i:i + step] for i in range(0, len(head), step)], pause_s=0.05)
    status, error = error_of(answer)
    assert status == 431 and str(MAX_HEAD_BYTES) in error["message"] and "headers" in error["message"]
    still_serving(base)


def test_a_head_under_the_limit_passes_however_it_arrives(base):
    """h11's own limit (16 KB) refused a head of 20 KB trickled over a network, never one read whole."""
    head = get_with_header(MAX_HEAD_BYTES - 1000)
    answer = exchange(base, *[head[i:i + 8000] for i in range(0, len(head), 8000)], pause_s=0.05)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n{}",
    b"GET /health HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
])
def test_a_request_h11_cannot_read_is_a_400_in_the_error_shape(base, request_bytes):
    status, error = error_of(exchange(base, request_bytes))
    assert status == 400 and "HTTP/1.1 request" in error["message"]
    still_serving(base)


def test_a_head_that_stops_arriving_is_a_408_in_the_error_shape(lm):
    with serving_in_thread(create_app(lm=lm, max_new_tokens_limit=8), header_timeout_s=0.5) as url:
        status, error = error_of(exchange(url, b"GET /health HTTP/1.1\r\nHost: x\r\n"))
    assert status == 408 and "did not arrive within 0.5 s" in error["message"]


# --------------------------------------------------------------------------- half-closing clients

def completion_request(lm, version: str = "1.1", extra: str = "", **fields) -> bytes:
    body = json.dumps({"model": lm.model_id, "prompt": "London", "max_tokens": 3, "seed": 1, **fields}).encode()
    return (f"POST /v1/completions HTTP/{version}\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


@pytest.mark.parametrize("version, extra", [("1.0", ""), ("1.1", "Connection: close\r\n")])
@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_half_closes_after_saying_so_gets_its_answer(base, lm, version, extra, stream):
    """uvicorn closed on the EOF: the request saw its client gone and nothing came back."""
    answer = exchange(base, completion_request(lm, version, extra, stream=stream), half_close=True)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    body = answer.partition(b"\r\n\r\n")[2]
    if stream:
        assert b"data: [DONE]" in body  # (chunked in HTTP/1.1)
    else:
        assert json.loads(body)["choices"][0]["finish_reason"] in ("length", "stop")
    still_serving(base)


def test_a_keep_alive_client_that_half_closes_is_still_a_hang_up(base, lm):
    """A FIN cannot tell a half-close from a close: a keep-alive client's is read as it hanging up
    (round 14: its generation stops, its slot is free at once), and it gets nothing."""
    started = time.monotonic()
    assert exchange(base, completion_request(lm), half_close=True) == b""
    assert time.monotonic() - started < 5
    still_serving(base)


@pytest.fixture(scope="module")
def slow_lm(tiny_model_dir):
    """A model instance of its own whose every forward pass takes 0.2 s."""
    lm = load_model(str(tiny_model_dir), device="cpu")
    lm.model.register_forward_pre_hook(lambda module, args: time.sleep(0.2))
    return lm


def active_within(url: str, ok, within_s: float) -> int:
    give_up = time.monotonic() + within_s
    while True:
        active = httpx.get(url + "/health", timeout=10).json()["queue"]["active"]
        if ok(active) or time.monotonic() > give_up:
            return active
        time.sleep(0.05)


@pytest.mark.parametrize("extra", ["", "Connection: close\r\n"])
def test_a_stream_whose_client_hangs_up_mid_way_frees_its_slot(slow_lm, extra):
    """After its first events, the client closes (read as a half-close for ``Connection: close``:
    the next sends meet the reset and end the stream)."""
    app = create_app(lm=slow_lm, max_concurrency=1, max_new_tokens_limit=48)
    with serving_in_thread(app) as url:
        host, port = url.removeprefix("http://").split(":")
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(completion_request(slow_lm, "1.1", extra, stream=True, max_tokens=48, n=2))
        assert b"data:" in sock.recv(65536)
        sock.close()
        started = time.monotonic()
        assert active_within(url, lambda a: a == 0, 5) == 0 and time.monotonic() - started < 5
        still_serving(url)


# --------------------------------------------------------------------------- the inference command

@pytest.fixture(scope="module")
def cli():
    name = "londonlm_test_inference_unified_r15"
    with script_as_module(SCRIPT, name) as module:
        yield module


@pytest.mark.parametrize("closed, flags", [
    ("stdout", ["--prompt", "London"]),
    ("stdout", ["--chat", "--prompt", "hi"]),
    ("stdin", ["--interactive"]),
    ("stdin", ["--chat"]),
])
def test_a_closed_standard_stream_is_one_line_before_the_model_loads(cli, tiny_model_dir, tmp_path, monkeypatch,
                                                                    capsys, closed, flags):
    """``>&-`` / ``<&-`` leave Python None there: an AttributeError traceback after the model's load."""
    import londonlm.generation as generation

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(generation, "load_model", no_load)
    monkeypatch.setattr(sys, closed, None)
    argv = ["--root", str(tmp_path), "--model", str(tiny_model_dir), "--device", "cpu", *flags]
    with pytest.raises(SystemExit) as e:
        run_main(cli.main, argv)
    assert e.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: standard {'output' if closed == 'stdout' else 'input'} is closed")


def test_a_redirected_line_past_the_cap_is_one_line_not_memory_without_end(lm, monkeypatch):
    """``--interactive < /dev/zero`` grew one line (~40 MB/s) until the machine ran out of memory."""
    import io

    from londonlm.core import UsageError
    from londonlm.serving import repl

    monkeypatch.setattr(repl, "MAX_LINE_CHARS", 1000)
    monkeypatch.setattr(sys, "stdin", io.StringIO("London\n" + "\0" * 5000 + "\nThe\n"))
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    settings = lm.defaults.updated(max_new_tokens=2, seed=1)
    with pytest.raises(UsageError, match="a line of over 1,000 characters"):
        repl.run_repl(lm, settings, out, stream_tokens=False)
    assert out.getvalue().count("[2 tokens") == 1  # the line before it was answered; none after


def test_a_redirected_file_of_prompts_is_read_as_input_reads_it(lm, monkeypatch):
    import io

    from londonlm.serving import repl

    monkeypatch.setattr(sys, "stdin", io.StringIO("London\n\n  The\nlast without a newline"))
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert [line for line in repl.typed_lines(None, "> ", io.StringIO())] == \
        ["London", "  The", "last without a newline"]


@pytest.mark.parametrize("line", ["/max 0", "/max -3"])
def test_the_chat_loop_refuses_a_max_of_no_tokens_when_it_is_set(line):
    """Taken, every question after it was an error until /max was set again."""
    from londonlm.chat import ChatRequestError, ChatSettings
    from londonlm.serving.repl import ChatSession

    session = ChatSession(ChatSettings(max_new_tokens=20))
    with pytest.raises(ChatRequestError, match="max_new_tokens must be at least 1"):
        session.command(line)
    assert session.settings.max_new_tokens == 20
    with pytest.raises(ChatRequestError, match="/seed needs a whole number, got '1e3'"):
        session.command("/seed 1e3")
