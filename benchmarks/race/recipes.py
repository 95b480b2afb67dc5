"""The two recipes of the race as command lines, and the seed recipe's schedule fitted to the
seconds: ``seed_recipe`` is the reference script with the seed guide's flags, ``ours`` the
project's training command with the preset's defaults and ``--time_budget``; a variant of ours
(``--variant NAME=FLAGS``) is that command with some of its flags changed."""
from __future__ import annotations

import os
import re
import shlex
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "04_training" / "train_model_slm.py"
SHIM = Path(__file__).resolve().parent / "snapshot_shim"
OURS_RUN = "race_ours"

# The seed guide (and baseline_clm.py's docstring): AdamW 3e-4, dropout 0.1, bf16, 60,000 steps
GUIDE_LR, GUIDE_DROPOUT, GUIDE_STEPS = 3e-4, 0.1, 60_000


@dataclass(frozen=True)
class SeedRecipe:
    """The guide's batch and warm-up for one preset; the shape (layers, heads, width, block)
    is the preset's."""

    batch_size: int
    grad_accum: int
    warmup_steps: int  # of GUIDE_STEPS: the share kept when the steps are fitted to the seconds

    @property
    def warmup_share(self) -> float:
        return self.warmup_steps / GUIDE_STEPS


# GPT-2 Small: 16 x 2 sequences, warm-up 1,000; GPT-2 Medium ("regular"): 8 x 4, warm-up 2,000
# (the same 32 sequences a step). Any other preset: its shape with GPT-2 Small's batch and share.
GUIDE = {"slm": SeedRecipe(16, 2, 1000), "regular": SeedRecipe(8, 4, 2000)}
DEFAULT_SEED = SeedRecipe(16, 2, 1000)


def seed_recipe(preset_name: str) -> SeedRecipe:
    return GUIDE.get(preset_name, DEFAULT_SEED)


def fit_steps(clock: list[tuple[int, float]], seconds: float, skip: int = 3) -> int:
    """Optimizer steps that end within ``seconds`` of training, from a first pass's clock
    (``[(step, seconds at its end)]``): the time at step ``skip`` (the first steps pay for
    start-up: lazy imports, allocation, kernel selection), then the median step time after it
    (one stalled step, another process taking the CPU, moves a median less than a mean)."""
    if not clock:
        raise ValueError("the first pass recorded no step")
    ref = clock[skip] if len(clock) > skip + 1 else clock[0]
    later = [(s, t) for s, t in clock if s >= ref[0]]
    per_step = statistics.median((t2 - t1) / (s2 - s1) for (s1, t1), (s2, t2) in zip(later, later[1:])) \
        if len(later) > 1 else ref[1] / max(1, ref[0])
    return max(1, ref[0] + int((seconds - ref[1]) / max(per_step, 1e-9)))


def warmup_for(steps: int, recipe: SeedRecipe) -> int:
    """The guide's warm-up share of the fitted steps (at least one step)."""
    return max(1, round(steps * recipe.warmup_share))


def seed_cmd(script: Path, train_files: list[Path], tokenizer: Path, preset, recipe: SeedRecipe,
             steps: int, warmup: int, seconds: float, out: Path, bf16: bool = True) -> list[str]:
    return [sys.executable, str(script), "--train-files", *map(str, train_files), "--tokenizer", str(tokenizer),
            "--n-layer", str(preset.n_layer), "--n-head", str(preset.n_head), "--n-embd", str(preset.n_embd),
            "--block-size", str(preset.context_length), "--batch-size", str(recipe.batch_size),
            "--grad-accum", str(recipe.grad_accum), "--lr", str(GUIDE_LR), "--warmup-steps", str(warmup),
            "--max-steps", str(steps), *(["--bf16"] if bf16 else []), "--dropout", str(GUIDE_DROPOUT),
            "--max-seconds", f"{seconds:g}", "--out", str(out)]


def ours_cmd(preset_name: str, root: Path, tokenizer: Path, processed: Path, seconds: float,
             extra: list[str] = (), run_name: str = OURS_RUN) -> list[str]:
    return [sys.executable, str(TRAIN), "--preset", preset_name, "--root", str(root),
            "--tokenizer_dir", str(tokenizer), "--processed_dir", str(processed), "--run_name_dir", run_name,
            "--fresh", "--time_budget", f"{seconds:g}", "--report_to", "none", "--disable_tqdm", "true", *extra]


# What the race itself decides for every run of ours: the data, where it writes, the budget. A
# variant changes the recipe (optimizer, rate, batch, dropout, context, compile...), never these.
RACE_FLAGS = frozenset({"preset", "root", "tokenizer_dir", "processed_dir", "run_name_dir", "run_name", "fresh",
                        "time_budget", "max_steps", "max_seconds", "report_to", "output_dir", "use_pretokenized",
                        "no_pretokenized", "stop_after_seconds", "stop_after_steps", "resume_from_checkpoint"})
VARIANT_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,39}")
BASE_VARIANT = "base"  # ours unchanged at --variant_seconds, where those differ from the race's


@dataclass(frozen=True)
class Variant:
    """Ours with some flags changed (``--variant NAME=FLAGS``), raced for ``seconds``."""

    name: str
    flags: tuple[str, ...]
    seconds: float

    @property
    def run_name(self) -> str:
        return f"race_ours_{self.name}"


def parse_variant(spec: str, seconds: float) -> Variant:
    """``NAME=FLAGS`` (e.g. ``muon=--optimizer muon``); ValueError saying what is wrong."""
    name, sep, flags = spec.partition("=")
    if not sep or not VARIANT_NAME.fullmatch(name):
        raise ValueError(f"--variant {spec!r}: give NAME=FLAGS, NAME in lower-case letters, digits, '_', '.' "
                         f"or '-' (e.g. muon='--optimizer muon')")
    if name in (BASE_VARIANT, "ours", "seed_recipe"):
        raise ValueError(f"--variant {spec!r}: {name!r} is a name the race uses itself")
    try:
        words = tuple(shlex.split(flags))
    except ValueError as e:
        raise ValueError(f"--variant {spec!r}: {e}") from None
    if not words or not words[0].startswith("--"):
        raise ValueError(f"--variant {spec!r}: its FLAGS must be training flags, starting with '--'")
    owned = sorted({w[2:].split("=")[0].replace("-", "_") for w in words if w.startswith("--")} & RACE_FLAGS)
    if owned:
        raise ValueError(f"--variant {spec!r}: the race sets {', '.join('--' + f for f in owned)} for every run")
    return Variant(name, words, seconds)


def race_env(device: str, snapshots: Path | None, every: float, compile_cache: Path | None = None, *,
             hf_cache: Path) -> dict:
    """Offline, no W&B; with ``snapshots``, the snapshot shim on the path, writing there;
    ``cpu`` hides any GPU from both recipes. With ``compile_cache``, torch.compile's caches
    (inductor's and Triton's) live there: a run given a folder of its own compiles from cold, as
    a user's first run does, not from kernels an earlier run of the race left behind."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LONDONLM_TEST_", "LONDONLM_RACE_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1", HF_DATASETS_CACHE=str(hf_cache))
    if compile_cache is not None:
        env.update(TORCHINDUCTOR_CACHE_DIR=str(compile_cache / "inductor"),
                   TRITON_CACHE_DIR=str(compile_cache / "triton"))
    if snapshots is not None:
        env.update(LONDONLM_RACE_SNAPSHOTS=str(snapshots), LONDONLM_RACE_EVERY=f"{every:g}",
                   PYTHONPATH=os.pathsep.join(p for p in (str(SHIM), env.get("PYTHONPATH", "")) if p))
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env
