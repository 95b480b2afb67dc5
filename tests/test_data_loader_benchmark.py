"""benchmarks/data_loader.py: the training DataLoader's costs with workers started at each pass,
kept, and none, side by side on the real loaders over a cache of the project's format."""
import json
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "data_loader.py"


# the benchmark end to end (~13 s on 2 cores, the suite's budget): run with -m slow when benchmarks/ changes
@pytest.mark.slow
def test_the_three_loaders_are_timed_in_one_run(tmp_path):
    out = tmp_path / "loader.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--train_tokens", "40000", "--validation_tokens", "9000",
                        "--block", "64", "--batch", "8", "--passes", "3", "--evaluations", "2", "--runs", "1",
                        "--resident_gib", "0", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    median = json.loads(out.read_text())["median"]
    assert list(median) == ["per-pass workers", "persistent workers", "no workers"]
    for figures in median.values():
        assert figures["pass_s"] > 0 and figures["eval_first_batch_s"] > 0 and figures["pass_cpu_s"] >= 0
    assert "| persistent workers |" in r.stdout and "CPUs, python" in r.stdout  # the machine beside the figures
