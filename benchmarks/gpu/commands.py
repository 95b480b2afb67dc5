"""The command lines the acceptance run starts: the project's own scripts, with the flags the
tests use, so the GPU run exercises what users run (nothing re-implemented here)."""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
TRAIN = REPO / "04_training" / "train_model_slm.py"
EXPORT = REPO / "10_scripts" / "export_gguf.py"
SERVER_BENCH = REPO / "benchmarks" / "server_throughput.py"
RACE = REPO / "benchmarks" / "gpu_race.py"

# The exact-resume check of tests/training/test_training.py, on the micro preset: 12 steps with a
# checkpoint at 6, every loss logged so the curves compare step by step. Deterministic kernels
# (transformers' --full_determinism): on the first GPU run (H200) without them, the two runs'
# losses parted from step 4 on, before the stop (1.9e-5 by step 5, 1.0e-4 by step 12), from the
# kernels alone
RESUME_STEPS, RESUME_STOP = 12, 6
RESUME_FLAGS = ["--max_steps", str(RESUME_STEPS), "--save_steps", str(RESUME_STOP),
                "--logging_steps", "1", "--eval_steps", "100", "--full_determinism", "true"]
# FSDP runs longer so its tokens/s is more than start-up noise
FSDP_FLAGS = ["--max_steps", "60", "--save_steps", "30", "--logging_steps", "10", "--eval_steps", "1000"]
FSDP_MODE = "full_shard auto_wrap"
SERVER_CLIENTS = (1, 8, 32)


def job_env() -> dict:
    """Offline, no W&B, unbuffered; the test-only hooks of the training code switched off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LONDONLM_TEST_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return env


def pytest_cmd() -> list[str]:
    # -m gpu replaces pyproject's "-m 'not slow'" (the last -m wins); -rfE lists what failed
    return [PY, "-m", "pytest", "-m", "gpu", "-q", "-rfE", "tests/"]  # run from REPO


def train_args(root: Path, run: str, *extra: str) -> list[str]:
    """The training script's arguments for a micro run: fixed speed rules (--autotune off), so
    runs compared with each other use the same kernels."""
    return [str(TRAIN), "--preset", "micro", "--root", str(root), "--run_name_dir", run,
            "--report_to", "none", "--disable_tqdm", "true", "--autotune", "off", *extra]


def resume_cmds(root: Path) -> dict[str, list[str]]:
    """Run ``a`` uninterrupted; run ``b`` stopped after step 6 (a checkpoint, no final/), then
    the same command without the stop: it auto-resumes from checkpoint-6."""
    return {"uninterrupted": [PY, *train_args(root, "a", *RESUME_FLAGS, "--fresh")],
            "stopped": [PY, *train_args(root, "b", *RESUME_FLAGS, "--fresh",
                                        "--stop_after_steps", str(RESUME_STOP))],
            "resumed": [PY, *train_args(root, "b", *RESUME_FLAGS)]}


def fsdp_cmd(root: Path) -> list[str]:
    # --standalone: a one-node rendezvous on a free port (no MASTER_PORT clash with anything)
    return [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
            *train_args(root, "fsdp", *FSDP_FLAGS, "--fresh", "--fsdp", FSDP_MODE)]


def fsdp_muon_cmds(root: Path) -> dict[str, list[str]]:
    """``--optim muon`` under FSDP2 on NCCL: run ``fsdp-muon-a`` uninterrupted, ``fsdp-muon-b``
    stopped after step 6 and resumed by the same command (the resume check's steps)."""
    torchrun = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    flags = [*RESUME_FLAGS, "--fsdp", FSDP_MODE, "--optim", "muon"]
    return {"uninterrupted": [*torchrun, *train_args(root, "fsdp-muon-a", *flags, "--fresh")],
            "stopped": [*torchrun, *train_args(root, "fsdp-muon-b", *flags, "--fresh", "--stop_after_steps",
                                               str(RESUME_STOP))],
            "resumed": [*torchrun, *train_args(root, "fsdp-muon-b", *flags)]}


# No C compiler where Triton looks for one (CC names it): torch.compile cannot build kernels
NO_COMPILER = {"CC": "/nonexistent/cc"}


def compile_fallback_cmds(root: Path) -> dict[str, list[str]]:
    """The micro run on CUDA (torch.compile on by default) without a compiler: ``default`` must
    train eager and say why; ``asked`` (--torch_compile true) must be refused before any data work."""
    short = ["--max_steps", "4", "--save_steps", "100", "--eval_steps", "100", "--fresh"]
    return {"default": [PY, *train_args(root, "no-compiler", *short)],
            "asked": [PY, *train_args(root, "no-compiler-asked", *short, "--torch_compile", "true")]}


PROFILED_STEPS = 3


def profile_cmd(root: Path) -> list[str]:
    """``--profile_steps`` on the GPU: the kernels' time by op group (3 warm-up steps first)."""
    return [PY, *train_args(root, "profiled", "--max_steps", "10", "--save_steps", "100", "--eval_steps",
                            "100", "--profile_steps", str(PROFILED_STEPS), "--fresh")]


def server_cmd(model: Path, work: Path, device: str = "cuda") -> list[str]:
    return [PY, str(SERVER_BENCH), "--model", str(model), "--device", device, "--work", str(work),
            "--clients", *map(str, SERVER_CLIENTS), "--timeline"]  # where a slow request waited


def gguf_cmd(root: Path, run: str, verify: bool) -> list[str]:
    # --verify runs each file in llama.cpp; only where llama-cpp-python is installed
    return [PY, str(EXPORT), "--root", str(root), "--preset", "micro", "--run_name", run,
            "--overwrite", *(["--verify", "--steps", "16"] if verify else [])]  # 16: inside context 64


def race_cmd(race, work: Path, out: Path) -> list[str]:
    """benchmarks/gpu_race.py on the prepared data (``race``: runner.RaceConfig), its JSON in
    the report folder and its block in ``race.bench_md`` when given."""
    return [PY, str(RACE), "--data", str(race.data), "--preset", race.preset, "--seconds", f"{race.seconds:g}",
            "--device", "cuda", "--work", str(work / "race"), "--json", str(out / "gpu_race.json"),
            *(["--bench_md", str(race.bench_md)] if race.bench_md else [])]


def race_timeout(seconds: float) -> float:
    """Two recipes' seconds, the seed recipe's first pass, start-ups, a compile, scoring."""
    return 3 * seconds + 600


def shown(cmd: list[str], root: Path | None = None) -> str:
    """A command line for the report: ``python`` for this interpreter, paths relative to the
    repository, the scratch project root as ROOT."""
    text = shlex.join(["python", *cmd[1:]] if cmd and cmd[0] == PY else cmd).replace(f"{REPO}/", "")
    return text.replace(str(root), "ROOT") if root else text


def prepare_micro_root(root: Path, sample_chars: int = 300_000) -> Path:
    """A project root with stages 02-03 done on part of the embedded sample: the corpus and
    a 512-token tokenizer (the micro preset's), as tests/conftest.py's ``micro_root``."""
    import config
    from londonlm.corpus import CollectionOptions, build_corpus
    from londonlm.tokens.stage import train_tokenizer_stage

    preset = config.get_preset("micro")
    layout = config.get_layout(root)
    build_corpus(layout.processed_dir, layout.metadata_dir,
                 options=CollectionOptions(validation_percent=20, log=lambda *_: None), use_sample=True,
                 sample_limit_chars=sample_chars)
    train_tokenizer_stage(layout.processed_dir, layout.tokenizer_dir(config.TOKENIZER.name),
                          vocab_size=preset.vocab_size, min_frequency=2, era_tokens=True,
                          model_max_length=preset.context_length, log=lambda *_: None)
    return root
