"""Hostile round 21 on chat fine-tuning (docs/hostile_inputs.md, Round 21): a move aside that a
kill cut short is finished by the next chat run, as by the next training."""
from __future__ import annotations

import json

from londonlm.chat.finetune import finetune_chat
from londonlm.chat.preset import ChatTrainOptions
from londonlm.core.layout import Layout
from londonlm.training.resume import MOVING

ONE_STEP = ChatTrainOptions(max_steps=1, batch_size=4, warmup_steps=0, save_steps=1, eval_steps=1, logging_steps=1)


def test_a_chat_runs_move_aside_cut_short_is_finished_before_it_trains(chat_root):
    # was: only the pre-training run finished a cut move; `finetune_chat.py --fresh` after a kill
    # in its own move aside sent the part left behind to a second previous folder (the old run in
    # two places), and a plain rerun resumed or skipped the part left behind as it stood
    layout = Layout(chat_root)
    run = layout.run("r21-cut-chat")
    aside = layout.checkpoints_dir / "r21-cut-chat.previous-1"
    (aside / "checkpoint-1").mkdir(parents=True)
    (aside / "checkpoint-1" / "model.safetensors").write_bytes(b"moved first")
    (run.dir / "checkpoint-2").mkdir(parents=True)
    (run.dir / "checkpoint-2" / "model.safetensors").write_bytes(b"left behind")
    (run.dir / "trainer_log.jsonl").write_text("{}\n")
    (aside / MOVING).write_text(json.dumps({"names": ["run_info.json", "checkpoint-1", "checkpoint-2",
                                                      "trainer_log.jsonl"]}))
    logged = []
    finetune_chat(layout.run("base").final, layout.chat_data_dir, run, ONE_STEP, fresh=True, log=logged.append)
    previous = [p.name for p in layout.checkpoints_dir.iterdir() if p.name.startswith("r21-cut-chat.")]
    assert previous == [aside.name]
    assert sorted(p.name for p in aside.iterdir()) == ["checkpoint-1", "checkpoint-2", "trainer_log.jsonl"]
    assert (aside / "checkpoint-2" / "model.safetensors").read_bytes() == b"left behind"
    assert (run.final / "config.json").is_file()
