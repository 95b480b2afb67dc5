"""Hostile round 24, the training job's remaining combinations (rounds 19-21's "Not tried"): a
continued run on another tokenizer (--init_from --resize_embeddings) stopped and resumed, the
tokenizer report, token counts and LR finder over a tokenizer save killed between its renames,
and a real SIGKILL (``tests/training/hooked_train.py``, ``LONDONLM_TEST_KILL_AT``) inside final/'s
swap and inside a move aside, then the same command again."""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import script_as_module, train_exit_code
from londonlm.core.errors import run_main
from londonlm.tokens.stage import train_tokenizer_stage
from test_lr_finder_cache import find_lr

REPO = Path(__file__).resolve().parents[2]
FLAGS = ("--save_steps", "2", "--eval_steps", "2", "--eval_max_batches", "1", "--logging_steps", "2")


def _run(root: Path, name: str) -> Path:
    return root / "09_models" / "checkpoints" / name


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return x.keys() == y.keys() and all(bool((x[k] == y[k]).all()) for k in x)


def _one_error_line(err: str, *parts: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in err, err


def _tokenizer(root: Path, name: str, vocab: int) -> Path:
    out = root / "09_models" / "tokenizers" / name
    train_tokenizer_stage(root / "data" / "london_historical" / "processed", out, vocab_size=vocab,
                          min_frequency=2, era_tokens=True, model_max_length=64, log=lambda *_: None)
    return out


# --------------------------------------------------------------------------- --init_from --resize_embeddings


def test_a_resized_continued_run_stopped_and_resumed_ends_as_its_uninterrupted_twin(micro_root_copy, tmp_path,
                                                                                     capsys):
    """--init_from a run of the 512-token tokenizer onto a 600-token one, --resize_embeddings,
    stopped at step 2 and resumed by the same command: the resize is applied once (the resume
    loads the checkpoint's 600 rows) and the run ends bit for bit as the same command run through.
    Was: the new rows were drawn from torch's global generator in whatever state the process had
    left it, so two identical commands (separate processes too) trained different models; the
    resumed run ended unlike its twin (max difference 4e-3)."""
    assert train_exit_code(micro_root_copy, "--run_name", "p", "--max_steps", "2", *FLAGS) == 0
    _tokenizer(micro_root_copy, "b", 600)
    twin = tmp_path / "twin"
    shutil.copytree(micro_root_copy, twin)
    child = ("--run_name", "c", "--max_steps", "4", "--init_from", "p", "--resize_embeddings", *FLAGS)
    tok = ("--tokenizer_dir", str(micro_root_copy / "09_models" / "tokenizers" / "b"))
    capsys.readouterr()
    assert train_exit_code(micro_root_copy, *child, *tok, "--stop_after_steps", "2") == 0
    assert train_exit_code(micro_root_copy, *child, *tok) == 0
    out = capsys.readouterr().out
    assert out.count("embeddings resized to 600 rows") == 1, out
    assert "resuming the run continued from" in out
    assert train_exit_code(twin, *child, "--tokenizer_dir", str(twin / "09_models" / "tokenizers" / "b")) == 0
    run = _run(micro_root_copy, "c")
    final = load_file(run / "final" / "model.safetensors")
    assert tuple(final["transformer.wte.weight"].shape) == (600, 64)
    assert _same_weights(run / "final", _run(twin, "c") / "final")
    info = json.loads((run / "run_info.json").read_text())
    assert info["global_step"] == 4 and info["parent"]["resized_embeddings"] is True


# --------------------------------------------------------------------------- a tokenizer save killed part-way


def _kill_save_between_renames(tok: Path, processed: Path) -> None:
    """The tokenizer stage retraining ``tok`` at another size, SIGKILLed (``os._exit``, no
    ``finally``) after three of its five renames out of ``.saving-*`` (round 21's)."""
    def child():
        real, done = os.replace, [0]

        def replace(src, dst, *a, **kw):
            if ".saving-" in str(src):
                if done[0] == 3:
                    os._exit(9)
                done[0] += 1
            return real(src, dst, *a, **kw)

        os.replace = replace
        train_tokenizer_stage(processed, tok, vocab_size=400, era_tokens=True, model_max_length=64,
                              log=lambda *_: None)
        os._exit(0)

    p = multiprocessing.get_context("fork").Process(target=child)
    p.start()
    p.join(60)
    assert p.exitcode == 9 and list(tok.glob(".saving-*"))


@pytest.fixture
def killed_save(micro_root_copy) -> Path:
    """A project root whose tokenizer folder holds a save killed between its renames."""
    tok = micro_root_copy / "09_models" / "tokenizers" / "london_historical_bpe"
    _kill_save_between_renames(tok, micro_root_copy / "data" / "london_historical" / "processed")
    return micro_root_copy


def _script_exit(script: str, argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    with script_as_module(REPO / script, Path(script).stem) as mod, pytest.raises(SystemExit) as stop:
        run_main(mod.main, argv)
    return stop.value.code, capsys.readouterr().err


@pytest.mark.parametrize("script", ["03_tokenizer/test_tokenizer.py", "02_data_collection/count_tokens.py"])
def test_the_tokenizer_report_and_counts_refuse_a_save_killed_between_its_renames(killed_save, script, capsys):
    """Was: test_tokenizer.py reported on the mixture of two tokenizers (round trip 100% exact,
    exit 0), and count_tokens.py counted with it, where every run and token cache refuses it."""
    code, err = _script_exit(script, ["--root", str(killed_save)], capsys)
    assert code == 2
    _one_error_line(err, "is not the one its stage saved", "stopped part-way",
                    "03_tokenizer/train_historical_tokenizer.py --overwrite")


def test_the_lr_finder_refuses_a_save_killed_between_its_renames(killed_save, tmp_path, capsys):
    """Held: the LR finder loads the tokenizer through the plan's loader, which asks for a whole save."""
    out = tmp_path / "lr"
    capsys.readouterr()
    assert find_lr(killed_save, "--steps", "10", "--output_dir", str(out)) == 2
    _one_error_line(capsys.readouterr().err, "is not the one its stage saved", "stopped part-way")
    assert not out.exists() or not any(out.iterdir())


# --------------------------------------------------------------------------- a real SIGKILL at a write


def _killed_at(root: Path, point: str, *argv: str) -> None:
    """The training command in a process of its own (``hooked_train.py``), SIGKILLed at ``point``
    (``CALL:NAME``, :func:`testhooks.install_kill_points`)."""
    env = dict(os.environ, LONDONLM_AUTOTUNE="off", LONDONLM_TEST_KILL_AT=point)
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "training" / "hooked_train.py"), "--preset", "micro",
                           "--root", str(root), "--report_to", "none", "--disable_tqdm", "true", *argv],
                          env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-2000:] + proc.stderr[-2000:]


RUN = ("--run_name", "r", "--max_steps", "4", *FLAGS)
LONGER = ("--run_name", "r", "--max_steps", "6", *FLAGS)


@pytest.mark.slow
@pytest.mark.parametrize("point, left", [("rename:.final.tmp", [".final.old", ".final.tmp"]),
                                         ("rmtree:.final.old", [".final.old", "final"])])
def test_a_real_sigkill_inside_finals_swap_then_the_same_command(micro_root_copy, point, left, capsys):
    """Held: a finished run extended (--max_steps 6 after 4), SIGKILLed inside final/'s swap
    (between its two renames: final/ gone, the old one in .final.old, the new whole in .final.tmp;
    or one file into the delete of .final.old), then the same command: final/ is step 6's
    (checkpoint-6's weights) with its tokenizer, nothing is left beside it, and the record says
    step 6, finished."""
    assert train_exit_code(micro_root_copy, *RUN) == 0
    run = _run(micro_root_copy, "r")
    _killed_at(micro_root_copy, point, *LONGER)
    assert sorted(p.name for p in run.iterdir() if "final" in p.name) == left
    assert json.loads((run / "run_info.json").read_text())["interrupted"]  # unvouched: not finished
    capsys.readouterr()
    assert train_exit_code(micro_root_copy, *LONGER) == 0
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []
    assert (run / "final" / "tokenizer.json").is_file() and _same_weights(run / "final", run / "checkpoint-6")
    info = json.loads((run / "run_info.json").read_text())
    assert info["global_step"] == 6 and not info["interrupted"]


def _previous(run: Path) -> list[Path]:
    return sorted(p for p in run.parent.iterdir() if p.name.startswith(f"{run.name}.previous-"))


@pytest.mark.slow
def test_a_real_sigkill_inside_freshs_move_aside_then_the_same_command(micro_root_copy, capsys):
    """Held: --fresh SIGKILLed before it moved checkpoint-4 (run_info.json already moved), then the
    same command: the move is finished into the same folder, which holds the whole old run, and
    the new run trains in the emptied folder."""
    assert train_exit_code(micro_root_copy, *RUN) == 0
    run = _run(micro_root_copy, "r")
    old = sorted(p.name for p in run.iterdir() if p.name != "pretokenized_data")
    old_final = load_file(run / "final" / "model.safetensors")
    _killed_at(micro_root_copy, "move:checkpoint-4", *RUN, "--fresh")
    assert (run / "checkpoint-4").is_dir() and not (run / "run_info.json").exists()
    capsys.readouterr()
    assert train_exit_code(micro_root_copy, *RUN, "--fresh") == 0
    assert "was cut short; finished it" in capsys.readouterr().out
    (aside,) = _previous(run)
    assert sorted(p.name for p in aside.iterdir()) == old
    moved = load_file(aside / "final" / "model.safetensors")
    assert all(bool((moved[k] == old_final[k]).all()) for k in old_final)
    assert json.loads((run / "run_info.json").read_text())["resumed_from"] is None


@pytest.mark.slow
def test_a_real_sigkill_inside_a_resumes_move_of_later_checkpoints(micro_root_copy, capsys):
    """Held: --resume_from_checkpoint checkpoint-2 of a finished 4-step run, SIGKILLed as it moved
    what came after (run_info.json moved, checkpoint-4 not yet), then rerun without the name (the
    launcher's default): the move is finished first, so the run resumes checkpoint-2, not the
    abandoned checkpoint-4, and the later part of the old run is in one folder."""
    assert train_exit_code(micro_root_copy, *RUN) == 0
    run = _run(micro_root_copy, "r")
    _killed_at(micro_root_copy, "move:checkpoint-4", *RUN, "--resume_from_checkpoint", "checkpoint-2")
    capsys.readouterr()
    assert train_exit_code(micro_root_copy, *RUN) == 0
    out = capsys.readouterr().out
    assert "was cut short; finished it" in out and f"resuming from {run / 'checkpoint-2'}" in out
    (aside,) = _previous(run)
    assert sorted(p.name for p in aside.iterdir()) == ["checkpoint-4", "final", "run_info.json"]
    info = json.loads((run / "run_info.json").read_text())
    assert info["global_step"] == 4 and info["resumed_from"].endswith("checkpoint-2")
