"""A run's length (londonlm.training.length): --num_train_epochs in passes over the training
blocks, the warm-up's share of a run asked shorter than its preset, a warm-up as long as the run
refused; unit and through the training command on the micro preset."""
import json
import math
from pathlib import Path

import pytest

import config
from conftest import train_exit_code
from londonlm.core import RunLayout
from londonlm.training import ModelConfig, OutputConfig, RunControl, SpeedRequest, config_from_values
from londonlm.training.data import Position
from londonlm.training.length import fit_length, steps_for_passes

MICRO = config.PRESETS["micro"]  # warm-up 5 of 40 steps: a share of 1/8


def test_the_steps_for_some_passes_count_the_blocks_read_from_where_the_run_stands():
    fresh = Position(0, 0, 8)
    assert steps_for_passes(fresh, 100, 2) == 25          # 200 blocks, 8 a step
    assert steps_for_passes(fresh, 100, 0.5) == 7         # 50 blocks: the step that reaches them
    assert steps_for_passes(fresh, 100, 1e-6) == 1        # never no step at all
    resumed = Position(start=120, start_step=30, samples_per_step=4)  # read 120 blocks at another batch
    assert steps_for_passes(resumed, 100, 2) == 30 + 20   # the 80 left, 4 a step
    assert steps_for_passes(resumed, 100, 1) == 30        # already past: the run is done where it is


def _config(tmp_path, **optim):
    values = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, gradient_accumulation_steps=1,
                  per_device_eval_batch_size=8, report_to=[], learning_rate=3e-3, **optim)
    out = RunLayout(Path(tmp_path))
    return config_from_values(values, model=ModelConfig(2, 2, 64, 64), data=None, request=SpeedRequest(),
                              optimizer="adamw", control=RunControl(), output=OutputConfig(out, "micro"))


def test_passes_set_the_steps_and_the_warm_up_keeps_its_share_where_the_run_is_shorter(tmp_path, monkeypatch):
    at_start = Position(0, 0, 8)
    got = fit_length(_config(tmp_path, max_steps=10 ** 7, warmup_steps=5, warmup_share=1 / 8, passes=0.5),
                     at_start, 160)
    assert got.optim.max_steps == 10 and got.optim.warmup_steps == 1   # 80 blocks; 10/8 rounds to 1
    longer = fit_length(_config(tmp_path, max_steps=10 ** 7, warmup_steps=5, warmup_share=1 / 8, passes=4),
                        at_start, 160)
    assert longer.optim.max_steps == 80 and longer.optim.warmup_steps == 5  # the preset's, never more
    given = fit_length(_config(tmp_path, max_steps=10 ** 7, warmup_steps=3, passes=0.5), at_start, 160)
    assert given.optim.warmup_steps == 3                                 # --warmup_steps as given
    said = []
    monkeypatch.setattr("londonlm.training.length.log", said.append)
    long = fit_length(_config(tmp_path, max_steps=10 ** 7, warmup_steps=12, passes=0.5), at_start, 160)
    assert long.optim.warmup_steps == 12  # as given (a smoke run may mean it), and said
    assert [m for m in said if "--warmup_steps 12 is not below the run's 10 steps" in m]
    same = _config(tmp_path, max_steps=40, warmup_steps=5)
    assert fit_length(same, at_start, 160) is same                       # nothing asked: the tree as it was


def _run(root: Path) -> Path:
    return root / "09_models" / "checkpoints" / "micro"


def _blocks(root: Path) -> int:
    meta = json.loads((_run(root) / "pretokenized_data" / "metadata.json").read_text())
    return meta["splits"]["train"]["tokens"] // MICRO.context_length


def test_num_train_epochs_trains_the_steps_that_read_the_data_that_many_times(micro_root_copy, capsys):
    root = micro_root_copy
    assert train_exit_code(root, "--num_train_epochs", "1.5", "--batch_size", "4", "--bf16", "false") == 0
    out = capsys.readouterr().out
    blocks = _blocks(root)
    steps = math.ceil(math.ceil(1.5 * blocks) / 4)  # 4 blocks a step
    state = json.loads((_run(root) / f"checkpoint-{steps}" / "trainer_state.json").read_text())
    assert state["global_step"] == state["max_steps"] == steps != MICRO.max_steps
    saved = json.loads((_run(root) / "training_config.json").read_text())["optim"]
    assert saved["max_steps"] == steps and saved["passes"] == 1.5
    assert saved["warmup_steps"] == min(MICRO.warmup_steps, max(1, round(steps / 8)))
    assert f"--num_train_epochs 1.5: {steps:,} steps read the {blocks:,} training blocks" in out
    info = json.loads((_run(root) / "run_info.json").read_text())
    assert info["settings"]["passes"] == 1.5


def test_a_run_asked_shorter_than_its_warm_up_reaches_its_peak_rate(micro_root_copy):
    """micro warms up for 5 steps: --max_steps 4 warmed up all run (its rate never above 60% of
    the peak) before the warm-up became the preset's share of the steps asked."""
    root = micro_root_copy
    assert train_exit_code(root, "--max_steps", "4", "--logging_steps", "1", "--eval_steps", "100",
                           "--save_steps", "100", "--bf16", "false") == 0
    state = json.loads((_run(root) / "checkpoint-4" / "trainer_state.json").read_text())
    rates = [h["learning_rate"] for h in state["log_history"] if "learning_rate" in h]
    assert max(rates) == pytest.approx(MICRO.learning_rate)
    assert json.loads((_run(root) / "training_config.json").read_text())["optim"]["warmup_steps"] == 1


def test_a_warm_up_given_as_long_as_the_run_trains_as_asked_and_is_said(micro_root_copy, capsys):
    root = micro_root_copy
    assert train_exit_code(root, "--max_steps", "2", "--warmup_steps", "2", "--eval_steps", "100",
                           "--save_steps", "100", "--bf16", "false") == 0
    assert "note: --warmup_steps 2 is not below the run's 2 steps" in capsys.readouterr().out


@pytest.mark.parametrize("argv, said", [
    (["--num_train_epochs", "2", "--max_steps", "10"], "--num_train_epochs and --max_steps both set"),
    (["--num_train_epochs", "0"], "--num_train_epochs"),
])
def test_lengths_that_cannot_work_are_one_line_before_any_work(micro_root_copy, capsys, argv, said):
    root = micro_root_copy
    assert train_exit_code(root, *argv) == 2
    err = capsys.readouterr().err
    assert said in err and err.count("error:") == 1 and "Traceback" not in err
    assert not _run(root).exists()  # refused before the run folder or its token cache was made


def test_a_resumed_run_keeps_the_warm_up_it_trained_with(micro_root_copy, capsys):
    """Begun with --max_steps 8 (a warm-up of 1, the preset's share) and stopped at step 4, the run
    is resumed to 40 steps, whose share would be the preset's 5: it keeps the 1 it began with,
    as a run begun before warm-ups were shares keeps its preset's (test_training's resume)."""
    root = micro_root_copy
    quiet = ("--eval_steps", "100", "--save_steps", "100", "--bf16", "false")
    assert train_exit_code(root, "--max_steps", "8", "--stop_after_steps", "4", *quiet) == 0
    # what to do next, right for this run (it said ./resume_training.sh, the slm run of the repo)
    assert "checkpoint-4 saved. Resume: run the same command again" in capsys.readouterr().out
    assert json.loads((_run(root) / "training_config.json").read_text())["optim"]["warmup_steps"] == 1
    assert train_exit_code(root, "--max_steps", "40", *quiet) == 0
    assert "resuming from" in capsys.readouterr().out
    assert json.loads((_run(root) / "training_config.json").read_text())["optim"]["warmup_steps"] == 1
    fresh = fit_length(_config(root, max_steps=40, warmup_steps=5, warmup_share=1 / 8), Position(0, 0, 8), 160)
    assert fresh.optim.warmup_steps == 5  # what a new run of 40 steps warms up for
