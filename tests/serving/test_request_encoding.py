"""A request body sent compressed (``Content-Encoding: gzip``, as some HTTP clients do for large
bodies) is never decoded by the server: it is refused by name, on every endpoint, against a real
loopback server."""
from __future__ import annotations

import gzip
import json

import httpx
import pytest

from conftest import serving_in_thread
from londonlm.generation import load_model
from londonlm.serving import create_app

pytestmark = pytest.mark.network_local


@pytest.fixture(scope="module")
def served(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), device="cpu")
    with serving_in_thread(create_app(lm=lm, max_new_tokens_limit=4)) as url:
        yield url, lm


@pytest.mark.parametrize("path", ["/v1/generate", "/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate, gzip"])
def test_a_compressed_body_is_a_415_naming_the_encoding(served, path, encoding):
    """Was: 400 "malformed JSON: 'utf-8' codec can't decode byte 0x8b in position 1", as if the
    JSON were broken."""
    url, lm = served
    body = gzip.compress(json.dumps({"model": lm.model_id, "prompt": "Up"}).encode())
    r = httpx.post(url + path, content=body, timeout=30,
                   headers={"Content-Type": "application/json", "Content-Encoding": encoding})
    assert r.status_code == 415, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] == f"send the JSON uncompressed: Content-Encoding {encoding} is not accepted"


def test_an_identity_encoding_is_plain_json(served):
    url, lm = served
    r = httpx.post(url + "/v1/completions", json={"model": lm.model_id, "prompt": "Up", "max_tokens": 2},
                   headers={"Content-Encoding": "identity"}, timeout=30)
    assert r.status_code == 200, r.text
