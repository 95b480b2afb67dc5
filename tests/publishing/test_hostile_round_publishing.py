"""Publishing with hostile inputs: a token that would escape masking, and run records of a
shape no run writes. Each is one line (exit 2) and sends nothing."""
from __future__ import annotations

import json

import pytest

from londonlm.publishing.access import PublishError, mask_secret, require_token
from hub_fixtures import TOKEN, staged_files
from test_publish import REPO_ID, _run, project  # noqa: F401  (project: a fixture)

pytestmark = pytest.mark.network_local


def test_a_token_with_a_line_break_is_refused_before_any_request(project, hub, capsys, monkeypatch):
    """The HTTP library quotes the header it refuses; the part after a line break escaped masking."""
    monkeypatch.setenv("HF_TOKEN", "hf_TestToken0123\nSecretTail99")
    assert _run(project, "--repo_id", REPO_ID) == 2
    out, err = capsys.readouterr()
    assert "SecretTail99" not in out + err and "hf_TestToken0123" not in out + err
    assert err.startswith("error: the Hugging Face token holds") and "Traceback" not in err
    assert not hub.requests


@pytest.mark.parametrize("token", ["hf_a b", "hf_T\u00f6ken123", "hf_tab\there"])
def test_tokens_no_header_can_carry_are_refused_without_showing_them(token):
    with pytest.raises(PublishError) as e:
        require_token(token)
    assert token not in str(e.value) and "hf_" not in str(e.value)


def test_masking_covers_every_form_a_library_may_quote():
    secret = "hf_First0123\nsecondPart99"
    for text in (f"bad header {secret!r}", "b'Bearer hf_First0123\\nsecondPart99'", "x secondPart99 y"):
        assert "secondPart99" not in mask_secret(text, secret) and "First0123" not in mask_secret(text, secret)


def _edit_run_info(project, change):
    path = project / "09_models" / "checkpoints" / "micro" / "run_info.json"
    info = json.loads(path.read_text())
    change(info)
    path.write_text(json.dumps(info))


@pytest.mark.parametrize("what,change,says", [
    ("run_info a list", None, "run_info.json holds a JSON list, not an object"),
    ("hardware a list", lambda d: d.update(hardware=[1]), "cannot write the model card"),
    ("cache a string", lambda d: d.update(cache="x"), "cannot write the model card"),
])
def test_a_run_record_of_the_wrong_shape_is_one_line(project, hub, capsys, what, change, says):
    if change is None:
        (project / "09_models" / "checkpoints" / "micro" / "run_info.json").write_text("[1]")
    else:
        _edit_run_info(project, change)
    assert _run(project, "--repo_id", REPO_ID) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert not hub.requests


def test_a_damaged_trainer_state_is_passed_over_and_a_stray_tokenizer_dir_ignored(project, hub, capsys):
    run = project / "09_models" / "checkpoints" / "micro"
    (run / "checkpoint-4" / "trainer_state.json").write_text("[1]")
    _edit_run_info(project, lambda d: d.update(tokenizer_dir=5))
    assert _run(project, "--dry_run") == 0
    card = (run / "hub_stage" / "README.md").read_text()
    assert "Trainer state" not in card


# --- a hostile Hub (found by test_publish_fuzz.py) --------------------------------------------
@pytest.fixture
def asked_sleeps(monkeypatch):
    """huggingface_hub's retry sleeps, recorded instead of slept."""
    from huggingface_hub.utils import _http

    asked = []

    class Time:
        def sleep(self, seconds):
            asked.append(seconds)

        def __getattr__(self, name):
            import time

            return getattr(time, name)

    monkeypatch.setattr(_http, "time", Time())
    return asked


@pytest.mark.parametrize("status,headers", [
    (429, {"Retry-After": "3600"}), (503, {"Retry-After": "86400"}),
    (429, {"RateLimit": '"api";r=0;t=7200', "RateLimit-Policy": '"fixed window";"api";q=500;w=300'}),
])
def test_a_hub_asking_to_wait_hours_is_one_line_at_once(project, hub, capsys, asked_sleeps, status, headers):
    """huggingface_hub sleeps whatever Retry-After (or a 429's RateLimit reset) says, five times
    over: an hour's wait per retry, silently; a long wait is now refused at once."""
    from fake_hub import Hostile

    hub.hostile["preupload"] = [Hostile(status=status, headers=headers) for _ in range(6)]
    assert _run(project, "--repo_id", REPO_ID) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: upload to") and f"HTTP {status}" in err and "asks to wait" in err, err
    assert not [s for s in asked_sleeps if s > 60], asked_sleeps


def test_a_short_retry_after_is_still_honoured(project, hub, capsys, asked_sleeps):
    from fake_hub import Hostile

    hub.hostile["preupload"] = [Hostile(status=429, headers={"Retry-After": "2"})]
    assert _run(project, "--repo_id", REPO_ID) == 0
    assert asked_sleeps == [3.0] and set(hub.files(REPO_ID)) >= {"model.safetensors", "README.md"}


def test_a_hub_that_never_answers_times_out(project, hub, capsys, asked_sleeps, monkeypatch):
    """huggingface_hub's client has no timeout: a Hub that took the request and never answered
    held a publish for ever."""
    import time

    from fake_hub import Hostile
    from londonlm.publishing import hub_http

    monkeypatch.setattr(hub_http, "HUB_TIMEOUT_S", 0.5)
    hub.hostile["commit"] = [Hostile(stall=8) for _ in range(6)]
    started = time.monotonic()
    assert _run(project, "--repo_id", REPO_ID) == 2
    err = capsys.readouterr().err
    assert "did not answer within 0.5 s" in err and "Traceback" not in err, err
    assert time.monotonic() - started < 7.5


@pytest.mark.parametrize("endpoint,hostile", [
    ("create", dict(status=200, body=b"{}")),                       # no url
    ("preupload", dict(status=200, body=b"[1, 2]")),                # a list for an object
    ("preupload", dict(real=True, reshape=lambda o: {"files": [{**f, "uploadMode": None} for f in o["files"]]})),
    ("lfs-batch", dict(status=200, body=b"[" * 100_000 + b"]" * 100_000)),  # nested past the recursion limit
    ("commit", dict(status=200, body=b"<html>ok</html>", content_type="text/html")),
])
def test_an_answer_the_client_cannot_read_says_so(project, hub, capsys, endpoint, hostile):
    """Was: `KeyError: 'url'; check the network` (or AttributeError, RecursionError, ...): the
    library's words for an answer of another shape, blamed on the network."""
    from fake_hub import Hostile

    hub.hostile[endpoint] = [Hostile(**hostile)]
    assert _run(project, "--repo_id", REPO_ID) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: upload to") and "answer huggingface_hub could not read" in err, err
    assert TOKEN not in err


def test_a_broken_connection_is_named(project, hub, capsys, asked_sleeps):
    from fake_hub import Hostile

    hub.hostile["lfs-put"] = [Hostile(reset=True) for _ in range(6)]
    assert _run(project, "--repo_id", REPO_ID) == 2
    err = capsys.readouterr().err
    assert "the connection to the Hub failed" in err and "HF_ENDPOINT" in err, err
    assert len(asked_sleeps) == 5   # huggingface_hub's retries, bounded


@pytest.fixture
def hub_progress_bars():
    """huggingface_hub's bars on for the test (an in-process inference or server test turns them
    off for the whole process, through transformers), as they were after it."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_off = are_progress_bars_disabled()
    enable_progress_bars()
    yield
    if was_off:
        disable_progress_bars()


def test_a_failed_transfer_leaves_no_progress_bar_before_the_error(project, hub, capsys, asked_sleeps,
                                                                    hub_progress_bars):
    """Was: `model.safetensors:   0%| | 0.00/178k [00:00<?, ?B/s]error: upload ...`: the error
    printed on after the open upload bar, not on a line of its own."""
    from fake_hub import Hostile

    hub.hostile["lfs-put"] = [Hostile(status=500) for _ in range(6)]
    assert _run(project, "--repo_id", REPO_ID) == 2
    err = capsys.readouterr().err
    assert "model.safetensors" in err   # the bar was drawn
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: upload to") and "(HTTP 500)" in last, err[-600:]


def _told_already_there(project):
    """A preupload answer claiming the model folder's files are on the Hub already (their own
    hashes as the remote oids): the client then skips them."""
    import hashlib

    from fake_hub import git_blob_sha1

    final = project / "09_models" / "checkpoints" / "micro" / "final"

    def reshape(answer):
        for f in answer["files"]:
            src = final / f["path"]
            if src.is_file():
                data = src.read_bytes()
                f["oid"] = hashlib.sha256(data).hexdigest() if f["uploadMode"] == "lfs" else git_blob_sha1(data)
        return answer
    return reshape


@pytest.mark.parametrize("lie", ["skip every file", "already there"])
def test_a_hub_that_answers_success_but_kept_other_files_is_caught(project, hub, capsys, lie):
    """Was: `published ...`, exit 0, with the repo empty (every file "shouldIgnore") or without
    the weights, config and tokenizer (said to be there already): nothing read back the commit."""
    from fake_hub import Hostile

    reshape = (_told_already_there(project) if lie == "already there" else
               lambda a: {**a, "files": [{**f, "shouldIgnore": True} for f in a["files"]]})
    hub.hostile["preupload"] = [Hostile(real=True, reshape=reshape)]
    assert _run(project, "--repo_id", REPO_ID) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: upload to") and "the Hub answered the commit as done" in err, err
    assert "config.json" in err and "publish again" in err
    assert _run(project, "--repo_id", REPO_ID) == 0   # an honest Hub: the same command publishes
    assert hub.files(REPO_ID) == staged_files(project / "09_models" / "checkpoints" / "micro" / "hub_stage")


def test_a_hubs_long_or_multiline_message_is_one_short_line_without_the_token(project, hub, capsys):
    """Was: the first line of the library's message only ("Bad request for commit endpoint:",
    the Hub's own words being on the next). Now all of it on the line, cut when a hostile Hub's
    runs to megabytes, the token masked before the cut."""
    from fake_hub import Hostile

    long_words = " ".join(["word"] * 300_000)
    for body, says in ((b'{"error": "the README metadata is invalid:\\nline 3: bad key"}', "line 3: bad key"),
                       (json.dumps({"error": f"{TOKEN} {long_words}"}).encode(), "hf_***")):
        hub.hostile["commit"] = [Hostile(status=400, body=body)]
        assert _run(project, "--repo_id", REPO_ID) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("error: upload to") and "(HTTP 400)" in last and len(last) < 1000, last[:2000]
        assert says in last and TOKEN not in last and "hf_Test" not in last, last


def test_a_hub_echoing_the_token_in_a_header_leaves_it_out_of_debug_logs(project, hub, capsys, caplog):
    """At DEBUG (a user's ``logging.basicConfig(level=logging.DEBUG)``, or HF_DEBUG) the HTTP
    transport logs each answer's headers: a Hub echoing the token there put it in the logs."""
    import logging

    from fake_hub import Hostile

    hub.hostile["create"] = [Hostile(real=True, headers={"X-Error-Message": f"bad token {TOKEN}"})]
    caplog.set_level(logging.DEBUG)
    assert _run(project, "--repo_id", REPO_ID) == 0
    out, err = capsys.readouterr()
    logged = "\n".join(caplog.text.splitlines() + [r.getMessage() for r in caplog.records])
    assert "X-Error-Message" in logged or "bad token" in logged, "the transport logged no headers"
    assert TOKEN not in logged + out + err
    assert staged_files(project / "09_models" / "checkpoints" / "micro" / "hub_stage") == hub.files(REPO_ID)


def test_log_records_made_while_masked_hide_the_token_in_message_and_traceback(caplog):
    import logging

    from londonlm.publishing.access import masked_logs

    log = logging.getLogger("some.library")
    caplog.set_level(logging.DEBUG)
    with masked_logs(TOKEN):
        log.debug("headers %s", [(b"X-Echo", TOKEN.encode())])
        try:
            raise ValueError(f"refused {TOKEN}")
        except ValueError:
            log.debug("failed", exc_info=True)
    log.debug("after: %s", TOKEN)  # the factory is restored: records outside are untouched
    assert TOKEN not in caplog.text.split("after:")[0] and "hf_***" in caplog.text
    assert caplog.text.count(TOKEN) == 1 and logging.getLogRecordFactory() is logging.LogRecord


@pytest.mark.parametrize("endpoint", ["", "http://[::1", "http://127.0.0.1:99999", "huggingface.co", "ftp://x"])
def test_an_hf_endpoint_that_is_no_url_is_one_line_before_any_work(project, capsys, monkeypatch, endpoint):
    """huggingface_hub parses HF_ENDPOINT when imported: 'http://[::1' was its traceback, a port
    out of range failed the staged folder's verification (blaming the model folder), and an
    empty or scheme-less one staged, verified and dry-ran to exit 0 with a nonsense address."""
    from test_publish import _stage

    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert _run(project, "--repo_id", REPO_ID, "--dry_run") == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: HF_ENDPOINT ") and err.count("\n") == 1 and TOKEN not in out + err, err
    assert not _stage(project).exists()


def _with_password(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://alice:{PASSWORD}@{rest}"


PASSWORD = "pw-Sesame-9174"


@pytest.mark.parametrize("case", ["dry run", "failed upload", "refused endpoint"])
def test_a_password_in_the_hub_endpoint_is_never_printed(project, hub, capsys, monkeypatch, asked_sleeps, case):
    """HF_ENDPOINT=https://user:password@host (a Hub behind basic auth): the endpoint is printed
    in the dry run's 'would be sent to', an upload's failure and an endpoint's refusal; its
    password was printed with it."""
    from fake_hub import Hostile

    endpoint = _with_password(hub.url if case != "refused endpoint" else "http://127.0.0.1:99999")
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    if case == "failed upload":
        hub.hostile["lfs-put"] = [Hostile(reset=True) for _ in range(6)]
    code = _run(project, "--repo_id", REPO_ID, *(["--dry_run"] if case == "dry run" else []))
    out, err = capsys.readouterr()
    assert code == (0 if case == "dry run" else 2), err
    assert PASSWORD not in out + err and "alice:***@" in out + err, out + err
