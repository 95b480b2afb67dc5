"""benchmarks/generation_cache_step.py: a training step with GPT-2's default generation cache and
without it (as the project trains), each in a process of its own, side by side."""
import json
import subprocess
import sys

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "generation_cache_step.py"


def test_both_settings_are_timed_in_one_run(tmp_path):
    out = tmp_path / "cache.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--runs", "1", "--modes", "eager", "--steps", "2",
                        "--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--context", "16", "--batch", "2",
                        "--vocab", "128", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    eager = json.loads(out.read_text())["median"]["eager"]
    assert eager["cache_on_s"] > 0 and eager["cache_off_s"] > 0
    assert "| eager |" in r.stdout and "CPUs, python" in r.stdout  # the machine named beside the figures
