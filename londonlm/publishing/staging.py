"""The staging folder: what will be uploaded, assembled locally first so it can be verified.

Files are hard-linked when the file system allows (weights can be GBs); the folder carries a
marker so a later staging may wipe it, and nothing else.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..core import (checkpoint_problem, flock_holder, give_open_mode, link_or_copy, lock_folder, read_unchanged,
                    weight_files, write_json_atomic)
from ..generation import generation_config_dict, model_stamp, pickled_weights_refused
from ..tokens import TOKENIZER_FILES
from .access import PublishError

STAGE_MARKER = ".londonlm_stage"  # marks a folder we may wipe; never uploaded
MODEL_FILES = ("config.json", "generation_config.json")
SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")
SPECIAL_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")
Log = Callable[[str], None]


@dataclass
class StagedFile:
    path: str
    size: int


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def list_folder(folder: Path) -> list[StagedFile]:
    """Files ``upload_folder`` would send, with sizes (the stage marker excluded)."""
    folder = Path(folder)
    return [StagedFile(p.relative_to(folder).as_posix(), p.stat().st_size)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != STAGE_MARKER]


def describe_files(files: list[StagedFile]) -> str:
    total = sum(f.size for f in files)
    width = max((len(f.path) for f in files), default=10)
    lines = [f"  {f.path:<{width}}  {human_size(f.size):>10}" for f in files]
    return "\n".join(lines + [f"  {'total':<{width}}  {human_size(total):>10}  ({len(files)} files)"])


def prepare_stage_dir(stage_dir: Path) -> Path:
    """Empty ``stage_dir`` for a new staging, refusing to wipe a folder we did not create."""
    stage_dir = Path(stage_dir)
    if stage_dir.exists():
        if not stage_dir.is_dir():
            raise PublishError(f"staging path {stage_dir} is a file; pass another --stage_dir")
        if any(stage_dir.iterdir()) and not (stage_dir / STAGE_MARKER).exists():
            raise PublishError(f"staging folder {stage_dir} is not empty and was not created by "
                               f"the publisher; pass an empty or new --stage_dir")
        shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True)
    (stage_dir / STAGE_MARKER).write_text("staged by londonlm.publishing; safe to delete\n")
    return stage_dir


def _trainer_of(run_dir: Path) -> str:
    """Who trains the run now (its run lock, an exclusive ``flock`` on the folder), in words."""
    with contextlib.suppress(OSError):
        fd = lock_folder(run_dir, shared=True)
        if fd is None:
            return f" by {flock_holder(run_dir)}, which is training {run_dir}"
        os.close(fd)
    return ""


@contextlib.contextmanager
def one_save(model_dir: Path):
    """The block (the facts checked against the weights, then the staging) reads one save of
    ``model_dir``. A training of the run saving it again meanwhile gave a folder of two saves (the
    old weights with the new config and tokenizer), or new weights under the old evaluation's
    metrics, published as one model: now one line, before anything is uploaded. A save replaces the
    folder whole or writes its files anew, so the same :func:`~londonlm.generation.model_stamp` after
    the block as before it means one save was read. The staged files are hard links (or copies), so
    a save after the block leaves what is staged as it was."""
    model_dir = Path(model_dir)
    saved_again = lambda: PublishError(f"the model in {model_dir} was saved again while it was published"
                                       f"{_trainer_of(model_dir.parent)}: what was staged could mix two saves, so "
                                       f"nothing was uploaded; run the same command again once it is saved")
    with read_unchanged(lambda: model_stamp(model_dir), saved_again) as unchanged:
        yield
    unchanged()


def stage_model_files(model_dir: Path, stage_dir: Path, tokenizer_fallback: Path | None = None,
                      log: Log = print) -> None:
    """Copy weights, configs and tokenizer files into ``stage_dir``. Nothing is "fixed":
    a config that disagrees with its tokenizer is copied as is so verification reports it."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise PublishError(f"{model_dir} has no config.json; pass a model folder such as the "
                           f"run's final/ or a checkpoint-N")
    _stage_weights(model_dir, stage_dir, log)
    link_or_copy(model_dir / "config.json", stage_dir / "config.json")
    tok_src = model_dir if (model_dir / "tokenizer.json").exists() else tokenizer_fallback
    if tok_src is None or not (Path(tok_src) / "tokenizer.json").exists():
        raise PublishError(f"no tokenizer.json in {model_dir}"
                           + (f" or {tokenizer_fallback}" if tokenizer_fallback else "")
                           + "; publish a folder saved with its tokenizer (the run's final/)")
    for name in TOKENIZER_FILES:
        if (Path(tok_src) / name).exists():
            link_or_copy(Path(tok_src) / name, stage_dir / name)
    if (model_dir / "generation_config.json").exists():
        link_or_copy(model_dir / "generation_config.json", stage_dir / "generation_config.json")
    else:
        # Written from config.json's own ids (not the tokenizer's) so a mismatch still surfaces.
        cfg = json.loads((model_dir / "config.json").read_text())
        write_json_atomic(stage_dir / "generation_config.json",
                          generation_config_dict(**{k: cfg.get(k) for k in SPECIAL_IDS}))
        log("generation_config.json missing in the model folder; wrote one from config.json")


def _stage_weights(model_dir: Path, stage_dir: Path, log: Log) -> None:
    files = weight_files(model_dir)
    problem = checkpoint_problem(model_dir, need_training_state=False) if files else None
    if problem:  # a shard missing or cut short: a repo that no one could load
        raise PublishError(f"the model at {model_dir} cannot be published: {problem}")
    pickled = [f for f in files if f.suffix == ".bin"]
    if files and not pickled:  # model.safetensors, or the index and every shard it names
        for f in files:
            link_or_copy(f, stage_dir / f.name)
    elif files:
        # The Hub and transformers prefer safetensors (no pickle): convert once here, one file
        # or shards alike (a sharded set comes out as safetensors shards with their own index).
        from transformers import AutoModelForCausalLM

        log(f"converting {files[0].name}{' and its shards' if len(files) > 1 else ''} to safetensors")
        with pickled_weights_refused(model_dir):
            model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True)
        model.save_pretrained(str(stage_dir))
        give_open_mode(stage_dir.glob("*.safetensors"))
    else:
        raise PublishError(f"no model weights in {model_dir} (model.safetensors or "
                           f"pytorch_model.bin); pick another --checkpoint")
