"""Publishing to a hostile Hub, not just to the failures a test thought of: hypothesis picks one
or two of the Hub endpoints a publish calls (repo create, settings, branch, YAML check,
preupload, LFS batch, the LFS upload and its verify, commit, the empty-commit revision check,
the read-back tree listing) and has each answer a few requests badly: any status (3xx with and
without a Location, 4xx, 429/503 with and without Retry-After or a RateLimit reset, 5xx), HTML,
JSON of another shape (a list for an object, keys missing, values of another kind, ``null``),
JSON nested 100,000 deep, a body cut short, a lying Content-Length, a connection reset, a stall
shorter or longer than the client's timeout, an LFS store that accepts and keeps nothing, a
preupload that tells the client to skip files; either before the Hub does the work or after it
(a commit that landed, answered badly). Each publish runs the script's main as the command line
does (a model, with or without the corpus as a dataset, private or not, on main or a branch; a
chat model in the slow variant). Whatever the Hub does:

- the run succeeds and the Hub holds exactly the staged files, or it ends with exit 2 and one
  ``error:`` line, the last on stderr (never a traceback);
- the token appears in no output, log record (DEBUG and up), or file written locally;
- the run folder and the data (corpus, dialogue dataset) are byte-for-byte as they were;
- retries stay bounded: huggingface_hub's sleeps are recorded, not slept, and none is longer
  than ``hub_http.MAX_RETRY_WAIT_S``; our client's timeout is cut to ``TIMEOUT_S``.
"""
from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import tree_digest
from fake_hub import Hostile
from hub_fixtures import TOKEN, staged_files
from test_publish import REPO_ID, _run, project  # noqa: F401  (project: a fixture)
from test_publish_chat import chat_project_copy, evaluated_root  # noqa: F401  (a fixture)

pytestmark = pytest.mark.network_local
# publishes per run (each stages and uploads a model; ~0.5 s with verification memoised: 25
# take ~15 s); LONDONLM_FUZZ_EXAMPLES=500 searches longer (~4 minutes)
EXAMPLES = int(os.environ.get("LONDONLM_FUZZ_EXAMPLES", 25))
EVENT_CHARS = int(os.environ.get("LONDONLM_FUZZ_EVENT_CHARS", 90))  # of the error line, per event
DATASET_ID = "someone/london-texts"
ENDPOINTS = ["create", "settings", "branch", "validate-yaml", "preupload", "lfs-batch", "lfs-put",
             "lfs-verify", "commit", "revision", "tree"]
TIMEOUT_S = 0.3  # the client's timeout here: some stalls pass it, some outlast it
STATUSES = [200, 201, 204, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 409, 410, 412,
            413, 422, 429, 500, 501, 502, 503, 504, 599]
DEEP = b"[" * 100_000 + b"]" * 100_000
BODIES = st.sampled_from([
    b"", b"<html><body><h1>502 Bad Gateway</h1></body></html>", b"null", b"[]", b"[1, 2]", b'"x"', b"0",
    b"true", b"{}", b'{"error": null}', b'{"error": ["a", 1]}', b'{"error": {"x": 1}}', b"{\"error\": \"a\\nb\"}",
    b'{"files": null}', b'{"files": [1]}', b'{"files": [{"path": null}]}', b'{"objects": "x"}',
    b'{"objects": [{}]}', b'{"transfer": "ssh", "objects": []}', b'{"url": 5}', b'{"commitOid": []}',
    b'{"commitUrl": null, "commitOid": null}', DEEP, b'{"a": ' * 20_000, b"\xff\xfe\x00garbage", b"{" * 3,
    TOKEN.encode() + b" was refused",  # a Hub that echoes the token back: must be masked
])
HEADERS = st.dictionaries(st.sampled_from(["Retry-After", "Location", "X-Error-Message", "Content-Type"]),
                          st.sampled_from(["0", "1", "2", "30", "61", "3600", "-1", "abc", "99999999999", "", "/",
                                           "/api/repos/create", "http://127.0.0.1:9/x", "text/html",
                                           "application/json", "a\tb", TOKEN]), max_size=2)
DROP = object()
VALUES = st.sampled_from([DROP, None, [], {}, "", "x", 0, -1, 2**64, True, [None], {"a": 1}])


def reshape(obj, pick: int, value, nested: bool):
    """The honest answer with one key (of the top object, or of every object one level in)
    dropped or given ``value``; a list for an object when there is no key to pick."""
    if isinstance(obj, list):
        return [reshape(x, pick, value, False) for x in obj] if nested else {"items": obj}
    if not isinstance(obj, dict) or not obj:
        return [obj]
    key = sorted(obj)[pick % len(obj)]
    if nested and isinstance(obj[key], (list, dict)) and obj[key]:
        obj[key] = reshape(obj[key], pick // len(obj), value, True)
    elif value is DROP:
        del obj[key]
    else:
        obj[key] = value
    return obj


RESHAPE = st.builds(lambda pick, value, nested: (lambda o: reshape(o, pick, value, nested)),
                    st.integers(0, 20), VALUES, st.booleans())


def _each(key: str, change: dict):
    """An honest answer whose every ``key`` entry (files of a preupload, objects of an LFS
    batch) is changed: the lies that make a client skip work."""
    def lie(answer):
        if isinstance(answer, dict) and isinstance(answer.get(key), list):
            answer[key] = [{k: v for k, v in {**e, **change}.items() if v is not DROP}
                           for e in answer[key] if isinstance(e, dict)]
        return answer
    return lie


LIES = st.sampled_from([_each("files", {"shouldIgnore": True}),   # "skip these files"
                        _each("objects", {"actions": DROP})])     # "the LFS store has them"
HOSTILE = st.one_of(
    st.builds(Hostile, status=st.sampled_from(STATUSES), headers=HEADERS),                 # a bare status
    st.builds(Hostile, status=st.one_of(st.none(), st.sampled_from(STATUSES)), body=BODIES, headers=HEADERS,
              content_type=st.sampled_from([None, "text/html", "application/json"]), real=st.booleans()),
    st.builds(Hostile, real=st.just(True), reshape=RESHAPE, status=st.sampled_from([None, 200])),
    st.builds(Hostile, real=st.just(True), reshape=LIES),
    st.builds(Hostile, real=st.booleans(), cut=st.floats(0, 0.99)),                      # a body cut short
    st.builds(Hostile, real=st.booleans(), content_length=st.sampled_from([0, 1, 10**12, 2**64, -5])),
    st.builds(Hostile, real=st.booleans(), reset=st.just(True)),                        # connection reset
    st.builds(Hostile, real=st.booleans(), stall=st.sampled_from([0.05, 1.0])),          # slow, or silent
    st.builds(Hostile, status=st.sampled_from([429, 503]), headers=st.fixed_dictionaries(
        {}, optional={"Retry-After": st.sampled_from(["1", "60", "61", "3600", "999999999"]),
                      "RateLimit": st.sampled_from(['"api";r=0;t=3600', '"api";r=0;t=5', '"api";r=9;t=9999'])})),
    st.builds(Hostile, status=st.sampled_from([200, 201])),   # "done" (an LFS store that keeps nothing)
)
PLANS = st.dictionaries(st.sampled_from(ENDPOINTS), st.lists(HOSTILE, min_size=1, max_size=4),
                        min_size=1, max_size=2)


class Sleeps:
    """huggingface_hub's ``time`` with ``sleep`` recorded, not slept: retries stay fast."""

    def __init__(self):
        self.asked: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)

    def __getattr__(self, name):
        import time

        return getattr(time, name)


@pytest.fixture
def fast_retries(monkeypatch):
    """huggingface_hub's retry sleeps recorded (never slept) and our client's timeout short."""
    from huggingface_hub.utils import _http

    from londonlm.publishing import hub_http

    sleeps = Sleeps()
    monkeypatch.setattr(_http, "time", sleeps)
    monkeypatch.setattr(hub_http, "HUB_TIMEOUT_S", TIMEOUT_S)
    return sleeps


@pytest.fixture
def chat_project(evaluated_root, tmp_path):  # noqa: F811
    """test_publish_chat's project (the fixture of that name here is the base model's): the chat
    run pointing at its own copy of the dialogue dataset."""
    return chat_project_copy(evaluated_root, tmp_path)


@pytest.fixture
def memo_verification(monkeypatch):
    """The offline verification (load, generate, run the card's snippet: most of a publish's
    time) of a staged folder computed once per content: the same files get the same report,
    and the Hub, not the model, is under test here."""
    from londonlm.publishing import publish as publish_mod

    real, seen = publish_mod.verify_model_folder, {}

    def verify(folder, **kw):
        key = (json.dumps(tree_digest(folder), sort_keys=True), json.dumps(kw, sort_keys=True))
        if key not in seen:
            seen[key] = real(folder, **kw)
        return copy.deepcopy(seen[key])

    monkeypatch.setattr(publish_mod, "verify_model_folder", verify)


def _watched(project: Path, run_name: str) -> dict[str, dict]:
    """What a publish reads and must leave as it was: the run and the data (corpus, dialogue
    dataset), the staging folders aside (each publish makes them anew)."""
    def kept(folder: Path) -> dict:
        return {k: v for k, v in tree_digest(folder).items()
                if not k.startswith(("hub_stage", "gguf", "hub_dataset_stage"))}
    return {"run": kept(project / "09_models" / "checkpoints" / run_name),
            "data": kept(project / "data" / "london_historical")}


def _local_files_holding_the_token(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]


def _check_outcome(code: int, err: str, hub, stage: Path, repo_id: str, args: list[str]) -> None:
    assert code in (0, 2), (code, err[-2000:])
    assert "Traceback" not in err, err[-3000:]
    if code == 0:
        branch = args[args.index("--revision") + 1] if "--revision" in args else "main"
        assert hub.files(repo_id, branch=branch) == staged_files(stage)
        if "--dataset_repo_id" in args:
            ds_stage = stage.parents[3] / "data" / "london_historical" / "hub_dataset_stage"
            assert hub.files(DATASET_ID, "dataset", branch=branch) == staged_files(ds_stage)
        return
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err[-3000:]


def publish_against(hub, plan: dict, run, project: Path, run_name: str, repo_id: str, args: list[str],
                    capsys, caplog, sleeps: Sleeps, fresh: bool) -> None:
    """One publish (``run(project, *args)``, the script's main) against a Hub answering ``plan``,
    and every invariant checked. ``fresh``: a Hub holding nothing yet (a first publish, where a
    skipped file is missed), else the repos earlier examples left (a republish)."""
    from londonlm.publishing.hub_http import MAX_RETRY_WAIT_S

    caplog.set_level(logging.DEBUG)  # the transport's wire trace: a Hub's echo of the token must not show there
    caplog.clear()
    if fresh:
        hub.repos.clear()
        hub.lfs_store.clear()
    hub.hostile.clear()
    hub.hostile.update({k: list(v) for k, v in plan.items()})
    sleeps.asked.clear()
    before = _watched(project, run_name)
    code = run(project, *args)
    out, err = capsys.readouterr()
    event(f"exit {code}: {err.strip().splitlines()[-1][:EVENT_CHARS] if code else 'published'}")
    _check_outcome(code, err, hub, project / "09_models" / "checkpoints" / run_name / "hub_stage", repo_id, args)
    assert TOKEN not in out + err + "\n".join(r.getMessage() for r in caplog.records)
    assert not _local_files_holding_the_token(project.parent)
    assert _watched(project, run_name) == before
    # at most five retries per request huggingface_hub makes, none after a wait past our bound
    assert len(sleeps.asked) <= 60 and max(sleeps.asked, default=0) <= MAX_RETRY_WAIT_S + 1, sleeps.asked


def _args(repo_id: str, dataset: bool, private: bool, branch: str | None) -> list[str]:
    return ["--repo_id", repo_id, *(["--dataset_repo_id", DATASET_ID] if dataset else []),
            *(["--private"] if private else []), *(["--revision", branch] if branch else [])]


FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                   HealthCheck.data_too_large])


@settings(max_examples=EXAMPLES, **FUZZ)
@given(plan=PLANS, dataset=st.booleans(), private=st.booleans(), branch=st.sampled_from([None, "v2"]),
       fresh=st.booleans())
def test_a_hostile_hub_gives_one_line_loses_nothing_and_never_sees_the_token(
        project, hub, capsys, caplog, fast_retries, memo_verification, plan, dataset, private, branch, fresh):
    publish_against(hub, plan, _run, project, "micro", REPO_ID, _args(REPO_ID, dataset, private, branch),
                    capsys, caplog, fast_retries, fresh)


@pytest.mark.slow
@settings(max_examples=max(3, EXAMPLES // 3), **FUZZ)
@given(plan=PLANS, private=st.booleans(), branch=st.sampled_from([None, "v2"]), fresh=st.booleans())
def test_a_chat_model_published_to_a_hostile_hub(chat_project, hub, capsys, caplog, fast_retries, plan,
                                                 private, branch, fresh):
    """The chat model's own staging (template, chat_info.json, its card's snippet run) before the
    same upload: each example verifies it in full (seconds), hence slow."""
    import test_publish_chat as chat

    publish_against(hub, plan, chat._run, chat_project, "fixture-chat", chat.REPO_ID,
                    _args(chat.REPO_ID, False, private, branch), capsys, caplog, fast_retries, fresh)
