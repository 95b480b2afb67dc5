"""``--run_name`` beside a ``--model`` that names a model outside that run (a folder, another
run, OTHER/checkpoint-N, a Hub id) would go unread: the user would get another model than the run
they named. Every command that takes both refuses that in one line, before any model load;
``--model final/latest/best/checkpoint-N`` (or none) still reads the run."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO
from londonlm.core import Layout, UsageError

COMMANDS = {
    "inference": ["06_inference/inference_unified.py", "--prompt", "x", "--device", "cpu"],
    "chat": ["06_inference/inference_unified.py", "--chat", "--prompt", "x", "--device", "cpu"],
    "serve": ["06_inference/serve.py", "--port", "65000", "--device", "cpu"],
    "evaluation": ["05_evaluation/run_evaluation.py", "--device", "cpu"],
    "export": ["10_scripts/export_gguf.py"],
}


@pytest.mark.parametrize("spec", [None, "", "final", "latest", "best", "checkpoint-12"])
def test_a_model_of_the_run_reads_the_run_name(spec, tmp_path):
    layout = Layout(tmp_path)
    assert Layout.names_run_model(spec)
    layout.check_run_name_used("r", spec)


@pytest.mark.parametrize("spec", ["other-run", "other/checkpoint-12", "/some/folder", "./final",
                                  "user/model", "final/"])
def test_a_model_of_its_own_refuses_the_run_name(spec, tmp_path):
    layout = Layout(tmp_path)
    assert not Layout.names_run_model(spec)
    layout.check_run_name_used(None, spec)  # no run name given: nothing to refuse
    with pytest.raises(UsageError, match=f"--run_name r goes unused: {spec} names a model outside that run"):
        layout.check_run_name_used("r", spec)


def test_the_run_named_again_or_a_folder_inside_it_reads_it(tmp_path):
    layout = Layout(tmp_path)
    inside = layout.run("r").dir / "checkpoint-3"
    inside.mkdir(parents=True)
    for spec in ("r", "r/checkpoint-3", str(inside)):
        layout.check_run_name_used("r", spec)
    with pytest.raises(UsageError, match="outside that run"):
        layout.check_run_name_used("q", str(inside))


def test_one_spec_of_the_run_among_several_uses_it(tmp_path):
    layout = Layout(tmp_path)
    layout.check_run_name_used("r", "/a/folder", "checkpoint-4")
    with pytest.raises(UsageError, match="/a/folder, other name models outside that run"):
        layout.check_run_name_used("r", "/a/folder", "other")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_refuses_before_loading(command, tiny_model_dir, tmp_path):
    env = {**os.environ, "LONDONLM_ROOT": str(tmp_path)}
    r = subprocess.run([sys.executable, str(REPO / COMMANDS[command][0]), *COMMANDS[command][1:],
                        "--model", str(tiny_model_dir), "--run_name", "mine"],
                       capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr == (f"error: --run_name mine goes unused: {tiny_model_dir} names a model outside that "
                        f"run (a folder, another run or a Hub id), and --run_name picks the run of "
                        f"final, latest, best or checkpoint-N: drop --run_name, or name one of those\n")
    assert list(tmp_path.iterdir()) == []  # nothing written: refused before any work


def test_evaluation_compare_all_reads_the_run(tmp_path):
    """``--compare all`` lists the run's checkpoints, so a folder --model with it keeps the
    run name (the refusal is not the error it meets)."""
    env = {**os.environ, "LONDONLM_ROOT": str(tmp_path)}
    r = subprocess.run([sys.executable, str(REPO / "05_evaluation/run_evaluation.py"), "--model",
                        str(tmp_path / "nowhere"), "--run_name", "mine", "--compare", "all"],
                       capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 2 and "goes unused" not in r.stderr and r.stderr.startswith("error:"), r.stderr
