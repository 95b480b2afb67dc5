"""Every route the app serves, not just the generation bodies (``test_server_fuzz.py`` has those):
hypothesis draws a route from the app's own router (and paths it does not serve), any method, a
query string, odd or huge headers and any body, and sends them to a real loopback server. Whatever
comes in, the answer is a success or a 4xx in OpenAI's one error shape, never a 5xx or a dropped
connection; no answer names the model's folder; and the server goes on serving."""
from __future__ import annotations

import json
import os
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Mount, Route

from conftest import serving_in_thread
from londonlm.generation import load_model
from londonlm.serving import create_app

pytestmark = pytest.mark.network_local
# requests in all; LONDONLM_FUZZ_EXAMPLES=1000 searches longer (minutes)
EXAMPLES = int(os.environ.get("LONDONLM_FUZZ_EXAMPLES", 80))
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "get"]
# statuses a client's mistake may get; anything else (a 5xx, a 3xx) is the server's
CLIENT_ERRORS = {400, 401, 403, 404, 405, 406, 408, 411, 413, 415, 416, 422, 429}
ODD = ["", " ", "x" * 8000, "\u00e9t\u00e9", "*/*", "application/json", "text/html", "multipart/form-data",
       "application/json; charset=latin-1", "bytes=0-3", "bytes=999999-", "bytes=5-1", "bytes=0-1,3-4",
       "bytes=-0", "bytes=abc", "Bearer sk-test", "Basic Zm9vOmJhcg==", "gzip", "chunked", "close", "*",
       '"etag"', "Mon, 01 Jan 2001 00:00:00 GMT", "not a date", "1", "-1", "99999999999999999999"]
HEADER_NAMES = ["Content-Type", "Accept", "Authorization", "Range", "If-Range", "If-None-Match",
                "If-Modified-Since", "Accept-Encoding", "Origin", "X-Forwarded-For", "Cookie", "Connection",
                "Accept-Language", "Cache-Control", "X-Odd"]


def served_paths(app) -> list[str]:
    """The app's routes as concrete paths: a path parameter and a mount's tail become a marker
    the request strategy fills in."""
    paths = []
    for route in app.routes:
        if isinstance(route, Route):
            paths.append(route.path)
        elif isinstance(route, Mount):
            paths.append(route.path + "/{file}")
    return paths


SEGMENTS = st.one_of(st.sampled_from(["playground.js", "playground.css", "playground.html", "nope.js", "",
                                      "..", "../app.py", "%2e%2e/app.py", "a/b", "%00", "%ff", "\u00e9",
                                      "x" * 300, "(the model id)"]), st.text(max_size=12))
JSONS = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
                     lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner,
                                                                                          max_size=4)),
                     max_leaves=10)
BODIES = st.one_of(st.just(b""), st.binary(max_size=64), JSONS.map(lambda v: json.dumps(v).encode()),
                   st.sampled_from([b"\xff\xfe{}", b'{"prompt": "\xe9"}', b"[" * 5000 + b"]" * 5000,
                                    b'{"a":' * 40 + b"1" + b"}" * 40, b'{"prompt": "Up", "max_new_tokens": 2}',
                                    b"\x00" * 10, b"{" * 100000]))


@st.composite
def requests(draw, paths: list[str], model_id: str):
    template = draw(st.sampled_from(paths + ["/nope", "/v1", "/v1/", "/health/", "//health", "/static",
                                             "/v1/models/", "/%ff", "/" + "a" * 3000]))
    path = template
    for marker in ("{file}", "{model_id:path}"):
        seg = draw(SEGMENTS).replace("(the model id)", model_id)
        path = path.replace(marker, quote(seg, safe="/%"))
    query = draw(st.one_of(st.just(""), st.dictionaries(st.text(max_size=6), st.text(max_size=20), max_size=3)
                           .map(lambda q: str(httpx.QueryParams(q))), st.just("a=" + "q" * 6000)))
    headers = draw(st.dictionaries(st.sampled_from(HEADER_NAMES), st.one_of(st.sampled_from(ODD), st.text(
        st.characters(min_codepoint=32, max_codepoint=255, blacklist_characters="\x7f"), max_size=30)),
        max_size=4))
    return draw(st.sampled_from(METHODS)), path + ("?" + query if query else ""), headers, draw(BODIES)


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), device="cpu")
    app = create_app(lm=lm, max_prompt_chars=400, max_new_tokens_limit=4, max_samples=2)
    with serving_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client, app, lm, str(tiny_model_dir)


def check_answer(r: httpx.Response, method: str, folder: str) -> None:
    if r.status_code in (307, 308):  # Starlette's slash redirect ("/health/" to "/health"): same server only
        assert r.headers["location"].startswith(str(r.request.url.copy_with(path="/", query=None))), r.headers
        return
    assert r.status_code < 300 or r.status_code in CLIENT_ERRORS | {304}, (r.status_code, r.text[:300])
    assert folder not in r.text and folder not in str(r.headers), "an answer names the model's folder"
    if r.status_code >= 400 and method.upper() != "HEAD":
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"], err
        assert "\n" not in err["message"] and "Traceback" not in err["message"], err


def test_any_request_to_any_route_is_answered_in_the_error_shape(server):
    client, app, lm, folder = server
    paths = served_paths(app)
    assert {"/health", "/v1/models", "/v1/completions", "/static/{file}"} <= set(paths), paths

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(req=requests(paths, lm.model_id))
    def send(req):
        method, url, headers, body = req
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        try:
            r = client.request(method, url, headers=raw, content=body)
        except httpx.LocalProtocolError:  # a header httpx itself will not send: nothing reached the server
            return
        check_answer(r, method, folder)

    send()
    assert client.get("/health").status_code == 200
    r = client.post("/v1/generate", json={"prompt": "Up", "max_new_tokens": 2})
    assert r.status_code == 200 and r.json()["text"] is not None, r.text
