"""Hostile round 16, training settings and launching: a damaged step time in the autotune cache,
torchrun's numbers given to the launcher as junk, the Trainer's optimizer flags under a Muon run,
two names of the batch size that disagree, a listing of a run folder that is not there, and a
LOCAL_RANK left in a shell. Each is refused (or passed over) before any model is built."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import patch_core, train_exit_code

REPO = Path(__file__).resolve().parents[2]


def one_error_line(err: str, *words) -> str:
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("error:") and err.count("error:") == 1 and "Traceback" not in err, err
    assert all(w in last for w in words), err
    return last


# --------------------------------------------------------------------------- the autotune cache

class Timer:
    """Step times per candidate label, no model run; ``timed``: the labels it was asked to time."""

    def __init__(self, seconds: float = 0.5):
        self.seconds, self.timed = seconds, []

    def __call__(self, shape, batch_size):
        return self.step

    def step(self, cand):
        self.timed.append(cand.label)
        return self.seconds


@pytest.mark.parametrize("figure", ["NaN", "-1", "0", "true", "-Infinity", "1e400"])
def test_a_damaged_step_time_in_the_autotune_cache_is_measured_again(tmp_path, monkeypatch, figure):
    """json reads NaN and Infinity, and true is an int: such a figure was taken as the fastest
    candidate's step time, and a --time_budget run then stopped in a `cannot convert float NaN`
    traceback (or "fits only -15 steps at the expected -1 s per step")."""
    from londonlm.training.model import ModelShape
    from londonlm.training.speed.probe import resolve_speed_settings

    patch_core(monkeypatch, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    shape, path = ModelShape(1, 2, 16, 16, 64), tmp_path / "autotune.json"
    resolve_speed_settings("on", shape, 4, cache_path=path, timer=Timer(), log=lambda _m: None)
    data = json.loads(path.read_text())
    (entry,) = data["entries"].values()
    label = next(iter(entry["figures"]))
    text = json.dumps(data).replace(json.dumps({label: entry["figures"][label]})[1:-1],
                                    f'"{label}": {{"step_seconds": {figure}, "timed_steps": 3}}')
    path.write_text(text)
    logs, timer = [], Timer(0.25)
    choice = resolve_speed_settings("on", shape, 4, cache_path=path, timer=timer, log=logs.append)
    assert any("malformed entry" in m for m in logs), logs
    assert timer.timed and choice.source == "measured" and choice.step_seconds == 0.25


def test_a_sound_cached_figure_is_still_reused(tmp_path, monkeypatch):
    from londonlm.training.model import ModelShape
    from londonlm.training.speed.probe import resolve_speed_settings

    patch_core(monkeypatch, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    shape, path = ModelShape(1, 2, 16, 16, 64), tmp_path / "autotune.json"
    resolve_speed_settings("on", shape, 4, cache_path=path, timer=Timer(), log=lambda _m: None)
    again = Timer()
    assert resolve_speed_settings("on", shape, 4, cache_path=path, timer=again, log=print).source == "cached"
    assert again.timed == []


# --------------------------------------------------------------------------- the launcher

@pytest.fixture
def launcher(tmp_path):
    """launch_training.sh in a folder of its own with a stub interpreter that prints its arguments."""
    shutil.copy2(REPO / "launch_training.sh", tmp_path / "launch_training.sh")
    stub = tmp_path / ".venv" / "bin" / "python"
    stub.parent.mkdir(parents=True)
    stub.write_text('#!/bin/sh\necho "STUB $*"\n')
    stub.chmod(0o755)
    return tmp_path


def _launch(folder: Path, **env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON",) and not k.startswith("SLURM_")}
    env.update(PATH="/usr/bin:/bin", LONDONLM_ROOT=str(folder), CUDA_VISIBLE_DEVICES="", **env_extra)
    return subprocess.run(["bash", str(folder / "launch_training.sh"), "micro"], env=env, text=True,
                          capture_output=True, timeout=30)


@pytest.mark.parametrize("env,words", [
    ({"NPROC_PER_NODE": "gpu"}, "NPROC_PER_NODE"), ({"NPROC_PER_NODE": "-2"}, "NPROC_PER_NODE"),
    ({"NPROC_PER_NODE": "0"}, "NPROC_PER_NODE"), ({"NPROC_PER_NODE": "2", "NNODES": "x"}, "NNODES"),
    ({"NNODES": "0"}, "NNODES"), ({"NNODES": "2", "NODE_RANK": "2"}, "NODE_RANK"),
    ({"NPROC_PER_NODE": "1", "MASTER_PORT": "99999"}, "MASTER_PORT"),
    ({"NPROC_PER_NODE": "1", "SHUTDOWN_GRACE": "5m"}, "SHUTDOWN_GRACE")])
def test_torchruns_numbers_as_junk_are_one_line_before_any_launch(launcher, env, words):
    """NPROC_PER_NODE=gpu (torchrun's own word) or a typo failed bash's test ("integer expression
    expected") and trained one process on the CPU; NNODES=0, NNODES=x or MASTER_PORT=99999 reached
    torchrun and ended in its traceback."""
    out = _launch(launcher, **env)
    assert out.returncode == 2 and "STUB" not in out.stdout, out.stdout + out.stderr
    (line,) = out.stderr.splitlines()
    assert line.startswith("error: ") and words in line and repr(env[words]).strip("'") in line, line


@pytest.mark.parametrize("env,want", [({"NPROC_PER_NODE": "2"}, "--nproc_per_node=2"),
                                      ({"NPROC_PER_NODE": ""}, "train_model_slm.py --preset micro"),
                                      ({"NPROC_PER_NODE": "1", "NNODES": "2", "NODE_RANK": "1",
                                        "MASTER_PORT": "1234"}, "--node_rank=1 --master_addr=127.0.0.1 --master_port=1234")])
def test_torchruns_numbers_in_range_still_launch(launcher, env, want):
    out = _launch(launcher, **env)
    assert out.returncode == 0 and want in out.stdout, out.stdout + out.stderr


# --------------------------------------------------------------------------- flags, before any work

def _config(micro_root, *argv):
    import config
    from londonlm.training.cli import TrainDefaults
    from londonlm.training.flags import parse_train_flags
    from londonlm.training.job import build_config

    defaults = TrainDefaults(config.PRESETS, "micro", config.get_layout(), config.TOKENIZER.name,
                             config.TRAINING.seed, "londonlm-test")
    return build_config(parse_train_flags(["--preset", "micro", "--root", str(micro_root), "--report_to", "none",
                                           *argv]), defaults)


@pytest.mark.parametrize("argv,words", [
    (["--optim", "muon", "--optim_args", "muon_lr=0.02"], "--optim_args"),
    (["--optimizer", "muon", "--optim", "adafactor"], "--optim adafactor"),
    (["--preset", "tiny", "--optim", "adafactor"], "--optim adafactor")])
def test_the_trainers_optimizer_flags_under_muon_are_refused(micro_root, capsys, argv, words):
    """Muon + AdamW is made from the rate, decay and Adam's betas and epsilon alone: --optim_args
    and the Trainer's --optim (the tiny preset trains with Muon) went unused without a word."""
    assert train_exit_code(micro_root, *argv, "--run_name_dir", "r16-muon") == 2
    one_error_line(capsys.readouterr().err, words, "Muon")
    assert not (micro_root / "09_models" / "checkpoints" / "r16-muon").exists()


def test_the_trainers_optimizer_flags_still_go_with_adamw(micro_root):
    config = _config(micro_root, "--optim", "adafactor", "--optim_args", "scale_parameter=False")
    assert config.optim.optimizer == "adamw" and config.optim.optim.value == "adafactor"
    assert _config(micro_root, "--preset", "tiny", "--optimizer", "adamw", "--optim", "adafactor").optim.optimizer == "adamw"


def test_two_names_of_the_batch_size_that_disagree_are_refused(micro_root, capsys):
    """--batch_size 4 --per_device_train_batch_size 2 trained at 4 without a word."""
    assert train_exit_code(micro_root, "--batch_size", "4", "--per_device_train_batch_size", "2",
                           "--run_name_dir", "r16-batch") == 2
    one_error_line(capsys.readouterr().err, "--batch_size", "--per_device_train_batch_size", "(4 vs 2)")
    assert not (micro_root / "09_models" / "checkpoints" / "r16-batch").exists()
    assert _config(micro_root, "--batch_size", "4", "--per_device_train_batch_size", "4").speed.micro_batch == 4


# --------------------------------------------------------------------------- listing a run

def test_listing_a_run_folder_that_is_not_there_says_where_it_looked(micro_root, capsys):
    """train_model_slm.py --list_checkpoints for a mistyped run printed "(no checkpoints)", exit 0."""
    assert train_exit_code(micro_root, "--run_name_dir", "r16-nosuch", "--list_checkpoints") == 2
    one_error_line(capsys.readouterr().err, "no run folder at", "r16-nosuch")
    assert not (micro_root / "09_models" / "checkpoints" / "r16-nosuch").exists()


def test_the_checkpoint_lister_takes_the_run_folder_as_training_names_it(tmp_path, capsys):
    """resume_training.sh lists with the checkpoint tester and its flags: `--run_name_dir X` (the
    training scripts' name for the run folder) was "unrecognized arguments"."""
    import config
    from londonlm.core.errors import run_main
    from londonlm.serving.checkpoint_cli import main

    (tmp_path / "09_models" / "checkpoints" / "mine").mkdir(parents=True)

    def lister(argv):
        return main(argv, config.get_layout(), "micro", list(config.PRESETS), "It was", 4)

    with pytest.raises(SystemExit) as stop:
        run_main(lister, ["--root", str(tmp_path), "--run_name_dir", "mine", "--list-checkpoints"])
    assert stop.value.code == 0 and "checkpoints in" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        run_main(lister, ["--root", str(tmp_path), "--run_name_dir", "other", "--list-checkpoints"])
    assert stop.value.code == 2
    one_error_line(capsys.readouterr().err, "no run folder at", "other")


# --------------------------------------------------------------------------- torchrun's variables

@pytest.mark.parametrize("env,words", [({"LOCAL_RANK": "0"}, "$WORLD_SIZE is unset"),
                                       ({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "3"}, "$WORLD_SIZE is 1")])
def test_a_local_rank_outside_torchrun_is_one_line_naming_it(micro_root, capsys, monkeypatch, env, words):
    """LOCAL_RANK=0 left in a shell made the Trainer start a process group: accelerate's "environment
    variable MASTER_ADDR expected" line, which names neither variable."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert train_exit_code(micro_root, "--run_name_dir", "r16-env", "--max_steps", "1") == 2
    one_error_line(capsys.readouterr().err, "$LOCAL_RANK is", words)
    assert not (micro_root / "09_models" / "checkpoints" / "r16-env").exists()


def test_the_trainers_own_not_distributed_local_rank_is_let_through(monkeypatch):
    from londonlm.training.dist import rank, world_size

    monkeypatch.setenv("LOCAL_RANK", "-1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert (rank(), world_size()) == (0, 1)


def test_an_init_from_parent_saved_in_half_precision_is_trained_in_float32(tiny_model_dir, tmp_path):
    """A parent (``--init_from``, a checkpoint) whose config.json records bfloat16 was loaded in
    bfloat16, and AdamW stepped half-precision master weights: updates under their precision
    lost without a word (chat fine-tuning's base had the same fix: round 16's models)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from londonlm.training.model import load_weights

    parent = tmp_path / "parent"
    AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).to(torch.bfloat16).save_pretrained(str(parent))
    assert json.loads((parent / "config.json").read_text())["dtype"] == "bfloat16"
    model = load_weights(parent, AutoTokenizer.from_pretrained(str(tiny_model_dir)))
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_a_damaged_checkpoint_is_neither_the_listed_best_nor_bare_among_those_available(tmp_path):
    """The listing marked an INVALID checkpoint "<- best" (the trainer state names it), and a
    model not found listed it among those "available" as if it could be loaded."""
    from londonlm.core import ModelNotFound, RunLayout, describe_checkpoints

    run = tmp_path / "run"
    (run / "checkpoint-2").mkdir(parents=True)  # its weights never written: invalid
    (run / "checkpoint-2" / "trainer_state.json").write_text(json.dumps(
        {"global_step": 2, "best_model_checkpoint": str(run / "checkpoint-2"), "best_metric": 1.5}))
    line = describe_checkpoints(run).splitlines()[0]
    assert "INVALID" in line and "<- best" not in line, line
    with pytest.raises(ModelNotFound, match=r"available: checkpoint-2 \(invalid\)"):
        RunLayout(run).resolve("checkpoint-9")
