"""Hostile round 21, the interactive commands as terminal programs: a model's control characters
(ESC, BEL, CR, C1) were written raw to the user's terminal; Ctrl-C at the prompt ended the whole
session (a chat's conversation with it), also when pressed to stop a generation that had just
ended; ``| head -1`` exited 0 as if every sample had been written; a chat that outgrew the
context lost its start without a word."""
from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from pty_io import pty_read as _pty_read
from conftest import REPO
from londonlm.core import Layout
from londonlm.generation import GenerationSettings, load_model
from londonlm.serving.inference_cli import build_parser, parse, run
from londonlm.serving.repl import ChatSession, TerminalText, run_chat_repl, run_repl

INFER = REPO / "06_inference" / "inference_unified.py"
ESC_TEXT = "\x1b]0;pwned\x07"


class Tty(io.StringIO):
    """A captured stdout that says it is a terminal."""

    def isatty(self):
        return True


def _writes_esc(src, dst):
    """A copy of the model at ``src`` that writes ESC after anything: the final layer norm gives
    one fixed vector, and only ESC's (tied) embedding points along it."""
    shutil.copytree(src, dst)
    from transformers import AutoTokenizer, GPT2LMHeadModel

    esc = AutoTokenizer.from_pretrained(str(dst)).encode("\x1b", add_special_tokens=False)
    model = GPT2LMHeadModel.from_pretrained(str(dst))
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        model.transformer.wte.weight[esc[0], 0] = 50.0
    model.save_pretrained(str(dst))
    return dst


@pytest.fixture(scope="module")
def esc_model(tiny_model_dir, tmp_path_factory):
    return _writes_esc(tiny_model_dir, tmp_path_factory.mktemp("esc") / "model")


@pytest.fixture(scope="module")
def esc_chat_model(chat_model_dir, tmp_path_factory):
    return _writes_esc(chat_model_dir, tmp_path_factory.mktemp("escchat") / "model")


def _run_cli(monkeypatch, tmp_path, argv, stdout, stdin=""):
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    args = parse(build_parser("slm"), [*argv, "--device", "cpu"])
    return run(args, Layout(tmp_path), default_prompt="Up")


@pytest.mark.parametrize("mode", [["--prompt", "Up"], ["--prompt", "Up", "--stream"], ["--interactive"]])
def test_a_models_control_characters_are_shown_on_a_terminal_and_kept_in_a_pipe(
        esc_model, tmp_path, monkeypatch, mode):
    argv = ["--model", str(esc_model), "--max_new_tokens", "3", *mode]
    tty = Tty()
    assert _run_cli(monkeypatch, tmp_path, argv, tty, stdin="Up\n") == 0
    assert "\x1b" not in tty.getvalue() and "Up\\x1b\\x1b\\x1b" in tty.getvalue()
    piped = io.StringIO()
    assert _run_cli(monkeypatch, tmp_path, argv, piped, stdin="Up\n") == 0
    assert "Up\x1b\x1b\x1b" in piped.getvalue()  # a file or pipe gets the text as generated


@pytest.mark.parametrize("mode", [["--prompt", "Where were you?"], ["--prompt", "Where were you?", "--stream"], []])
def test_a_chat_models_control_characters_are_shown_on_a_terminal(esc_chat_model, tmp_path, monkeypatch, mode):
    argv = ["--chat", "--model", str(esc_chat_model), "--max_new_tokens", "3", "--seed", "1", *mode]
    tty = Tty()
    assert _run_cli(monkeypatch, tmp_path, argv, tty, stdin="Where were you?\n/history\n") == 0
    assert "\x1b" not in tty.getvalue() and "\\x1b\\x1b\\x1b" in tty.getvalue()


def test_the_checkpoint_testers_loop_shows_control_characters_on_a_terminal(esc_model, tmp_path, monkeypatch):
    from londonlm.serving.checkpoint_cli import main

    run_dir = tmp_path / "09_models" / "checkpoints" / "slm"
    run_dir.mkdir(parents=True)
    (run_dir / "final").symlink_to(esc_model, target_is_directory=True)
    tty = Tty()
    monkeypatch.setattr(sys, "stdout", tty)
    monkeypatch.setattr(sys, "stdin", io.StringIO("And so\n"))
    assert main(["--root", str(tmp_path), "--checkpoint", "final", "--interactive", "--max_new_tokens", "2",
                 "--prompt", "Up"], Layout(tmp_path), "slm", ["slm"], "x", 2) == 0
    assert "\x1b" not in tty.getvalue() and "> Up\\x1b\\x1b" in tty.getvalue() and "> And so\\x1b" in tty.getvalue()


def test_terminal_text_shows_every_control_but_tab_and_newline():
    tty = Tty()
    TerminalText(tty).write("a\tb\nc\rd\x08e\x7f\x9b31m\x00é—")
    assert tty.getvalue() == "a\tb\nc\\x0dd\\x08e\\x7f\\x9b31m\\x00é—"


def _reads(*items):
    """A REPL reader giving each item: a line, or an exception class raised (Ctrl-C), then EOF."""
    items = iter(items)

    def read(_prompt=""):
        item = next(items, EOFError)
        if isinstance(item, type):
            raise item
        return item
    return read


def test_ctrl_c_at_the_prompt_drops_the_line_and_only_a_second_in_a_row_leaves(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), device="cpu")
    out = io.StringIO()
    read = _reads("Up", KeyboardInterrupt, "And so", KeyboardInterrupt, KeyboardInterrupt, "never")
    assert run_repl(lm, GenerationSettings(max_new_tokens=2, seed=1), out, read=read, stream_tokens=False) == 0
    text = out.getvalue()
    assert text.count("tokens/s") == 2 and "never" not in text
    assert text.count("(line dropped; Ctrl-C again, Ctrl-D or /quit to leave)") == 2


def test_a_chat_conversation_outlives_a_ctrl_c_at_the_prompt(chat_model_dir):
    from londonlm.chat import ChatSettings

    lm = load_model(str(chat_model_dir), device="cpu")
    session = ChatSession(ChatSettings(max_new_tokens=3, seed=1))
    read = _reads("Where were you?", KeyboardInterrupt, "Who was with you?")
    assert run_chat_repl(lm, session, io.StringIO(), read=read, stream_tokens=False) == 0
    assert [m["content"] for m in session.history if m["role"] == "user"] == ["Where were you?", "Who was with you?"]


def test_a_chat_says_when_its_first_exchanges_no_longer_fit_the_context(chat_model_dir):
    from londonlm.chat import ChatSettings, chat_reply

    lm = load_model(str(chat_model_dir), device="cpu")  # context 128
    session = ChatSession(ChatSettings(max_new_tokens=30, seed=1))
    info = io.StringIO()
    for _ in range(4):
        session.ask(lm, "Where were you, sir?", io.StringIO(), info, stream_tokens=False)
    lines = info.getvalue().splitlines()
    assert "not seen" not in lines[0]
    assert lines[-1].endswith("· the first 3 exchange(s) no longer fit the model's context: not seen]"), lines
    reply = chat_reply(lm.model, lm.tokenizer, [*session.history, {"role": "user", "content": "And then?"}],
                       settings=session.settings)
    assert reply.left_out == 8  # four exchanges: the one left is the question
    session.command("/reset")
    session.ask(lm, "Where were you, sir?", io.StringIO(), info, stream_tokens=False)
    assert "not seen" not in info.getvalue().splitlines()[-1]




def _exit_code(pid, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return "hung"


def test_the_repl_on_a_real_terminal_ctrl_c_and_a_models_escapes(esc_model):
    """Under a pty, with readline: a half-typed line and Ctrl-C is dropped, the REPL stays;
    the model's ESC bytes are shown as text; two Ctrl-C in a row leave, exit 0, no traceback."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: the real command on the terminal
        os.execve(sys.executable, [sys.executable, str(INFER), "--model", str(esc_model), "--interactive",
                                   "--device", "cpu", "--max_new_tokens", "3"], {**os.environ, "TERM": "dumb"})
    code = None
    try:
        assert b"> " in _pty_read(fd, b"Ctrl-D to quit\r\n> ")
        os.write(fd, b"Up bet")
        _pty_read(fd, b"Up bet", 5)
        os.write(fd, b"\x03")
        assert b"(line dropped; Ctrl-C again" in _pty_read(fd, b"to leave)\r\n> ", 10)
        os.write(fd, b"Up\n")
        got = _pty_read(fd, b"]\r\n> ", 30)
        assert b"Up\\x1b\\x1b\\x1b\r\n[3 tokens" in got and b"\x1b" not in got, got
        os.write(fd, b"\x03")
        _pty_read(fd, b"to leave)\r\n> ", 10)
        os.write(fd, b"\x03")
        rest = _pty_read(fd, b"never", 5)
        assert b"Traceback" not in rest
        code = _exit_code(pid)
        assert code == 0
    finally:
        os.close(fd)
        if code is None:  # a failed step: end the child (_exit_code kills one that does not exit)
            _exit_code(pid, 0.1)


def test_a_reader_of_the_output_gone_is_exit_141_not_success(tiny_model_dir):
    p = subprocess.Popen([sys.executable, str(INFER), "--model", str(tiny_model_dir), "--prompt", "Up",
                          "--num_samples", "500", "--max_new_tokens", "5", "--device", "cpu"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.readline()
    p.stdout.close()  # as `head -1` does
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 128 + signal.SIGPIPE and "Traceback" not in err, err
