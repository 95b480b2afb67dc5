"""What a checkpoint is: its name and step, whether a folder is a usable model (weights) or a
resumable checkpoint (weights and training state), which one is a run's best, and the listing
``--list_checkpoints`` prints. The run folder's other names are :mod:`.layout`'s.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from contextlib import contextmanager
from pathlib import Path

from .artifacts import read_json_object, record_field, sha256_file
from .errors import LondonLMError


# Names a checkpoint and the run around it are recognised by.
BEST = "best"                        # copy of the best-by-validation-loss checkpoint (--save_best)
BEST_INFO = "best_info.json"         # in best/: which checkpoint it copies, its step and loss
RUN_INFO = "run_info.json"           # the run summary written by training
CHECKPOINT_PREFIX = "checkpoint-"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"   # a sharded set's: tensor name -> shard file
PYTORCH_BIN = "pytorch_model.bin"
PYTORCH_BIN_INDEX = "pytorch_model.bin.index.json"  # the same for pickled shards (safe_serialization=False)
WEIGHT_FILES = (SAFETENSORS, PYTORCH_BIN)            # the single-file forms, in the order read
_CKPT = re.compile(r"^checkpoint-(\d+)$")


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


class WeightsIndexError(LondonLMError, ValueError):
    """A model.safetensors.index.json (or pytorch_model.bin.index.json) that is not the shard
    index transformers writes."""


def shard_map(index: Path) -> dict[str, str]:
    """A sharded set's index as tensor name -> shard file (transformers' own
    ``model-0000N-of-0000M.safetensors``); WeightsIndexError when it is not such an index. A
    shard named by a path (``../other/model.safetensors``) is refused: the folder would not
    hold its own weights, and publishing would upload a file from outside it."""
    try:
        record = json.loads(Path(index).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise WeightsIndexError(f"{Path(index).name} unreadable ({type(e).__name__}: "
                                f"{(str(e).splitlines() or [''])[0]})") from None
    weight_map = record.get("weight_map") if isinstance(record, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(
            isinstance(v, str) for v in weight_map.values()):
        raise WeightsIndexError(f"{Path(index).name} is no shard index (its weight_map names no "
                                f"shard file for each tensor)")
    shards = sorted(set(weight_map.values()))
    outside = next((s for s in shards if Path(s).name != s or s in (".", "..")), None)
    if outside is not None:
        raise WeightsIndexError(f"{Path(index).name} names a shard outside the model folder ({outside!r})")
    return weight_map


def index_shards(index: Path) -> list[str]:
    """The shard files a sharded set's index names, in name order (see :func:`shard_map`)."""
    return sorted(set(shard_map(index).values()))


def weight_files(folder: str | os.PathLike) -> list[Path]:
    """The files that hold a model folder's weights, the one place that knows them, in the
    order transformers looks for them: model.safetensors; else a sharded set
    (``save_pretrained(max_shard_size=...)``, what transformers writes for a model over 5 GB):
    its index, then every shard it names; else pytorch_model.bin; else pickled shards
    (``pytorch_model.bin.index.json``, transformers 4's ``safe_serialization=False``, which
    ``AutoModelForCausalLM`` still loads); [] when there are none. An index that cannot be read
    lists itself alone (:func:`checkpoint_problem` says why): its hash still changes with it."""
    d = Path(folder)
    for one, index in ((SAFETENSORS, SAFETENSORS_INDEX), (PYTORCH_BIN, PYTORCH_BIN_INDEX)):
        if (d / one).is_file():
            return [d / one]
        if (d / index).is_file():
            try:
                return [d / index] + [d / s for s in index_shards(d / index)]
            except WeightsIndexError:
                return [d / index]
    return []


def tensor_files(folder: str | os.PathLike) -> list[Path]:
    """The files of a folder's weights that hold tensors (a sharded set's index is JSON):
    model.safetensors or pytorch_model.bin, or every shard of either; [] for none."""
    return [f for f in weight_files(folder) if not f.name.endswith(".index.json")]


def weights_sha256(folder: str | os.PathLike) -> str | None:
    """sha256 of a model folder's weights file, streamed (it can be GBs); for sharded weights,
    of the list of each file's name and sha256 (the index and every shard: one shard changed or
    replaced makes them other weights). None for a folder without weights."""
    files = weight_files(folder)
    if len(files) == 1:
        return sha256_file(files[0])
    if not files:
        return None
    listing = "".join(f"{f.name} {sha256_file(f)}\n" for f in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def _safetensors_keys(weights: Path, name: str) -> set[str] | str:
    """The tensor names of a safetensors file, or why it cannot be read (cut short, damaged)."""
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            return set(f.keys())
    except Exception as e:  # truncated / corrupt file
        return f"{name} unreadable ({type(e).__name__}: {e})"


def _shards_problem(path: Path, index: Path) -> str | None:
    """Why a sharded set is not whole: an index that is none, a shard it names missing or
    unreadable, or a tensor the index files under a shard that does not hold it. Pickled shards
    are checked as the training state's archives are (empty, cut short, no torch file), never
    unpickled here."""
    try:
        weight_map = shard_map(index)
    except WeightsIndexError as e:
        return f"sharded weights unusable: {e}"
    for shard in sorted(set(weight_map.values())):
        if not (path / shard).is_file():
            return f"sharded weights incomplete: {shard}, named by {index.name}, is missing"
        if index.name == PYTORCH_BIN_INDEX:
            problem = _archive_problem(path, path / shard)
            if problem:
                return f"sharded weights damaged: {problem}"
            continue
        keys = _safetensors_keys(path / shard, shard)
        if isinstance(keys, str):
            return f"sharded weights damaged: {keys}"
        lacking = sorted(t for t, s in weight_map.items() if s == shard and t not in keys)
        if lacking:
            return (f"sharded weights damaged: {shard} lacks {lacking[0]}, which {index.name} "
                    f"says it holds")
    return None


def _weights_problem(path: Path) -> str | None:
    files = weight_files(path)
    if not files:
        return "model weights missing"
    if files[0].name in (SAFETENSORS_INDEX, PYTORCH_BIN_INDEX):
        return _shards_problem(path, files[0])
    if files[0].suffix != ".safetensors":  # pytorch_model.bin: cut short or no torch file is
        return _archive_problem(path, files[0])  # one line, not "[Errno 22] Invalid argument"
    keys = _safetensors_keys(files[0], "model weights")
    if isinstance(keys, str):
        return keys
    return None if keys else "model weights empty"


def _trainer_state_problem(state: Path) -> str | None:
    """trainer_state.json must be an object with a step: the resume reads global_step from it."""
    if not state.exists():
        return "trainer_state.json missing"
    try:
        st = json.loads(state.read_text())
    except Exception as e:
        return f"trainer_state.json unreadable ({e})"
    if not isinstance(st, dict):
        return f"trainer_state.json holds a {type(st).__name__}, not the Trainer's state"
    step = st.get("global_step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return f"trainer_state.json has no valid global_step ({step!r})"
    return None


# torch's legacy format (torch.save(..., _use_new_zipfile_serialization=False)) begins with its
# magic number pickled: a LONG1 of torch.serialization.MAGIC_NUMBER (written here so that the
# checks never import torch; tests/core compares it with torch's)
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_START = b"\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little")


def _is_legacy_torch_file(head: bytes) -> bool:
    """Whether ``head`` starts as torch's legacy format: pickle's PROTO 2 or 3, then the pickled
    magic number. (Protocols 4 and 5 add a frame that torch.load's weights-only unpickler, the
    one a resume uses, refuses: such a file could not be resumed from either.)"""
    return head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03") and head[2:].startswith(_LEGACY_START)


def _archive_problem(path: Path, found: Path) -> str | None:
    """torch.save writes zip archives: one cut short lacks its end-of-central-directory, which is
    cheap to look for (the file is never loaded), where torch.load would fail mid-resume. A file
    that starts as neither a zip nor torch's legacy format (whose end cannot be checked) is no
    torch file at all: torch.load failed on it with a traceback mid-resume."""
    name = found.relative_to(path)
    if found.stat().st_size == 0:
        return f"{name} empty"
    if found.name == ".metadata":  # FSDP's sharded state: pickled by torch.distributed.checkpoint
        return None
    with open(found, "rb") as f:
        head = f.read(32)
    if head[:4] != b"PK\x03\x04":
        return None if _is_legacy_torch_file(head) else f"{name} damaged (not a torch archive)"
    if not zipfile.is_zipfile(found):
        return f"{name} damaged (a torch archive cut short)"
    return None


@contextmanager
def archives_without_crc():
    """torch.save, within, writes its archives without a CRC-32 of each record. torch.load never
    checks it (a byte flipped in an archive's data loads without a word: torch 2.13), so it
    guards nothing a resume reads, and an archive cut short is caught by :func:`_archive_problem`
    without it; computing it was ~45% of torch.save's time for AdamW's state of GPT-2 Small
    (benchmarks/checkpoint_save.py, BENCHMARKS.md "Checkpoint writes"). Torch's own setting
    (torch >= 2.6; requirements.txt asks 2.9) is put back on the way out."""
    import torch.serialization  # (here: the checkpoint listings and checks never need torch)

    before = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        yield
    finally:
        torch.serialization.set_crc32_options(before)


def _training_state_problem(path: Path) -> str | None:
    problem = _trainer_state_problem(path / "trainer_state.json")
    if problem:
        return problem
    # The optimizer: one file (DDP: optimizer.pt; FSDP full state: optimizer.bin), or FSDP's
    # sharded folder, whose .metadata is written after every shard.
    optim = [path / "optimizer.pt", path / "optimizer.bin", path / "optimizer_0" / ".metadata"]
    found = next((f for f in optim if f.exists()), None)
    if found is None:
        return "optimizer.pt missing"
    if not (path / "scheduler.pt").exists():
        return "scheduler.pt missing"
    # the RNG states are optional (the Trainer goes on without them) but loaded when present
    archives = [found, path / "scheduler.pt", *sorted(path.glob("rng_state*.pth")), *sorted(path.glob("scaler.pt"))]
    return next((p for p in (_archive_problem(path, f) for f in archives) if p), None)


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


def latest_valid_checkpoint(run_dir: str | os.PathLike, warn=print, problem_of=None) -> Path | None:
    """Newest checkpoint that passes ``problem_of`` (default :func:`checkpoint_problem`: its
    files); invalid ones are named."""
    for ck in reversed(list_checkpoints(run_dir)):
        problem = (problem_of or checkpoint_problem)(ck)
        if problem is None:
            return ck
        warn(f"warning: skipping incomplete or corrupt checkpoint {ck}: {problem}")
    return None


def earlier_run(run_dir: str | os.PathLike) -> list[str]:
    """What an earlier run left in a folder that a new run would replace: its final/ and best/
    models, its run_info.json, its checkpoints (valid or not). Empty for a new run's folder, and
    for one whose only trace is the record a run writes as it starts ("status": "running", as
    chat fine-tuning does): that run stopped before it made anything."""
    run_dir = Path(run_dir)
    found = [f"{n}/" for n in ("final", BEST) if (run_dir / n).is_dir()]
    found += [RUN_INFO] if (run_dir / RUN_INFO).exists() else []
    checkpoints = list_checkpoints(run_dir)
    if checkpoints:
        found.append(f"{len(checkpoints)} checkpoint(s) ({', '.join(p.name for p in checkpoints)})")
    if found == [RUN_INFO] and _status(run_dir / RUN_INFO) == "running":
        return []
    return found


def _status(record: Path) -> str | None:
    return record_field(read_json_object(record), "status")


def best_info(run_dir: str | os.PathLike) -> dict | None:
    """Which checkpoint is the run's best: ``{"path", "checkpoint", "step", "eval_loss"}``
    from ``best/best_info.json`` (--save_best), else from the newest trainer_state.json."""
    run_dir = Path(run_dir)
    best = run_dir / BEST
    info = read_json_object(best / BEST_INFO)
    if info and checkpoint_problem(best, False) is None:
        return {"path": str(best), **info}
    for ck in reversed(list_checkpoints(run_dir)):
        state = read_json_object(ck / "trainer_state.json")
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
    state = read_json_object(path / "trainer_state.json")
    if isinstance(state.get("global_step"), int):
        return state["global_step"]
    info = read_json_object(path.parent / RUN_INFO)
    if path.name == BEST:
        b = read_json_object(path / BEST_INFO)
        if isinstance(b.get("step"), int):
            return b["step"]
        if info.get("best_checkpoint"):
            return checkpoint_step(Path(info["best_checkpoint"]))
    return info.get("global_step") if isinstance(info.get("global_step"), int) else None
