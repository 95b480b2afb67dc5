"""Any flag of the evaluation script (``05_evaluation/*.py``), found from its own parser, not
only those a test thought of: hypothesis draws one to three and gives each a value of its kind
(0, negatives, huge, NaN, empty, text, unicode, nonexistent paths, every choice and one that
is none), then evaluates the tiny model on the micro corpus as its user runs it. The run ends
with its metrics written (exit 0) or one ``error:`` line and exit 2: never a traceback, another
exit code or a hang, and the model and corpus are never changed. Slow: each example is a run."""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, tree_digest
from flags_fuzz import drawn_argv, flag_strategy, run_checked, script_actions

pytestmark = pytest.mark.slow
# examples per run; LONDONLM_FUZZ_EXAMPLES=60 searches longer
EXAMPLES = int(os.environ.get("LONDONLM_FUZZ_EXAMPLES", 6))
SCRIPTS = sorted((REPO / "05_evaluation").glob("*.py"))
# set by the net itself (the model, the root, the report folder); ratings have their own net
SKIP = {"root", "out_dir", "model", "import_ratings", "key"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
@given(data=st.data())
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_evaluation_flag_evaluates_or_is_one_line(script, data, micro_root, tiny_model_dir, tmp_path_factory):
    flags = data.draw(st.lists(flag_strategy(script_actions(script, SKIP)), min_size=1, max_size=3,
                               unique_by=lambda fv: fv[0]), label="flags")
    argv = drawn_argv(flags)
    out = tmp_path_factory.mktemp("eval-out")
    before = (tree_digest(tiny_model_dir), tree_digest(micro_root))
    r = run_checked([str(script), "--mode", "quick", "--model", str(tiny_model_dir), "--root", str(micro_root),
                     "--out_dir", str(out), "--max_eval_tokens", "256", "--device", "cpu"], argv, 300,
                    {"LONDONLM_ROOT": str(micro_root)})
    if r.returncode == 0 and "--compare" not in argv:
        assert (out / "metrics.json").is_file(), (argv, sorted(p.name for p in out.iterdir()))
    assert (tree_digest(tiny_model_dir), tree_digest(micro_root)) == before, argv
