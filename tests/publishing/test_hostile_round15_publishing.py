"""Hostile round 15, publishing: a Hub that redirects to another host (which the HTTP client
rightly sends no token) was reported as "the token was rejected: check HF_TOKEN"; a repo id
whose namespace is a Hub address prefix (`datasets/x`) had the repo asked for, then failed
with a line blaming the Hub."""
from __future__ import annotations

import json

import pytest

from fake_hub import FakeHub, Hostile
from hub_fixtures import TOKEN
from test_publish import REPO_ID, _run, project  # noqa: F401  (project: a fixture)

pytestmark = pytest.mark.network_local


def last_error(err: str) -> str:
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("error:") and err.count("error:") == 1 and "Traceback" not in err, err
    return last


@pytest.mark.parametrize("endpoint, status", [("create", 307), ("preupload", 308), ("commit", 307), ("tree", 302)])
def test_a_hub_redirecting_to_another_host_is_named_not_the_token(project, hub, capsys, endpoint, status):
    """The other host gets no token (the client drops it across hosts) and answers 401: the line
    named the token as rejected, and the user replaced a good token."""
    with FakeHub("another-token") as other:
        hub.hostile[endpoint] = [Hostile(status=status, headers={"Location": other.url + "/api/elsewhere"})]
        assert _run(project, "--repo_id", REPO_ID) == 2
        line = last_error(capsys.readouterr().err)
        assert other.requests and not any(TOKEN in json.dumps(r.headers) or TOKEN.encode() in r.body
                                          for r in other.requests)
    assert f"redirected the request to {other.url}" in line and "another host" in line, line
    assert "the token was rejected" not in line and TOKEN not in line


def test_a_token_the_hub_itself_rejects_is_still_named(project, hub, capsys, monkeypatch):
    """The hint is the redirect's only: a 401 from the Hub itself still says the token."""
    monkeypatch.setenv("HF_TOKEN", "hf_NotTheTokenTheHubKnows0123")
    assert _run(project, "--repo_id", REPO_ID) == 2
    line = last_error(capsys.readouterr().err)
    assert "the token was rejected" in line and "redirected" not in line


@pytest.mark.parametrize("flag, rid", [("--repo_id", "datasets/x"), ("--repo_id", "models/london"),
                                       ("--repo_id", "Spaces/x"), ("--dataset_repo_id", "datasets/corpus")])
def test_a_namespace_that_is_a_hub_address_prefix_is_refused_before_any_request(project, hub, capsys, flag, rid):
    """`--repo_id datasets/x` (huggingface.co/datasets/x is a dataset's address): the repo was
    asked for under 'datasets', then huggingface_hub could not read its address back, and the
    line said the Hub was having trouble."""
    args = ["--repo_id", REPO_ID, flag, rid] if flag != "--repo_id" else [flag, rid]
    assert _run(project, *args) == 2
    line = last_error(capsys.readouterr().err)
    assert f"invalid {flag} {rid!r}" in line and "address prefix" in line
    assert not hub.requests
