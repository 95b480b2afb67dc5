"""Hostile round 20, the training job: --init_from across resumes, a time budget and --max_steps
changed between a run and its resume, and a real SIGKILL of a training process mid-checkpoint."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import train_exit_code

REPO = Path(__file__).resolve().parents[2]
FLAGS = ("--save_steps", "2", "--eval_steps", "2", "--eval_max_batches", "1", "--logging_steps", "2")


def _run(root: Path, name: str) -> Path:
    return root / "09_models" / "checkpoints" / name


def _checkpoints(run: Path) -> list[str]:
    return sorted(p.name for p in run.glob("checkpoint-*"))


def test_a_time_budget_dropped_or_given_on_resume_is_refused(micro_root_copy, capsys):
    """Was: a --time_budget run resumed without its budget (resume_training.sh names none) went on
    under the preset's warm-up and cosine over --max_steps, exit 0: the budget gone, the warm-up of
    326 steps became 5 and the rate jumped 100-fold at step 5. A run without one resumed with a
    budget switched from the cosine to a budget's schedule mid-run, its budget counted from the
    resume."""
    budgeted = ("--run_name", "b", *FLAGS, "--time_budget", "600")
    assert train_exit_code(micro_root_copy, *budgeted, "--stop_after_steps", "2") == 0
    capsys.readouterr()
    assert train_exit_code(micro_root_copy, *budgeted[:-2], "--stop_after_steps", "3") == 2
    out = capsys.readouterr()
    assert "no --time_budget (trained under --time_budget 600" in out.err
    assert _checkpoints(_run(micro_root_copy, "b")) == ["checkpoint-2"]

    plain = ("--run_name", "p", *FLAGS)
    assert train_exit_code(micro_root_copy, *plain, "--stop_after_steps", "2") == 0
    capsys.readouterr()
    assert train_exit_code(micro_root_copy, *plain, "--time_budget", "600", "--stop_after_steps", "3") == 2
    assert "--time_budget 600 (trained without one" in capsys.readouterr().err
    assert _checkpoints(_run(micro_root_copy, "p")) == ["checkpoint-2"]


def test_max_steps_below_the_step_resumed_at_is_refused(micro_root_copy, capsys):
    """Was: a run of --max_steps 8 stopped at checkpoint-4, resumed with --max_steps 3, took no step
    and wrote final/ (step 4's weights, mid-schedule) recorded as the finished 3-step run, exit 0."""
    argv = ("--run_name", "r", *FLAGS)
    assert train_exit_code(micro_root_copy, *argv, "--max_steps", "8", "--stop_after_steps", "4") == 0
    capsys.readouterr()
    assert train_exit_code(micro_root_copy, *argv, "--max_steps", "3") == 2
    assert "--max_steps 3 ends the run before the step it resumes at (4)" in capsys.readouterr().err
    run = _run(micro_root_copy, "r")
    assert not (run / "final").exists() and json.loads((run / "run_info.json").read_text())["interrupted"]
    # ending the run at the checkpoint's own step is still a run's end
    assert train_exit_code(micro_root_copy, *argv, "--max_steps", "4") == 0
    assert json.loads((run / "run_info.json").read_text())["global_step"] == 4


def test_a_continued_run_resumes_with_the_same_command_after_its_parent_trained_on(micro_root_copy, capsys):
    """Was: `--init_from p` while p had only checkpoints (stopped, or being trained) took
    p/checkpoint-2; stopped, the child said "run the same command again", and once p had trained
    on (its final/ written) that command was refused: "--init_from starts a new run but … already
    has checkpoints …; pass --fresh or a new --run_name" (only ways that start it over)."""
    assert train_exit_code(micro_root_copy, "--run_name", "p", "--max_steps", "4", "--stop_after_steps", "2",
                           *FLAGS) == 0
    child = ("--run_name", "c", "--max_steps", "4", "--init_from", "p", *FLAGS)
    assert train_exit_code(micro_root_copy, *child, "--stop_after_steps", "2") == 0
    assert train_exit_code(micro_root_copy, "--run_name", "p", "--max_steps", "4", *FLAGS) == 0
    capsys.readouterr()
    assert train_exit_code(micro_root_copy, *child) == 0
    assert "resuming from " + str(_run(micro_root_copy, "c") / "checkpoint-2") in capsys.readouterr().out
    info = json.loads((_run(micro_root_copy, "c") / "run_info.json").read_text())
    assert info["global_step"] == 4 and info["parent"]["path"] == str(_run(micro_root_copy, "p") / "checkpoint-2")


def test_a_continued_run_of_another_shape_resumes_without_init_from(micro_root_copy, capsys):
    """Was: a run continued from a 3-layer parent under the 2-layer micro preset, resumed as
    resume_training.sh does (no --init_from), was refused as "another shape: --n_layer 2 (trained
    with 3)": no shape flag had been given; its shape is its checkpoint's."""
    assert train_exit_code(micro_root_copy, "--run_name", "p", "--max_steps", "2", "--n_layer", "3", *FLAGS) == 0
    child = ("--run_name", "c", "--max_steps", "4", *FLAGS)
    assert train_exit_code(micro_root_copy, *child, "--init_from", "p", "--stop_after_steps", "2") == 0
    capsys.readouterr()
    assert train_exit_code(micro_root_copy, *child) == 0
    final = json.loads((_run(micro_root_copy, "c") / "final" / "config.json").read_text())
    assert final["n_layer"] == 3
    assert json.loads((_run(micro_root_copy, "c") / "run_info.json").read_text())["global_step"] == 4


def _kill_mid_checkpoint(root: Path, argv: list[str], run: Path, after_step: int) -> str:
    """Trains in a subprocess and SIGKILLs it once a checkpoint past ``after_step`` has its
    weights but not yet its trainer_state.json (the Trainer's last file); the folder's name."""
    env = dict(os.environ, LONDONLM_AUTOTUNE="off")
    proc = subprocess.Popen([sys.executable, str(REPO / "04_training" / "train_model_slm.py"), "--preset", "micro",
                             "--root", str(root), "--report_to", "none", "--disable_tqdm", "true", *argv],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, caught = time.monotonic() + 120, None
    try:
        while caught is None and proc.poll() is None and time.monotonic() < deadline:
            for ck in run.glob("checkpoint-*"):
                try:
                    names = set(os.listdir(ck))
                except FileNotFoundError:
                    continue
                if int(ck.name.split("-")[1]) > after_step and "model.safetensors" in names \
                        and "trainer_state.json" not in names:
                    os.kill(proc.pid, signal.SIGKILL)
                    caught = ck.name
                    break
            time.sleep(0.0005)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return caught


@pytest.mark.slow
def test_a_real_sigkill_mid_checkpoint_then_the_same_command_ends_as_an_uninterrupted_run(
        micro_root_copy, tmp_path):
    """Held: a training process SIGKILLed while it wrote a checkpoint (found by polling the run
    folder: weights there, trainer_state.json not yet), then the same command again: the cut
    checkpoint is skipped and moved aside, the run resumes from the one before, and its final/
    is bit for bit the uninterrupted run's."""
    import shutil

    from safetensors.torch import load_file

    argv = ["--run_name", "k", "--max_steps", "30", "--save_steps", "1", "--eval_steps", "100",
            "--logging_steps", "5", "--save_total_limit", "3"]
    twin = tmp_path / "twin"
    shutil.copytree(micro_root_copy, twin)
    run = _run(micro_root_copy, "k")
    caught = _kill_mid_checkpoint(micro_root_copy, argv, run, after_step=4)
    if caught is None:
        pytest.skip("the poll never saw a checkpoint mid-write (a machine too busy to poll)")
    assert not (run / "final").exists()
    assert train_exit_code(micro_root_copy, *argv) == 0
    assert train_exit_code(twin, *argv) == 0
    info = json.loads((run / "run_info.json").read_text())
    assert info["global_step"] == 30 and info["resumed_from"].endswith(f"checkpoint-{int(caught.split('-')[1]) - 1}")
    a = load_file(run / "final" / "model.safetensors")
    b = load_file(_run(twin, "k") / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


@pytest.mark.parametrize("precision, other", [("bf16", "fp16"), ("fp16", "bf16")])
def test_a_full_eval_in_the_other_half_precision_is_one_line(micro_root_copy, capsys, precision, other):
    # was (found by the trainer-flags fuzz): `--fp16_full_eval true` beside bf16 training cast the
    # weights to float16 for the evaluation under bf16 autocast; the first evaluation died in
    # layer_norm ("mixed dtype (CPU)"), a traceback after the steps
    code = train_exit_code(micro_root_copy, "--run_name", "r20-eval", "--max_steps", "1", f"--{precision}", "true",
                           f"--{other}_full_eval", "true")
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith(f"error: --{other}_full_eval evaluates in {other} while this run trains in {precision}"), err
    assert not (micro_root_copy / "09_models" / "checkpoints" / "r20-eval" / "final").exists()
