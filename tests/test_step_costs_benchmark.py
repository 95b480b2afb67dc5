"""benchmarks/step_costs.py: a training step with and without a generation cache, and with and
without dropout, each in a process of its own, side by side."""
import json
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "step_costs.py"


# the two differ in one line of the step (which setting is turned on): dropout's run, ~19 s on 2
# cores, is slow
# the benchmark end to end (~19 s on 2 cores, the suite's budget): run with -m slow when benchmarks/ changes
@pytest.mark.slow
@pytest.mark.parametrize("what", ["cache", "dropout"])
def test_both_settings_are_timed_in_one_run(tmp_path, what):
    out = tmp_path / "costs.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--what", what, "--runs", "1", "--modes", "eager",
                        "--steps", "2", "--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--context", "16",
                        "--batch", "2", "--vocab", "128", "--json", str(out)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["what"] == what and res["median"]["eager"]["on_s"] > 0 and res["median"]["eager"]["off_s"] > 0
    assert "| eager |" in r.stdout and "CPUs, python" in r.stdout  # the machine named beside the figures
