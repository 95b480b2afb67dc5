"""Where every artifact lives: the one module that spells folder and file names.

``Layout`` covers the project root (data, tokenizers, runs); ``RunLayout`` one training run
(``checkpoint-N/``, ``final/``, ``best/``, ``run_info.json``, the token cache, evaluation and
Hub staging folders). Both are plain values: they compute paths and never create anything.
A user's model spec (``final``, ``best``, ``latest``, ``checkpoint-N``, ``RUN``,
``RUN/checkpoint-N`` or a folder) resolves here, with the checks that tell a usable model
folder from a half-written one, so serving, evaluation and publishing never import training.

``config.py`` builds a ``Layout`` from its values; scripts pass it (or a ``RunLayout``) in.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import LondonLMError

# Names inside a run folder.
FINAL = "final"                      # save_pretrained folder of the finished run
BEST = "best"                        # copy of the best-by-validation-loss checkpoint (--save_best)
BEST_INFO = "best_info.json"         # in best/: which checkpoint it copies, its step and loss
RUN_INFO = "run_info.json"           # the run summary written by training
CACHE = "pretokenized_data"          # token cache (train.bin, val.bin, metadata.json)
EVALUATION = "evaluation"            # evaluation stage outputs
HUB_STAGE = "hub_stage"              # publishing's staging folder
GGUF = "gguf"                        # llama.cpp exports (f16, q8_0)
TENSORBOARD = "runs"                 # the Trainer's TensorBoard logs
SIDECAR = "sidecar.json"             # every stage's record of its inputs, written last
CHECKPOINT_PREFIX = "checkpoint-"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_CKPT = re.compile(r"^checkpoint-(\d+)$")

ROOT_ENV = "LONDONLM_ROOT"


class ModelNotFound(LondonLMError, FileNotFoundError):
    """A model spec names nothing usable; the message lists what exists."""


# --------------------------------------------------------------------------- checkpoints

def checkpoint_step(path: str | os.PathLike) -> int | None:
    """N of a ``checkpoint-N`` folder, else None."""
    m = _CKPT.match(Path(path).name)
    return int(m.group(1)) if m else None


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{int(step)}"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """``checkpoint-N`` folders of a run, ascending by step (valid or not)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step)


def _weights_problem(path: Path) -> str | None:
    weights = next((path / w for w in WEIGHT_FILES if (path / w).exists()), None)
    if weights is None:
        return "model weights missing"
    if weights.suffix != ".safetensors":
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            if not list(f.keys()):
                return "model weights empty"
    except Exception as e:  # truncated / corrupt file
        return f"model weights unreadable ({type(e).__name__}: {e})"
    return None


def _training_state_problem(path: Path) -> str | None:
    state = path / "trainer_state.json"
    if not state.exists():
        return "trainer_state.json missing"
    try:
        json.loads(state.read_text())
    except Exception as e:
        return f"trainer_state.json unreadable ({e})"
    # The optimizer: one file (DDP: optimizer.pt; FSDP full state: optimizer.bin), or FSDP's
    # sharded folder, whose .metadata is written after every shard.
    optim = [path / "optimizer.pt", path / "optimizer.bin", path / "optimizer_0" / ".metadata"]
    found = next((f for f in optim if f.exists()), None)
    if found is None:
        return "optimizer.pt missing"
    if found.stat().st_size == 0:
        return f"{found.relative_to(path)} empty"
    sched = path / "scheduler.pt"
    if not sched.exists():
        return "scheduler.pt missing"
    if sched.stat().st_size == 0:
        return "scheduler.pt empty"
    return None


def checkpoint_problem(path: str | os.PathLike, need_training_state: bool = True) -> str | None:
    """Why a model or checkpoint folder cannot be used, or None when it is complete."""
    path = Path(path)
    if not path.is_dir():
        return "not a directory"
    if not (path / "config.json").exists():
        return "config.json missing"
    problem = _weights_problem(path)
    if problem:
        return problem
    try:
        json.loads((path / "config.json").read_text())
    except Exception as e:
        return f"config.json unreadable ({e})"
    if need_training_state and checkpoint_step(path) is not None:
        return _training_state_problem(path)
    return None


def latest_valid_checkpoint(run_dir: str | os.PathLike, warn=print) -> Path | None:
    """Newest checkpoint that passes :func:`checkpoint_problem`; invalid ones are named."""
    for ck in reversed(list_checkpoints(run_dir)):
        problem = checkpoint_problem(ck)
        if problem is None:
            return ck
        warn(f"warning: skipping incomplete or corrupt checkpoint {ck}: {problem}")
    return None


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def best_info(run_dir: str | os.PathLike) -> dict | None:
    """Which checkpoint is the run's best: ``{"path", "checkpoint", "step", "eval_loss"}``
    from ``best/best_info.json`` (--save_best), else from the newest trainer_state.json."""
    run_dir = Path(run_dir)
    best = run_dir / BEST
    info = _read_json(best / BEST_INFO)
    if info and checkpoint_problem(best, False) is None:
        return {"path": str(best), **info}
    for ck in reversed(list_checkpoints(run_dir)):
        state = _read_json(ck / "trainer_state.json")
        if not state:
            continue
        b = state.get("best_model_checkpoint")
        if b and (run_dir / Path(b).name).is_dir():
            return {"path": str(run_dir / Path(b).name), "checkpoint": Path(b).name,
                    "step": checkpoint_step(Path(b)), "eval_loss": state.get("best_metric")}
        return None
    return None


def best_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The run's best-by-validation-loss model folder (``best/`` when kept)."""
    run_dir = Path(run_dir)
    if (run_dir / BEST).is_dir() and checkpoint_problem(run_dir / BEST, False) is None:
        return run_dir / BEST
    info = best_info(run_dir)
    return Path(info["path"]) if info else None


def model_step(path: str | os.PathLike) -> int | None:
    """Training step of a model folder: its checkpoint-N name, its trainer_state.json, or
    the run's run_info.json (for final/ and best/)."""
    path = Path(path)
    step = checkpoint_step(path)
    if step is not None:
        return step
    state = _read_json(path / "trainer_state.json")
    if isinstance(state.get("global_step"), int):
        return state["global_step"]
    info = _read_json(path.parent / RUN_INFO)
    if path.name == BEST:
        b = _read_json(path / BEST_INFO)
        if isinstance(b.get("step"), int):
            return b["step"]
        if info.get("best_checkpoint"):
            return checkpoint_step(Path(info["best_checkpoint"]))
    return info.get("global_step") if isinstance(info.get("global_step"), int) else None


# --------------------------------------------------------------------------- one run

@dataclass(frozen=True)
class RunLayout:
    """The files of one training run, ``<checkpoints>/<name>/``."""

    dir: Path

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def final(self) -> Path:
        return self.dir / FINAL

    @property
    def best(self) -> Path:
        return self.dir / BEST

    @property
    def best_tmp(self) -> Path:
        return self.dir / f".{BEST}.tmp"

    @property
    def run_info(self) -> Path:
        return self.dir / RUN_INFO

    @property
    def cache_dir(self) -> Path:
        return self.dir / CACHE

    @property
    def evaluation_dir(self) -> Path:
        return self.dir / EVALUATION

    @property
    def hub_stage(self) -> Path:
        return self.dir / HUB_STAGE

    def checkpoint(self, step: int) -> Path:
        return self.dir / checkpoint_name(step)

    def checkpoints(self) -> list[Path]:
        return list_checkpoints(self.dir)

    def latest_valid_checkpoint(self, warn=print) -> Path | None:
        return latest_valid_checkpoint(self.dir, warn=warn)

    def best_info(self) -> dict | None:
        return best_info(self.dir)

    def read_run_info(self) -> dict:
        """run_info.json as a dict ({} when missing or unreadable)."""
        return _read_json(self.run_info)

    def has_final(self) -> bool:
        return (self.final / "config.json").exists()

    def contains(self, model_dir: str | os.PathLike) -> bool:
        """Whether ``model_dir`` is a folder directly inside this run."""
        return Path(model_dir).resolve().parent == self.dir.resolve()

    def evaluation_dir_for(self, model_dir: str | os.PathLike) -> Path:
        """Where the evaluation of ``model_dir`` is written: ``evaluation/`` for final/,
        ``evaluation/<name>/`` for any other folder of this run (each checkpoint's report
        apart), ``<model>/evaluation/`` for a model outside the run."""
        return self._per_model(model_dir, EVALUATION)

    def gguf_dir_for(self, model_dir: str | os.PathLike) -> Path:
        """Where GGUF exports of ``model_dir`` go, by the same rule as its evaluation."""
        return self._per_model(model_dir, GGUF)

    def _per_model(self, model_dir: str | os.PathLike, folder: str) -> Path:
        model_dir = Path(model_dir)
        if self.contains(model_dir):
            return self.dir / folder if model_dir.name == FINAL else self.dir / folder / model_dir.name
        return model_dir / folder

    def movable_on_fresh(self) -> list[Path]:
        """What ``--fresh`` moves aside: everything the old model produced (checkpoints,
        final/, best/, run_info.json, logs, its evaluation, exports and staged upload); the token
        cache stays, since it depends on the data, not on the run."""
        if not self.dir.is_dir():
            return []
        names = {FINAL, BEST, RUN_INFO, SIDECAR, TENSORBOARD, EVALUATION, HUB_STAGE, GGUF}
        return sorted(p for p in self.dir.iterdir()
                      if p.name in names or checkpoint_step(p) is not None)

    def previous_dir(self, stamp: str | None = None) -> Path:
        """The dated sibling folder an old run is moved to by ``--fresh``."""
        stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
        return self.dir.parent / f"{self.name}.previous-{stamp}"

    def available_models(self) -> list[str]:
        names = [p.name for p in self.checkpoints()]
        return names + [n for n in (FINAL, BEST) if (self.dir / n).is_dir()]

    def resolve(self, spec: str | None) -> Path:
        """``final`` (default: final/, else the latest valid checkpoint), ``latest``,
        ``best`` or ``checkpoint-N`` of this run. Raises ModelNotFound naming what exists."""
        if not self.dir.is_dir():
            raise ModelNotFound(
                f"model {spec or FINAL!r} not found: run folder {self.dir} does not exist; train "
                f"one with `python 04_training/train_model_slm.py` or pass a model folder path")
        name = spec or FINAL
        found: Path | None = None
        if name == FINAL and self.final.is_dir():
            found = self.final
        elif name in ("latest", FINAL):
            found = self.latest_valid_checkpoint(warn=lambda *_: None)
        elif name == BEST:
            found = best_checkpoint(self.dir)
        elif checkpoint_step(name) is not None and (self.dir / name).is_dir():
            found = self.dir / name
        if found is None:
            raise ModelNotFound(f"model {name!r} not found in {self.dir}; available: "
                                f"{', '.join(self.available_models()) or 'none'}")
        return found


# --------------------------------------------------------------------------- the project

@dataclass(frozen=True)
class Layout:
    """Every artifact's place under one root (the repository, ``$LONDONLM_ROOT`` or --root)."""

    root: Path
    registry_file: Path | None = None   # the corpus registry (data_sources.yaml) shipped with the repo

    @classmethod
    def at(cls, root: str | os.PathLike | None = None, *, default_root: str | os.PathLike,
           registry_file: str | os.PathLike | None = None) -> "Layout":
        """A layout at an explicit root, else ``$LONDONLM_ROOT``, else ``default_root``."""
        chosen = root or os.environ.get(ROOT_ENV) or default_root
        return cls(Path(chosen).expanduser().resolve(),
                   Path(registry_file) if registry_file else None)

    @property
    def data_dir(self) -> Path:
        return self.root / "data" / "london_historical"

    @property
    def downloads_dir(self) -> Path:
        return self.data_dir / "downloads"

    @property
    def processed_dir(self) -> Path:
        return self.data_dir / "processed"

    @property
    def metadata_dir(self) -> Path:
        return self.data_dir / "metadata"

    @property
    def models_dir(self) -> Path:
        return self.root / "09_models"

    @property
    def tokenizers_dir(self) -> Path:
        return self.models_dir / "tokenizers"

    @property
    def checkpoints_dir(self) -> Path:
        return self.models_dir / "checkpoints"

    @property
    def training_log(self) -> Path:
        return self.root / "04_training" / "model_training.log"

    def tokenizer_dir(self, name: str) -> Path:
        return self.tokenizers_dir / name

    def run(self, name: str) -> RunLayout:
        return RunLayout(self.checkpoints_dir / name)

    def run_dir(self, name: str) -> Path:
        return self.run(name).dir

    def runs(self) -> list[RunLayout]:
        """Every run folder that has a run_info.json, by name."""
        if not self.checkpoints_dir.is_dir():
            return []
        return [RunLayout(p) for p in sorted(self.checkpoints_dir.iterdir())
                if (p / RUN_INFO).is_file()]

    def resolve_model(self, spec: str | None, run: str | RunLayout) -> Path:
        """A user's model spec to a model folder: an existing path; ``final``/``latest``/
        ``best``/``checkpoint-N`` of ``run``; another run's name (its final/, else latest);
        or ``RUN/checkpoint-N``. Raises ModelNotFound naming what is available."""
        run = run if isinstance(run, RunLayout) else self.run(run)
        if spec and Path(spec).expanduser().exists():
            return Path(spec).expanduser()
        if spec and (Path(spec).expanduser().is_absolute() or spec.startswith(".")):
            raise ModelNotFound(f"model folder {spec} does not exist")
        if spec and "/" in spec:
            other, _, name = spec.partition("/")
            if other and (self.checkpoints_dir / other).is_dir():
                return self.run(other).resolve(name or None)
        elif spec and (self.checkpoints_dir / spec).is_dir():
            return self.run(spec).resolve(None)
        return run.resolve(spec)

    # -------------------------------------------------------------- chat fine-tuning (07_finetuning/)

    @property
    def chat_data_dir(self) -> Path:
        """The period-dialogue dataset: a ``datasets.save_to_disk`` folder that also holds its
        card (README.md), statistics, rejected exchanges and sidecar."""
        return self.data_dir / CHAT_DATA

    def chat_run_name(self, base_run: str) -> str:
        """The chat run fine-tuned from run ``base_run`` (``tiny`` -> ``tiny-chat``)."""
        return f"{base_run}{CHAT_SUFFIX}"

    def chat_run(self, base_run: str) -> RunLayout:
        return self.run(self.chat_run_name(base_run))


CHAT_DATA = "chat"                  # under data_dir: the dialogue dataset (datasets on disk)
CHAT_SUFFIX = "-chat"               # chat run name = base run name + suffix
CHAT_INFO = "chat_info.json"        # in a chat model folder: place, years, system line
CHAT_STATS = "stats.json"           # in the dialogue dataset folder: counts per file and reason
CHAT_REJECTED = "rejected.jsonl"    # in the dialogue dataset folder: each dropped exchange, why
CHAT_EVAL = "chat_eval.json"        # chat evaluation report, in the model's evaluation folder
