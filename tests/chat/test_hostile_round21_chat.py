"""Hostile round 21 on chat fine-tuning and answering (docs/hostile_inputs.md, Round 21): a move
aside that a kill cut short is finished by the next chat run, as by the next training; a
time-locked chat model is asked only about eras up to its cutoff."""
from __future__ import annotations

import json
import shutil

import httpx
import pytest

from conftest import REPO, serving_in_thread
from script_fuzz import completed_in_process
from test_hostile_round18_chat import _time_locked_base  # (a base whose run names a cutoff)
from londonlm.chat.finetune import finetune_chat
from londonlm.chat.preset import ChatTrainOptions
from londonlm.chat.respond import ChatRequestError, ChatSettings, chat_cutoff, check_year, with_era
from londonlm.core import CHAT_INFO
from londonlm.core.layout import Layout
from londonlm.generation import load_model
from londonlm.serving import create_app
from londonlm.serving.repl import ChatSession
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


def test_a_time_locked_chat_model_carries_its_cutoff_in_its_folder(chat_root, tmp_path):
    # was: only the chat run's run_info.json knew the cutoff; the model folder (served, exported,
    # published alone) said nothing of it, and nothing that answers read it
    run = Layout(tmp_path).run("base-to1850-chat")
    finetune_chat(_time_locked_base(chat_root, tmp_path, 1850), Layout(chat_root).chat_data_dir, run, ONE_STEP,
                  log=lambda *_: None)
    assert json.loads((run.final / CHAT_INFO).read_text())["cutoff_year"] == 1850
    moved = shutil.copytree(run.final, tmp_path / "alone")  # no run folder around it
    assert chat_cutoff(run.final) == chat_cutoff(moved) == 1850
    assert chat_cutoff(Layout(chat_root).run("base").final) is None


@pytest.fixture(scope="module")
def locked_chat(chat_model_dir, tmp_path_factory):
    """The chat fixture as a model time-locked to 1760 (before the default era, 1800)."""
    folder = shutil.copytree(chat_model_dir, tmp_path_factory.mktemp("locked") / "model")
    info = json.loads((folder / CHAT_INFO).read_text()) if (folder / CHAT_INFO).exists() else {}
    (folder / CHAT_INFO).write_text(json.dumps({**info, "cutoff_year": 1760}))
    return folder


def test_a_time_locked_chat_model_is_asked_about_no_era_past_its_cutoff(locked_chat, tmp_path):
    # was: a model locked to 1760 answered "as of 1900" on the server, --year and /year, and a
    # request naming no year was set in 1800 (the default era), past its cutoff
    assert check_year(1760, 1760) == 1760 and check_year(1900) == 1900
    with pytest.raises(ChatRequestError, match=r"from 1674 to 1760 .*time-locked to 1760\), got 1761"):
        check_year(1761, 1760)
    line = with_era([{"role": "user", "content": "?"}], None, cutoff=1760)[0]["content"]
    assert "1760" in line and "1800" not in line
    assert "1800" in with_era([{"role": "user", "content": "?"}], None)[0]["content"]

    session = ChatSession(ChatSettings(), cutoff=1760)
    assert "1760" in session.system_line()
    with pytest.raises(ChatRequestError, match="time-locked to 1760"):
        session.command("/year 1800")

    lm = load_model(str(locked_chat), device="cpu")
    with serving_in_thread(create_app(lm=lm)) as url:
        def ask(**body):
            return httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
                "model": lm.model_id, "messages": [{"role": "user", "content": "Who are you?"}],
                "max_tokens": 2, **body})

        late = ask(year=1800)
        assert late.status_code == 400 and late.json()["error"]["param"] == "year"
        assert "time-locked to 1760" in late.json()["error"]["message"]
        assert ask(year=1760).status_code == 200 and ask().status_code == 200

    done = completed_in_process(REPO / "06_inference" / "inference_unified.py",
                                ["--chat", "--model", str(locked_chat), "--year", "1800", "--prompt", "Who?",
                                 "--device", "cpu"], tmp_path, env={"LONDONLM_ROOT": str(tmp_path)})
    assert done.returncode == 2 and "time-locked to 1760" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error:")
