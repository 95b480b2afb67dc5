"""Any flag of the one-shot inference command (``06_inference/*.py`` but the server), found
from its own parser: hypothesis draws one to three and gives each a value of its kind (0,
negatives, huge, NaN, empty, text, unicode, nonexistent paths, every choice and one that is
none), then generates from the tiny model (or, with --chat, answers once with the micro chat
model) with a prompt and no terminal, as a user's script runs it. The run ends with text on
stdout (exit 0) or one ``error:`` line and exit 2: never a traceback, another exit code or a
hang (the REPL reads a closed stdin), and the model folders are never changed."""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, tree_digest
from flags_fuzz import drawn_argv, flag_strategy, run_checked, script_actions

pytestmark = pytest.mark.slow
# examples per run; LONDONLM_FUZZ_EXAMPLES=80 searches longer
EXAMPLES = int(os.environ.get("LONDONLM_FUZZ_EXAMPLES", 8))
SCRIPT = REPO / "06_inference" / "inference_unified.py"
# set by the net itself (which model, under which root); --chat picks the model too
SKIP = {"root", "model", "chat"}


@given(data=st.data(), chat=st.booleans())
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_inference_flag_generates_or_is_one_line(data, chat, tiny_model_dir, chat_model_dir, chat_root):
    flags = data.draw(st.lists(flag_strategy(script_actions(SCRIPT, SKIP)), min_size=1, max_size=3,
                               unique_by=lambda fv: fv[0]), label="flags")
    argv = drawn_argv(flags)
    model = chat_model_dir if chat else tiny_model_dir
    base = ["--chat"] if chat else []
    if "--prompt" not in argv and "--interactive" not in argv:
        base += ["--prompt", "Up betimes, and"]
    if "--max_new_tokens" not in argv and "--max_length" not in argv:
        base += ["--max_new_tokens", "4"]
    before = tree_digest(model)
    r = run_checked([str(SCRIPT), "--model", str(model), "--root", str(chat_root), *base], argv, 120,
                    {"LONDONLM_ROOT": str(chat_root)})
    if r.returncode == 0 and "--interactive" not in argv:
        assert r.stdout.strip() or "--max_new_tokens" in argv or "--max_length" in argv, (argv, r.stderr[-2000:])
    assert tree_digest(model) == before, argv
