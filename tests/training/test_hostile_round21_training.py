"""Hostile round 21, the training job's run folder and the tokenizer folder it reads, after a
kill at one of their writes (round 19's and 20's "Not changed"): a tokenizer save cut between its
renames, final/'s swap, the record after a new final/, and --fresh's move aside. Each kill is a
BaseException raised at that write (no ``except Exception`` catches it, and nothing after it runs:
what a SIGKILL leaves, but for the ``finally`` blocks), then a rerun."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import train_exit_code
from test_hostile_round24_training import _kill_save_between_renames
from londonlm.training import record, resume

FLAGS = ("--run_name", "r", "--max_steps", "4", "--save_steps", "2", "--eval_steps", "2",
         "--eval_max_batches", "1", "--logging_steps", "2")
LONGER = FLAGS[:2] + ("--max_steps", "6") + FLAGS[4:]


class Killed(BaseException):
    """The process killed at this point."""


def _run(root: Path) -> Path:
    return root / "09_models" / "checkpoints" / "r"


def _one_error_line(err: str, *parts: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for part in parts:
        assert part in err, err


def test_training_refuses_a_tokenizer_whose_save_was_killed_between_its_renames(micro_root_copy, capsys):
    """The tokenizer stage, retraining at another --vocab_size, killed after three of its five
    renames: the new merges.txt, special_tokens_map.json and tokenizer.json beside the old
    tokenizer_config.json and vocab.json, no sidecar. Was: the run trained on the mixture."""
    tok = micro_root_copy / "09_models" / "tokenizers" / "london_historical_bpe"
    proc = micro_root_copy / "data" / "london_historical" / "processed"

    _kill_save_between_renames(tok, proc)
    capsys.readouterr()
    assert train_exit_code(micro_root_copy, *FLAGS) == 2
    _one_error_line(capsys.readouterr().err, f"the tokenizer in {tok} is not the one its stage saved",
                    "stopped part-way", "03_tokenizer/train_historical_tokenizer.py --overwrite")
    assert not _run(micro_root_copy).exists()


def test_a_kill_as_final_is_swapped_never_leaves_a_final_cut_short(micro_root_copy, monkeypatch, capsys):
    """A finished run extended (--max_steps 6 after 4), killed while final/'s swap deleted a
    folder, rerun as first asked (--max_steps 4). Was: the old final/ was deleted in place, so
    the kill left one holding config and weights but no tokenizer, and the rerun skipped the run
    as finished over it (exit 0). Now the old final/ is renamed aside before the new one goes in:
    final/ is whole at every point, the record no longer calls it finished, and the rerun is
    refused in one line (the run folder holds step 6)."""
    assert train_exit_code(micro_root_copy, *FLAGS) == 0
    run = _run(micro_root_copy)
    real = shutil.rmtree

    def rmtree(path, *a, **kw):
        path = Path(path)
        if path.name in ("final", ".final.old") and path.is_dir():
            (path / "tokenizer.json").unlink()  # the delete under way ...
            raise Killed                        # ... when the process dies
        return real(path, *a, **kw)

    monkeypatch.setattr(record.shutil, "rmtree", rmtree)
    with pytest.raises(Killed):
        train_exit_code(micro_root_copy, *LONGER)
    monkeypatch.setattr(record.shutil, "rmtree", real)
    capsys.readouterr()
    assert train_exit_code(micro_root_copy, *FLAGS) == 2
    _one_error_line(capsys.readouterr().err, "--max_steps 4 ends the run before the step it resumes at (6)")
    assert (run / "final" / "tokenizer.json").is_file() and not (run / ".final.old").exists()
    # the command that extended it ends the run as it would have
    assert train_exit_code(micro_root_copy, *LONGER) == 0
    info = json.loads((run / "run_info.json").read_text())
    assert info["global_step"] == 6 and not info["interrupted"]


def test_a_kill_between_a_new_final_and_its_record_is_not_finished(micro_root_copy, monkeypatch, capsys):
    """The same extension killed after the new final/ (step 6) was in place, before its
    run_info.json. Was: rerun with --max_steps 4, "finished earlier ...; skipped" (exit 0) under
    the step-4 record, while final/ held step 6's weights."""
    assert train_exit_code(micro_root_copy, *FLAGS) == 0
    run = _run(micro_root_copy)
    real = record.write_json_atomic

    def write(path, obj):
        if Path(path).name == "run_info.json" and obj.get("global_step") == 6:
            raise Killed
        return real(path, obj)

    monkeypatch.setattr(record, "write_json_atomic", write)
    with pytest.raises(Killed):
        train_exit_code(micro_root_copy, *LONGER)
    monkeypatch.setattr(record, "write_json_atomic", real)
    # the step-4 record no longer vouches for final/, which holds step 6's weights
    assert json.loads((run / "run_info.json").read_text())["interrupted"] == record.REPLACING_FINAL
    capsys.readouterr()
    assert train_exit_code(micro_root_copy, *FLAGS) == 2
    _one_error_line(capsys.readouterr().err, "--max_steps 4 ends the run before the step it resumes at (6)")


def test_a_kill_inside_freshs_move_aside_is_finished_by_the_rerun(micro_root_copy, monkeypatch, capsys):
    """--fresh killed after two of its moves. Was: the old run split between the run folder and
    r.previous-*; rerun with --fresh, the rest went to a second previous folder. Now the rerun
    ends the first move (the folder lists what it moves), so the old run is in one place."""
    assert train_exit_code(micro_root_copy, *FLAGS) == 0
    run = _run(micro_root_copy)
    old = sorted(p.name for p in run.iterdir() if p.name != "pretokenized_data")
    real, moves = shutil.move, [0]

    def move(src, dst, *a, **kw):
        if moves[0] == 2:
            raise Killed
        moves[0] += 1
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(resume.shutil, "move", move)
    with pytest.raises(Killed):
        train_exit_code(micro_root_copy, *FLAGS, "--fresh")
    monkeypatch.setattr(resume.shutil, "move", real)
    # run_info.json went first: the part left behind is no finished run to skip meanwhile
    assert not (run / "run_info.json").exists()
    capsys.readouterr()
    assert train_exit_code(micro_root_copy, *FLAGS, "--fresh") == 0
    assert "was cut short; finished it" in capsys.readouterr().out
    aside = [p for p in run.parent.iterdir() if p.name.startswith("r.previous-")]
    assert len(aside) == 1 and sorted(p.name for p in aside[0].iterdir()) == old
    assert json.loads((run / "run_info.json").read_text())["resumed_from"] is None
