"""serve.py refuses what it cannot serve before it announces anything (a port in use, a host it
cannot bind), in one `error:` line with exit 2; and every error the server answers, native,
OpenAI, 404 or 405, has OpenAI's error shape."""
from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import httpx
import pytest

from conftest import serving_in_thread
from londonlm.core.errors import run_main
from londonlm.generation import load_model
from londonlm.serving.app import create_app

REPO = Path(__file__).resolve().parents[2]


def _serve_exit(argv: list[str]) -> int:
    spec = importlib.util.spec_from_file_location("serve_startup_refusals", REPO / "06_inference" / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    with pytest.raises(SystemExit) as done:
        run_main(serve.main, argv)
    return done.value.code


def test_a_port_in_use_is_one_line_before_any_announcement(tiny_model_dir, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = _serve_exit(["--model", str(tiny_model_dir), "--device", "cpu", "--port", str(port)])
    out, err = capsys.readouterr()
    assert code == 2 and "serving" not in out
    assert err.startswith("error:") and err.count("\n") == 1 and "already in use" in err, err


def test_a_host_that_cannot_be_bound_is_one_line(tiny_model_dir, capsys):
    code = _serve_exit(["--model", str(tiny_model_dir), "--device", "cpu", "--host", "999.1.1.1"])
    out, err = capsys.readouterr()
    assert code == 2 and "serving" not in out
    assert err.startswith("error:") and err.count("\n") == 1 and "--host 999.1.1.1" in err, err


@pytest.fixture(scope="module")
def base(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), device="cpu")
    with serving_in_thread(create_app(lm=lm, max_concurrency=1, max_new_tokens_limit=8)) as url:
        yield url


def _openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"], err
    assert err["type"] == "invalid_request_error"
    return err


def test_unknown_paths_and_methods_answer_the_openai_error_shape(base):
    assert "Not Found" in _openai_error(httpx.get(f"{base}/nope"), 404)["message"]
    assert "Method Not Allowed" in _openai_error(httpx.put(f"{base}/health"), 405)["message"]


def test_native_errors_answer_the_openai_error_shape(base):
    assert "prompt" in _openai_error(httpx.post(f"{base}/v1/generate", json={"prompt": 3}), 422)["message"]
    assert "JSON" in _openai_error(httpx.post(f"{base}/v1/generate", content=b"[1]",
                                              headers={"Content-Type": "application/json"}), 400)["message"]
