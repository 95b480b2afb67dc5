"""What a terminal user types or passes: lines that are not UTF-8 in the generation REPL and
the checkpoint tester's loop (refused, the loop goes on), and the checkpoint tester's --root
and run folder (one error line naming the path, not "(no checkpoints)")."""
from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys

import pytest

from conftest import REPO, scripted_input
from londonlm.generation import GenerationSettings, load_model
from londonlm.serving.repl import run_repl

LIST = REPO / "04_training" / "test_checkpoint_slm.py"


def _stdin(monkeypatch, data: bytes, errors: str = "strict") -> None:
    """``data`` as the process's stdin: strict as under a UTF-8 locale, or surrogateescape as
    under the C locale and UTF-8 mode (both happen; both must end the same)."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors=errors))


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu")


@pytest.mark.parametrize("errors", ["strict", "surrogateescape"])
def test_repl_refuses_an_undecodable_line_and_goes_on(lm, monkeypatch, errors):
    _stdin(monkeypatch, b"Up betimes\n\xff\xfe\nAnd so \xed\xa0\x80 to bed\n/max 2\nAnd so to bed\n", errors)
    out = io.StringIO()
    settings = GenerationSettings(max_new_tokens=3, seed=1, temperature=0.0)
    assert run_repl(lm, settings, out, stream_tokens=False) == 0
    text = out.getvalue()
    assert "error: not valid UTF-8 (byte 0xff at character 1); the line was not used" in text
    assert "error: not valid UTF-8 (byte 0xed at character 8); the line was not used" in text
    assert text.count("tokens/s") == 2 and "max_new_tokens = 2" in text  # the lines after it still run


def _tree_hash(folder) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def _list(*args, root_env=None):
    env = dict(os.environ)
    env.pop("LONDONLM_ROOT", None)
    env.update({"LONDONLM_ROOT": str(root_env)} if root_env else {})
    return subprocess.run([sys.executable, str(LIST), "--list-checkpoints", *map(str, args)],
                          capture_output=True, text=True, timeout=120, env=env)


def test_listing_a_root_that_is_a_file_or_a_missing_run_is_one_error_line(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    before = _tree_hash(tmp_path)
    r = _list("--root", a_file)
    assert r.returncode == 2 and r.stderr == f"error: --root: no folder at {a_file}\n" and r.stdout == ""
    r = _list("--root", tmp_path, "--run_name", "typo")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == (f"error: no run folder at {tmp_path / '09_models' / 'checkpoints' / 'typo'}: check "
                        f"--run_name/--preset and --root (or $LONDONLM_ROOT)\n")
    r = _list(root_env=a_file)  # $LONDONLM_ROOT a file: the run folder under it is not there either
    assert r.returncode == 2 and str(a_file) in r.stderr and r.stderr.count("\n") == 1
    assert _tree_hash(tmp_path) == before


def test_listing_an_empty_run_still_says_so(tmp_path):
    (tmp_path / "09_models" / "checkpoints" / "slm").mkdir(parents=True)
    r = _list("--root", tmp_path)
    assert r.returncode == 0 and "(no checkpoints)" in r.stdout


def test_checkpoint_loop_refuses_an_undecodable_line(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from londonlm.core import Layout
    from londonlm.serving.checkpoint_cli import main

    run = tmp_path / "09_models" / "checkpoints" / "slm"
    run.mkdir(parents=True)
    (run / "final").symlink_to(tiny_model_dir, target_is_directory=True)
    _stdin(monkeypatch, b"\xff\nAnd so\n")
    assert main(["--root", str(tmp_path), "--checkpoint", "final", "--interactive", "--max_new_tokens", "2",
                 "--prompt", "Up"], Layout(tmp_path), "slm", ["slm"], "x", 2) == 0
    out = capsys.readouterr().out
    assert "error: not valid UTF-8 (byte 0xff at character 1)" in out
    assert "> Up" in out and "> And so" in out


def test_chat_repl_refuses_a_seed_no_generator_takes_and_goes_on(chat_model_dir):
    """``/seed 10**23`` was taken; the next question died in torch.manual_seed ("Overflow when
    unpacking long long"), a traceback that ended the conversation. Now refused as the other
    REPL's /seed is, the settings kept."""
    from londonlm.chat import ChatSettings
    from londonlm.serving.repl import ChatSession, run_chat_repl

    chat_lm = load_model(str(chat_model_dir), device="cpu")
    read = scripted_input(["/seed 99999999999999999999999", "Where were you?", "/seed -5", "/seed 3", "Where were you?"])

    out = io.StringIO()
    session = ChatSession(ChatSettings(max_new_tokens=3, temperature=0.0, do_sample=False))
    assert run_chat_repl(chat_lm, session, out, read=read, stream_tokens=False) == 0
    text = out.getvalue()
    assert "error: seed must be an integer in [0, 2**32), got 99999999999999999999999" in text
    assert "got -5" in text and "seed = 3" in text and text.count("tokens/s") == 2
    assert session.settings.seed == 3
