"""Hostile-input round: the terminal front end with many samples."""
from __future__ import annotations

import io
from dataclasses import replace

import pytest

from londonlm.generation import generate, load_model
from londonlm.serving.repl import print_generation


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu")


def test_each_sample_is_written_as_soon_as_it_is_generated(lm, monkeypatch):
    """--num_samples 100000000 printed nothing until all were made, and Ctrl-C lost every
    finished one: each sample is on stdout before the next is generated."""
    made = []
    real = lm.model.generate
    monkeypatch.setattr(lm.model, "generate", lambda *a, **k: made.append(1) or real(*a, **k))

    class Out(io.StringIO):
        seen: list = []

        def write(self, text):
            self.seen.append((len(made), text))
            return super().write(text)

    out = Out()
    settings = replace(lm.defaults, max_new_tokens=3, num_samples=3, seed=11)
    samples = print_generation(lm, "Up", settings, out)
    first = next(i for i, (_, t) in enumerate(out.seen) if t == samples[0].text)
    assert out.seen[first][0] == 1, "sample 1 was held back until later samples were generated"
    monkeypatch.undo()
    # the samples are the ones generate() makes: sample i has seed + i
    assert [s.seed for s in samples] == [11, 12, 13]
    assert [s.text for s in samples] == [s.text for s in generate(lm, "Up", settings)]


@pytest.mark.parametrize("limit, value", [("max_samples", 10**12), ("max_prompt_chars", 10**21),
                                          ("max_new_tokens_limit", 10**21)])
def test_a_per_request_limit_past_its_cap_is_refused(lm, limit, value, capsys):
    """--max_samples 10**12 let one request (n 10**8) take GBs and never answer;
    --max_prompt_chars 10**21 was a pydantic SchemaError traceback."""
    from londonlm.core import UsageError
    from londonlm.serving import create_app
    from londonlm.serving.cli import build_parser

    with pytest.raises(UsageError, match=limit):
        create_app(lm=lm, **{limit: value})
    with pytest.raises(SystemExit) as e:
        build_parser("tiny").parse_args([f"--{limit}", str(value)])
    assert e.value.code == 2 and capsys.readouterr().err.startswith(f"error: --{limit}: must be at most")


def test_a_chat_year_out_of_range_names_the_year_field(tiny_model_dir, tmp_path):
    """{"year": -5} was refused naming param "messages"."""
    import httpx
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conftest import serving_in_thread
    from londonlm.chat.template import add_chat_tokens, prepare_model_for_chat
    from londonlm.serving import create_app

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    add_chat_tokens(tok)
    prepare_model_for_chat(model, tok)
    model.save_pretrained(str(tmp_path))
    tok.save_pretrained(str(tmp_path))
    chat = load_model(str(tmp_path), device="cpu")
    with serving_in_thread(create_app(lm=chat, max_new_tokens_limit=4)) as url:
        for year in (-5, 10**30):
            r = httpx.post(f"{url}/v1/chat/completions", timeout=30, json={
                "model": chat.model_id, "messages": [{"role": "user", "content": "hi"}], "year": year})
            assert r.status_code == 400 and r.json()["error"]["param"] == "year", r.text


@pytest.mark.network_local
@pytest.mark.parametrize("path", ["/", "/static/playground.js"])
@pytest.mark.parametrize("range_, status", [("bytes=abc", 400), ("bytes=5-1", 400), ("bytes=999999999-", 416)])
def test_a_bad_range_on_a_file_route_is_an_error_in_the_one_shape(lm, path, range_, status):
    """Range: bytes=abc on / or /static/* was Starlette's plain-text 400 "Malformed range header."
    (416: an empty text body), the one error no client parser could read: routes fuzz net."""
    import httpx

    from conftest import serving_in_thread
    from londonlm.serving import create_app

    with serving_in_thread(create_app(lm=lm, max_concurrency=1)) as url:
        r = httpx.get(url + path, headers={"Range": range_})
        ok = httpx.get(url + path, headers={"Range": "bytes=0-3"})
    assert r.status_code == status and r.headers["content-type"].startswith("application/json"), r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"] and "\n" not in err["message"]
    assert ok.status_code == 206 and len(ok.content) == 4  # a good range still answers its bytes


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_server_stopped_by_a_signal_returns_instead_of_dying_by_it(stop):
    """serve.py stopped by SIGTERM (docker stop, systemctl stop) drained its requests, then uvicorn
    raised the signal again: killed, exit 143; Ctrl-C exit 130. Found by the flags net. The
    signal's own handler, restored after the run, must not be called again."""
    import os
    import signal
    import socket
    import threading
    import time

    import uvicorn

    from londonlm.serving.cli import _server_stopped_cleanly_by_signals

    async def app(scope, receive, send):  # serves nothing: only the stop matters here
        pass

    sig, raised = getattr(signal, stop), []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = _server_stopped_cleanly_by_signals(uvicorn.Config(app, log_level="warning", lifespan="off"))

    def stop_when_started():
        while not server.started:
            time.sleep(0.02)
        os.kill(os.getpid(), sig)

    previous = signal.signal(sig, lambda *_: raised.append(sig))
    try:
        threading.Thread(target=stop_when_started, daemon=True).start()
        server.run(sockets=[sock])
    finally:
        signal.signal(sig, previous)
        sock.close()
    assert server.started and raised == [], "the signal was raised again after the orderly stop"
