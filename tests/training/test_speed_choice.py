"""The training CLI's speed and time flags end to end on the micro preset: --time_budget /
--max_seconds (a fitted schedule that ends at the budget with final/ saved), a budget too small
for the warm-up refused before any work, --autotune on/refresh/off with its cache, --optim muon
(recorded, resumed exactly), and a resumed run keeping its speed settings."""
import dataclasses
from pathlib import Path
import json

import pytest

import config
from conftest import precision_flags
from londonlm.training.cli import TrainDefaults
from londonlm.training.resume import Resumed
from londonlm.training.speed import probe as probe_module
from londonlm.training.speed.compile import compile_problem
from londonlm.training.speed.settings import SpeedSettings
from test_training import root, run_dir, train  # noqa: F401  (root: the copied micro project)

QUIET = ["--eval_steps", "100000", "--logging_steps", "1", "--save_steps", "100000"]


def info_of(root, name="micro") -> dict:
    return json.loads((run_dir(root, name) / "run_info.json").read_text())


@pytest.mark.parametrize("flag, precision", [("--time_budget", "bf16"), ("--max_seconds", "fp32")])
def test_a_budgeted_run_ends_at_the_budget_with_a_finished_schedule_and_final(root, flag, precision):
    budget = 10.0
    assert train(root, flag, str(budget), "--warmup_steps", "1", "--learning_rate", "1e-3",
                 *precision_flags(precision), *QUIET) == 0
    info = info_of(root)
    fit = info["time_budget"]
    step = fit["measured_step_seconds"]
    assert info["interrupted"] is None and (run_dir(root) / "final" / "config.json").exists()
    assert info["global_step"] == fit["fitted_total_steps"] == info["max_steps"] > 3
    assert fit["decay_start_step"] < info["global_step"] - 1  # the decay spans the last steps
    history = json.loads((run_dir(root) / f"checkpoint-{info['global_step']}" / "trainer_state.json")
                         .read_text())["log_history"]
    # It ends near the budget. Early by at most two steps at the mean pace (the fit stops when
    # fewer than two more fit), plus a second. Late by at most the last two steps as they ran:
    # a step once begun cannot be called back, and the one before it began while two still fit
    # at the mean pace. The suite's xdist workers share the cores, so one step can take many
    # times the mean (seen: 1.5 s with a mean step of 0.11 s). A run that ignored the budget
    # ends far off it either way.
    ran = fit["train_seconds_in_budget"]
    last_two = sum([h["step_time_s"] for h in history if "step_time_s" in h][-2:])
    assert budget - 2 * step - 1.0 <= ran <= budget + last_two + 0.2
    lrs = [h["learning_rate"] for h in history if "learning_rate" in h]
    assert max(lrs) == pytest.approx(1e-3, rel=0.05) and lrs[-1] < max(lrs)  # decaying at the end
    assert info["final_eval_loss"] > 0 and info["settings"]["time_budget"] == budget


def test_a_budget_too_small_for_the_warmup_is_refused_before_any_work(root, capsys):
    assert train(root, "--time_budget", "0.05", "--warmup_steps", "500", *QUIET) == 2
    err = capsys.readouterr().err
    assert "warm-up" in err and "Traceback" not in err
    assert not (run_dir(root) / "pretokenized_data").exists()  # the cache was never touched
    assert train(root, "--time_budget", "-1") == 2
    assert train(root, "--time_budget", "5", "--max_seconds", "6") == 2
    assert "another name" in capsys.readouterr().err


def test_a_budget_scales_the_presets_warmup_to_the_steps_it_holds():
    """A preset's warm-up is a share of its steps (micro 5 of 40, GPT-2 Medium 2,000 of 60,000);
    under --time_budget it is that share of the steps that fit, where a fixed 2,000 would outlast
    a few minutes on one GPU and be refused. A warm-up or a step count given is kept."""
    from londonlm.training import build_config, parse_train_flags, training_arguments
    from londonlm.training.speed.choice import SpeedPlan, check_time_budget
    from londonlm.training.step.schedules import BudgetError

    defaults = TrainDefaults(config.PRESETS, "micro", config.get_layout(), config.TOKENIZER.name, 0, "t")
    plan = SpeedPlan(SpeedSettings("fp32", "sdpa", False), False, "default", "", 0.01)  # 1,000 steps in 10 s

    def fitted(*argv):
        built = build_config(parse_train_flags(["--preset", "micro", "--time_budget", "10", *argv]), defaults)
        return check_time_budget(built, None, plan)

    assert fitted().optim.warmup_steps == 125 and training_arguments(fitted()).warmup_steps == 125
    assert fitted("--preset", "regular").optim.warmup_steps == 33  # 1,000 x 2,000 / 60,000
    assert fitted("--warmup_steps", "7").optim.warmup_steps == 7
    assert fitted("--max_steps", "40").optim.warmup_steps == 5
    with pytest.raises(BudgetError):
        fitted("--warmup_steps", "1000")


def test_stop_after_seconds_stops_with_a_checkpoint_and_keeps_the_schedule(root, precision):
    assert train(root, "--stop_after_seconds", "0.001", "--max_steps", "50",
                 *precision_flags(precision), *QUIET) == 0
    info = info_of(root)
    assert "--stop_after_seconds" in info["interrupted"] and info["max_steps"] == 50
    assert not (run_dir(root) / "final").exists()


def test_autotune_measures_caches_reuses_and_refreshes(root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # this test is about the cache's life, not noise: a 0.14M model's steps last milliseconds, and
    # on a busy 2-core runner their spread passes the probe's refusal line (tested with a fake
    # timer in test_speed_probe.py), which would make the run use the fixed rules, uncached
    monkeypatch.setattr(probe_module, "DECISIVE_SPREAD", float("inf"))
    monkeypatch.setattr(probe_module, "DECISIVE_STEPS", 1)
    common = ["--max_steps", "2", *QUIET, "--fresh"]
    assert train(root, "--autotune", "on", *common) == 0
    out = capsys.readouterr().out
    assert "measured just now" in out and "seconds per training step" in out
    cache = tmp_path / "cache" / "londonlm" / "autotune.json"
    entries = json.loads(cache.read_text())["entries"]
    assert len(entries) == 1
    info = info_of(root)
    assert info["speed"]["source"] == "measured"
    chosen = (info["precision"], info["attn_implementation"], info["fused_loss"])
    figures = info["speed"]["seconds_per_micro_batch"]
    assert len(figures) >= 4  # fp32 x sdpa/eager x fused on/off at least
    assert train(root, "--autotune", "on", *common) == 0
    assert "in the cache" in capsys.readouterr().out and info_of(root)["speed"]["source"] == "cached"
    assert (info_of(root)["precision"], info_of(root)["attn_implementation"],
            info_of(root)["fused_loss"]) == chosen
    assert train(root, "--autotune", "refresh", *common) == 0
    assert "measured just now" in capsys.readouterr().out
    assert train(root, "--autotune", "off", *common) == 0
    assert info_of(root)["speed"]["source"] == "default"
    # explicit flags win over the cache
    assert train(root, "--autotune", "on", "--attn_implementation", "eager", "--fused_loss", "on",
                 "--bf16", "false", *common) == 0
    i = info_of(root)
    assert (i["precision"], i["attn_implementation"], i["fused_loss"]) == ("fp32", "eager", True)
    assert i["speed"]["source"] == "explicit"


def test_bad_autotune_and_optimizer_values_fail_fast(root, capsys):
    assert train(root, "--autotune", "sometimes") == 2
    assert "--autotune: must be" in capsys.readouterr().err
    assert train(root, "--optim", "bogus") == 2  # not ours, and not a Trainer optimizer either
    assert train(root, "--optimizer", "lion") == 2
    assert "adamw or muon" in capsys.readouterr().err


def test_muon_run_is_recorded_and_resumes_exactly(root, capsys):
    common = ["--max_steps", "6", "--logging_steps", "1", "--save_steps", "3", "--eval_steps",
              "100", "--optim", "muon"]
    assert train(root, *common, "--run_name_dir", "whole") == 0
    assert "optimizer: Muon on" in capsys.readouterr().out
    assert train(root, *common, "--run_name_dir", "split", "--stop_after_steps", "3") == 0
    assert train(root, *common, "--run_name_dir", "split") == 0
    whole, split = info_of(root, "whole"), info_of(root, "split")
    assert whole["settings"]["optimizer"] == "muon" and split["resumed_from"].endswith("checkpoint-3")
    a, b = dict(whole["train_curve"]), dict(split["train_curve"])
    assert set(a) == set(b) and all(abs(a[s] - b[s]) < 1e-5 for s in a)
    # resuming with the other optimizer is refused, not silently restarted
    capsys.readouterr()
    assert train(root, "--max_steps", "9", "--save_steps", "3", "--run_name_dir", "split",
                 "--optim", "adamw") == 2
    assert "trained with --optim muon" in capsys.readouterr().err


def test_a_resumed_run_keeps_the_speed_settings_it_was_trained_with(tmp_path):
    rec = {"precision": "fp32", "attn_implementation": "eager", "fused_loss": True}
    assert Resumed(tmp_path, rec).speed == SpeedSettings("fp32", "eager", True, False)
    assert Resumed(None, rec).speed is None  # not resuming
    assert Resumed(tmp_path, {"precision": "fp32"}).speed is None  # an older record: choose anew


def test_the_pipeline_with_a_time_budget_trains_saves_final_and_evaluates(tmp_path):
    """`run_pipeline.py --max_seconds S` used to stop mid-schedule without final/ and crash in
    the evaluation stage; now the schedule is fitted to S and every later stage runs."""
    import os
    import subprocess
    import sys

    from conftest import REPO, write_micro_source

    root = tmp_path / "pipe"
    src = write_micro_source(root / "src", n_docs=8)
    env = dict(os.environ, LONDONLM_ROOT=str(root), WANDB_MODE="disabled")
    r = subprocess.run([sys.executable, str(REPO / "10_scripts" / "run_pipeline.py"), "--preset", "micro",
                        "--source_dir", str(src), "--max_seconds", "6", "--warmup_steps", "1",
                        "--eval_max_tokens", "2000", "--chat", "off"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = root / "09_models" / "checkpoints" / "micro"
    info = json.loads((run / "run_info.json").read_text())
    assert info["interrupted"] is None and (run / "final" / "config.json").exists()
    assert info["global_step"] == info["time_budget"]["fitted_total_steps"]
    assert list((run / "evaluation").glob("*.json"))  # the evaluation stage ran on final/


def test_the_preset_names_the_optimizer_and_the_flag_wins():
    from londonlm.training import build_config, parse_train_flags

    defaults = TrainDefaults(config.PRESETS, "tiny", config.get_layout(), config.TOKENIZER.name,
                             config.TRAINING.seed, "londonlm-test")
    assert build_config(parse_train_flags(["--preset", "tiny"]), defaults).optim.optimizer == "muon"
    assert build_config(parse_train_flags(["--preset", "micro"]), defaults).optim.optimizer == "adamw"
    for argv in (["--optim", "adamw"], ["--optim=adamw"], ["--optimizer", "adamw"]):
        assert build_config(parse_train_flags(["--preset", "tiny", *argv]), defaults).optim.optimizer == "adamw"
    assert build_config(parse_train_flags(["--preset", "micro", "--optim", "muon"]),
                        defaults).optim.optimizer == "muon"


def test_a_run_recorded_with_a_fixed_precision_stays_current_under_autotune():
    """Settings record "auto" for a precision the machine chose: an older run's "fp32" is not a
    change (the pipeline would otherwise retrain it), an explicit other precision is."""
    from londonlm.training import settings_changes

    assert settings_changes({"settings": {"precision": "fp32"}}, {"precision": "auto"}) == []
    assert settings_changes({"settings": {"precision": "fp32"}}, {"precision": "bf16"}) == [
        "precision 'fp32' -> 'bf16'"]


def test_two_fresh_starts_in_the_same_second_keep_both_old_runs(tmp_path):
    from londonlm.training.resume import move_run_aside
    from londonlm.core.layout import RunLayout

    run = RunLayout(tmp_path / "r")
    moved = []
    for i in range(3):
        (run.dir).mkdir(exist_ok=True)
        run.run_info.write_text(str(i))
        moved.append(move_run_aside(run))
    assert len(set(moved)) == 3 and all((m / run.run_info.name).read_text() == str(i)
                                         for i, m in enumerate(moved))


def test_torch_compile_is_the_default_on_cuda_unless_the_budget_is_short(monkeypatch):
    """The GPU path compiles by default; a short time budget (warm-up not paid back) and every
    CPU run stay eager; an explicit --torch_compile wins."""
    from londonlm.training import build_config, job, parse_train_flags, training_arguments
    from londonlm.training.speed import compile as policy

    assert policy.compile_pays(True, 0) and policy.compile_pays(True, policy.COMPILE_MIN_BUDGET_SECONDS)
    assert not policy.compile_pays(True, 300) and not policy.compile_pays(False, 0)
    defaults = TrainDefaults(config.PRESETS, "micro", config.get_layout(), config.TOKENIZER.name, 0, "t")

    def compiled(*argv) -> bool:
        return training_arguments(build_config(parse_train_flags(["--preset", "micro", *argv]),
                                               defaults)).torch_compile

    assert compiled() is False  # this CPU
    monkeypatch.setattr(job, "_on_cuda", lambda: True)  # the decision as on a GPU machine
    assert compiled() is True
    assert compiled("--max_seconds", "120") is False
    assert compiled("--torch_compile", "false") is False


def test_compile_regions_asks_to_compile_and_refuses_torch_compile_false(monkeypatch):
    """--compile_regions is a way to compile (each repeated block once): it turns the compile on
    where the policy would train eager (a CPU, a short budget on a GPU), as asked for (a machine
    that cannot compile refuses it), and contradicting it is one usage error."""
    from londonlm.core.errors import UsageError
    from londonlm.training import build_config, job, parse_train_flags, training_arguments
    from londonlm.training.job import describe

    defaults = TrainDefaults(config.PRESETS, "micro", config.get_layout(), config.TOKENIZER.name, 0, "t")

    def built(*argv):
        return build_config(parse_train_flags(["--preset", "micro", *argv]), defaults)

    c = built("--compile_regions", "true")
    assert c.speed.torch_compile and c.speed.compile_given and c.speed.request.compile_regions
    assert training_arguments(c).torch_compile and "compile by regions" in describe(c)
    assert not built().speed.request.compile_regions and "compile off" in describe(built())
    monkeypatch.setattr(job, "_on_cuda", lambda: True)
    assert built("--time_budget", "60", "--compile_regions", "true").speed.torch_compile
    with pytest.raises(UsageError, match="--compile_regions .* --torch_compile false"):
        built("--compile_regions", "true", "--torch_compile", "false")


def test_the_trainer_compiles_each_repeated_block_once_under_compile_regions(tmp_path):
    """accelerate's regional compilation: the blocks (and the other leaves) are compiled apart,
    the model itself is not one graph; without the flag the whole model is one."""
    from torch._dynamo.eval_frame import OptimizedModule
    from transformers import TrainingArguments

    from conftest import micro_gpt2
    from londonlm.training.step.trainer import RunTrainer

    for regions in (True, False):
        args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], torch_compile=True)
        trainer = RunTrainer(model=micro_gpt2(n_layer=2), args=args, compile_regions=regions)
        assert trainer.accelerator.state.dynamo_plugin.use_regional_compilation is regions  # built so
        prepared = trainer.accelerator.prepare_model(trainer.model)  # compiling is lazy: no kernels built
        assert isinstance(prepared, OptimizedModule) is not regions
        if regions:
            assert all(isinstance(b, OptimizedModule) for b in prepared.transformer.h)
            assert trainer.accelerator.unwrap_model(prepared, keep_torch_compile=False) is trainer.model


def test_a_run_compiled_by_regions_trains_and_saves_a_plain_model(root, capsys):
    from transformers import AutoModelForCausalLM

    problem = compile_problem("cpu")  # (here, not at collection: it compiles)
    if problem:
        pytest.skip(f"torch.compile cannot build kernels here: {problem}")

    assert train(root, "--compile_regions", "true", "--max_steps", "2", *QUIET) == 0
    assert "compile by regions" in capsys.readouterr().out
    final = run_dir(root) / "final"
    model = AutoModelForCausalLM.from_pretrained(final)  # no _orig_mod. keys: a plain GPT-2
    assert model.config.model_type == "gpt2"
    names = (final / "model.safetensors").read_bytes()[:20000]
    assert b"_orig_mod" not in names


def test_compile_preflight_names_what_is_missing_and_catches_a_compile_that_fails():
    """The tools first (a missing compiler), then a real compile with the caches off: a
    compiler that exists but fails is caught too, where the first training step would fail."""
    import torch._inductor.config as inductor_config

    with inductor_config.patch({"cpp.cxx": (None, "/nonexistent/g++")}):  # as $CXX sets it
        assert "no C++ compiler (/nonexistent/g++)" in compile_problem("cpu")
    with inductor_config.patch({"cpp.cxx": (None, "/bin/false")}):
        assert "InductorError" in compile_problem("cpu")


def test_compile_on_by_default_falls_back_to_eager_and_asked_for_is_refused(monkeypatch, capsys):
    from londonlm.training import training_arguments
    from londonlm.training.dist import TrainingError
    from londonlm.training.speed import compile as speed

    monkeypatch.setattr(speed, "compile_problem", lambda device: "no C compiler (cc, gcc or clang)")
    asked = _config(torch_compile=True, torch_compile_backend="inductor")
    eager = speed.settle_compile(asked)
    args = training_arguments(eager)
    assert (args.torch_compile, args.torch_compile_backend) == (False, None)  # no dynamo plugin either
    assert asked.speed.torch_compile is True  # a new tree; the one asked for is unchanged
    assert "training eager" in capsys.readouterr().out
    given = asked.but(speed={"compile_given": True})
    with pytest.raises(TrainingError, match="--torch_compile false"):
        speed.settle_compile(given)
    monkeypatch.setattr(speed, "compile_problem", lambda device: None)
    assert speed.settle_compile(given).speed.torch_compile is True


def test_torch_compile_asked_for_where_it_cannot_build_is_refused_before_any_data_work(root, capsys):
    import torch._inductor.config as inductor_config

    with inductor_config.patch({"cpp.cxx": (None, "/nonexistent/g++")}):
        assert train(root, "--torch_compile", "true", "--max_steps", "2", *QUIET) == 2
    err = capsys.readouterr().err
    assert "--torch_compile false" in err and "no C++ compiler" in err and "Traceback" not in err
    assert not (run_dir(root) / "pretokenized_data").exists()


def test_a_compile_failure_in_the_first_step_is_one_line_naming_the_way_out():
    import torch

    from londonlm.training.step.trainer import compile_failure

    try:
        torch.compile(lambda x: x + 1, backend="no_such_backend")(torch.ones(2))
    except Exception as e:  # noqa: BLE001
        assert compile_failure(e)
    assert not compile_failure(ValueError("a bug in the model"))


def _config(tmp=None, **values):
    """A small configuration tree (the training package's), built from Trainer values."""
    import tempfile

    from londonlm.core import RunLayout
    from londonlm.training import ModelConfig, OutputConfig, RunControl, SpeedRequest, config_from_values

    out = Path(tmp or tempfile.mkdtemp())
    base = dict(output_dir=str(out), per_device_train_batch_size=1, per_device_eval_batch_size=1,
                gradient_accumulation_steps=1, report_to=[])
    explicit = frozenset(values.pop("explicit", ()))
    return config_from_values({**base, **values}, model=ModelConfig(12, 12, 768, 512, dropout=0.1), data=None,
                              request=SpeedRequest(), optimizer="adamw", control=RunControl(),
                              output=OutputConfig(RunLayout(out), "t"), explicit=explicit)


def _args(batch, accum, eval_batch=None, given=False, eval_given=False):
    explicit = ({"per_device_train_batch_size"} if given else set()) | (
        {"per_device_eval_batch_size"} if eval_given else set())
    return _config(per_device_train_batch_size=batch, gradient_accumulation_steps=accum,
                   per_device_eval_batch_size=eval_batch or batch, explicit=explicit)


def _split(config) -> tuple:
    s = config.speed
    return s.micro_batch, s.grad_accum, s.eval_batch


def test_the_micro_batch_is_fitted_to_the_gpus_free_memory_keeping_tokens_per_step(monkeypatch, capsys):
    """On CUDA the slm preset's 16 x 2 becomes 32 x 1 on an 80 GB card and shrinks on a small one;
    the command line's batch, a resumed run's split and CPU runs are kept."""
    from londonlm.training.model import ModelShape
    from londonlm.training.speed import choice as speed

    slm, bf16 = ModelShape(12, 12, 768, 512, 30016), SpeedSettings("bf16", "sdpa", False)
    gpu = speed.SpeedPlan(bf16, True, "default", "", None)

    def fit(args, kept=None):
        return speed.fit_batch_to_memory(args, slm, gpu, 1, kept)

    monkeypatch.setattr(speed, "free_memory_bytes", lambda device: 80e9)
    args = fit(_args(16, 2))
    assert _split(args) == (32, 1, 32)
    assert "micro-batch 32 x 1 accumulation steps (was 16 x 2" in capsys.readouterr().out
    monkeypatch.setattr(speed, "free_memory_bytes", lambda device: 6e9)
    args = fit(_args(16, 2, eval_batch=64, eval_given=True))
    b = args.speed.micro_batch
    assert b * args.speed.grad_accum == 32 and b < 16 and args.speed.eval_batch == 64
    assert speed.memory_of(slm, b, bf16, "adamw", 0.1).total <= speed.GPU_MEMORY_SHARE * 6e9
    assert speed.memory_of(slm, 2 * b, bf16, "adamw", 0.1).total > speed.GPU_MEMORY_SHARE * 6e9
    monkeypatch.setattr(speed, "free_memory_bytes", lambda device: 80e9)
    for args, kept in ((_args(16, 2, given=True), None), (_args(16, 2), (16, 2))):
        assert _split(fit(args, kept))[:2] == (16, 2), kept
    args = speed.fit_batch_to_memory(_args(16, 2), slm, speed.SpeedPlan(bf16, False, "default", "", None))
    assert _split(args)[:2] == (16, 2)
    assert "GB per device to train at micro-batch 16" in capsys.readouterr().out


def test_a_fitted_micro_batch_leaves_the_recorded_settings_as_asked(root, monkeypatch):
    """run_info.json's settings keep the batch the command asked for (the pipeline compares
    them); its top-level batch size is what trained."""
    from londonlm.training.speed import choice as speed

    monkeypatch.setattr(speed, "fit_micro_batch", lambda per_step, fits: 4)
    monkeypatch.setattr(speed, "free_memory_bytes", lambda device: 1e12)
    real = speed.fit_batch_to_memory

    def as_on_a_gpu(config, shape, plan, *rest):
        return real(config, shape, dataclasses.replace(plan, cuda=True), *rest)

    monkeypatch.setattr("londonlm.training.run.fit_batch_to_memory", as_on_a_gpu)
    assert train(root, "--max_steps", "2", *QUIET) == 0
    info = info_of(root)
    assert info["settings"]["batch_size"] == 8 and info["settings"]["gradient_accumulation_steps"] == 1
    assert info["batch_size"] == 4 and info["gradient_accumulation_steps"] == 2


def test_evaluations_read_whole_batches_when_compiled_and_gpu_presets_are_capped():
    """A compiled model recompiles for a ragged last validation batch at every evaluation; the
    cap means the same blocks at every world size; slm/regular no longer read their whole
    validation split every few hundred steps."""
    from londonlm.training.data import eval_blocks

    assert eval_blocks(1000, 16) == 1000 and eval_blocks(1000, 16, whole_batches=True) == 992
    assert eval_blocks(1000, 16, max_blocks=160) == eval_blocks(1000, 16, 160, world=4) == 160
    assert eval_blocks(1000, 32, 160) == 160  # a micro-batch fitted to a GPU's memory changes nothing
    assert eval_blocks(1000, 16, 160, world=3, whole_batches=True) == 144  # 3 ranks x 16
    assert eval_blocks(10, 16, whole_batches=True) == 10  # less than one batch: all of it
    assert config.PRESETS["slm"].eval_max_batches == config.PRESETS["regular"].eval_max_batches == 100


def test_a_budgets_step_time_is_timed_with_the_runs_dropout(monkeypatch):
    """Where no probe figure gives the step time (a GPU's fixed rules), the budget times two
    steps of the chosen settings, with the run's dropout: its masks cost time (a 4 x 256 step
    at 0.1 took 1.19x the step at 0 on a Xeon, BENCHMARKS.md), and slm's H200 run trained at
    0.1 slower than the estimate timed without (0.050-0.055 s a step against 0.0432)."""
    from londonlm.training import build_config, parse_train_flags
    from londonlm.training.speed import choice
    from londonlm.training.speed.choice import SpeedPlan, check_time_budget
    from londonlm.training.model import ModelShape
    from londonlm.training.speed.probe import StepTimer

    asked = []
    monkeypatch.setattr(choice, "time_candidate", lambda *a, **k: asked.append(k) or [0.01, 0.01])
    defaults = TrainDefaults(config.PRESETS, "micro", config.get_layout(), config.TOKENIZER.name, 0, "t")
    plan = SpeedPlan(SpeedSettings("fp32", "sdpa", False), False, "default", "", None)
    for argv, dropout in (([], 0.0), (["--dropout", "0.2"], 0.2), (["--preset", "regular"], 0.1)):
        built = build_config(parse_train_flags(["--preset", "micro", "--time_budget", "10", *argv]), defaults)
        check_time_budget(built, None, plan)
        assert asked.pop()["dropout"] == dropout
    timer = StepTimer(ModelShape(1, 2, 16, 8, 64), 2, dropout=0.2)
    assert timer.model.config.resid_pdrop == timer.model.config.attn_pdrop == 0.2 and timer.model.training


def test_the_speed_probe_is_asked_for_the_runs_dropout(monkeypatch):
    """The probe's figure is a budget's step time where there is one: it times the candidates
    with the dropout the run trains with (tested in test_speed_probe.py)."""
    from londonlm.training import build_config, parse_train_flags
    from londonlm.training.speed import choice
    from londonlm.training.speed.probe import SpeedChoice

    asked = []
    monkeypatch.setattr(choice, "resolve_speed_settings", lambda mode, *a, **k: asked.append((mode, k)) or
                        SpeedChoice(SpeedSettings("fp32", "sdpa", False), "default"))
    defaults = TrainDefaults(config.PRESETS, "micro", config.get_layout(), config.TOKENIZER.name, 0, "t")
    for argv, dropout in (([], 0.0), (["--dropout", "0.2"], 0.2), (["--preset", "regular"], 0.1)):
        asked.clear()
        built = build_config(parse_train_flags(["--preset", "micro", "--autotune", "on", *argv]), defaults)
        choice.choose_speed(built, None, 1)
        assert [k.get("dropout") for mode, k in asked if mode == "on"] == [dropout]


def test_an_evaluation_reads_the_blocks_the_preset_asks_whatever_batch_fits_the_gpu():
    """slm's 100 evaluation batches are 100 x 16 blocks (~0.8M tokens); a GPU's memory fitted its
    micro-batch, and the evaluation's with it, to 32 on an H200: 1.6M tokens at every
    evaluation, twice what the preset asks (GPT-2 Medium's 8 fitted higher still)."""
    from londonlm.training import build_config, parse_train_flags

    defaults = TrainDefaults(config.PRESETS, "slm", config.get_layout(), config.TOKENIZER.name, 0, "t")
    blocks = lambda *argv: build_config(parse_train_flags(["--preset", "slm", *argv]),  # noqa: E731
                                        defaults).data.eval_max_blocks
    assert blocks() == 100 * config.PRESETS["slm"].batch_size == 1600
    assert blocks("--preset", "regular") == 100 * config.PRESETS["regular"].batch_size
    assert blocks("--batch_size", "8") == 800 and blocks("--per_device_eval_batch_size", "4") == 400
    assert blocks("--eval_max_batches", "0") == 0 and blocks("--eval_max_batches", "3") == 48


def test_the_trainer_does_not_check_every_micro_batch_loss_on_the_host():
    """logging_nan_inf_filter reads every micro-batch's loss back from the GPU (a sync each);
    pre-training and chat fine-tuning turn it off unless the command line sets it."""
    from londonlm.chat.finetune import chat_trainer_values
    from londonlm.chat.preset import ChatTrainOptions
    from londonlm.core import RunLayout
    from londonlm.training import build_config, parse_train_flags, training_arguments

    defaults = TrainDefaults(config.PRESETS, "micro", config.get_layout(), config.TOKENIZER.name, 0, "t")
    job = lambda *argv: training_arguments(build_config(parse_train_flags(["--preset", "micro", *argv]),  # noqa: E731
                                                        defaults))
    assert job().logging_nan_inf_filter is False
    assert job("--logging_nan_inf_filter", "true").logging_nan_inf_filter is True
    chat = _config(**chat_trainer_values(RunLayout(config.get_layout().checkpoints_dir / "chat-x"),
                                         ChatTrainOptions()))
    assert training_arguments(chat).logging_nan_inf_filter is False


def test_decay_on_plateau_ends_a_budgeted_run_early_with_a_decayed_final(root, capsys):
    """Micro reads its 164 training blocks over many times in a few seconds and overfits them
    (its validation loss turns up within ~200 steps): the stall begins the decay, the run ends
    with it, well inside the budget, and final/ is saved as for any finished run. The budget is
    far more than the ~250 steps it takes, so that on a loaded machine too the stall comes
    before the budget's own decay (where it changes nothing): 120 s was not, twice, on two
    loaded cores; the run ends at the stall, so a longer budget costs no time."""
    budget = 300.0
    assert train(root, "--time_budget", str(budget), "--warmup_steps", "5", "--eval_steps", "10",
                 "--save_steps", "10", "--logging_steps", "1", "--decay_on_plateau", "1") == 0
    info = info_of(root)
    fit = info["time_budget"]
    end = fit["decay_on_plateau_end_step"]
    assert end is not None and info["global_step"] == end == info["max_steps"]
    # the overfitting seconds were not spent: it ended before the budget (whose fit, when the
    # decay began, held more steps than the decay's end; the run above says by how much)
    assert fit["train_seconds_in_budget"] < budget - 2 * fit["measured_step_seconds"]
    assert (run_dir(root) / "final" / "config.json").exists()
    lrs = [h["learning_rate"] for h in json.loads(
        (run_dir(root) / f"checkpoint-{end}" / "trainer_state.json").read_text())["log_history"]
        if "learning_rate" in h]
    assert lrs[-1] < max(lrs) / 2  # decayed by the end (logged at every step: the last is the end's)
    out = capsys.readouterr()
    assert "(--decay_on_plateau)" in out.out + out.err


def test_a_step_past_the_free_memory_is_one_line_before_any_work(root, capsys, monkeypatch):
    """Was: --per_device_train_batch_size 1000000000 on a CPU printed its estimate (884,736 GB),
    then the kernel's out-of-memory killer ended the run minutes later: exit 137, not a word.
    (Here the free memory is made small rather than the batch large, so that the run without
    the check trains at once instead of being killed.)"""
    from londonlm.training.speed import choice

    # (100 kB: room for a step's batches, 8 kB here, whose own check comes first; not for the step)
    monkeypatch.setattr(choice, "free_memory_bytes", lambda device: 100_000)
    assert train(root, "--max_steps", "2", *QUIET) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: a training step at micro-batch ") and \
        "more than the 0 MB free on the cpu: lower --per_device_train_batch_size" in err[0], err
    assert not (run_dir(root) / "pretokenized_data").exists()  # the cache was never touched
    monkeypatch.setattr(choice, "free_memory_bytes", lambda device: None)  # unknown: no refusal
    assert train(root, "--max_steps", "1", *QUIET) == 0


def test_the_nodes_ranks_share_a_cpus_memory(monkeypatch):
    from londonlm.training.model import ModelShape
    from londonlm.training.speed import choice

    shape = ModelShape(n_layer=2, n_head=2, n_embd=64, n_positions=64, vocab_size=512)
    one = min(choice.memory_of(shape, 8, SpeedSettings(p, "sdpa", True, False), "adamw", 0.0).total
              for p in ("bf16", "fp32"))  # the most frugal step
    monkeypatch.setattr(choice, "free_memory_bytes", lambda device: int(2.5 * one))
    choice.refuse_past_memory(shape, 8, SpeedSettings("bf16", "eager", False, False), "adamw", 0.0, 1, "cpu")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    with pytest.raises(choice.TrainingError, match="for the 3 ranks here"):
        choice.refuse_past_memory(shape, 8, SpeedSettings("bf16", "eager", False, False), "adamw", 0.0, 1, "cpu")
    choice.refuse_past_memory(shape, 8, SpeedSettings("bf16", "eager", False, False), "adamw", 0.0, 1, "cuda")
