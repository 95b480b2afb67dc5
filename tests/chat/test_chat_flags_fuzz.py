"""Any flag of the chat scripts (``07_finetuning/*.py``: building the dialogue dataset, chat
fine-tuning with every training flag, evaluating a chat model), found from each script's own
parsers: hypothesis draws one to three and gives each a value of its kind (0, negatives,
huge, NaN, empty, text, unicode, nonexistent paths, every choice and one that is none), then
runs the script on the micro fixtures as its user does. The run ends with its outputs written
(exit 0) or one ``error:`` line and exit 2: never a traceback, another exit code or a hang,
and the TEI sources, dataset and models are never changed. Slow: each example is a run."""
from __future__ import annotations

import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, tree_digest
from flags_fuzz import drawn_argv, flag_strategy, run_checked, script_actions

pytestmark = pytest.mark.slow
# examples per run; LONDONLM_FUZZ_EXAMPLES=60 searches longer
EXAMPLES = int(os.environ.get("LONDONLM_FUZZ_EXAMPLES", 5))
DIR = REPO / "07_finetuning"
# flags the net sets (folders, root) and Trainer flags a loopback CPU run cannot mean (a Hub
# push, other launchers, trackers: each has its own refusal test)
COMMON = {"root", "output_dir", "push_to_hub", "hub_token", "hub_model_id", "hub_strategy", "hub_private_repo",
          "hub_always_push", "hub_revision", "deepspeed", "fsdp", "fsdp_config", "report_to", "logging_dir",
          "resume_from_checkpoint", "accelerator_config", "use_cpu", "local_rank", "ddp_backend",
          "tpu_num_cores", "debug", "project", "trackio_space_id", "trackio_bucket_id", "trackio_static_space_id"}
FLAGS = lambda draw, script, skip: drawn_argv(draw(st.lists(  # noqa: E731
    flag_strategy(script_actions(script, COMMON | skip)), min_size=1, max_size=3, unique_by=lambda fv: fv[0]),
    label="flags"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def root(chat_root, tmp_path_factory):
    """A copy of the chat root each run may write into (its base run stays unchanged)."""
    dst = tmp_path_factory.mktemp("chat-flags") / "root"
    shutil.copytree(chat_root, dst)
    return dst


@given(data=st.data())
@FUZZ
def test_any_build_flag_builds_or_is_one_line(data, root, tmp_path_factory):
    argv = FLAGS(data.draw, DIR / "build_chat_dataset.py", {"source_dir", "out_dir"})
    out = tmp_path_factory.mktemp("chat-data") / "chat"
    before = tree_digest(root / "src")
    r = run_checked([str(DIR / "build_chat_dataset.py"), "--source_dir", str(root / "src"), "--out_dir", str(out),
                     "--root", str(root)], argv, 120, {"LONDONLM_ROOT": str(root)})
    if r.returncode == 0:
        assert any(out.rglob("*.arrow")), (argv, r.stdout[-2000:])
    assert tree_digest(root / "src") == before, argv


@given(data=st.data())
@FUZZ
def test_any_finetune_flag_trains_or_is_one_line(data, root):
    argv = FLAGS(data.draw, DIR / "finetune_chat.py", {"init_from", "data_dir", "overwrite", "run_name"})
    before = (tree_digest(root / "09_models" / "checkpoints" / "base"), tree_digest(root / "data"))
    shutil.rmtree(root / "09_models" / "checkpoints" / "base-chat", ignore_errors=True)
    length = [] if {"--max_steps", "--num_train_epochs", "--time_budget", "--max_seconds"} & set(argv) \
        else ["--max_steps", "2"]
    r = run_checked([str(DIR / "finetune_chat.py"), "--preset", "micro", "--init_from", "base", "--root", str(root),
                     "--report_to", "none", "--disable_tqdm", "true", *length], argv, 240,
                    {"LONDONLM_ROOT": str(root)})
    if r.returncode == 0 and "--preset" not in argv:
        assert (root / "09_models" / "checkpoints" / "base-chat" / "final" / "model.safetensors").is_file(), argv
    assert (tree_digest(root / "09_models" / "checkpoints" / "base"), tree_digest(root / "data")) == before, argv


@given(data=st.data())
@FUZZ
def test_any_chat_evaluation_flag_reports_or_is_one_line(data, root, chat_model_dir, tmp_path_factory):
    argv = FLAGS(data.draw, DIR / "evaluate_chat.py", {"model", "out_dir"})
    out = tmp_path_factory.mktemp("chat-eval")
    base = root / "09_models" / "checkpoints" / "base" / "final"
    before = (tree_digest(chat_model_dir), tree_digest(base), tree_digest(root / "data"))
    defaults = [w for flag, words in (("--bait_limit", ["2"]), ("--max_new_tokens", ["4"]), ("--years", ["1790"]),
                                      ("--base", [str(base)])) if flag not in argv for w in (flag, *words)]
    r = run_checked([str(DIR / "evaluate_chat.py"), "--model", str(chat_model_dir), "--out_dir", str(out),
                     "--root", str(root), *defaults], argv, 240, {"LONDONLM_ROOT": str(root)})
    if r.returncode == 0:
        assert (out / "chat_eval.json").is_file(), (argv, sorted(p.name for p in out.iterdir()))
    assert (tree_digest(chat_model_dir), tree_digest(base), tree_digest(root / "data")) == before, argv
