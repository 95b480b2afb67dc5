"""Hostile round 18b, the training job: training flags in combination, and what a run folder
looks like after a kill at each of its writes, rerun with the same command."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import train_exit_code

FLAGS = ("--run_name", "r", "--max_steps", "4", "--save_steps", "2", "--eval_steps", "2",
         "--eval_max_batches", "1", "--logging_steps", "2")


def _run(root: Path) -> Path:
    return root / "09_models" / "checkpoints" / "r"


def test_a_kill_as_best_is_swapped_in_keeps_best_after_the_rerun(micro_root_copy, capsys):
    """--save_best copies the best checkpoint to .best.tmp, deletes best/ and renames the copy
    into place. Killed between the two (SIGKILL, out of memory), the run folder held checkpoint-4
    and the whole copy in .best.tmp, no best/; the rerun resumed from checkpoint-4, whose state
    already counts step 4 as the best, so no later evaluation rewrote best/."""
    assert train_exit_code(micro_root_copy, *FLAGS, "--save_best", "true") == 0
    run = _run(micro_root_copy)
    best = json.loads((run / "best" / "best_info.json").read_text())
    # the folder as the kill at step 4's swap left it: final/ and run_info.json come later
    (run / "best").rename(run / ".best.tmp")
    shutil.rmtree(run / "final")
    (run / "run_info.json").unlink()
    capsys.readouterr()
    assert train_exit_code(micro_root_copy, *FLAGS, "--save_best", "true") == 0
    assert json.loads((run / "best" / "best_info.json").read_text()) == best
    assert json.loads((run / "run_info.json").read_text())["best_step"] == best["step"]



def test_a_resume_from_an_earlier_checkpoint_moves_the_later_ones_aside(micro_root_copy, capsys):
    """Was: a run resumed by name from checkpoint-2 (going back past checkpoint-4) and stopped at
    step 3 (here to train longer, to 8: another schedule) was rerun without the name: it resumed
    the abandoned checkpoint-4 and trained on from it (the new steps dropped without a word); a
    new checkpoint-4 was written into the old folder file by file. Now what came after
    checkpoint-2 is moved aside as the resume starts, and the rerun goes on from step 3."""
    base = FLAGS[:-4] + ("--eval_steps", "20", "--eval_max_batches", "1")
    assert train_exit_code(micro_root_copy, *base) == 0
    run = _run(micro_root_copy)
    old4 = (run / "checkpoint-4" / "model.safetensors").read_bytes()
    longer = base[:2] + ("--max_steps", "8") + base[4:]
    assert train_exit_code(micro_root_copy, *longer, "--resume_from_checkpoint", "checkpoint-2",
                           "--stop_after_steps", "3") == 0
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    aside = [p for p in run.parent.iterdir() if p.name.startswith("r.previous-")]
    assert len(aside) == 1 and sorted(p.name for p in aside[0].iterdir()) == [
        "checkpoint-4", "final", "run_info.json"]
    assert (aside[0] / "checkpoint-4" / "model.safetensors").read_bytes() == old4
    capsys.readouterr()
    assert train_exit_code(micro_root_copy, *longer, "--stop_after_steps", "4") == 0
    assert "resuming from " + str(run / "checkpoint-3") in capsys.readouterr().out
    assert json.loads((run / "run_info.json").read_text())["resumed_from"] == str(run / "checkpoint-3")
