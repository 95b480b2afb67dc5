"""A property of every stage script's command line: any value for any flag, from the flag's
own argparse definition (0, negatives, huge, not a number, empty, unicode, paths that do not
exist), ends in one of two ways: one ``error:`` line and exit code 2, or a parse the script
accepts. Never a traceback. The scripts run in-process and stop where their work would begin
(right after parsing and the checks that come with it), so the sweep is fast."""
from __future__ import annotations

import argparse
import contextlib
import io
import runpy
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO

SCRIPTS = sorted(p for d in ("02_data_collection", "03_tokenizer", "04_training", "05_evaluation", "06_inference",
                             "07_finetuning", "10_scripts") for p in (REPO / d).glob("*.py"))
HOSTILE = st.one_of(
    st.sampled_from(["0", "-1", "-5", "1e309", "nan", "inf", "-inf", "", " ", "x", "ü", "9" * 40, "-0.5", "1.5",
                     "/nonexistent/path", "../../etc/passwd", "~nosuchuser/x", "true", "None", "--", "1,2",
                     "Up \udcff betimes",  # argv's form of a byte that is not UTF-8 (surrogateescape)
                     # a file where a folder is wanted, and a path through a file (ENOTDIR)
                     str(REPO / "README.md"), str(REPO / "README.md" / "x")]),
    st.integers(-10**12, 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.text(max_size=12))


class Parsed(Exception):
    """The script's parsing and checks are done: its work would begin here."""


@contextlib.contextmanager
def stop_after_parsing(seen: list):
    """Every parser the scripts use stops the script once it has parsed and checked its values;
    the parsers seen are recorded (their flags are the sweep's inputs)."""
    import londonlm.serving.inference_cli as inference_cli
    import londonlm.training.flags as training_args
    from londonlm.core import StageParser

    real_known, real_parse = argparse.ArgumentParser.parse_known_args, StageParser.parse_args
    real_check, real_inference = training_args.check_ranges, inference_cli.parse

    def parse_known_args(self, *a, **k):
        seen.append(self)
        return real_known(self, *a, **k)

    def stage_parse(self, *a, **k):
        raise Parsed(real_parse(self, *a, **k))

    def check(*a, **k):
        real_check(*a, **k)
        raise Parsed()

    def inference_parse(*a, **k):
        raise Parsed(real_inference(*a, **k))

    patches = [(argparse.ArgumentParser, "parse_known_args", parse_known_args),
               (StageParser, "parse_args", stage_parse), (training_args, "check_ranges", check),
               (inference_cli, "parse", inference_parse)]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    try:
        for obj, name, value in patches:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


def outcome(script, argv: list[str]) -> tuple[str, str]:
    """("error", the stderr) for exit code 2, ("parsed", "") for an accepted parse."""
    err = io.StringIO()
    old_argv = sys.argv
    sys.argv = [str(script), *argv]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(str(script), run_name="__main__")
    except Parsed:
        return "parsed", ""
    except SystemExit as e:
        return f"exit {e.code}", err.getvalue()
    finally:
        sys.argv = old_argv
    return "returned", err.getvalue()


def value_flags(script) -> list[str]:
    seen: list = []
    with stop_after_parsing(seen):
        outcome(script, [])
    assert seen, f"{script.name} parsed nothing"
    flags = set()
    for parser in seen:
        for action in parser._actions:
            if action.option_strings and action.nargs != 0 and not isinstance(action, argparse._HelpAction):
                flags.add(max(action.option_strings, key=len))
    return sorted(flags)


FLAGS = {s: None for s in SCRIPTS}


def _flags(script):
    if FLAGS[script] is None:
        FLAGS[script] = value_flags(script)
    return FLAGS[script]


def check_one(script, flag: str, value: str) -> None:
    with stop_after_parsing([]):
        kind, err = outcome(script, [flag, value])
    if kind == "parsed":
        return
    lines = [line for line in err.splitlines() if line.strip()]
    assert kind == "exit 2", f"{script.name} {flag} {value!r}: {kind}\n{err[-3000:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{script.name} {flag} {value!r}:\n{err[-3000:]}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_any_value_of_any_flag_is_an_error_line_or_a_parse(script, data):
    flags = _flags(script)
    check_one(script, data.draw(st.sampled_from(flags), label="flag"), data.draw(HOSTILE, label="value"))


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_the_longer_sweep(script, data):
    flags = _flags(script)
    check_one(script, data.draw(st.sampled_from(flags), label="flag"), data.draw(HOSTILE, label="value"))


def test_the_sweep_sees_every_script_and_would_catch_a_traceback(tmp_path):
    assert len(SCRIPTS) >= 18 and all(_flags(s) for s in SCRIPTS)
    bad = tmp_path / "bad.py"
    bad.write_text("import argparse\np = argparse.ArgumentParser()\np.add_argument('--n', type=int)\n"
                   "a = p.parse_args()\nraise ValueError(1 / a.n)\n")
    with pytest.raises((AssertionError, ZeroDivisionError)):
        check_one(bad, "--n", "0")


# Flags whose value is free text (prompts, commit messages, card titles): each takes
# ``londonlm.core.cli.free_text``, so what argv could not decode as UTF-8 stops at the parse.
FREE_TEXT_FLAGS = ("--prompt", "--commit_message", "--model_name")


def test_every_free_text_flag_refuses_what_is_not_utf8():
    checked = []
    for script in SCRIPTS:
        for flag in set(_flags(script)) & set(FREE_TEXT_FLAGS):
            with stop_after_parsing([]):
                kind, err = outcome(script, [flag, "Up \udcff betimes"])  # argv's form of the byte 0xff
            assert kind == "exit 2" and err == f"error: {flag}: not valid UTF-8 (byte 0xff at character 4)\n", \
                f"{script.name} {flag}: {kind}\n{err[-2000:]}"
            checked.append(f"{script.name} {flag}")
    # inference_unified, test_checkpoint(_slm), export_gguf, publish_to_huggingface (3 flags)
    assert len(checked) >= 7, checked
