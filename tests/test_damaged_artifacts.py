"""Every file a stage leaves for the next, damaged, then read by that next stage as its user
runs it: the answer is a stage that rebuilds or goes on (exit 0), or one ``error:`` line and
exit 2; never a traceback, never another exit code. The damages are what a full disk, a killed
copy, an editor or another program leave: a file cut in half, random bytes, valid JSON of
another shape or nested past the parser's depth, a folder in its place. (Each stage's own
tests name the exact message; this sweep is the net under all of them, over a whole pipeline
root.)"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow
RUN = "09_models/checkpoints/micro"
TOK = "09_models/tokenizers/london_historical_bpe"
PROC = "data/london_historical/processed"

CONSUMERS = {
    "tokenizer": ["03_tokenizer/train_historical_tokenizer.py"],
    "train": ["04_training/train_model.py", "--preset", "micro", "--max_steps", "2", "--run_name_dir", "again"],
    "resume": ["04_training/train_model.py", "--preset", "micro", "--max_steps", "3"],
    "resume_named": ["04_training/train_model.py", "--preset", "micro", "--max_steps", "3",
                     "--resume_from_checkpoint", "checkpoint-2"],
    "evaluate": ["05_evaluation/run_evaluation.py", "--mode", "quick", "--preset", "micro"],
    "generate": ["06_inference/inference_unified.py", "--preset", "micro", "--prompt", "Up betimes", "--seed", "1",
                 "--max_new_tokens", "4"],
    "gguf": ["10_scripts/export_gguf.py", "--preset", "micro", "--types", "f16"],
}
# (file, the stages that read it)
TARGETS = [
    (f"{PROC}/manifest.jsonl", ["tokenizer"]),
    (f"{PROC}/sidecar.json", ["tokenizer"]),
    (f"{TOK}/tokenizer.json", ["train"]),
    (f"{TOK}/sidecar.json", ["train"]),
    (f"{RUN}/pretokenized_data/metadata.json", ["resume"]),
    (f"{RUN}/pretokenized_data/train.bin", ["resume"]),
    (f"{RUN}/checkpoint-2/trainer_state.json", ["resume_named"]),
    (f"{RUN}/checkpoint-2/optimizer.pt", ["resume", "resume_named"]),
    (f"{RUN}/checkpoint-2/rng_state.pth", ["resume_named"]),
    (f"{RUN}/checkpoint-2/tokenizer.json", ["resume_named"]),
    (f"{RUN}/run_info.json", ["evaluate"]),
    (f"{RUN}/final/config.json", ["generate"]),
    (f"{RUN}/final/model.safetensors", ["evaluate", "gguf"]),
    (f"{RUN}/final/tokenizer.json", ["generate", "gguf"]),
    (f"{RUN}/final/tokenizer_config.json", ["generate"]),
    (f"{RUN}/final/generation_config.json", ["generate"]),
]


def half(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def noise(p: Path) -> None:
    p.write_bytes(random.Random(p.name).randbytes(max(64, min(p.stat().st_size, 4096))))


def json_list(p: Path) -> None:
    p.write_text("[1, 2]")


def json_deep(p: Path) -> None:
    """Nesting past the JSON parser's depth: a RecursionError, which no ``except ValueError``
    (a JSONDecodeError's) catches."""
    p.write_text("[" * 100_000)


def folder(p: Path) -> None:
    p.unlink()
    (p / "x").mkdir(parents=True)


def damages_of(rel: str) -> list:
    """JSON files: cut, another shape, nested too deep, a folder; the others: cut, random bytes, a folder."""
    return [half, json_list, json_deep, folder] if rel.endswith((".json", ".jsonl")) else [half, noise, folder]


CASES = [pytest.param(rel, damage, consumer, id=f"{Path(rel).name}-{damage.__name__}-{consumer}")
         for rel, consumers in TARGETS for damage in damages_of(rel) for consumer in consumers]


@pytest.fixture(scope="module")
def pipeline_root(tmp_path_factory) -> Path:
    """A whole micro pipeline root: corpus, tokenizer, token cache, a checkpoint, final/."""
    root = tmp_path_factory.mktemp("pipeline")
    r = subprocess.run([sys.executable, str(REPO / "10_scripts" / "run_pipeline.py"), "--preset", "micro",
                        "--root", str(root), "--max_steps", "2", "--sample_limit_chars", "150000", "--chat", "off",
                        "--save_steps", "2"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    for rel, _ in TARGETS:
        assert (root / rel).is_file(), rel
    return root


@pytest.mark.parametrize("rel, damage, consumer", CASES)
def test_a_damaged_file_is_rebuilt_or_one_error_line(pipeline_root, tmp_path, rel, damage, consumer):
    root = tmp_path / "root"
    shutil.copytree(pipeline_root, root, symlinks=True)
    damage(root / rel)
    script, *argv = CONSUMERS[consumer]
    r = subprocess.run([sys.executable, str(REPO / script), *argv, "--root", str(root)], capture_output=True,
                       text=True, timeout=600, env={**os.environ, "LONDONLM_ROOT": str(root)})
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode in (0, 2), (r.returncode, r.stderr[-3000:])
    if r.returncode == 2:
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and r.stderr.rstrip("\n").splitlines()[-1] == errors[0], r.stderr[-3000:]
