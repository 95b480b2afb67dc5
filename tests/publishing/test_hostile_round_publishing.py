"""Publishing with hostile inputs: a token that would escape masking, and run records of a
shape no run writes. Each is one line (exit 2) and sends nothing."""
from __future__ import annotations

import json

import pytest

from londonlm.publishing.access import PublishError, mask_secret, require_token
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
