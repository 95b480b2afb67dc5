"""Any sequence of pipeline commands over one project root, not only the ones a test thought
of: hypothesis draws two or three calls of ``run_pipeline.py`` on the micro preset, each with
its own mix of the pipeline's flags and the Trainer's (a cutoff, era tokens off, a cut sample,
the chat step, evaluation limits, steps, checkpoints, precision, --overwrite), and runs them
one after another through the real script. Each call either exits 0 with its summary or with
code 2 and one ``error:`` line, never a traceback; and nothing a call finished is lost by a
later one: every final model's weights are still there, in their run or in the
``.previous-*`` folder a changed setting moved the run to. Slow (each call trains): a few
sequences by default, ``LONDONLM_FUZZ_EXAMPLES=N`` searches longer."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, write_old_bailey_tei

pytestmark = pytest.mark.slow
EXAMPLES = int(os.environ.get("LONDONLM_FUZZ_EXAMPLES", 3))

PIPELINE_FLAGS = {
    "--max_steps": st.sampled_from(["1", "2", "4"]),
    "--sample_limit_chars": st.sampled_from(["3000", "60000", "200000"]),  # the first holds out nothing
    "--cutoff_year": st.sampled_from(["1500", "1700", "1800", "1900"]),
    "--no_era_tokens": st.just(None),
    "--chat": st.sampled_from(["off", "auto", "on"]),
    "--eval_max_tokens": st.sampled_from(["0", "1", "500"]),
    "--chat_bait_limit": st.sampled_from(["1", "2"]),
    "--overwrite": st.just(None),
    "--run_name": st.sampled_from(["a", "b"]),
}
TRAINER_FLAGS = {
    "--eval_steps": st.sampled_from(["1", "3"]),
    "--save_steps": st.sampled_from(["1", "2"]),
    "--gradient_accumulation_steps": st.sampled_from(["1", "2"]),
    "--learning_rate": st.sampled_from(["0.001", "0.01"]),
    "--bf16": st.sampled_from(["true", "false"]),
    "--per_device_train_batch_size": st.sampled_from(["1", "2"]),
    "--warmup_steps": st.sampled_from(["0", "5"]),
    "--save_total_limit": st.sampled_from(["1", "2"]),
}
FLAGS = {**PIPELINE_FLAGS, **TRAINER_FLAGS}


@st.composite
def calls(draw):
    out = []
    for _ in range(draw(st.integers(2, 3))):
        names = draw(st.lists(st.sampled_from(sorted(FLAGS)), max_size=5, unique=True))
        argv = ["--preset", "micro", "--chat", "off"]  # (a drawn --chat comes later and wins)
        for name in names:
            value = draw(FLAGS[name])
            argv += [name] if value is None else [name, value]
        if "--sample_limit_chars" not in names and draw(st.booleans()):
            argv += ["--source_dir", "{tei}"]  # Old Bailey trials: the chat step has dialogue
        out.append(argv)
    return out


def _weights(root: Path) -> dict[str, str]:
    """sha256 of every final model's weights under the runs folder, by path."""
    found = {}
    for f in (root / "09_models" / "checkpoints").glob("*/final/model.safetensors"):
        found[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return found


def _run(argv: list[str], root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, LONDONLM_ROOT=str(root), WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, str(REPO / "10_scripts" / "run_pipeline.py"), *argv],
                          cwd=root, env=env, capture_output=True, text=True, timeout=900)


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(calls())
def test_any_sequence_of_pipeline_commands_ends_in_a_summary_or_one_line(sequence):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tei = write_old_bailey_tei(root / "tei")
        for argv in sequence:
            argv = [str(tei) if a == "{tei}" else a for a in argv]
            before = _weights(root)
            res = _run(argv, root)
            said = f"{' '.join(argv)}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
            assert "Traceback" not in res.stderr, said
            if res.returncode == 0:
                name = argv[argv.index("--run_name") + 1] if "--run_name" in argv else None
                summaries = list((root / "09_models" / "checkpoints").glob("*/pipeline_summary.json"))
                assert summaries and all(json.loads(s.read_text()) for s in summaries), said
                assert name is None or (root / "09_models" / "checkpoints" / name / "pipeline_summary.json").is_file(), said
            else:
                errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
                assert res.returncode == 2 and len(errors) == 1, said
                assert res.stderr.rstrip().splitlines()[-1].startswith("error:"), said
            after = _weights(root)
            kept = set(after.values())
            kept |= {hashlib.sha256(f.read_bytes()).hexdigest()
                     for f in (root / "09_models" / "checkpoints").glob("*.previous-*/final/model.safetensors")}
            lost = {p for p, sha in before.items() if sha not in kept and "--overwrite" not in argv}  # (asked for)
            assert not lost, f"{said}\nfinished weights lost: {lost}"
