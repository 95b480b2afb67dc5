"""The Trainer's flags that parsed but failed only inside the run (a traceback after the token
cache was built, or a network error before the first step): each is now one usage error when
the command line is parsed, before any work."""
import importlib.util
import re
import subprocess
import sys

import pytest

from conftest import REPO
from script_fuzz import completed_in_process
from londonlm.core.errors import UsageError
from londonlm.training import parse_train_flags
from londonlm.training.trackers import default_report_to, wandb_can_log


def refused(*argv) -> str:
    with pytest.raises(UsageError) as e:
        parse_train_flags(["--preset", "micro", *argv])
    return str(e.value)


@pytest.mark.parametrize("argv, said", [
    (["--optim", "adamw_bnb_8bit"], "--optim adamw_bnb_8bit: You need to install `bitsandbytes`"),
    (["--optim", "lomo"], "--optim lomo: You need to install `lomo_optim`"),
    (["--optim", "adamw_torch_xla"], "--optim adamw_torch_xla: Trainer failed to import"),
])
def test_an_optimizer_whose_package_is_missing_is_refused(argv, said):
    for package in ("bitsandbytes", "lomo_optim", "torch_xla"):
        if importlib.util.find_spec(package):
            pytest.skip(f"{package} is installed here")
    assert refused(*argv).startswith(said)


def test_an_installed_trainer_optimizer_is_accepted():
    flags = parse_train_flags(["--preset", "micro", "--optim", "adafactor", "--optim_args", "scale_parameter=False"])
    assert str(getattr(flags.trainer["optim"], "value", flags.trainer["optim"])) == "adafactor"


@pytest.mark.parametrize("text", ["x", "a=1,b", "a=b=c"])
def test_optim_args_must_be_key_value_pairs(text):
    assert refused("--optim_args", text).startswith("--optim_args: must be key=value pairs")


@pytest.mark.parametrize("argv, said", [
    (["--lr_scheduler_kwargs", "[1]"], "--lr_scheduler_kwargs: must be a JSON object"),
    (["--lr_scheduler_kwargs={bad"], "--lr_scheduler_kwargs: not valid JSON"),
    (["--fsdp_config", "[" * 100_000], "--fsdp_config: not valid JSON (nested too deeply)"),  # was RecursionError
    # keyword arguments are never a file: other text stayed a string, a ValueError inside the run
    (["--lr_scheduler_kwargs", "1"], "--lr_scheduler_kwargs: must be a JSON object"),
    (["--gradient_checkpointing_kwargs", "x"], "--gradient_checkpointing_kwargs: not valid JSON"),
    (["--activation_checkpointing_kwargs=use_reentrant"], "--activation_checkpointing_kwargs: not valid JSON"),
    (["--gradient_checkpointing_kwargs", "[true]"], "--gradient_checkpointing_kwargs: must be a JSON object"),
])
def test_a_json_option_must_be_a_json_object(argv, said):
    assert refused(*argv).startswith(said)


@pytest.mark.parametrize("argv, said", [
    # was: a KeyError at the first evaluation (only the loss is computed), steps already trained
    (["--metric_for_best_model", "accuracy"], "--metric_for_best_model accuracy: the evaluation computes the "
                                              "validation loss alone"),
    # was: the best checkpoint the one of the highest validation loss
    (["--greater_is_better", "true"], "--greater_is_better true: the metric is the validation loss"),
])
def test_the_best_checkpoint_is_chosen_by_the_loss(argv, said):
    assert refused(*argv).startswith(said)


def test_restoring_the_callbacks_states_is_refused_it_failed_every_resume():
    """The Trainer rebuilt each saved callback as type(cb)(**its saved args): the data position
    and the run record take theirs from the run, so every resume with the flag was a TypeError
    traceback (`DataPosition.__init__() missing 4 required positional arguments`)."""
    assert refused("--restore_callback_states_from_checkpoint", "true").startswith(
        "--restore_callback_states_from_checkpoint: a resumed run restores its own")
    assert not parse_train_flags(["--preset", "micro", "--restore_callback_states_from_checkpoint", "false"]
                                 ).trainer["restore_callback_states_from_checkpoint"]


@pytest.mark.parametrize("metric", ["loss", "eval_loss"])
def test_the_loss_may_be_named_as_the_metric(metric):
    flags = parse_train_flags(["--preset", "micro", "--metric_for_best_model", metric, "--greater_is_better", "false"])
    assert flags.trainer["metric_for_best_model"] == metric


def test_loader_workers_past_the_cpus_are_refused(monkeypatch):
    """Was: --dataloader_num_workers 1000000000 forked loader processes until the machine gave out."""
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert refused("--dataloader_num_workers", "1000000000").startswith(
        "--dataloader_num_workers 1000000000: more loader processes than the 2 CPUs")
    assert parse_train_flags(["--preset", "micro", "--dataloader_num_workers", "2"]).trainer["dataloader_num_workers"] == 2


def train_here(script: str, tmp_path, *argv) -> subprocess.CompletedProcess:
    """A training script's answer to its flags, in this process; what only a process of its
    own shows (a warning given once per process) stays a subprocess below."""
    return completed_in_process(REPO / "04_training" / script, ["--preset", "micro", "--root", tmp_path, *argv],
                                tmp_path)


@pytest.mark.parametrize("flag, value", [("dataloader_persistent_workers", "true"),
                                         ("dataloader_multiprocessing_context", "fork")])
def test_loader_process_settings_need_workers(tmp_path, flag, value):
    """Was: a ValueError traceback when the Trainer first built its DataLoader (workers 0 on a CPU)."""
    from londonlm.training.job import make_training_arguments

    r = train_here("train_model.py", tmp_path, f"--{flag}", value)
    assert r.returncode == 2 and re.fullmatch(rf"error: --{flag} sets up loader processes, and this run has "
                                              r"none .*\n", r.stderr), r.stderr
    assert not (tmp_path / "09_models").exists()
    args = make_training_arguments({"output_dir": str(tmp_path), "dataloader_persistent_workers": True,
                                    "dataloader_num_workers": 1})
    assert args.dataloader_persistent_workers and args.dataloader_num_workers == 1


@pytest.mark.parametrize("flag", ["fsdp_config", "gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"])
def test_settings_of_a_feature_that_is_off_are_refused(flag):
    # were kept and unused: the run trained unsharded (or without checkpointing) without a word
    assert refused(f"--{flag}", '{"use_reentrant": false}').startswith(
        f"--{flag}: settings of what this run does not do; give --")


@pytest.mark.parametrize("feature, flag", [("--gradient_checkpointing", "--gradient_checkpointing_kwargs"),
                                           ("--activation_checkpointing", "--gradient_checkpointing_kwargs"),
                                           ("--gradient_checkpointing", "--activation_checkpointing_kwargs")])
def test_checkpointing_settings_with_checkpointing_are_accepted(feature, flag):
    flags = parse_train_flags(["--preset", "micro", feature, flag, '{"use_reentrant": false}'])
    assert flags.trainer[flag[2:]] == {"use_reentrant": False}


def test_fsdp_settings_with_fsdp_are_accepted():
    flags = parse_train_flags(["--preset", "micro", "--fsdp", "full_shard auto_wrap",
                               "--fsdp_config", '{"min_num_params": 1000}'])
    assert flags.trainer["fsdp_config"]["min_num_params"] == 1000


def test_a_json_object_option_is_accepted():
    flags = parse_train_flags(["--preset", "micro", "--lr_scheduler_kwargs", '{"min_lr_rate": 0.1}'])
    assert flags.trainer["lr_scheduler_kwargs"] == {"min_lr_rate": 0.1}


@pytest.mark.parametrize("argv, said", [
    (["--torch_compile", "--torch_compile_mode", "fastest"], "--torch_compile_mode: must be one of default,"),
    (["--torch_compile", "--torch_compile_backend", "bogus"], "--torch_compile_backend: must be one of"),
])
def test_an_unknown_compile_mode_or_backend_is_refused(argv, said):
    assert refused(*argv).startswith(said)


def test_a_known_compile_mode_is_accepted():
    flags = parse_train_flags(["--preset", "micro", "--torch_compile", "--torch_compile_mode", "max-autotune"])
    assert flags.trainer["torch_compile_mode"] == "max-autotune"


def test_liger_kernels_that_are_not_installed_are_refused():
    if importlib.util.find_spec("liger_kernel"):
        pytest.skip("liger-kernel is installed here")
    assert refused("--use_liger_kernel").startswith("--use_liger_kernel: liger-kernel is not installed")


@pytest.mark.parametrize("argv", [["--push_to_hub"], ["--hub_token", "hf_secret"], ["--hub_model_id", "me/x"]])
def test_the_training_stage_does_not_push_to_the_hub(argv):
    said = refused(*argv)
    assert "does not publish" in said and "publish_to_huggingface.py" in said and "hf_secret" not in said


@pytest.mark.parametrize("argv, said", [
    (["--seed", "4294967296"], "--seed: must be at most 4294967295"),
    (["--data_seed", "-1"], "--data_seed: must be at least 0"),
    (["--label_smoothing_factor", "1.5"], "--label_smoothing_factor: must be less than 1"),
    (["--neftune_noise_alpha", "-1"], "--neftune_noise_alpha: must be more than 0"),
])
def test_trainer_numbers_out_of_range(argv, said):
    assert refused(*argv).startswith(said)


@pytest.fixture
def no_wandb_login(monkeypatch, tmp_path):
    if not importlib.util.find_spec("wandb"):
        pytest.skip("wandb is not installed here")
    for k in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path / "netrc"


@pytest.mark.parametrize("argv", [["--report_to", "wandb"], ["--report_to", "all"]])
def test_wandb_without_a_login_is_refused_when_parsed(no_wandb_login, argv):
    assert refused(*argv).startswith("--report_to: wandb has no login here")
    assert "wandb" not in default_report_to()


def test_a_saved_wandb_login_or_an_offline_mode_is_enough(no_wandb_login, monkeypatch):
    no_wandb_login.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    no_wandb_login.chmod(0o600)
    assert wandb_can_log()
    no_wandb_login.unlink()
    assert not wandb_can_log()
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert parse_train_flags(["--preset", "micro", "--report_to", "wandb"]).trainer["report_to"] == ["wandb"]


def test_the_script_says_it_in_one_line_before_any_work(tmp_path):
    r = train_here("train_model_slm.py", tmp_path, "--optim_args", "lr")
    assert r.returncode == 2 and re.fullmatch(r"error: --optim_args: .*\n", r.stderr), r.stderr
    assert not (tmp_path / "09_models").exists()


def test_a_bad_compile_mode_is_the_only_line_printed(tmp_path):
    """transformers warned that torchdynamo's speedups need an Ampere GPU (any compile flag off
    one, CPUs included) just before the refusal, as if that were the cause."""
    r = subprocess.run([sys.executable, str(REPO / "04_training" / "train_model_slm.py"), "--preset", "micro",
                        "--root", tmp_path, "--torch_compile_mode", "fastest"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and re.fullmatch(r"error: --torch_compile_mode: .*\n", r.stderr), r.stderr


def built(*argv):
    import config
    from londonlm.training import build_config
    from londonlm.training.cli import TrainDefaults

    defaults = TrainDefaults(config.PRESETS, "micro", config.get_layout(), config.TOKENIZER.name, 0, "t")
    return build_config(parse_train_flags(["--preset", "micro", *argv]), defaults)


@pytest.mark.parametrize("kind, kept", [("linear", {}), ("reduce_lr_on_plateau", {}), ("greedy", {}),
                                        ("cosine_with_min_lr", {"min_lr_rate": 0.1}),
                                        ("cosine_warmup_with_min_lr", {"min_lr_rate": 0.1})])
def test_another_schedule_keeps_only_the_preset_keywords_it_takes(kind, kept):
    # was: the preset's min_lr_rate went to every schedule; --lr_scheduler_type linear was a
    # TypeError traceback once the token cache was built (and reduce_lr_on_plateau refused
    # while parsing, for want of the evaluations every preset holds)
    assert dict(built("--lr_scheduler_type", kind).optim.lr_scheduler_kwargs) == kept


@pytest.mark.parametrize("argv, said", [
    (["--lr_scheduler_type", "linear", "--lr_scheduler_kwargs", '{"min_lr_rate": 0.1}'],
     "the linear schedule cannot be made of them (get_linear_schedule_with_warmup() got an unexpected keyword "
     "argument 'min_lr_rate'); it takes none"),
    (["--lr_scheduler_kwargs", '{"foo": 1}'], "the keywords it takes: num_cycles, min_lr, min_lr_rate"),
    (["--lr_scheduler_type", "warmup_stable_decay"], "missing 1 required positional argument: 'num_decay_steps'"),
    (["--lr_scheduler_type", "polynomial", "--lr_scheduler_kwargs", '{"power": "x"}'],
     "unsupported operand type(s) for ** or pow(): 'float' and 'str'"),  # (met only past the warm-up)
    (["--lr_scheduler_type", "cosine", "--lr_scheduler_kwargs", '{"num_cycles": 1e308}'], "math domain error"),
    (["--lr_scheduler_type", "reduce_lr_on_plateau", "--lr_scheduler_kwargs", '{"mode": "up"}'],
     "it takes the keywords of its torch scheduler class"),
])
def test_a_schedule_that_cannot_be_made_is_refused_as_the_run_is_built(argv, said):
    with pytest.raises(UsageError) as e:
        built(*argv)
    assert str(e.value).startswith("--lr_scheduler_kwargs {") and said in str(e.value), str(e.value)


def test_a_schedule_refused_is_one_line_before_any_work(tmp_path):
    r = train_here("train_model.py", tmp_path, "--lr_scheduler_type", "linear", "--lr_scheduler_kwargs", '{"x": 1}')
    assert r.returncode == 2 and r.stderr.startswith("error: --lr_scheduler_kwargs") and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "09_models").exists()


@pytest.mark.parametrize("budget", ["--time_budget", "--max_seconds"])
def test_a_schedule_asked_of_a_budgeted_run_is_refused(budget):
    # was: trained with the schedule fitted to the budget, the one asked for unused without a word
    with pytest.raises(UsageError, match="--lr_scheduler_type linear: a --time_budget run trains with the "
                                         "warmup-stable-decay schedule"):
        built(budget, "60", "--lr_scheduler_type", "linear")
    floor = built(budget, "60", "--lr_scheduler_kwargs", '{"min_lr_rate": 0.2}')  # the budget schedule's floor
    assert floor.optim.lr_scheduler_kwargs == {"min_lr_rate": 0.2}


@pytest.mark.parametrize("argv", [["--early_stopping_patience", "2"], ["--save_best"],
                                  ["--decay_on_plateau", "2", "--time_budget", "60"]])
def test_what_acts_at_evaluations_needs_some(argv):
    # early stopping was an AssertionError traceback once the model was made; --save_best
    # trained and saved no best/ without a word
    flag = argv[0]
    with pytest.raises(UsageError, match=f"{flag} acts at the evaluations, and --eval_strategy no holds none"):
        built(*argv, "--eval_strategy", "no", "--save_strategy", "no")
    assert built(*argv).control is not None  # (the presets evaluate by steps)


@pytest.mark.parametrize("names", [["x"], ["labels", "x"], ["input_ids"]])
def test_labels_under_another_name_are_refused(names):
    # was: no evaluation had a loss; a KeyError traceback at the first, after the steps before it
    assert refused("--label_names", *names).startswith(f"--label_names {' '.join(names)}: the batches carry")
    assert parse_train_flags(["--preset", "micro", "--label_names", "labels"]).trainer["label_names"] == ["labels"]


@pytest.mark.parametrize("argv, largest", [
    (["--learning_rate", "1e38"], "3.4e+37"),  # torch's Adam: "value cannot be converted to type float"
    (["--learning_rate", "1e37", "--adam_beta1", "0.99"], "3.4e+36"),  # the first step is the rate over 1 - beta1
])
def test_a_rate_adam_cannot_apply_to_float32_weights_is_refused_for_every_job(argv, largest):
    """One rule in the one parser of every training job (pre-training here; chat fine-tuning and
    the LR finder's ramp take the same bound): a traceback at the first step before."""
    said = refused(*argv)
    assert said.startswith(f"--learning_rate {float(argv[1]):g} is past the largest rate") and largest in said, said
    parse_train_flags(["--preset", "micro", "--learning_rate", "3e37"])  # below it: accepted
