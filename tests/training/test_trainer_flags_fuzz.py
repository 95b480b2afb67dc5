"""Any of the Trainer's own flags (the ~150 ``TrainingArguments`` fields the training stage
passes through) and of the command's own (model, data, speed, run control), not only those a
test thought of: hypothesis picks one or two and gives each a
value of its kind (booleans, 0, negatives, a billion, NaN, 1e10, every choice and one that is
none, text where JSON goes), then trains a micro run of two steps as its user runs it. The run
ends with its final model (exit 0) or one ``error:`` line and exit 2 before it has trained:
never a traceback, never another exit code, never past the time limit (a flag that forked a
billion loader processes hung the machine). Slow: each example is a training run (~7 s)."""
from __future__ import annotations

import dataclasses
import enum
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO

pytestmark = pytest.mark.slow
# examples per run; LONDONLM_FUZZ_EXAMPLES=80 searches longer (~10 min)
EXAMPLES = int(os.environ.get("LONDONLM_FUZZ_EXAMPLES", 10))
# flags a run on a loopback CPU machine cannot mean (a Hub push, other launchers, tracker
# logins: each has its own refusal test) or that name the run's own folder
LEFT_OUT = {"output_dir", "push_to_hub", "hub_token", "hub_model_id", "hub_strategy", "hub_private_repo",
            "hub_always_push", "hub_revision", "deepspeed", "fsdp", "fsdp_config", "report_to", "logging_dir",
            "run_name", "resume_from_checkpoint", "accelerator_config", "use_cpu", "local_rank", "ddp_backend",
            "tpu_num_cores", "debug", "project", "trackio_space_id", "trackio_bucket_id",
            "trackio_static_space_id", "overwrite_output_dir"}


def _fields() -> list:
    from transformers import TrainingArguments

    return sorted((f for f in dataclasses.fields(TrainingArguments)
                   if f.init and f.name not in LEFT_OUT and not f.name.startswith("_")), key=lambda f: f.name)


def _values(f) -> list[str]:
    kind, choices = str(f.type), (f.metadata or {}).get("choices")
    if "bool" in kind:
        return ["true", "false"]
    if "int" in kind and "float" not in kind:
        return ["0", "1", "-1", "2", "3", "1000000000"]
    if "float" in kind:
        return ["0", "1e-9", "0.5", "-1", "1.5", "nan", "1e10"]
    if choices:
        return [str(getattr(c, "value", c)) for c in choices] + ["bogus"]
    if isinstance(f.default, enum.Enum):
        return [str(e.value) for e in type(f.default)] + ["bogus"]
    named = _enum_of(f.name)  # (a field typed "SchedulerType | str" whose default is a plain string)
    if named is not None:
        return [str(e.value) for e in named] + ["bogus"]
    return ["x", "", "1", "{}", "[]"]


def _enum_of(name: str):
    import typing

    from transformers import TrainingArguments

    hint = typing.get_type_hints(TrainingArguments).get(name)
    return next((a for a in typing.get_args(hint) or (hint,) if isinstance(a, type) and issubclass(a, enum.Enum)), None)


def _our_fields() -> list:
    """The training command's own flags (model, data, speed, run control), beside the Trainer's."""
    from londonlm.training.flags import DataArguments, ModelArguments, RunControlArguments, SpeedArguments

    return [f for group in (ModelArguments, DataArguments, SpeedArguments, RunControlArguments)
            for f in dataclasses.fields(group) if f.name not in ("preset", "root")]


def _our_values(f) -> list[str]:
    kind = str(f.type)
    if "bool" in kind:
        return ["true", "false"]
    if "int" in kind and "float" not in kind:
        return ["0", "1", "-1", "2", "3", "16", "1000000000"]
    if "float" in kind:
        return ["0", "1e-9", "0.5", "-1", "1.5", "nan", "1e10"]
    return ["auto", "on", "off", "flash", "math", "muon", "adamw", "x", "", "/nonexistent"]


FIELDS = _fields()
OURS = _our_fields()
flag = st.one_of(
    st.sampled_from(FIELDS).flatmap(lambda f: st.tuples(st.just(f.name), st.sampled_from(_values(f)))),
    st.sampled_from(OURS).flatmap(lambda f: st.tuples(st.just(f.name), st.sampled_from(_our_values(f)))))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from londonlm.corpus import CollectionOptions, build_corpus
    from londonlm.tokens.stage import train_tokenizer_stage

    from conftest import write_micro_source

    root = tmp_path_factory.mktemp("flags-root")
    data = root / "data" / "london_historical"
    build_corpus(data / "processed", data / "metadata", options=CollectionOptions(validation_percent=20,
                 log=lambda *_: None), source_dir=write_micro_source(root / "src"))
    train_tokenizer_stage(data / "processed", root / "09_models" / "tokenizers" / "london_historical_bpe",
                          vocab_size=512, min_frequency=2, era_tokens=True, model_max_length=64, log=lambda *_: None)
    return root


@given(flags=st.lists(flag, min_size=1, max_size=2, unique_by=lambda fv: fv[0]))
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_trainer_flag_trains_or_is_one_line(root, flags):
    argv = [a for name, value in flags for a in (f"--{name}", value)]
    try:
        r = subprocess.run([sys.executable, str(REPO / "04_training" / "train_model.py"), "--preset", "micro",
                            "--max_steps", "2", "--root", str(root), "--fresh", *argv], capture_output=True,
                           text=True, timeout=180, env={**os.environ, "LONDONLM_ROOT": str(root)})
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(argv)}: still running after 180 s")
    assert "Traceback" not in r.stderr, (argv, r.stderr[-3000:])
    assert r.returncode in (0, 2), (argv, r.returncode, r.stderr[-3000:])
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    if r.returncode == 2:
        assert [line for line in lines if line.startswith("error:")] == lines[-1:], (argv, r.stderr[-3000:])
    elif {"stop_after_seconds", "stop_after_steps"} & {name for name, _ in flags}:
        run = root / "09_models" / "checkpoints" / "micro"  # stopped on purpose: a checkpoint to resume, or done
        assert (run / "final" / "model.safetensors").is_file() or list(run.glob("checkpoint-*")), argv
    else:
        assert (root / "09_models" / "checkpoints" / "micro" / "final" / "model.safetensors").is_file(), argv
