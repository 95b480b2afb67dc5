"""Hostile round 18b, the chat evaluation (``07_finetuning/evaluate_chat.py``): a chat model whose
recorded base was trained on or retrained since it was tuned from it."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from conftest import script_as_module
from londonlm.core import CHAT_INFO
from londonlm.core.errors import run_main

EVALUATE_CHAT = Path(__file__).resolve().parents[2] / "07_finetuning" / "evaluate_chat.py"
SMALL = ("--years", "1818", "--bait_limit", "1", "--max_new_tokens", "4")


def evaluate_chat_cli(*argv) -> tuple[int, str]:
    err = io.StringIO()
    with script_as_module(EVALUATE_CHAT, "evaluate_chat_r18b") as script, contextlib.redirect_stderr(err), \
            contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as stop:
        run_main(script.main, [str(a) for a in argv])
    return stop.value.code, err.getvalue()


def _project_with_its_own_base(chat_root: Path, chat_model_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the chat run (its run_info.json, final/) and of its base, the chat model's
    chat_info.json naming the copy's base as fine-tuning recorded it."""
    runs = tmp_path / "09_models" / "checkpoints"
    shutil.copytree(chat_model_dir.parent, runs / "fixture-chat", ignore=shutil.ignore_patterns("checkpoint-*"))
    base = runs / "base" / "final"
    shutil.copytree(chat_root / "09_models" / "checkpoints" / "base" / "final", base)
    chat = runs / "fixture-chat" / "final"
    info = json.loads((chat / CHAT_INFO).read_text())
    info["base_model"] = str(base)
    (chat / CHAT_INFO).write_text(json.dumps(info))
    return chat, base


def _retrain(base: Path) -> None:
    """The base run trained on: the same folder, other weights."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base))
    with torch.no_grad():
        model.transformer.ln_f.bias.add_(0.01)
    model.save_pretrained(str(base))


def test_a_base_retrained_since_the_chat_model_was_tuned_is_named_not_compared(chat_root, chat_model_dir, tmp_path):
    """Was: exit 0, a report of the chat model "against the base model it was fine-tuned from"
    made against other weights (its answer loss, bait rates and the human pack's base answers
    those of the retrained model). Now one line before any load; an explicit --base compares."""
    chat, base = _project_with_its_own_base(chat_root, chat_model_dir, tmp_path)
    code, err = evaluate_chat_cli("--model", chat, "--root", chat_root, *SMALL, "--out_dir", tmp_path / "out")
    assert code == 0, err  # (the same weights: evaluated as before)
    _retrain(base)
    code, err = evaluate_chat_cli("--model", chat, "--root", chat_root, *SMALL, "--out_dir", tmp_path / "out2")
    assert code == 2 and err.count("\n") == 1, err
    assert str(base) in err and "fine-tuned from" in err and f"--base {base}" in err
    assert not (tmp_path / "out2").exists()
    code, err = evaluate_chat_cli("--model", chat, "--root", chat_root, "--base", base, *SMALL,
                                  "--out_dir", tmp_path / "out3")
    assert code == 0, err
    assert json.loads((tmp_path / "out3" / "chat_eval.json").read_text())["base_model"] == str(base)
