"""Free text at the command line (``londonlm.core.cli.free_text``): bytes that are not UTF-8 reach
Python's argv as lone surrogates (surrogateescape), which no tokenizer or JSON writer takes; the
``free_text`` type refuses them in one line naming the flag, before any work."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from conftest import REPO
from londonlm.core.cli import StageParser, existing_dir, free_text, utf8_problem, writable_dir


@pytest.mark.parametrize("value,why", [
    ("Up \udcff betimes", "byte 0xff at character 4"),       # argv's form of the byte 0xff
    ("\udced\udca0\udc80", "byte 0xed at character 1"),      # an encoded surrogate: three bad bytes
    ("a\ud800", "lone surrogate U+D800 at character 2"),     # a real lone surrogate (a JSON escape)
])
def test_text_that_is_not_utf8_is_refused_saying_where(value, why):
    assert utf8_problem(value) == f"not valid UTF-8 ({why})"
    with pytest.raises(argparse.ArgumentTypeError, match="not valid UTF-8"):
        free_text(value)


@pytest.mark.parametrize("value", ["", " ", "Up betimes", "Ünïcödé · 1666 — ☃", "\U0001F600"])
def test_any_valid_text_passes_unchanged(value):
    assert utf8_problem(value) is None and free_text(value) == value


def test_a_parser_names_the_flag(capsys):
    p = StageParser(prog="x")
    p.add_argument("--prompt", type=free_text)
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--prompt", "Up \udcff betimes"])
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: --prompt: not valid UTF-8 (byte 0xff at character 4)\n"


@pytest.mark.parametrize("args", [["--prompt", b"Up \xff betimes"], ["--chat", "--prompt", b"\xed\xa0\x80"]],
                         ids=["prompt", "chat"])
def test_inference_refuses_undecodable_argv_before_loading(args, tmp_path):
    # real argv bytes, as a shell passes $'Up \xff betimes'; the model named does not exist, so
    # only a refusal at parse time can answer with the UTF-8 message
    argv = [sys.executable, str(REPO / "06_inference" / "inference_unified.py"), "--model",
            str(tmp_path / "none"), *(a if isinstance(a, bytes) else a.encode() for a in args)]
    r = subprocess.run(argv, capture_output=True, timeout=120, env=dict(os.environ, PYTHONIOENCODING="utf-8"))
    err = r.stderr.decode()
    assert r.returncode == 2 and err.count("\n") == 1, err
    assert err.startswith("error: --prompt: not valid UTF-8 (byte 0x")


@pytest.mark.parametrize("sep", ["\x85", "\u2028", "\r", "\x0c"])
def test_an_error_naming_a_value_with_a_line_separator_is_one_line(sep, capsys):
    """`--root '~\\x85'` (found by the slow flag sweep): the value in the message split the
    error in two lines for anything that reads lines as str.splitlines does."""
    from londonlm.core.cli import user_path
    from londonlm.core.errors import run_main

    with pytest.raises(SystemExit) as done:
        run_main(lambda argv: user_path(f"~nobody{sep}x") and 0, [])
    err = capsys.readouterr().err
    assert done.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: cannot expand")


@pytest.mark.parametrize("text", ["\x00", "data/\x00x", "~\x00"])
def test_a_path_holding_a_nul_character_is_one_error_line(text, capsys, tmp_path):
    """`run_pipeline.py --root '\\x00'` (found by the slow flag sweep, in-process: argv cannot
    carry one) raised ValueError from resolve(); a path flag refuses it as any bad path."""
    from londonlm.core.cli import user_path
    from londonlm.core.errors import run_main
    from londonlm.core.layout import Layout

    with pytest.raises(SystemExit) as done:
        run_main(lambda argv: Layout.at(text, default_root=tmp_path) and 0, [])
    err = capsys.readouterr().err
    assert done.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: ") and "cannot hold a NUL character" in err
    assert str(user_path("plain/path")) == "plain/path"  # (what holds none passes as before)


@pytest.mark.parametrize("convert", [existing_dir, writable_dir])
def test_an_empty_folder_value_is_refused_not_taken_for_here(convert):
    """``--source_dir ''`` read the current folder (Path("") is "."), and an empty output folder
    wrote there."""
    with pytest.raises(argparse.ArgumentTypeError, match="give a folder"):
        convert("")
    assert convert(".") == "."
