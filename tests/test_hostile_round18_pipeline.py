"""Hostile round 18 on the one-command pipeline and families (docs/hostile_inputs.md, Round 18).
Each test names what used to happen."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import write_old_bailey_tei
from test_pipeline import _tiny_config


def _time_locked_chat_plan(chat_root, tmp_path, mode: str):
    """A pipeline plan whose base run (``r``) was time-locked to 1800, its chat step on Old Bailey
    TEI of 1756 and 1818."""
    from londonlm.chat.preset import ChatTrainOptions
    from londonlm.core.layout import Layout
    from londonlm.pipeline import ChatStep, PipelinePlan

    layout = Layout(tmp_path)
    base = layout.run("r")
    if not base.final.exists():
        shutil.copytree(Layout(chat_root).run("base").final, base.final)
        base.run_info.write_text(json.dumps({"corpus_time": {"cutoff_year": 1800, "years": [1700, 1790]}}))
    step = ChatStep(mode, write_old_bailey_tei(tmp_path / "tei"), layout.chat_data_dir, layout.chat_run("r"),
                    ChatTrainOptions(max_steps=1, batch_size=4, warmup_steps=0, save_steps=1, eval_steps=1))
    return PipelinePlan(tmp_path / "p", tmp_path / "m", tmp_path / "tok", _tiny_config(tmp_path),
                        512, 8, 2, False, 5.0, 10, (1500, 1900), chat=step)


def test_a_time_locked_pipeline_leaves_out_a_chat_step_on_later_dialogue(chat_root, tmp_path):
    # was: `run_pipeline.py --cutoff_year 1800 --chat auto` with Proceedings of 1818 fine-tuned
    # the time-locked model on them (micro-to1800-chat), a model that had read later text
    from londonlm.chat.dataset import ChatDataError
    from londonlm.pipeline import _chat_stage

    lines = []
    assert _chat_stage(_time_locked_chat_plan(chat_root, tmp_path, "auto"), log=lines.append) is None
    skipped = [line for line in lines if line.startswith("chat: skipped (")]
    assert len(skipped) == 1 and "time-locked to 1800" in skipped[0] and "1818" in skipped[0], lines
    with pytest.raises(ChatDataError, match=r"--chat on: the base model .* time-locked to 1800"):
        _chat_stage(_time_locked_chat_plan(chat_root, tmp_path, "on"), log=lines.append)
    assert not (tmp_path / "09_models" / "checkpoints" / "r-chat").exists()


def test_the_chat_evaluation_stays_current_over_its_dataset_rebuilt_byte_for_byte(chat_root, tmp_path):
    # was: the chat evaluation was keyed on the dataset sidecar file's hash, which holds the time of
    # the build: a dataset rebuilt as it was (--overwrite, or after damage) ran the evaluation again
    # (minutes on a real model) although the chat run beside it was current
    from londonlm.chat.dataset import build_chat_dataset
    from londonlm.pipeline import _chat_stage

    plan = _time_locked_chat_plan(chat_root, tmp_path, "on")
    plan.run.run_info.write_text("{}")  # (no cutoff: the dialogue of 1818 is the base's to learn)
    assert _chat_stage(plan, log=lambda _m: None) is not None
    build_chat_dataset(plan.chat.source_dir, plan.chat.data_dir, plan.chat.dataset_options, overwrite=True,
                       log=lambda _m: None)
    lines = []
    _chat_stage(plan, log=lines.append)
    assert any(line.startswith("chat evaluation: outputs are current") for line in lines), lines
