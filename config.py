"""londonlm configuration: the one place for defaults, presets and the path layout.

Only the stage scripts import this module; the ``londonlm`` library takes explicit
arguments. Every path derives from one root: the repository folder, or the
``LONDONLM_ROOT`` environment variable, or a script's ``--root`` flag.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from londonlm.core.layout import ROOT_ENV, Layout

REPO_DIR = Path(__file__).resolve().parent


REGISTRY_FILE = REPO_DIR / "02_data_collection" / "data_sources.yaml"
INSTALL_HINT = ("run `bash install.sh` in the repository, then use .venv/bin/python "
                "(or `source .venv/bin/activate` first)")


def require_dependencies(modules=("numpy", "torch", "tokenizers", "transformers")) -> None:
    """Stop with one line naming the fix when this interpreter lacks the project's packages
    (e.g. the system python instead of .venv's) or lacks the project itself (another
    environment's torch, without the versions install.sh pins), rather than a traceback deep
    in a stage."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"error: {sys.executable} lacks {', '.join(missing)}: {INSTALL_HINT}")
    # the stage scripts put the repository on sys.path, where pip also leaves londonlm.egg-info:
    # only an install elsewhere on the path counts
    elsewhere = [p for p in sys.path if Path(p or ".").resolve() != REPO_DIR]
    if not _installed("londonlm", elsewhere):
        raise SystemExit(f"error: londonlm is not installed for {sys.executable}: {INSTALL_HINT}")


def _installed(name: str, paths: list[str]) -> bool:
    """Whether a folder of ``paths`` holds distribution ``name``'s metadata (``name-VERSION.dist-info``
    or ``.egg-info``, as importlib.metadata finds them: importing it took a third of a stage's start)."""
    for folder in paths:
        try:
            entries = os.listdir(folder or ".")
        except OSError:  # (a zip, a folder gone)
            continue
        for entry in entries:
            stem, dot, kind = entry.lower().rpartition(".")
            # ("name-1.0": a name's own "-" is written "_" there)
            if dot and kind in ("dist-info", "egg-info") and stem.split("-")[0].replace("_", "-") == name:
                return True
    return False


require_dependencies()


def get_layout(root: str | os.PathLike | None = None) -> Layout:
    """The artifact layout at an explicit root, else $LONDONLM_ROOT, else the repository."""
    return Layout.at(root, default_root=REPO_DIR, registry_file=REGISTRY_FILE)


@dataclass(frozen=True)
class CorpusDefaults:
    validation_percent: float = 5.0   # share of documents held out, by a hash of the document id
    year_min: int = 1500              # period filter: documents dated outside are rejected
    year_max: int = 1900
    min_chars: int = 200              # shorter documents carry too little text to learn from
    workers: int = 4                  # download/cleaning concurrency
    download_interval_s: float = 1.0  # seconds between requests to one host: Gutenberg and archive.org ask robots to be gentle
    download_retries: int = 5         # retries (exponential backoff, Retry-After honoured) before a file counts as failed


@dataclass(frozen=True)
class Preset:
    """A model shape plus the training defaults that go with it."""

    name: str
    n_layer: int
    n_head: int
    n_embd: int
    context_length: int
    vocab_size: int           # tokenizer vocabulary (= the saved model's; training may pad it: --pad_vocab)
    batch_size: int           # per device
    grad_accum: int
    learning_rate: float
    min_lr_ratio: float       # cosine decays to learning_rate * min_lr_ratio
    warmup_steps: int
    max_steps: int
    save_steps: int
    eval_steps: int
    logging_steps: int
    save_total_limit: int
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    dropout: float = 0.0
    min_frequency: int = 2    # tokenizer BPE merge threshold
    eval_max_batches: int = 0  # cap on validation batches per evaluation (0 = whole split)
    # adamw, or muon where Muon measured better validation bpb at equal time (BENCHMARKS.md)
    optimizer: str = "adamw"
    # final/ holds the weights of the evaluation with the lowest validation loss (the last
    # step's included) rather than the last step's: where a small corpus is passed over many
    # times the model overfits before the budget ends. On an H200, slm's 180 s over 2.4M tokens
    # (20 passes) ended with a validation loss 26% above its lowest, at 7 passes; on CPUs micro
    # and tiny likewise, and where the last step was best nothing changed (BENCHMARKS.md).
    # Every preset's default. Flags given win.
    load_best_model_at_end: bool = True


PRESETS: dict[str, Preset] = {
    # Tests: seconds on CPU.
    "micro": Preset("micro", n_layer=2, n_head=2, n_embd=64, context_length=64, vocab_size=512,
                    batch_size=8, grad_accum=1, learning_rate=3e-3, min_lr_ratio=0.1,
                    warmup_steps=5, max_steps=40, save_steps=20, eval_steps=20, logging_steps=5,
                    save_total_limit=5, eval_max_batches=8),
    # CPU demo: whole pipeline in <= 15 min on 2 cores (sized by measurement, see BENCHMARKS.md).
    "tiny": Preset("tiny", n_layer=4, n_head=4, n_embd=256, context_length=128, vocab_size=4096,
                   batch_size=32, grad_accum=1, learning_rate=2e-3, min_lr_ratio=0.1,
                   warmup_steps=30, max_steps=500, save_steps=100, eval_steps=100,
                   logging_steps=25, save_total_limit=5, eval_max_batches=10, optimizer="muon"),
    # GPT-2 Small, the guide's SLM settings but dropout. Evaluations during training read 100
    # batches (~0.8M tokens: the loss to about 0.01 nats) spread over the validation split; its
    # whole, 5% of a corpus of billions of tokens, would take longer than the steps between them.
    # Stage 05 evaluates the whole split. Dropout 0 (the guide's 0.1): in the H200 race of
    # 2026-11-30 (60 s, 7 passes over 2.4M tokens, the same call) it reached each held-out bpb
    # sooner (2.234 at 20 s against 2.278, 2.184 at 30 s against 2.213), ended 0.046 bpb lower
    # and ran 5% more tokens/s; past its best, final/ keeps the best evaluation's weights.
    "slm": Preset("slm", n_layer=12, n_head=12, n_embd=768, context_length=512, vocab_size=30000,
                  batch_size=16, grad_accum=2, learning_rate=3e-4, min_lr_ratio=0.1,
                  warmup_steps=1000, max_steps=60000, save_steps=500, eval_steps=500,
                  logging_steps=50, save_total_limit=5, eval_max_batches=100),
    # GPT-2 Medium, the guide's "regular" model (evaluations as slm's). Dropout stays the guide's
    # 0.1 until its own race: a model of 3x the weights overfits a small corpus sooner.
    "regular": Preset("regular", n_layer=24, n_head=16, n_embd=1024, context_length=1024,
                      vocab_size=30000, batch_size=8, grad_accum=4, learning_rate=3e-4,
                      min_lr_ratio=0.1, warmup_steps=2000, max_steps=60000, save_steps=250,
                      eval_steps=250, logging_steps=50, save_total_limit=5, dropout=0.1,
                      eval_max_batches=100),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise SystemExit(f"error: unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")


@dataclass(frozen=True)
class TokenizerDefaults:
    name: str = "london_historical_bpe"  # folder under 09_models/tokenizers/
    era_tokens: bool = True              # one <|1650s|>-style token per half-century in the corpus
    era_width: int = 50
    sample_chars: int = 300_000_000      # trained on at most this much of the training split (memory stays flat)


@dataclass(frozen=True)
class TrainingDefaults:
    seed: int = 42
    wandb_project: str = "londonlm"
    # DataLoader worker processes on a GPU (CPU training has none). 0: a block is one slice of the
    # token cache, read in the training process with a third of the CPU it spent receiving the
    # batch from a worker (0.05 s against 0.15-0.18 s a pass of 148 batches of 32 x 512), and
    # workers were forked anew at each pass and each evaluation (BENCHMARKS.md, "DataLoader
    # workers"). Storage slow to read at random may want some: --dataloader_num_workers N.
    dataloader_workers: int = 0
    # Learning-rate finder (04_training/find_lr.py): one exponential ramp min -> max.
    lr_find_min_lr: float = 1e-6         # far below any useful rate: the curve starts flat
    lr_find_max_lr: float = 1.0          # far above: AdamW on GPT-2 diverges well before this
    lr_find_steps: int = 100             # 1/5 of the tiny preset's 500 steps; ~17 points per decade
    lr_find_smoothing: float = 0.9       # EMA of the loss; ~10-step window suits a 100-step ramp
    lr_find_diverge_factor: float = 4.0  # stop once the smoothed loss is 4x its minimum
    # Hyperparameter grid (10_scripts/run_grid.py), relative to the preset's values so one
    # default grid fits every preset: 3 learning rates x 2 batch sizes = 6 runs.
    grid_lr_factors: tuple = (0.5, 1.0, 2.0)
    grid_batch_factors: tuple = (0.5, 1.0)


@dataclass(frozen=True)
class EvaluationDefaults:
    mode: str = "quick"
    sample_prompts: tuple = (
        "It was a cold morning in Cheapside, and",
        "The prisoner at the bar was indicted for",
        "Up betimes, and to the office, where",
    )
    sample_max_new_tokens: int = 60


@dataclass(frozen=True)
class HubDefaults:
    license: str = "mit"
    commit_message: str = "Upload londonlm model"


CORPUS = CorpusDefaults()
TOKENIZER = TokenizerDefaults()
TRAINING = TrainingDefaults()
EVALUATION = EvaluationDefaults()
HUB = HubDefaults()
DEFAULT_PRESET = "tiny"

__all__ = ["Layout", "get_layout", "train_defaults", "Preset", "PRESETS", "get_preset", "CORPUS", "TOKENIZER",
           "TRAINING", "EVALUATION", "HUB", "DEFAULT_PRESET", "asdict", "replace", "field"]


def train_defaults(default_preset: str, layout: Layout | None = None):
    """What every training entry point starts from: presets, layout, tokenizer, seed, logging."""
    from londonlm.training import TrainDefaults  # torch-heavy: only when training is asked for

    return TrainDefaults(PRESETS, default_preset, layout or get_layout(), TOKENIZER.name,
                         TRAINING.seed, TRAINING.wandb_project, TRAINING.dataloader_workers)


# --------------------------------------------------------------------------- period chat (07_finetuning/)
# Chat fine-tuning settings per preset, for londonlm.chat.finetune.ChatTrainOptions (the base
# run's shape comes from --init_from).
# tiny: ~1,200 training exchanges pack into ~300 rows of 128 tokens; 150 steps of 16 rows is
# ~8 passes, where held-out answer loss stops falling, and well under 10 minutes on 2 CPU cores.
# slm: GPT-2 Small at context 512 (~80 rows): a 10x lower rate, as usual when fine-tuning.
CHAT_PRESETS: dict[str, dict] = {
    "micro": dict(max_steps=8, batch_size=4, learning_rate=3e-3, warmup_steps=2, save_steps=4,
                  eval_steps=4, logging_steps=2),
    "tiny": dict(max_steps=150, batch_size=16, learning_rate=1e-3, warmup_steps=15, save_steps=50,
                 eval_steps=50, logging_steps=10),
    "slm": dict(max_steps=1500, batch_size=16, grad_accum=2, learning_rate=1e-4, warmup_steps=100,
                weight_decay=0.01, save_steps=250, eval_steps=250, logging_steps=25),
}
