"""The LR finder is a side tool: it never replaces a run's token cache (rebuilt at another
context, the run's checkpoints could no longer resume), writes only in its output folder, and
a ramp it cannot read is one `error:` line, never a traceback."""
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from conftest import train_exit_code, tree_digest

from londonlm.core import LondonLMError
from londonlm.core.errors import run_main

REPO = Path(__file__).resolve().parents[2]


def find_lr(root, *argv) -> int:
    spec = importlib.util.spec_from_file_location("find_lr", REPO / "04_training" / "find_lr.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(SystemExit) as stop:
        run_main(mod.main, ["--preset", "micro", "--root", str(root), *argv])
    return stop.value.code


@pytest.fixture(scope="module")
def trained(micro_root, tmp_path_factory):
    """A root whose run ``r`` has a checkpoint trained at the micro preset's context (64)."""
    root = tmp_path_factory.mktemp("lrf") / "root"
    shutil.copytree(micro_root, root)
    assert train_exit_code(root, "--run_name", "r", "--max_steps", "2", "--save_steps", "2",
                           "--eval_steps", "100", "--logging_steps", "1") == 0
    return root


def run_folder(root):
    return root / "09_models" / "checkpoints" / "r"


def test_a_sweep_at_another_context_leaves_the_run_whole_and_resumable(trained, tmp_path, capsys):
    """The reviewed reproduction: find_lr --max_length 32 rebuilt the run's cache at 32, and the
    run then refused to resume ('cannot resume ... on other data')."""
    before = tree_digest(run_folder(trained))
    out = tmp_path / "lr"
    assert find_lr(trained, "--run_name", "r", "--max_length", "32", "--steps", "10",
                   "--output_dir", str(out)) == 0
    assert tree_digest(run_folder(trained)) == before  # nothing written in the run's folder
    own = json.loads((out / "lr_find_tokens" / "metadata.json").read_text())
    assert own["context_length"] == 32 and (out / "lr_find.json").is_file()
    capsys.readouterr()
    assert train_exit_code(trained, "--run_name", "r", "--max_steps", "3", "--save_steps", "100",
                           "--eval_steps", "100") == 0
    assert "cannot resume" not in capsys.readouterr().err


def test_a_sweep_at_the_runs_context_reads_its_cache_without_a_copy(trained, capsys):
    cache = run_folder(trained) / "pretokenized_data"
    before = tree_digest(cache)
    assert find_lr(trained, "--run_name", "r", "--steps", "10") == 0
    assert "reading the run's" in capsys.readouterr().out
    assert tree_digest(cache) == before
    assert not (run_folder(trained) / "lr_find" / "lr_find_tokens").exists()


def test_an_absurd_range_is_refused_before_any_work(trained, tmp_path, capsys):
    """1e-300 -> 1e300 in 10 steps diverged after 5 and ended in a ValueError traceback."""
    out = tmp_path / "lr"
    capsys.readouterr()
    assert find_lr(trained, "--min_lr", "1e-300", "--max_lr", "1e300", "--steps", "10",
                   "--output_dir", str(out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "too wide" in err[0] and "--steps" in err[0]
    assert not out.exists()


def test_too_few_points_is_a_londonlm_error_naming_the_stop():
    from londonlm.training.tools.lr_finder import check_range, suggest_lr

    with pytest.raises(LondonLMError, match="stopped early: loss became nan"):
        suggest_lr([1e-3, 1e-2, 1e-1], [5.0, 4.0, 3.0], stopped="loss became nan at lr 0.1")
    check_range(1e-6, 1.0, 10)  # the widest default-like ramp still runs
    with pytest.raises(LondonLMError, match="spans 7 decades"):
        check_range(1e-6, 10.0, 7)


def test_a_loss_turning_infinite_ends_the_ramp_not_the_command(trained, tmp_path, capsys):
    """Divergence is what the ramp measures: the training stage's finite-loss check (a diverged
    run is an error) must not turn the sweep's last steps into 'training diverged'. bf16 on this
    ramp reaches an infinite loss after 6 points (fp32 stops first on the 4x rule)."""
    out = tmp_path / "lr"
    assert find_lr(trained, "--min_lr", "1e-4", "--max_lr", "1e8", "--steps", "14", "--bf16", "true",
                   "--output_dir", str(out)) == 0
    printed = capsys.readouterr().out
    assert "stopped: loss became inf" in printed and "suggested --learning_rate" in printed
    assert json.loads((out / "lr_find.json").read_text())["stopped_early"].startswith("loss became inf")
