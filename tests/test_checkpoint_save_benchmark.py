"""benchmarks/checkpoint_save.py: the trainer's real checkpoint, written with torch.save's CRC-32s
and without, side by side, each timed by part."""
import json
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "checkpoint_save.py"


# the benchmark end to end (~10 s on 2 cores, the suite's budget): run with -m slow when benchmarks/ changes
@pytest.mark.slow
def test_both_settings_write_a_checkpoint_and_are_timed_by_part(tmp_path):
    out = tmp_path / "save.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--runs", "2", "--n_layer", "1", "--n_head", "2",
                        "--n_embd", "32", "--context", "16", "--vocab", "128", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    for setting in ("crc", "no crc"):
        med = res["median"][setting]
        assert med["whole"] > 0 and med["model"] > 0 and med["optimizer+scheduler"] > 0
        assert len(res["runs"][setting]) == 2
    assert res["gb"] > 0
    assert "| no crc |" in r.stdout and "CPUs, python" in r.stdout  # the machine named beside the figures


def test_a_gpu_asked_for_where_there_is_none_is_refused(tmp_path):
    import os

    r = subprocess.run([sys.executable, str(SCRIPT), "--device", "cuda", "--runs", "1"], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 2 and "no CUDA GPU" in r.stderr and "Traceback" not in r.stderr
