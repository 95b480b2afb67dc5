"""Hostile request bodies at the HTTP boundary, on both APIs, against real loopback servers:
lone surrogates in any string, JSON nested past any request's depth, a body that stops arriving,
a client that hangs up mid-body. Each is a 4xx in the endpoint's error shape (or a one-line log
when nobody is left to answer), and the server goes on serving."""
from __future__ import annotations

import json
from contextlib import contextmanager
import logging
import socket
import time

import httpx
import pytest

from conftest import serving_in_thread
from londonlm.generation import load_model
from londonlm.serving import create_app, httpio

pytestmark = pytest.mark.network_local
PATHS = ["/v1/generate", "/v1/completions", "/v1/chat/completions"]


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def base(lm):
    # the default prompt limit: a 32 KB body, room for JSON nested thousands deep
    with serving_in_thread(create_app(lm=lm, max_prompt_chars=4000, max_new_tokens_limit=8)) as url:
        yield url


def post(base: str, path: str, body: dict | str) -> httpx.Response:
    """``body`` sent as JSON text; json.dumps writes a lone surrogate as the escape ``\\ud800``."""
    text = body if isinstance(body, str) else json.dumps(body)
    return httpx.post(base + path, content=text, headers={"Content-Type": "application/json"}, timeout=30)


def error_of(r: httpx.Response, path: str) -> tuple[str, str | None]:
    """(message, param) from the endpoint's own error shape."""
    err = r.json()["error"]   # one shape for every endpoint, native ones included
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    return err["message"], err["param"]


def assert_still_serving(base: str, lm) -> None:
    r = httpx.post(f"{base}/v1/completions", json={"model": lm.model_id, "prompt": "Up", "max_tokens": 2},
                   timeout=30)
    assert r.status_code == 200, r.text


# --------------------------------------------------------------------------- lone surrogates

@pytest.mark.parametrize("path, fields, where", [
    ("/v1/generate", {"prompt": "Up \ud800 x"}, "prompt"),
    ("/v1/generate", {"prompt": "Up", "era": "\udfff"}, "era"),
    ("/v1/completions", {"prompt": "Up \ud800 x"}, "prompt"),
    ("/v1/completions", {"prompt": ["Up", "a \ud800"]}, "prompt.1"),
    ("/v1/completions", {"prompt": "Up", "stop": ["\ud83d"]}, "stop.0"),
    ("/v1/completions", {"prompt": "Up", "user": "\udc00"}, "user"),
    ("/v1/completions", {"prompt": "Up", "metadata": {"\ud800": "x"}}, "metadata"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a\ud800"}]}, "messages.0.content"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]},
     "messages.0.content.0.text"),
    ("/v1/chat/completions", {"messages": [{"role": "\ud800", "content": "a"}]}, "messages.0.role"),
])
def test_a_lone_surrogate_anywhere_is_a_400_naming_the_field(base, lm, path, fields, where):
    body = fields if path == "/v1/generate" else {"model": lm.model_id, "max_tokens": 2, **fields}
    r = post(base, path, body)
    assert r.status_code == 400, r.text
    message, param = error_of(r, path)
    assert where in message and "surrogate" in message
    assert param in (None, where) if path == "/v1/generate" else param == where
    assert_still_serving(base, lm)


def test_a_surrogate_pair_is_text(base, lm):
    """A valid escaped pair is one character (here an emoji): the boundary must not refuse it."""
    r = post(base, "/v1/completions", {"model": lm.model_id, "prompt": "Up \ud83d\ude00", "max_tokens": 1,
                                       "echo": True})
    assert r.status_code == 200 and r.json()["choices"][0]["text"].startswith("Up \U0001F600")


# --------------------------------------------------------------------------- nesting

def nested(depth: int, field: str = "metadata") -> str:
    """A completions-shaped body whose ``field`` is lists nested ``depth`` deep (the body itself
    is one more level)."""
    return '{"model": "m", "prompt": "Up", "%s": %s%s}' % (field, "[" * depth, "]" * depth)


@pytest.mark.parametrize("path", PATHS)
def test_json_nested_past_the_depth_limit_is_a_400(base, lm, path):
    body = nested(15_000)
    assert len(body) < 16_384 + 4 * 4000  # under the body limit (Service.max_body)
    r = post(base, path, body)
    assert r.status_code == 400, r.text[:300]
    message, _ = error_of(r, path)
    assert "nested" in message and str(httpio.MAX_JSON_DEPTH) in message
    assert_still_serving(base, lm)


def test_json_at_the_depth_limit_is_parsed(base, lm):
    """One level within the limit reaches the schema (which refuses the field as it would any
    list); one past it is the nesting error."""
    inner = httpio.MAX_JSON_DEPTH - 1  # the body object is the first level
    r = post(base, "/v1/completions", nested(inner, "logit_bias"))
    assert r.status_code == 400 and "nested" not in r.json()["error"]["message"]
    r = post(base, "/v1/completions", nested(inner + 1, "logit_bias"))
    assert r.status_code == 400 and "nested" in r.json()["error"]["message"]


# --------------------------------------------------------------------------- bodies that stop

def connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def head(path: str, length: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or 10 s pass)."""
    answer = b""
    try:
        while data := sock.recv(65536):
            answer += data
    except socket.timeout:
        pass
    return answer


@pytest.fixture()
def quick_body_limits(monkeypatch):
    monkeypatch.setattr(httpio, "BODY_IDLE_S", 0.5)
    monkeypatch.setattr(httpio, "BODY_TOTAL_S", 1.5)


@pytest.mark.parametrize("path", PATHS)
def test_a_body_shorter_than_its_content_length_is_a_408_and_closed(base, lm, path, quick_body_limits):
    started = time.monotonic()
    with connect(base) as sock:
        sock.sendall(head(path, 1000) + b'{"prompt": "a"')  # 14 of the 1,000 bytes declared
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - started < 5  # answered, and closed, soon after the body stalls
    status_line, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in status_line.lower()
    err = json.loads(body)["error"]
    assert "body" in err["message"]
    assert_still_serving(base, lm)


def test_a_body_trickled_forever_is_cut_at_the_total_limit(base, lm, quick_body_limits):
    started = time.monotonic()
    with connect(base) as sock:
        sock.sendall(head("/v1/completions", 1000))
        answer = b""
        for _ in range(40):  # a byte every 0.2 s: never idle for BODY_IDLE_S
            try:
                sock.sendall(b" ")
            except OSError:  # the server closed the connection
                break
            sock.settimeout(0.2)
            try:
                answer += sock.recv(65536)
            except socket.timeout:
                continue
            if answer:
                break
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - started < 4
    assert_still_serving(base, lm)


# --------------------------------------------------------------------------- heads that stop

HEADER_TIMEOUT = 1.0


def _half_sent(url: str, sent: bytes) -> socket.socket:
    sock = connect(url)
    if sent:
        sock.sendall(sent)
    return sock


def test_request_headers_that_stop_arriving_are_a_408_and_closed(lm):
    """1,000 sockets sending "GET /health HTTP/1.1\\r\\nHost: x\\r\\n" and no more once held 1,000
    connections (open files 9 -> 1,009) for good: uvicorn has no header timeout. Now each is a
    408 and closed once its head has not arrived within the header timeout: half a head, a
    request line cut short, nothing at all, the next request on a kept-alive connection, a head
    trickled a byte at a time. A whole request meanwhile is answered as ever."""
    with serving_in_thread(create_app(lm=lm, max_new_tokens_limit=8), header_timeout_s=HEADER_TIMEOUT) as url:
        kept = _half_sent(url, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while not first.endswith(b"}"):  # the whole first answer (a small JSON body)
            first += kept.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first[:200]
        started = time.monotonic()
        kept.sendall(b"GET /health HTTP/1.1\r\n")
        socks = [kept] + [_half_sent(url, sent) for sent in (
            b"GET /health HTTP/1.1\r\nHost: x\r\n", b"GET /heal", b"", b"POST /v1/completions HTTP/1.1\r\n")]
        trickled = _half_sent(url, b"G")
        for byte in b"ET /health HTTP/1.1\r\nHost":  # a byte every 0.1 s: never idle, never done
            if time.monotonic() - started > HEADER_TIMEOUT + 1:
                break
            try:
                trickled.sendall(bytes([byte]))
            except OSError:  # closed: that is the point
                break
            time.sleep(0.1)
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200  # served meanwhile
        for sock in [*socks, trickled]:
            answer = read_all(sock)
            waited = time.monotonic() - started
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b"connection: close" in answer.lower() and b"did not arrive within 1 s" in answer
            sock.close()
        assert HEADER_TIMEOUT * 0.9 < waited < HEADER_TIMEOUT + 3  # the timeout, then closed (read_all saw EOF)
        assert_still_serving(url, lm)


def test_a_body_sent_after_the_header_timeout_is_served(lm):
    """The timeout covers only the head: once the headers are in, the body has its own limits."""
    with serving_in_thread(create_app(lm=lm, max_new_tokens_limit=8), header_timeout_s=0.5) as url:
        body = json.dumps({"model": lm.model_id, "prompt": "Up", "max_tokens": 2}).encode()
        with connect(url) as sock:
            sock.sendall(head("/v1/completions", len(body)).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
            time.sleep(0.8)  # past the header timeout, within the body's idle limit
            sock.sendall(body)
            answer = read_all(sock)
        assert answer.startswith(b"HTTP/1.1 200") and b'"usage"' in answer, answer[:300]


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.mark.parametrize("path", PATHS)
def test_a_client_hanging_up_mid_body_is_one_log_line(base, lm, path):
    records, server_log = Records(), logging.getLogger("uvicorn.error")
    level = server_log.level
    server_log.addHandler(records)
    logging.getLogger().addHandler(records)  # anything else (asyncio's own complaints) too
    server_log.setLevel(logging.INFO)
    try:
        with connect(base) as sock:
            sock.sendall(head(path, 1000) + b'{"prompt": "a"')
            time.sleep(0.2)  # the server is reading the body now
        for _ in range(100):  # the hang-up reaches the server asynchronously
            if records.records:
                break
            time.sleep(0.05)
        time.sleep(0.2)  # nothing more follows
    finally:
        server_log.setLevel(level)
        server_log.removeHandler(records)
        logging.getLogger().removeHandler(records)
    lines = [r.getMessage() for r in records.records]
    assert len(lines) == 1 and "\n" not in lines[0] and "closed" in lines[0], lines
    assert all(r.exc_info is None and r.levelno < logging.WARNING for r in records.records)
    assert_still_serving(base, lm)


# --------------------------------------------------------------------------- a stream nobody reads

@contextmanager
def serving_with_small_send_buffers(app, send_stall_s: float):
    """``serving_in_thread``, its listening socket's send buffer a few KB (accepted connections
    inherit it), so that a client that reads nothing fills the buffers after a few hundred events
    instead of the MBs loopback takes by default; yields the URL and the server."""
    from conftest import uvicorn_in_thread

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    with uvicorn_in_thread(app, sock, send_stall_s=send_stall_s) as served:
        yield served


def test_a_stream_its_client_stops_reading_is_dropped_and_its_slot_freed(lm):
    """A client that asks for a long stream and reads none of it (without hanging up) held its
    admission slot for ever: the sends waited on a full socket with no limit. Now a connection
    whose writing stays paused for SEND_STALL_S is aborted: the slot is free, the connection gone
    from the server (a gentle close would keep it, and its unsent bytes, until the client reads)."""
    app = create_app(lm=lm, max_new_tokens_limit=64)  # a batch of 64 rows: the 64 choices at once
    with serving_with_small_send_buffers(app, send_stall_s=0.5) as (url, server):
        body = json.dumps({"model": lm.model_id, "prompt": ["Up"] * 16, "n": 4, "max_tokens": 12, "stream": True,
                           "temperature": 0, "repetition_penalty": 1.0}).encode()
        with connect(url) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            sock.sendall(head("/v1/completions", len(body)) + body)
            for _ in range(600):  # the slot comes back once the stalled connection is dropped
                time.sleep(0.05)
                if httpx.get(url + "/health", timeout=10).json()["queue"]["active"] == 0:
                    break
            assert httpx.get(url + "/health", timeout=10).json()["queue"]["active"] == 0
            time.sleep(0.2)  # the /health requests' own connections closed
            assert not server.server_state.connections  # this client's, unread, included
        assert_still_serving(url, lm)
