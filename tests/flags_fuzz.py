"""Shared parts of the nets that run a stage script end to end with drawn flags
(tests/evaluation/test_evaluation_flags_fuzz.py, tests/chat/test_chat_flags_fuzz.py,
tests/test_inference_flags_fuzz.py): the script's own flags found from its parsers, values
of each flag's kind, and the invariant every run keeps (exit 0, or exit 2 with one ``error:``
line that ends stderr; never a traceback, another code or a hang)."""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import runpy
import subprocess
import sys

import pytest
from hypothesis import strategies as st

INTS = ["0", "1", "-1", "2", "1000000000"]
FLOATS = ["0", "1e-9", "0.5", "-1", "1.5", "nan", "inf", "1e10"]
TEXTS = ["x", "", "ü", "1", "/nonexistent/x", "auto"]
PATHS = ["/nonexistent/x", "", "x", "/dev/null"]


class _Seen(BaseException):  # not an Exception: a script catching those must not keep it
    """Parsing began: the parser is recorded and the script stops there."""


def script_actions(script, skip: set[str]) -> list[argparse.Action]:
    """The optional flags of every parser ``script`` builds (the first parse stops it), less
    ``skip`` (flags the net sets itself or that name places it cannot reach)."""
    seen: list = []
    real = argparse.ArgumentParser.parse_known_args

    def record(self, *a, **k):
        seen.append(self)
        raise _Seen()

    argparse.ArgumentParser.parse_known_args = record
    old_argv, sys.argv = sys.argv, [str(script)]
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(str(script), run_name="__main__")
    except _Seen:
        pass
    finally:
        argparse.ArgumentParser.parse_known_args, sys.argv = real, old_argv
    assert seen, f"{script} parsed nothing"
    return [a for p in seen for a in p._actions if a.option_strings and not isinstance(a, argparse._HelpAction)
            and a.dest not in skip]


def _values(action: argparse.Action) -> list[list[str]]:
    """Values of the flag's kind, each as the argv words after the flag."""
    if action.nargs == 0:
        return [[]]
    if action.choices:
        return [[str(c)] for c in action.choices] + [["bogus"]]
    kind = getattr(action.type, "__name__", str(action.type)).lower()
    if "bool" in kind:
        words = ["true", "false"]
    elif "int" in kind or "seed" in kind or "year" in kind:
        words = INTS + ["1790", "1500"]
    elif "float" in kind or "percent" in kind:
        words = FLOATS
    elif "dir" in kind or "file" in kind or "path" in kind:
        words = PATHS
    else:
        words = TEXTS + INTS[:3]
    out = [[w] for w in words]
    if action.nargs in ("*", "+"):
        out += [[words[0], words[-1]]] + ([[]] if action.nargs == "*" else [])
    return out


def flag_strategy(actions: list[argparse.Action]):
    """One drawn (flag, argv words) pair."""
    return st.sampled_from(sorted(actions, key=lambda a: a.dest)).flatmap(
        lambda a: st.tuples(st.just(max(a.option_strings, key=len)), st.sampled_from(_values(a))))


def drawn_argv(flags) -> list[str]:
    return [w for name, words in flags for w in (name, *words)]


def run_checked(cmd: list[str], argv: list[str], timeout: int, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the script; exit 0, or 2 with one ``error:`` line last on stderr, in time. It runs in a
    throwaway working folder: a drawn relative path (``--json x``) is written there, not in the repo."""
    import tempfile

    try:
        with tempfile.TemporaryDirectory() as cwd:
            r = subprocess.run([sys.executable, *cmd, *argv], capture_output=True, text=True, timeout=timeout,
                               stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}, cwd=cwd)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(argv)}: still running after {timeout} s")
    assert "Traceback" not in r.stderr, (argv, r.stderr[-3000:])
    assert r.returncode in (0, 2), (argv, r.returncode, r.stderr[-3000:])
    if r.returncode == 2:
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert [line for line in lines if line.startswith("error:")] == lines[-1:], (argv, r.stderr[-3000:])
    return r
