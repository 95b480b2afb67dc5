"""Chat fine-tuning: packed conversations never attend to each other, answer-only loss,
the Trainer run with its artifacts, resume from a checkpoint, stock pipeline use."""
from __future__ import annotations

import json
import shutil

import pytest

from londonlm.chat.finetune import (
    ChatCollator, ChatTrainError, ChatTrainOptions, finetune_chat, pack, unpacked)
from londonlm.chat.template import IGNORE, ChatEncoding
from londonlm.core.layout import CHAT_INFO, SIDECAR, Layout, RunLayout
from londonlm.training import TrainingError

QUIET = dict(log=lambda *_: None)


def in_precision(precision: str):
    """What ``--bf16 true|false`` asks of a chat run (the training package's request)."""
    from londonlm.training import JobRequest, SpeedRequest, SpeedSettings, default_autotune

    return JobRequest(speed=SpeedRequest(autotune=default_autotune(), given=SpeedSettings(precision)))
OPTS = ChatTrainOptions(max_steps=4, batch_size=4, learning_rate=3e-3, warmup_steps=1, save_steps=2,
                        eval_steps=2, logging_steps=1, save_total_limit=5)


def _layout(root):
    return Layout(root)


def _micro_model(vocab=128, positions=64):
    from londonlm.training.model import ModelShape, build_model

    return build_model(ModelShape(2, 2, 32, positions, vocab), 0, 0, 1, seed=0).eval()


def _enc(ids, learn_from=1):
    return ChatEncoding(list(ids), [IGNORE] * learn_from + list(ids[learn_from:]), [True] * len(ids))


def test_packed_conversations_do_not_attend_to_each_other():
    import torch

    model = _micro_model()
    a, b = _enc([0, 5, 6, 7, 8, 9]), _enc([0, 20, 21, 22, 23])
    row = pack([a, b], 64)
    assert len(row) == 1 and row[0]["position_ids"] == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4]
    batch = ChatCollator(pad_id=1)(row)
    with torch.no_grad():
        packed = model(**batch).logits[0]
        alone_a = model(input_ids=torch.tensor([a.input_ids])).logits[0]
        alone_b = model(input_ids=torch.tensor([b.input_ids])).logits[0]
    assert torch.allclose(packed[:6], alone_a, atol=1e-5)
    assert torch.allclose(packed[6:], alone_b, atol=1e-5)  # fails if b could see a


def test_packed_and_padded_batches_give_the_same_loss():
    import torch

    model = _micro_model()
    encs = [_enc([0, 5, 6, 7, 8, 9], 3), _enc([0, 20, 21, 22, 23], 2), _enc([0, 30, 31], 1)]
    collate = ChatCollator(pad_id=1)
    with torch.no_grad():
        packed = model(**collate(pack(encs, 12))).loss
        padded = model(**collate(unpacked(encs))).loss
    assert len(pack(encs, 12)) == 2
    assert torch.allclose(packed, padded, atol=1e-5)


def test_fine_tune_writes_a_chat_model_that_stock_tools_use(chat_root, precision):
    """In both precisions on any CPU: bf16 used to crash on CPUs with native bf16, where the
    chat trainer built TrainingArguments without use_cpu."""
    from transformers import AutoTokenizer, pipeline

    layout = _layout(chat_root)
    run = layout.run(f"base-{precision}-chat")
    info = finetune_chat(layout.run("base").final, layout.chat_data_dir, run, OPTS,
                         request=in_precision(precision), **QUIET)
    assert info["global_step"] == 4 and info["status"] == "finished"
    assert info["precision"] == precision
    assert info["data"]["train"]["answer_tokens"] > 0 and info["eval_answer_loss"] is not None
    assert json.loads((run.final / CHAT_INFO).read_text())["years"] == [1756, 1818]
    assert json.loads((run.dir / SIDECAR).read_text())["stage"] == "chat_finetune"
    tok = AutoTokenizer.from_pretrained(str(run.final))
    assert tok.chat_template and "<|assistant|>" in tok.get_vocab()
    chat = pipeline("text-generation", model=str(run.final), tokenizer=str(run.final))
    out = chat([{"role": "system", "content": "Old Bailey, London, 1818."},
                {"role": "user", "content": "Where do you live?"}], max_new_tokens=5, do_sample=False)
    assert out[0]["generated_text"][-1]["role"] == "assistant"
    logs = []
    finetune_chat(layout.run("base").final, layout.chat_data_dir, run, OPTS, request=in_precision(precision),
                  log=logs.append)
    assert "skipping" in logs[-1]


def test_resume_from_a_checkpoint_matches_an_uninterrupted_run(chat_root, tmp_path, precision):
    import torch
    from safetensors.torch import load_file

    layout = _layout(chat_root)
    run = layout.run(f"resume-{precision}-chat")
    base = layout.run("base").final
    opts, request = OPTS, in_precision(precision)
    finetune_chat(base, layout.chat_data_dir, run, opts, request=request, **QUIET)
    whole = load_file(str(run.final / "model.safetensors"))
    # an interrupted run: checkpoint-2 written, nothing after it
    shutil.rmtree(run.final)
    shutil.rmtree(run.checkpoint(4))
    (run.dir / SIDECAR).unlink()
    logs = []
    info = finetune_chat(base, layout.chat_data_dir, run, opts, request=request, log=logs.append)
    assert any("resuming from" in m and "checkpoint-2" in m for m in logs)
    assert info["global_step"] == 4
    resumed = load_file(str(run.final / "model.safetensors"))
    assert all(torch.allclose(whole[k], resumed[k], atol=1e-6) for k in whole)


def test_checkpoints_of_other_settings_are_not_resumed(chat_root):
    layout = _layout(chat_root)
    run = layout.run("changed-chat")
    base = layout.run("base").final
    finetune_chat(base, layout.chat_data_dir, run, OPTS, **QUIET)
    shutil.rmtree(run.final)
    (run.dir / SIDECAR).unlink()
    other = ChatTrainOptions(**{**OPTS.__dict__, "learning_rate": 1e-3})
    with pytest.raises(ChatTrainError, match="--fresh"):
        finetune_chat(base, layout.chat_data_dir, run, other, **QUIET)
    info = finetune_chat(base, layout.chat_data_dir, run, other, fresh=True, **QUIET)
    assert info["global_step"] == 4
    assert any(p.name.startswith("changed-chat.previous-") for p in layout.checkpoints_dir.iterdir())


def test_a_broken_base_model_is_refused(chat_root, tmp_path):
    layout = _layout(chat_root)
    broken = tmp_path / "broken"
    shutil.copytree(layout.run("base").final, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(ChatTrainError, match="model weights missing"):
        finetune_chat(broken, layout.chat_data_dir, layout.run("x-chat"), OPTS, **QUIET)


def _script(name):
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location(name, REPO / "07_finetuning" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_stage_scripts_fine_tune_from_a_run_name_and_evaluate(chat_root):
    from londonlm.core.errors import UsageError

    root = str(chat_root)
    ft = _script("finetune_chat")
    layout = Layout(chat_root)
    assert ft.chat_run_name(layout, layout.run("base").final, "base") == "base-chat"
    assert ft.main(["--preset", "micro", "--init_from", "base", "--max_steps", "2", "--run_name", "script-chat",
                    "--root", root]) == 0
    run = layout.run("script-chat")
    assert run.has_final()
    ev = _script("evaluate_chat")
    assert ev.main(["--model", "script-chat", "--years", "1818", "--bait_limit", "1", "--max_new_tokens", "4",
                    "--root", root]) == 0
    report = json.loads((run.evaluation_dir / "chat_eval.json").read_text())
    assert report["base_model"].endswith("base/final") and report["bait"]["all"]["questions"] == 1
    # the human evaluation pack gains the chat transcripts, blind, with the weights in its key
    key = json.loads((run.evaluation_dir / "human_eval" / "blind_key.json").read_text())
    assert {"script-chat (chat answers)", "base model (modern-bait answers)"} <= {
        k["model"] for k in key["items"].values()}
    assert key["models"]["script-chat (chat answers)"]["weights_sha256"]
    with pytest.raises(UsageError, match="not a chat model"):
        ev.main(["--model", "base", "--root", root])
    with pytest.raises(UsageError, match="--max_steps: must be at least 1"):
        ft.main(["--preset", "micro", "--init_from", "base", "--max_steps", "0", "--root", root])


def _run_info(chat_root, name):
    return json.loads((Layout(chat_root).run(name).run_info).read_text())


def test_the_chat_script_takes_the_training_flags(chat_root, precision):
    """--bf16 true|false, --optim, --gradient_accumulation_steps and any other Trainer flag
    (--adam_beta2) mean what they mean for pre-training."""
    from conftest import precision_flags

    ft = _script("finetune_chat")
    name = f"flags-{precision}-chat"
    assert ft.main(["--preset", "micro", "--init_from", "base", "--max_steps", "2", "--run_name", name,
                    "--gradient_accumulation_steps", "2", "--optim", "muon", "--adam_beta2", "0.9",
                    "--root", str(chat_root), *precision_flags(precision)]) == 0
    info = _run_info(chat_root, name)
    assert (info["precision"], info["optimizer"], info["global_step"]) == (precision, "muon", 2)
    assert info["settings"]["grad_accum"] == 2 and info["settings"]["trainer"]["adam_beta2"] == 0.9
    # 2 steps x 4 rows (the micro chat preset's batch) x 2 accumulated micro-batches
    assert info["tokens_seen"] == 2 * 4 * 2 * info["data"]["max_length"]
    # its seconds away from the steps, as pre-training records them: the last step's checkpoint
    assert info["pauses"]["checkpoints"] >= 1 and info["pauses"]["checkpoint_seconds"] > 0, info["pauses"]


def test_a_chat_run_stops_after_steps_then_the_same_command_resumes(chat_root):
    ft = _script("finetune_chat")
    common = ["--preset", "micro", "--init_from", "base", "--max_steps", "4", "--save_steps", "2",
              "--run_name", "chunked-chat", "--root", str(chat_root), "--bf16", "false"]
    assert ft.main([*common, "--stop_after_steps", "2"]) == 0
    info = _run_info(chat_root, "chunked-chat")
    assert "stop_after_steps" in info["interrupted"] and info["status"] == "stopped"
    assert not Layout(chat_root).run("chunked-chat").has_final()
    assert ft.main(common) == 0  # per-invocation flags do not count as changed settings
    info = _run_info(chat_root, "chunked-chat")
    assert info["status"] == "finished" and info["resumed_from"].endswith("checkpoint-2")
    assert info["global_step"] == 4


def test_a_chat_run_whose_final_was_damaged_writes_it_again_from_its_last_checkpoint(chat_root):
    """A current record beside a final/ cut short was skipped as current (the damaged model
    kept until --overwrite); now the run resumes from its last step's checkpoint and takes no
    step past it: final/ is that checkpoint's model."""
    ft = _script("finetune_chat")
    argv = ["--preset", "micro", "--init_from", "base", "--max_steps", "4", "--save_steps", "2",
            "--run_name", "mended-chat", "--root", str(chat_root), "--bf16", "false"]
    assert ft.main(argv) == 0
    run = Layout(chat_root).run("mended-chat")
    weights = run.final / "model.safetensors"
    last = (run.checkpoint(4) / "model.safetensors").read_bytes()
    weights.write_bytes(weights.read_bytes()[:1000])
    assert not run.has_final()
    assert ft.main(argv) == 0
    info = _run_info(chat_root, "mended-chat")
    assert run.has_final() and weights.read_bytes() == last
    assert info["status"] == "finished" and info["global_step"] == 4 and not run.checkpoint(5).exists()


def test_a_chat_run_to_a_time_budget_ends_with_final(chat_root):
    ft = _script("finetune_chat")
    assert ft.main(["--preset", "micro", "--init_from", "base", "--time_budget", "6", "--warmup_steps", "1",
                    "--run_name", "budget-chat", "--root", str(chat_root)]) == 0
    info = _run_info(chat_root, "budget-chat")
    fit = info["time_budget"]
    assert info["status"] == "finished" and info["global_step"] == fit["fitted_total_steps"] > 1
    assert Layout(chat_root).run("budget-chat").has_final()


def test_a_chat_run_sized_in_passes_over_its_rows(chat_root):
    """--num_train_epochs: the steps that read the training rows that many times over (the
    Trainer ignored it beside the preset's max_steps), as pre-training's; the warm-up the preset's
    share of them where shorter."""
    import math

    ft = _script("finetune_chat")
    assert ft.main(["--preset", "micro", "--init_from", "base", "--num_train_epochs", "1.5",
                    "--run_name", "passes-chat", "--root", str(chat_root), "--bf16", "false"]) == 0
    info = _run_info(chat_root, "passes-chat")
    rows, batch = info["data"]["train_rows"], info["settings"]["batch_size"]
    assert info["global_step"] == info["max_steps"] == math.ceil(math.ceil(1.5 * rows) / batch)
    assert info["settings"]["trainer"]["passes"] == 1.5
    assert "num_train_epochs" not in info["settings"]["trainer"]


@pytest.mark.parametrize("argv, why", [
    (["--bf16", "maybe"], "bf16"),
    (["--optim", "sgd-ish"], "optim"),
    (["--gradient_accumulation_steps", "0"], "gradient_accumulation_steps"),
    (["--learning_rate", "-1"], "learning_rate"),
    (["--time_budget", "-5"], "time_budget"),
    (["--max_step", "3"], "max_step"),   # no abbreviations: a typo is not another flag
    (["--save_best"], "--save_best is pre-training's"),  # parsed with run control, acted on by pre-training
    (["--early_stopping_patience", "2"], "--early_stopping_patience is pre-training's"),
    (["--num_train_epochs", "2", "--max_steps", "3"], "--num_train_epochs and --max_steps both set"),
])
def test_bad_chat_flags_are_one_line_errors(chat_root, argv, why, capsys):
    from londonlm.core.errors import run_main

    ft = _script("finetune_chat")
    with pytest.raises(SystemExit) as stop:
        run_main(ft.main, ["--preset", "micro", "--init_from", "base", "--root", str(chat_root), *argv])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and why in err and "Traceback" not in err, err


def test_a_chat_checkpoint_with_damaged_optimizer_state_is_skipped_and_none_left_is_refused(chat_root):
    layout = _layout(chat_root)
    run = layout.run("damaged-chat")
    base = layout.run("base").final
    stopped = ChatTrainOptions(**{**OPTS.__dict__, "max_steps": 6})
    from londonlm.training import JobRequest
    from londonlm.training.job import RunControl

    request = JobRequest(control=RunControl(stop_after_steps=4))
    finetune_chat(base, layout.chat_data_dir, run, stopped, request=request, **QUIET)
    opt = run.checkpoint(4) / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[:100])  # was a RuntimeError from torch.load mid-resume
    logs = []
    info = finetune_chat(base, layout.chat_data_dir, run, stopped, request=request, log=logs.append)
    assert any("skipping" in m and "checkpoint-4" in m for m in logs)
    assert info["resumed_from"].endswith("checkpoint-2")
    for ck in run.checkpoints():  # nothing resumable left, the stopped run's record beside them
        w = ck / "model.safetensors"
        w.write_bytes(w.read_bytes()[:1000])
    record = run.run_info.read_bytes()
    with pytest.raises(ChatTrainError, match="earlier chat run.*--fresh"):
        finetune_chat(base, layout.chat_data_dir, run, stopped, request=request, **QUIET)
    assert run.run_info.read_bytes() == record


def test_a_chat_run_from_a_diverged_base_is_refused_without_final(chat_root, tmp_path):
    """A base whose weights are NaN (a diverged run) is refused before fine-tuning starts (the
    model interface's check); a run that diverges itself stops at its first NaN loss (the
    finite-loss check pre-training shares)."""
    from safetensors.torch import load_file, save_file

    layout = _layout(chat_root)
    nan_base = tmp_path / "nan-base"
    shutil.copytree(layout.run("base").final, nan_base)
    weights = load_file(str(nan_base / "model.safetensors"))
    save_file({k: v * float("nan") for k, v in weights.items()}, str(nan_base / "model.safetensors"))
    run = layout.run("nan-chat")
    from londonlm.generation import DamagedModel

    with pytest.raises(DamagedModel, match="NaN or infinite"):
        finetune_chat(nan_base, layout.chat_data_dir, run, OPTS, **QUIET)
    assert not run.final.exists()


def test_output_dir_is_the_chat_run_folder(chat_root, tmp_path):
    """As pre-training's: the Trainer's --output_dir was accepted and ignored (the model went to
    <base>-chat under the runs folder, the folder named stayed empty)."""
    ft = _script("finetune_chat")
    out = tmp_path / "my-chat"
    assert ft.main(["--preset", "micro", "--init_from", "base", "--max_steps", "1", "--output_dir", str(out),
                    "--root", str(chat_root)]) == 0
    assert RunLayout(out).has_final() and not Layout(chat_root).run("base-chat").has_final()


def test_an_output_dir_that_is_another_artifacts_folder_is_refused_before_anything_is_written(chat_root, tmp_path,
                                                                                               capsys):
    """Was: the chat run trained into the folder named, its checkpoints and final/ among the
    files there, and its sidecar.json replaced the tokenizer's or the dataset's (whose own stage
    then refused its folder as chat_finetune's); into the base model's final/ as final/final."""
    from conftest import tree_digest

    from londonlm.core.errors import run_main

    ft = _script("finetune_chat")
    layout = _layout(chat_root)
    data, base = tmp_path / "chat-data", tmp_path / "base-final"
    shutil.copytree(layout.chat_data_dir, data)
    shutil.copytree(layout.run("base").final, base)
    tok = tmp_path / "tokenizer"
    tok.mkdir()
    (tok / "sidecar.json").write_text(json.dumps({"stage": "tokenizer", "inputs": {}, "settings": {}}))
    for out, said in [(tok, "holds the outputs of the 'tokenizer' stage"),
                      (data, "holds the outputs of the 'chat_dataset' stage"),
                      (base, "is the base model's folder"), (base / "chat", "lies inside the base model's folder")]:
        before = tree_digest(tmp_path)
        capsys.readouterr()
        with pytest.raises(SystemExit) as stop:
            run_main(ft.main, ["--preset", "micro", "--init_from", str(base), "--data_dir", str(data),
                               "--max_steps", "1", "--output_dir", str(out), "--root", str(chat_root)])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.startswith(f"error: --output_dir {out} ") and said in err, err
        assert err.count("\n") == 1 and tree_digest(tmp_path) == before


def test_a_dataset_without_validation_rows_trains_without_evaluations(chat_root, tmp_path, capsys):
    """A validation split left empty (one trial, or --validation_percent 0): the Trainer refused
    eval_strategy 'steps' without an eval dataset, a ValueError traceback after the model loaded."""
    from londonlm.chat.dataset import ChatDatasetOptions, build_chat_dataset

    from conftest import write_old_bailey_tei

    data = tmp_path / "chat-data"
    build_chat_dataset(write_old_bailey_tei(tmp_path / "src"), data, ChatDatasetOptions(validation_percent=0.0),
                       log=lambda *_: None)
    ft = _script("finetune_chat")
    argv = ["--preset", "micro", "--init_from", "base", "--max_steps", "2", "--eval_steps", "1",
            "--data_dir", str(data), "--output_dir", str(tmp_path / "no-eval"), "--root", str(chat_root)]
    assert ft.main(argv) == 0
    info = json.loads(RunLayout(tmp_path / "no-eval").run_info.read_text())
    assert info["status"] == "finished" and info["eval_answer_loss"] is None
    assert "training without evaluations" in capsys.readouterr().out
    # a tree whose stops count evaluations cannot train without them (pre-training's flags)
    from londonlm.chat.finetune import chat_config
    from londonlm.training import JobRequest
    from londonlm.training.finetune import without_evaluation

    config = chat_config(RunLayout(tmp_path / "x"), ChatTrainOptions(), JobRequest(),
                         Layout(chat_root).run("base").final)
    assert dict(without_evaluation(config).trainer)["eval_strategy"] == "no"
    with pytest.raises(TrainingError, match="count evaluations, and the data has no validation rows"):
        without_evaluation(config.but(control={"decay_on_plateau": 2}))


@pytest.mark.parametrize("pair", [("--batch_size", "2", "--per_device_train_batch_size", "3"),
                                  ("--run_name", "named-chat", "--output_dir", "OUT")])
def test_two_flags_that_set_one_thing_are_refused(chat_root, tmp_path, pair, capsys):
    """Found by test_chat_flags_fuzz: --batch_size beside --per_device_train_batch_size, and
    --run_name beside --output_dir, trained with one of the two dropped without a word; now one
    line names both, before anything is written."""
    from londonlm.core.errors import run_main

    out = tmp_path / "out"
    argv = [str(out) if w == "OUT" else w for w in pair]
    if "--run_name" not in argv:
        argv += ["--run_name", "both-chat"]
    with pytest.raises(SystemExit) as stop:
        run_main(_script("finetune_chat").main, ["--preset", "micro", "--init_from", "base",
                                                 "--root", str(chat_root), *argv])
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1 and "give one of them" in lines[0], lines
    assert pair[0] in lines[0] and pair[2] in lines[0]
    assert not out.exists() and not (chat_root / "09_models" / "checkpoints" / "both-chat").exists()
