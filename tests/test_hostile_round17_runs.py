"""Hostile round 17, run comparisons: a diverged run (NaN validation losses) scrambled the order of
the whole table that says "best run first"; a curve that opened with NaN showed NaN as its best;
runs of different tokenizers were ordered by a loss per token, which does not compare across
tokenizers."""
from __future__ import annotations

import json
import math

import pytest

from training.test_compare_refusals import compare


def write_run(runs, name, curve, tokenizer="t1", tokens_validation=1000, validation_bytes=5000):
    (runs / name).mkdir(parents=True)
    info = {"preset": "micro", "parameters": 137000, "global_step": 4, "tokens_per_step": 512,
            "eval_curve": curve, "tokenizer_sha256": tokenizer,
            "cache": {"tokens_validation": tokens_validation}, "validation_bytes": validation_bytes}
    (runs / name / "run_info.json").write_text(json.dumps(info))  # NaN written as Python writes it


def table_order(out) -> list[str]:
    return [line.split("|")[1].strip() for line in (out / "comparison.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| run ")]


@pytest.fixture
def runs(tmp_path):
    runs = tmp_path / "root" / "09_models" / "checkpoints"
    runs.mkdir(parents=True)
    return runs


def test_a_diverged_run_goes_last_and_leaves_the_others_in_order(runs, tmp_path, capsys):
    """A grid point whose rate was too high evaluates to NaN: NaN compares false both ways, and
    the table came out as discovered, g-a (4.0), g-b (NaN), g-c (1.0), g-d (2.0): the best run third."""
    write_run(runs, "g-a", [[2, 4.5], [4, 4.0]])
    write_run(runs, "g-b", [[2, math.nan], [4, math.nan]])
    write_run(runs, "g-c", [[2, 1.5], [4, 1.0]])
    write_run(runs, "g-d", [[2, 2.5], [4, 2.0]])
    out = tmp_path / "out"
    assert compare("--root", str(runs.parents[1]), "--out_dir", str(out)) == 0
    assert table_order(out) == ["g-c", "g-d", "g-a", "g-b"]
    row = next(line for line in (out / "comparison.md").read_text().splitlines() if line.startswith("| g-b"))
    assert "nan" in row  # shown as diverged, not as a run with no evaluation


def test_a_curve_that_opens_with_nan_has_its_later_best(runs, tmp_path, capsys):
    """min() over [[2, NaN], [4, 3.0]] returned NaN: the run's best loss and bpb shown as nan."""
    from londonlm.training.tools.compare import load_run

    write_run(runs, "recovered", [[2, math.nan], [4, 3.0], [6, math.inf]])
    row = load_run(runs / "recovered")
    assert row["best_val_loss"] == 3.0 and row["best_step"] == 4
    assert row["best_val_bpb"] == pytest.approx(3.0 * 1000 / (math.log(2) * 5000))


def test_runs_of_different_tokenizers_are_ordered_by_bits_per_byte_with_a_note(runs, tmp_path, capsys):
    """``small`` (near-byte tokens: 4,000 over the validation text) has the lower loss per token
    (2.0 against 4.0) and was put first, though per byte it is twice as bad (2.31 bpb against
    1.15). Nothing said the loss column did not compare."""
    write_run(runs, "big", [[4, 4.0]], tokenizer="big-vocab", tokens_validation=1000)
    write_run(runs, "small", [[4, 2.0]], tokenizer="small-vocab", tokens_validation=4000)
    out = tmp_path / "out"
    assert compare("--root", str(runs.parents[1]), "--out_dir", str(out)) == 0
    assert table_order(out) == ["big", "small"]
    table = (out / "comparison.md").read_text()
    assert "2 different tokenizers" in table and "best val bpb" in table.splitlines()[-1]
    assert "2 different tokenizers" in capsys.readouterr().out


def test_runs_of_one_tokenizer_are_still_ordered_by_loss_without_a_note(runs, tmp_path, capsys):
    write_run(runs, "worse", [[4, 4.0]], validation_bytes=None)  # no bytes recorded: no bpb, order kept
    write_run(runs, "better", [[4, 2.0]], validation_bytes=None)
    out = tmp_path / "out"
    assert compare("--root", str(runs.parents[1]), "--out_dir", str(out)) == 0
    assert table_order(out) == ["better", "worse"]
    assert "tokenizers" not in (out / "comparison.md").read_text()
