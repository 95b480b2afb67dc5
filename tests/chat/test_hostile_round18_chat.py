"""Hostile round 18 on chat fine-tuning (docs/hostile_inputs.md, Round 18): a chat run another
process is training, a chat model tuned again, a time-locked base tuned on later dialogue. Each
test names what used to happen."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from londonlm.chat.finetune import ChatTrainError, chat_time_lock, finetune_chat, load_base_for_chat
from londonlm.chat.preset import ChatTrainOptions
from londonlm.core import lock_folder
from londonlm.core.layout import Layout
from londonlm.training import TrainingError

ONE_STEP = ChatTrainOptions(max_steps=1, batch_size=4, warmup_steps=0, save_steps=1, eval_steps=1, logging_steps=1)


def _quiet(*_):
    pass


def _tree(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_chat_run_another_process_trains_is_neither_moved_aside_nor_its_record_replaced(chat_root):
    # was: `finetune_chat.py --fresh` (or --overwrite, or the pipeline over changed chat settings)
    # moved the live run's checkpoints and record to live-chat.previous-*, under the training that
    # was writing them, and wrote its own "running" record; only then did the training's own lock
    # say "is being trained by process PID ..."
    layout = Layout(chat_root)
    run = layout.run("r18-live-chat")
    (run.dir / "checkpoint-2").mkdir(parents=True)
    (run.dir / "checkpoint-2" / "model.safetensors").write_bytes(b"being written")
    (run.dir / "run_info.json").write_text(json.dumps({"stage": "chat_finetune", "status": "running"}))
    before = _tree(run.dir)
    fd = lock_folder(run.dir)  # the live training's lock (flock: another open of the folder is refused)
    try:
        for fresh in (True, False):
            with pytest.raises(TrainingError, match="is being trained by"):
                finetune_chat(layout.run("base").final, layout.chat_data_dir, run, ONE_STEP, fresh=fresh,
                              log=_quiet)
            assert _tree(run.dir) == before
            assert not [p for p in layout.checkpoints_dir.iterdir() if p.name.startswith("r18-live-chat.")]
    finally:
        os.close(fd)



def test_a_chat_run_chooses_its_resume_and_trains_under_one_lock(chat_root, monkeypatch):
    # was: the run folder was locked while the resume was chosen and the record written, let go,
    # then locked again by the training: a second fine-tune starting in between passed both
    import londonlm.chat.finetune as chat_finetune

    layout = Layout(chat_root)
    run, seen = layout.run("r18-one-lock-chat"), []

    def held(what):
        fd = lock_folder(run.dir)  # (another open of the folder: refused while the run holds it)
        if fd is not None:
            os.close(fd)
        seen.append((what, fd is None))

    resume_point = chat_finetune._resume_point
    monkeypatch.setattr(chat_finetune, "_resume_point", lambda *a, **k: (held("resume"), resume_point(*a, **k))[1])

    def training(job, *a, **k):
        held("training")
        assert job.locked  # (fine_tune then takes no second lock of its own)
        raise KeyboardInterrupt("stop here")

    monkeypatch.setattr(chat_finetune, "fine_tune", training)
    with pytest.raises(KeyboardInterrupt, match="stop here"):
        finetune_chat(layout.run("base").final, layout.chat_data_dir, run, ONE_STEP, log=_quiet)
    assert seen == [("resume", True), ("training", True)]
    fd = lock_folder(run.dir)  # let go at the end
    assert fd is not None
    os.close(fd)

def test_a_chat_model_tuned_again_keeps_its_learned_role_rows(chat_model_dir, chat_root):
    # was: every role token's row set back to its starting point ("Q.", "A.", <|endoftext|>, the
    # mean row) as if new, the turn-taking the chat model had learned lost without a word
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    saved = load_file(str(chat_model_dir / "model.safetensors"))
    wte = next(v for k, v in saved.items() if k.endswith("wte.weight"))
    tok = AutoTokenizer.from_pretrained(str(chat_model_dir))
    model, _ = load_base_for_chat(chat_model_dir)
    rows = model.get_input_embeddings().weight.detach()
    for token in ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"):
        tid = tok.convert_tokens_to_ids(token)
        assert torch.equal(rows[tid], wte[tid]), token
    # (a plain base still gets its new rows started from their counterparts)
    base, base_tok = load_base_for_chat(Layout(chat_root).run("base").final)
    w = base.get_input_embeddings().weight
    assert torch.equal(w[base_tok.convert_tokens_to_ids("<|end|>")], w[base_tok.convert_tokens_to_ids("<|endoftext|>")])


def _time_locked_base(chat_root, tmp_path, cutoff: int):
    run = tmp_path / "09_models" / "checkpoints" / f"base-to{cutoff}"
    shutil.copytree(Layout(chat_root).run("base").final, run / "final")
    (run / "run_info.json").write_text(json.dumps({"corpus_time": {"cutoff_year": cutoff, "years": [1700, 1750]}}))
    return run / "final"


def test_a_time_locked_base_is_not_tuned_on_dialogue_after_its_cutoff(chat_root, tmp_path):
    # was: a base time-locked to 1800 (run_pipeline.py --cutoff_year 1800) fine-tuned on the
    # dataset's 1818 trials without a word: its chat model had read later text
    base = _time_locked_base(chat_root, tmp_path, 1800)
    run = Layout(tmp_path).run("base-to1800-chat")
    with pytest.raises(ChatTrainError, match=r"time-locked to 1800.*dated up to 1818") as e:
        finetune_chat(base, Layout(chat_root).chat_data_dir, run, ONE_STEP, log=_quiet)
    assert "\n" not in str(e.value)
    assert not run.dir.exists()


def test_a_time_locked_base_is_tuned_on_dialogue_by_its_cutoff_and_its_chat_run_stays_locked(chat_root, tmp_path):
    base = _time_locked_base(chat_root, tmp_path, 1850)
    data = Layout(chat_root).chat_data_dir
    assert chat_time_lock(base, data) == {"cutoff_year": 1850, "years": [1700, 1818]}
    assert chat_time_lock(Layout(chat_root).run("base").final, data) is None  # no cutoff: nothing to check
    run = Layout(tmp_path).run("base-to1850-chat")
    info = finetune_chat(base, data, run, ONE_STEP, log=_quiet)
    # the chat run carries the lock on (a later --init_from of it under a cutoff is checked by it)
    assert info["corpus_time"]["cutoff_year"] == 1850
    assert json.loads(run.run_info.read_text())["corpus_time"]["years"] == [1700, 1818]


def test_a_chat_run_stays_current_over_its_dataset_rebuilt_byte_for_byte(chat_root, tmp_path):
    # was: the dataset's identity was its sidecar file's hash, which holds the time of the build: a
    # dataset rebuilt as it was (--overwrite, or after damage) made the finished chat run "other
    # inputs" ("holds checkpoints made from other inputs or settings; rerun with --fresh"), and the
    # pipeline trained it again from scratch
    from londonlm.chat.dataset import ChatDatasetOptions, build_chat_dataset
    from londonlm.core import sha256_file

    data, src = tmp_path / "chat", chat_root / "src"
    build = lambda: build_chat_dataset(src, data, ChatDatasetOptions(validation_percent=34.0),  # noqa: E731
                                       overwrite=True, log=_quiet)
    build()
    base, run = Layout(chat_root).run("base").final, Layout(tmp_path).run("rebuilt-chat")
    finetune_chat(base, data, run, ONE_STEP, log=_quiet)
    build()
    lines = []
    finetune_chat(base, data, run, ONE_STEP, log=lines.append)
    assert "skipping" in lines[-1], lines
    # a run recorded before (the sidecar file's hash) is still current over that very build
    old = sha256_file(data / "sidecar.json")
    for path in (run.run_info, run.dir / "sidecar.json"):
        record = json.loads(path.read_text())
        record["inputs"]["dataset"] = old
        path.write_text(json.dumps(record))
    lines = []
    finetune_chat(base, data, run, ONE_STEP, log=lines.append)
    assert "skipping" in lines[-1], lines
