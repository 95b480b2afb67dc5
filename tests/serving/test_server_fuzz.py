"""Any request body, not just the ones a test thought of: hypothesis builds bodies from each
endpoint's own field names (and names it does not know) with values of every JSON kind, in and
out of range, and sends them to a real loopback server. Whatever comes in, the answer is a
success or a 4xx in the endpoint's one error shape, never a 5xx or a dropped connection; a stream
ends with ``[DONE]`` or an error event; and the server goes on serving."""
from __future__ import annotations

import json
import math
import os

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import serving_in_thread
from londonlm.generation import load_model
from londonlm.serving import create_app
from londonlm.serving.schemas import openai_models, request_model

pytestmark = pytest.mark.network_local
LIMITS = dict(max_prompt_chars=400, max_new_tokens_limit=6, max_samples=3)
# bodies per endpoint; LONDONLM_FUZZ_EXAMPLES=1000 searches longer (minutes)
EXAMPLES = int(os.environ.get("LONDONLM_FUZZ_EXAMPLES", 60))
NATIVE = ["/v1/generate", "/v1/generate/stream"]
OPENAI = ["/v1/completions", "/v1/chat/completions"]

# each endpoint's own schema: most bodies are built to pass it, field by field, so they reach
# the sampling and the stream, not only the request checks
_completion, _chat = openai_models(LIMITS["max_new_tokens_limit"], LIMITS["max_samples"])
SCHEMAS = {"/v1/generate": request_model(**LIMITS).model_json_schema(),
           "/v1/completions": _completion.model_json_schema(), "/v1/chat/completions": _chat.model_json_schema()}
SCHEMAS["/v1/generate/stream"] = SCHEMAS["/v1/generate"]

# numbers at and past every range's edges, JSON's awkward ones (huge, negative zero, NaN and
# Infinity, which json.dumps writes and some clients send) and plain small ones
NUMBERS = st.one_of(
    st.sampled_from([0, 1, -1, 2, 3, 5, 6, 7, 16, 32, 33, 256, 1000, 1001, 2**31, 2**32, 2**63, -2**63, 10**30,
                     0.0, -0.0, 1e-6, 0.5, 1.0, 1.5, 5.0, 10.0, 1e308, -1e308, math.nan, math.inf, -math.inf]),
    st.integers(-3, 70), st.floats(-2, 12, allow_nan=False))
TEXT = st.one_of(st.text(max_size=30), st.sampled_from(["", " ", "\x00", "\ud800", "1650s", "1650", "text",
                                                        "user", "assistant", "system", "x" * 500]))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
MESSAGE = st.fixed_dictionaries(
    {"role": st.one_of(st.sampled_from(["user", "assistant", "system", "tool"]), SCALARS)},
    optional={"content": st.one_of(TEXT, SCALARS, st.lists(
        st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]), "text": SCALARS}), max_size=2)),
              "name": SCALARS, "tool_calls": st.one_of(st.none(), st.lists(SCALARS, max_size=1))})
SERVED = "(the served model's id)"  # replaced when sent: the OpenAI endpoints answer 404 to any other
# free-text fields that the schema cannot tell apart from nonsense, mostly given as a client would
PLAUSIBLE = {"role": st.one_of(st.sampled_from(["user", "assistant", "system"]), TEXT),
             "model": st.one_of(st.just(SERVED), st.just(SERVED), TEXT)}
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=3),
    st.lists(st.integers(-5, 70_000), max_size=8), st.lists(MESSAGE, max_size=3)), max_leaves=12)


def valid(schema: dict, defs: dict) -> st.SearchStrategy:
    """Values that a JSON schema (the subset pydantic writes for these models) accepts."""
    if "$ref" in schema:
        return valid(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in schema:
        return st.one_of([valid(s, defs) for s in schema["anyOf"]])
    kind = schema.get("type")
    if "const" in schema or "enum" in schema:
        return st.sampled_from(schema.get("enum", [schema.get("const")]))
    if kind in ("integer", "number"):
        lo = schema.get("minimum", schema.get("exclusiveMinimum", -100))
        hi = schema.get("maximum", schema.get("exclusiveMaximum", 100))
        lo, hi = max(lo, -100), min(hi, 100)  # the edges themselves, and values between
        ints = st.integers(math.ceil(lo), math.floor(hi))
        if kind == "integer":
            return ints.filter(lambda v: v != schema.get("exclusiveMinimum") and v != schema.get("exclusiveMaximum"))
        return st.one_of(ints, st.floats(lo, hi, exclude_min="exclusiveMinimum" in schema,
                                         exclude_max="exclusiveMaximum" in schema))
    if kind == "string":
        return st.text(max_size=min(schema.get("maxLength", 60), 60))
    if kind == "array":
        items = valid(schema.get("items", {}), defs) if schema.get("items") else SCALARS
        return st.lists(items, max_size=min(schema.get("maxItems", 4), 4))
    if kind == "object" and "properties" in schema:
        props, required = schema["properties"], schema.get("required", [])
        field = {k: PLAUSIBLE[k] if k in PLAUSIBLE else valid(v, defs) for k, v in props.items()}
        return st.fixed_dictionaries({k: field[k] for k in required},
                                     optional={k: field[k] for k in props if k not in required})
    return {"boolean": st.booleans(), "null": st.none(), "object": st.dictionaries(TEXT, SCALARS, max_size=3)}.get(
        kind, VALUES)


@st.composite
def bodies(draw, path: str):
    """A body built from ``path``'s schema, field by field valid or hostile, sometimes with a
    name it does not know, sometimes not an object at all."""
    if draw(st.integers(0, 19)) == 0:
        return draw(VALUES)
    schema = SCHEMAS[path]
    props, defs = schema["properties"], schema.get("$defs", {})
    names = set(schema.get("required", [])) | set(draw(st.lists(st.sampled_from(sorted(props)), max_size=6)))
    hostile = draw(st.sampled_from([0, 0, 1, 2]))  # most bodies pass the schema whole
    body = {}
    for name in sorted(names):
        if hostile and draw(st.integers(0, 3)) == 0:
            body[name] = draw(VALUES)
        else:
            body[name] = draw(PLAUSIBLE[name] if name in PLAUSIBLE else valid(props[name], defs))
    if hostile == 2:
        body.pop(draw(st.sampled_from(sorted(body))), None)
        body[draw(TEXT)] = draw(VALUES)
    return body


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), device="cpu")
    with serving_in_thread(create_app(lm=lm, **LIMITS)) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client, lm


def check_answer(r: httpx.Response, path: str) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code >= 400:
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"], err
        assert "Traceback" not in err["message"]
    elif r.headers.get("content-type", "").startswith("text/event-stream"):
        # the native stream names its events and ends with "done" or "error"; OpenAI's ends with
        # [DONE] (an error is a data event with an "error" key, and [DONE] still follows it)
        names = [line[len("event: "):] for line in r.text.splitlines() if line.startswith("event: ")]
        data = [line[len("data: "):] for line in r.text.splitlines() if line.startswith("data: ")]
        assert data, r.text[:500]
        if path in NATIVE:
            assert names and names[-1] in ("done", "error"), r.text[-500:]
        else:
            assert data[-1] == "[DONE]", r.text[-500:]
        for event in data:  # an error in a stream is the request's fault, never the server's
            error = json.loads(event).get("error") if event.startswith("{") else None
            assert not error or error["type"] == "invalid_request_error", r.text[-500:]
    else:
        assert isinstance(r.json(), dict)


def still_serves(client: httpx.Client, lm) -> None:
    r = client.post("/v1/completions", json={"model": lm.model_id, "prompt": "Up", "max_tokens": 2})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] is not None, r.text


@pytest.mark.parametrize("path", NATIVE + OPENAI)
def test_any_body_is_answered_in_the_endpoints_shape(server, path):
    client, lm = server

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(body=bodies(path))
    def send(body):
        text = json.dumps(body).replace(json.dumps(SERVED), json.dumps(lm.model_id))  # NaN and Infinity as JavaScript writes them; lone surrogates escaped
        check_answer(client.post(path, content=text, headers={"Content-Type": "application/json"}), path)

    send()
    still_serves(client, lm)
