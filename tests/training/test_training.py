"""Training stage: exact resume, checkpoint validation, signals, distributed, errors."""
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import config
from conftest import precision_flags, train_exit_code
from londonlm.training.cli import TrainDefaults

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
DEFAULTS = TrainDefaults(config.PRESETS, "micro", config.get_layout(), config.TOKENIZER.name,
                         config.TRAINING.seed, "londonlm-test")


def train(root, *argv):
    """The training script's exit code (main wrapped in run_main, as the scripts run it)."""
    return train_exit_code(root, *argv)


def losses(ckpt: Path):
    st = json.loads((ckpt / "trainer_state.json").read_text())
    return [(h["step"], h["loss"]) for h in st["log_history"] if "loss" in h]


@pytest.fixture
def root(micro_root_copy):
    return micro_root_copy


def run_dir(root, name="micro"):
    return root / "09_models" / "checkpoints" / name


def test_resume_is_exact(root, precision):
    # both precisions whatever the CPU has (bf16 autocast is emulated where not native): the
    # same operations in the same order, so the resumed run replays the uninterrupted one
    common = ["--max_steps", "12", "--logging_steps", "1", "--save_steps", "6", "--eval_steps", "100",
              *precision_flags(precision)]
    assert train(root, *common, "--run_name_dir", "a") == 0
    # the run's seconds away from its steps: two checkpoints (steps 6 and 12), the evaluations
    # while it trained (the last step's: the best evaluation is kept), not the final one after
    info = json.loads((run_dir(root, "a") / "run_info.json").read_text())
    pauses = info["pauses"]
    assert pauses["checkpoints"] == 2 and pauses["checkpoint_seconds"] > 0, pauses
    assert pauses["evaluations"] == len(info["eval_curve"]) == 1 and pauses["evaluating_seconds"] > 0, info
    assert train(root, *common, "--run_name_dir", "b", "--stop_after_steps", "6") == 0
    b = run_dir(root, "b")
    assert (b / "checkpoint-6").is_dir() and not (b / "final").exists()
    info = json.loads((b / "run_info.json").read_text())
    assert "stop_after_steps" in info["interrupted"]
    assert train(root, *common, "--run_name_dir", "b") == 0  # auto-resume from checkpoint-6
    la, lb = losses(run_dir(root, "a") / "checkpoint-12"), losses(b / "checkpoint-12")
    assert [s for s, _ in la] == [s for s, _ in lb] == list(range(1, 13))
    for (_, x), (_, y) in zip(la, lb):
        assert abs(x - y) <= 1e-5, (la, lb)
    info = json.loads((b / "run_info.json").read_text())
    assert info["resumed_from"].endswith("checkpoint-6")
    # throughput reaches trainer_state.json (the evaluation report plots it from there)
    hist = [h for h in json.loads((b / "checkpoint-12" / "trainer_state.json").read_text())["log_history"]
            if "loss" in h]
    assert all(h["tokens_per_second"] > 0 and h["tokens_seen"] == h["step"] * info["tokens_per_step"]
               for h in hist[1:]), hist
    # loss against wall time (time to quality): seconds since this invocation began
    secs = [h["train_seconds"] for h in hist if h["step"] > 6]
    assert all(b >= a for a, b in zip(secs, secs[1:])) and secs[-1] > 0, secs
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(b / "final"))


def test_corrupt_checkpoint_skipped_and_unknown_name(root, capsys):
    common = ["--max_steps", "4", "--save_steps", "2", "--eval_steps", "100", "--logging_steps", "1"]
    assert train(root, *common) == 0
    rd = run_dir(root)
    w = rd / "checkpoint-4" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])  # truncated weights
    assert train(root, "--max_steps", "6", "--save_steps", "2", "--eval_steps", "100") == 0
    out = capsys.readouterr().out
    assert "skipping incomplete or corrupt checkpoint" in out and "checkpoint-4" in out
    assert "resuming from" in out and "checkpoint-2" in out
    rc = train(root, "--max_steps", "6", "--resume_from_checkpoint", "checkpoint-3000")
    err = capsys.readouterr().err
    assert rc == 2 and "checkpoint-3000" in err and "available:" in err and "checkpoint-2" in err


def test_a_damaged_tokenizer_is_one_line_naming_it_and_the_rebuild(root, capsys):
    tok = root / "09_models" / "tokenizers" / "london_historical_bpe" / "tokenizer.json"
    tok.write_text('{"model": {}}')
    assert train(root, "--max_steps", "2") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot read the tokenizer in {tok.parent}") and "--overwrite" in err
    assert err.count("\n") == 1 and not (root / "09_models" / "checkpoints" / "micro").exists()


def test_weights_are_as_readable_as_every_other_file_of_the_run(root):
    """safetensors writes its files 0600 whatever the umask; a run's weights (checkpoint and
    final/) get the mode open() gives, like the run's JSON beside them."""
    assert train(root, "--max_steps", "2", "--save_steps", "2", "--eval_steps", "100") == 0
    rd = run_dir(root)
    expected = 0o666 & ~_umask()
    for weights in (rd / "checkpoint-2" / "model.safetensors", rd / "final" / "model.safetensors"):
        assert stat.S_IMODE(weights.stat().st_mode) == expected, weights
    assert stat.S_IMODE((rd / "final" / "config.json").stat().st_mode) == expected


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_fresh_moves_old_run_aside(root, capsys):
    assert train(root, "--max_steps", "2", "--save_steps", "2", "--eval_steps", "100") == 0
    rd = run_dir(root)
    (rd / "evaluation").mkdir()  # the old model's evaluation describes the old model: it goes too
    (rd / "evaluation" / "report.json").write_text("{}")
    assert train(root, "--max_steps", "2", "--save_steps", "2", "--eval_steps", "100", "--fresh") == 0
    aside = list((root / "09_models" / "checkpoints").glob("micro.previous-*"))
    assert len(aside) == 1 and (aside[0] / "checkpoint-2").is_dir() and (aside[0] / "final").is_dir()
    assert (aside[0] / "evaluation" / "report.json").exists() and not (rd / "evaluation").exists()
    assert (rd / "pretokenized_data" / "metadata.json").exists()  # the token cache stays
    assert "previous run moved to" in capsys.readouterr().out


def test_bad_values_fail_fast(root, capsys):
    assert train(root, "--n_embd", "30", "--n_head", "4") == 2
    assert "not divisible" in capsys.readouterr().err
    assert train(root, "--use_pretokenized", "--no_pretokenized") == 2
    assert train(root, "--vocab_size", "999") == 2
    assert "differs from the tokenizer" in capsys.readouterr().err
    assert train(root, "--use_pretokenized", "--run_name_dir", "nocache") == 2
    assert "--use_pretokenized" in capsys.readouterr().err
    assert train(root, "--preset", "nope") == 2
    assert train(root, "--fused_loss", "maybe") == 2
    assert "--fused_loss: must be auto, on or off" in capsys.readouterr().err
    assert train(root, "--attn_implementation", "flash9") == 2
    assert "--attn_implementation: must be" in capsys.readouterr().err


def test_cpu_bf16_path_trains_and_records_its_levers(root, monkeypatch, capsys):
    """bf16 on a GPU-less machine needs use_cpu (TrainingArguments refuses it otherwise); auto
    then picks eager attention and the fused loss, and fp32 keeps sdpa and the stock loss.
    On a CPU that only emulates bf16 the run says so (each matmul tens of times fp32's) and
    names --bf16 false."""
    from conftest import patch_core

    patch_core(monkeypatch, "cpu_has_native_bf16", lambda: False)
    common = ["--max_steps", "2", "--save_steps", "2", "--eval_steps", "100", "--logging_steps", "1"]
    capsys.readouterr()
    assert train(root, *common, "--bf16", "true", "--run_name_dir", "bf") == 0
    assert "torch emulates bf16" in capsys.readouterr().out
    info = json.loads((run_dir(root, "bf") / "run_info.json").read_text())
    assert (info["precision"], info["attn_implementation"], info["fused_loss"]) == ("bf16", "eager", True)
    assert info["final_eval_loss"] > 0
    # final/ samples with the project's one set of sampling defaults
    from londonlm.generation import GenerationSettings

    gen = json.loads((run_dir(root, "bf") / "final" / "generation_config.json").read_text())
    d = GenerationSettings()
    assert gen["do_sample"] is True and (gen["temperature"], gen["top_p"], gen["top_k"],
                                         gen["repetition_penalty"], gen["max_new_tokens"]) == \
        (d.temperature, d.top_p, d.top_k, d.repetition_penalty, d.max_new_tokens)
    assert train(root, *common, "--bf16", "false", "--run_name_dir", "fp") == 0
    assert "emulates" not in capsys.readouterr().out
    info = json.loads((run_dir(root, "fp") / "run_info.json").read_text())
    assert (info["precision"], info["attn_implementation"], info["fused_loss"]) == ("fp32", "sdpa", False)


def _script(root, *argv, **kw):
    env = {**os.environ, "LONDONLM_ROOT": str(root), "WANDB_MODE": "disabled",
           "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([PY, str(REPO / "04_training" / "train_model_slm.py"), "--preset", "micro",
                             "--report_to", "none", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=kw.get("cwd", "/"))


def test_sigterm_saves_checkpoint(root):
    p = _script(root, "--max_steps", "100000", "--save_steps", "100000", "--eval_steps", "100000",
                "--logging_steps", "1", "--disable_tqdm", "true")
    log = root / "04_training" / "model_training.log"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and "step 3/" in log.read_text()):
        time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=120)
    ckpts = list(run_dir(root).glob("checkpoint-*"))
    assert len(ckpts) == 1, out
    info = json.loads((run_dir(root) / "run_info.json").read_text())
    assert "SIGTERM" in info["interrupted"] and "run the same command again" in out
    from londonlm.core.layout import checkpoint_problem

    assert checkpoint_problem(ckpts[0]) is None


# ~31 s on 2 cores (two ranks, then one): the multi-rank set runs it (-m slow); the default suite's
# torchrun run is test_distributed's test_two_ranks_agree_and_build_the_cache_once
@pytest.mark.slow
def test_torchrun_two_processes_then_resume_with_one(root):
    env = {**os.environ, "LONDONLM_ROOT": str(root), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    cmd = [PY, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           str(REPO / "04_training" / "train_model_slm.py"), "--preset", "micro", "--report_to", "none",
           "--max_steps", "4", "--save_steps", "2", "--eval_steps", "100", "--disable_tqdm", "true",
           "--ddp_backend", "gloo", "--stop_after_steps", "2"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd="/")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rd = run_dir(root)
    assert (rd / "checkpoint-2").is_dir()
    info = json.loads((rd / "run_info.json").read_text())
    assert info["world_size"] == 2
    p = _script(root, "--max_steps", "4", "--save_steps", "2", "--eval_steps", "100", "--disable_tqdm", "true")
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out[-3000:]
    assert "resuming from" in out and (rd / "final" / "model.safetensors").exists()
    assert json.loads((rd / "run_info.json").read_text())["global_step"] == 4


def test_flags_override_like_the_command_line_and_fill_from_the_preset(tmp_path):
    """The pipeline and the grid adjust a parsed command line instead of building argv: an
    override is validated like a flag and wins over the preset like one."""
    from londonlm.core.errors import UsageError
    from londonlm.training import build_config, parse_train_flags, training_arguments

    flags = parse_train_flags(["--eval_steps", "7"]).override(
        preset="micro", run_name_dir="x", max_steps=3, era_tokens=False)
    assert {"eval_steps", "max_steps", "run_name_dir"} <= flags.explicit
    job = build_config(flags.override(root=str(tmp_path)), DEFAULTS)
    args = training_arguments(job)
    micro = config.PRESETS["micro"]
    assert (args.max_steps, args.eval_steps) == (3, 7)
    assert args.learning_rate == micro.learning_rate and job.model.n_embd == micro.n_embd
    assert job.run.dir == tmp_path / "09_models" / "checkpoints" / "x" == Path(args.output_dir)
    assert job.data.era_tokens is False
    with pytest.raises(UsageError, match="unknown training option"):
        flags.override(no_such_flag=1)
    with pytest.raises(UsageError, match="not divisible"):
        flags.override(n_embd=30, n_head=4)


def test_the_one_training_arguments_constructor_takes_bf16_on_any_cpu(tmp_path):
    """``TrainingArguments(bf16=True)`` alone refuses a GPU-less machine ("Your setup doesn't
    support bf16/gpu"): the chat trainer crashed so on CPUs with native bf16. The one
    constructor every job uses sets use_cpu there; a bad value is a one-line usage error."""
    import torch

    from londonlm.core.errors import UsageError
    from londonlm.training.job import make_training_arguments

    args = make_training_arguments({"output_dir": str(tmp_path), "bf16": True, "report_to": []})
    assert args.bf16 and (args.use_cpu or torch.cuda.is_available())
    with pytest.raises(UsageError):
        make_training_arguments({"output_dir": str(tmp_path), "optim": "no-such-optimizer"})


def test_saved_weights_lose_the_compile_prefix_and_foreign_ones_are_refused(tmp_path):
    """A gathered state dict from a compiled model (transformers 4.x, FSDP1 + torch.compile) had
    ``_orig_mod.``-prefixed keys, and from_pretrained loaded random weights with a warning: the
    prefix is stripped; keys that still do not match are refused before anything is written."""
    import torch
    from transformers import AutoModelForCausalLM

    from conftest import micro_gpt2, micro_lm_dataset, micro_training_args
    from londonlm.training.dist import TrainingError
    from londonlm.training.step.trainer import RunTrainer

    model = micro_gpt2()
    trainer = RunTrainer(model=model, args=micro_training_args(tmp_path / "run"), train_dataset=micro_lm_dataset(8))
    compiled = {f"_orig_mod.{k}": v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    trainer._save(str(tmp_path / "final"), state_dict=compiled)
    again = AutoModelForCausalLM.from_pretrained(str(tmp_path / "final"))
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    foreign = {k: v for k, v in model.state_dict().items() if "h.0.mlp" not in k}
    foreign["module.extra"] = torch.zeros(1)
    with pytest.raises(TrainingError, match="do not match the model.*missing.*h.0.mlp"):
        trainer._save(str(tmp_path / "bad"), state_dict=foreign)
    assert not (tmp_path / "bad").exists()


def test_loading_saved_weights_calls_only_a_really_missing_tensor_missing(tmp_path, monkeypatch):
    """The Trainer loads saved weights itself (the best evaluation's at the end, a checkpoint on
    resume); the tied LM head is saved once, under the embedding, and transformers 5 called it
    missing in every such load. It is not; a tensor really absent is still named."""
    import transformers.trainer as hf_trainer
    from safetensors.torch import load_file, save_file

    from conftest import micro_gpt2, micro_lm_dataset, micro_training_args
    from londonlm.training.step.trainer import RunTrainer

    said = []
    monkeypatch.setattr(hf_trainer.logger, "warning", lambda msg, *a, **k: said.append(str(msg)))
    trainer = RunTrainer(model=micro_gpt2(), args=micro_training_args(tmp_path / "run"),
                         train_dataset=micro_lm_dataset(8))
    saved = tmp_path / "run" / "checkpoint-1"
    trainer._save(str(saved))
    assert "lm_head.weight" not in load_file(saved / "model.safetensors")
    trainer._load_from_checkpoint(str(saved))
    assert not [m for m in said if "missing keys" in m]
    weights = load_file(saved / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "h.0.mlp.c_fc" not in k}, saved / "model.safetensors",
              metadata={"format": "pt"})
    trainer._load_from_checkpoint(str(saved))
    missing = [m for m in said if "missing keys" in m]
    assert len(missing) == 1 and "h.0.mlp.c_fc.weight" in missing[0] and "lm_head" not in missing[0]


BEFORE_TREE = Path(__file__).resolve().parent / "data" / "run_before_config_tree"


def test_a_checkpoint_written_before_the_configuration_tree_resumes_exactly(tmp_path):
    """A run stopped at step 3 by the code before training settings became one tree (the
    fixture: its tokenizer, corpus, checkpoint-3 and run_info.json, made by b828d8e) resumes under
    this code with the same command: its settings stay current (same record) and steps 4-6 train
    as the uninterrupted run of that code did."""
    recorded = json.loads((BEFORE_TREE / "whole_run.json").read_text())
    root = tmp_path / "root"
    shutil.copytree(BEFORE_TREE, root)
    env = {**os.environ, "LONDONLM_AUTOTUNE": "off", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(REPO / "04_training" / "train_model_slm.py"),
                        "--root", str(root), "--run_name_dir", "old", "--preset", "micro", "--n_layer", "1",
                        "--n_embd", "32", "--n_head", "2", "--max_steps", "6", "--save_steps", "3",
                        "--eval_steps", "3", "--logging_steps", "1", "--bf16", "false", "--seed", "1",
                        "--report_to", "none"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "resuming from" in r.stdout + r.stderr and "checkpoint-3" in r.stdout + r.stderr
    info = json.loads((root / "09_models" / "checkpoints" / "old" / "run_info.json").read_text())
    assert info["resumed_from"].endswith("checkpoint-3") and info["global_step"] == 6
    assert info["settings"] == recorded["whole_settings"]
    resumed, whole = dict(map(tuple, info["train_curve"])), dict(map(tuple, recorded["whole_train_curve"]))
    for step in (4, 5, 6):
        assert resumed[step] == pytest.approx(whole[step], rel=1e-4), step


def test_a_second_training_of_a_live_run_is_refused_naming_the_holder(root, capsys):
    """Two trainings of one run overwrote each other's checkpoints, final/ and run_info.json (the
    second "resumed" from the first's live checkpoint). The process training a run holds its
    lock; a second training, or a resume of it, is one line naming that process, and nothing of
    the run is touched. The lock goes with the process that held it."""
    from londonlm.core import RunLayout
    from londonlm.training.runlock import run_lock

    quiet = ["--eval_steps", "100000", "--logging_steps", "1", "--save_steps", "100000"]
    run = RunLayout(run_dir(root))
    with run_lock(run):  # as a live training holds it
        assert train(root, "--max_steps", "2", *quiet) == 2
        err = capsys.readouterr().err
        assert f"is being trained by process PID {os.getpid()}" in err and "Traceback" not in err
        assert not any(run.dir.iterdir())  # nothing of the run written
    assert train(root, "--max_steps", "2", *quiet) == 0  # released: trains


def test_the_configuration_a_run_trained_with_is_saved_and_logged(root, capsys):
    """One tree, after every decision: saved beside the checkpoints, and in one line of the log."""
    assert train(root, "--max_steps", "2", "--eval_steps", "100000", "--save_steps", "100000",
                 "--bf16", "false") == 0
    out = capsys.readouterr().out
    saved = json.loads((run_dir(root) / "training_config.json").read_text())
    assert saved["speed"]["chosen"] == {"precision": "fp32", "attn_implementation": "sdpa", "fused_loss": False,
                                       "pad_vocab": False}
    assert saved["model"]["n_layer"] == config.PRESETS["micro"].n_layer and saved["optim"]["max_steps"] == 2
    assert saved["trainer"]["eval_steps"] == 100000 and "micro" in json.dumps(saved["output"]["run"])
    said = next(line for line in out.splitlines() if line.startswith("configuration (training_config.json"))
    assert "fp32/sdpa/fused-off" in said and "micro-batch" in said and "2 steps max" in said


@pytest.mark.parametrize("argv, said", [
    (["--report_to", "nonsense"], "unknown tracker 'nonsense'; installed here:"),
    (["--report_to", "wandb,nonsense"], "unknown tracker 'nonsense'"),
    (["--report_to", "none", "wandb"], "'none' cannot be combined"),
])
def test_report_to_is_checked_when_parsed(argv, said):
    """A tracker name transformers does not know was a ValueError traceback when the Trainer
    was built, after the data work: now one line at parse time naming what is installed."""
    from londonlm.core.errors import UsageError
    from londonlm.training import parse_train_flags

    with pytest.raises(UsageError, match=re.escape(said)):
        parse_train_flags(["--preset", "micro", *argv])


def test_two_trackers_can_be_named_either_way_transformers_takes_them():
    """``--report_to wandb tensorboard`` (a list) and ``--report_to wandb,tensorboard`` both name two
    trackers (each alone worked; together they were refused or a traceback)."""
    from transformers.integrations import get_available_reporting_integrations

    from londonlm.training import build_config, parse_train_flags, training_arguments

    installed = get_available_reporting_integrations()[:2]
    if len(installed) < 2:
        pytest.skip(f"needs two trackers installed, found {installed}")
    for argv in (["--report_to", *installed], ["--report_to", ",".join(installed)],
                 [f"--report_to={','.join(installed)}"]):
        flags = parse_train_flags(["--preset", "micro", *argv])
        assert flags.trainer["report_to"] == installed and "report_to" in flags.explicit
        assert training_arguments(build_config(flags, DEFAULTS)).report_to == installed
