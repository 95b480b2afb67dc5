"""benchmarks/cpu_bf16.py: bf16 against fp32 on this CPU, GEMM rate and a training step, with
the machine and the fixed rules' answer beside the figures."""
import importlib.util
import json
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "cpu_bf16.py"


# the benchmark end to end (~13 s on 2 cores, the suite's budget): run with -m slow when benchmarks/ changes
@pytest.mark.slow
def test_both_precisions_are_measured_with_the_machine_and_the_rule_named(tmp_path):
    out = tmp_path / "bf16.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--runs", "1", "--shapes", "micro", "--gemm_tokens", "64",
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["gemm_gflops"]["fp32"] > 0 and res["gemm_gflops"]["bf16"] > 0
    assert res["step_seconds"]["micro"]["fp32"] > 0 and res["step_seconds"]["micro"]["bf16"] > 0
    assert "family" in res["machine"] and "the fixed rules take bf16:" in res["machine"]
    assert "| micro training step, s |" in r.stdout


def test_bad_flags_are_refused_in_one_line():
    r = subprocess.run([sys.executable, str(SCRIPT), "--runs", "0"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--runs" in r.stderr


def test_each_row_is_printed_as_it_is_measured(monkeypatch, capsys):
    """Where bf16 is emulated one measure takes minutes: the rows measured so far are on the
    screen, not held for a table at the end (a 2-core Zen 3 printed nothing in 280 s)."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # (its neighbours, as `python benchmarks/...` has)
    spec = importlib.util.spec_from_file_location("cpu_bf16_bench", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def stuck(runs, shape):
        raise KeyboardInterrupt  # the user gives up during the first training step's timing

    monkeypatch.setattr(bench, "step_seconds", stuck)
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--runs", "1", "--shapes", "micro", "--gemm_tokens", "32"])
    out = capsys.readouterr().out
    assert "the fixed rules take bf16:" in out and "| GEMM 32 x 768 x 3072, GFLOP/s |" in out
