"""Finding, validating and naming checkpoints.

Every consumer (test_checkpoint, evaluation, inference, publishing) resolves a model
spec with :func:`resolve_model_path`: a path, a run name, or one of ``final``, ``latest``,
``best``, ``checkpoint-N`` (optionally ``RUN/checkpoint-N``).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

_CKPT = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
BEST_INFO = "best_info.json"  # in best/: which checkpoint it copies, its step and validation loss


def checkpoint_step(path: Path) -> int | None:
    m = _CKPT.match(Path(path).name)
    return int(m.group(1)) if m else None


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """``checkpoint-N`` folders of a run, ascending by step (valid or not)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step)


def checkpoint_problem(path: Path, need_training_state: bool = True) -> str | None:
    """Why a checkpoint folder cannot be used, or None when it is complete and readable."""
    path = Path(path)
    if not path.is_dir():
        return "not a directory"
    if not (path / "config.json").exists():
        return "config.json missing"
    weights = next((path / w for w in WEIGHT_FILES if (path / w).exists()), None)
    if weights is None:
        return "model weights missing"
    try:
        if weights.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(weights), framework="pt") as f:
                keys = list(f.keys())
            if not keys:
                return "model weights empty"
    except Exception as e:  # truncated / corrupt file
        return f"model weights unreadable ({type(e).__name__}: {e})"
    try:
        json.loads((path / "config.json").read_text())
    except Exception as e:
        return f"config.json unreadable ({e})"
    if need_training_state and checkpoint_step(path) is not None:
        state = path / "trainer_state.json"
        if not state.exists():
            return "trainer_state.json missing"
        try:
            json.loads(state.read_text())
        except Exception as e:
            return f"trainer_state.json unreadable ({e})"
        for f in ("optimizer.pt", "scheduler.pt"):
            if not (path / f).exists():
                return f"{f} missing"
            if (path / f).stat().st_size == 0:
                return f"{f} empty"
    return None


def latest_valid_checkpoint(run_dir: str | Path, warn=print) -> Path | None:
    """Newest checkpoint that passes :func:`checkpoint_problem`; invalid ones are named."""
    for ck in reversed(list_checkpoints(run_dir)):
        problem = checkpoint_problem(ck)
        if problem is None:
            return ck
        warn(f"warning: skipping incomplete or corrupt checkpoint {ck}: {problem}")
    return None


def best_checkpoint(run_dir: str | Path) -> Path | None:
    """The run's best-by-validation-loss model: the ``best/`` folder when kept, else the
    ``best_model_checkpoint`` recorded in the newest trainer_state.json."""
    run_dir = Path(run_dir)
    if (run_dir / "best").is_dir() and checkpoint_problem(run_dir / "best", False) is None:
        return run_dir / "best"
    for ck in reversed(list_checkpoints(run_dir)):
        try:
            st = json.loads((ck / "trainer_state.json").read_text())
        except Exception:
            continue
        b = st.get("best_model_checkpoint")
        if b:
            p = run_dir / Path(b).name
            if p.is_dir():
                return p
    return None


def best_info(run_dir: str | Path) -> dict | None:
    """Which checkpoint is the run's best: ``{"path", "checkpoint", "step", "eval_loss"}``
    from ``best/best_info.json`` (--save_best), else from the newest trainer_state.json."""
    run_dir = Path(run_dir)
    f = run_dir / "best" / BEST_INFO
    if f.exists() and checkpoint_problem(run_dir / "best", False) is None:
        try:
            return {"path": str(run_dir / "best"), **json.loads(f.read_text())}
        except ValueError:
            pass
    for ck in reversed(list_checkpoints(run_dir)):
        try:
            st = json.loads((ck / "trainer_state.json").read_text())
        except Exception:
            continue
        b = st.get("best_model_checkpoint")
        if b and (run_dir / Path(b).name).is_dir():
            return {"path": str(run_dir / Path(b).name), "checkpoint": Path(b).name,
                    "step": checkpoint_step(Path(b)), "eval_loss": st.get("best_metric")}
        return None
    return None


def describe_checkpoints(run_dir: str | Path) -> str:
    """One line per checkpoint: name, step, last logged loss, validation loss, validity;
    the best-by-validation-loss one is marked, and best/ and final/ are named."""
    lines = []
    best = best_info(run_dir)
    for ck in list_checkpoints(run_dir):
        problem = checkpoint_problem(ck)
        loss = eval_loss = "-"
        try:
            st = json.loads((ck / "trainer_state.json").read_text())
            logs = st.get("log_history", [])
            tr = [h["loss"] for h in logs if "loss" in h]
            ev = [h["eval_loss"] for h in logs if "eval_loss" in h]
            loss = f"{tr[-1]:.4f}" if tr else "-"
            eval_loss = f"{ev[-1]:.4f}" if ev else "-"
        except Exception:
            pass
        import datetime as _dt

        when = _dt.datetime.fromtimestamp(ck.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        status = "ok" if problem is None else f"INVALID: {problem}"
        mark = "  <- best" if best and best.get("checkpoint") == ck.name else ""
        lines.append(f"{ck.name:<18} step {checkpoint_step(ck):>7}  loss {loss:>8}  "
                     f"val {eval_loss:>8}  {when}  {status}{mark}")
    if best is not None:
        ev = best.get("eval_loss")
        where = "best/ (copy)" if Path(best["path"]).name == "best" else best["checkpoint"]
        lines.append(f"best: {best.get('checkpoint')} (step {best.get('step')}, val "
                     f"{ev:.4f}) -> {where}" if ev is not None else f"best: {best.get('checkpoint')}")
    if (Path(run_dir) / "final").is_dir():
        lines.append("final: final/")
    return "\n".join(lines) if lines else "(no checkpoints)"


def resolve_model_path(spec: str | None, run_dir: str | Path | None = None,
                       runs_root: str | Path | None = None) -> Path:
    """Turn a user's model spec into a model folder.

    ``spec``: an existing path; ``final``/``latest``/``best``/``checkpoint-N`` inside
    ``run_dir``; a run name under ``runs_root`` (its final/, else latest); or
    ``RUN/checkpoint-N``. ``None`` means ``final`` then ``latest`` of ``run_dir``.
    Raises FileNotFoundError naming what is available."""
    run_dir = Path(run_dir) if run_dir else None
    if spec and Path(spec).expanduser().exists():
        return Path(spec).expanduser()
    if spec and runs_root and "/" in spec:
        run, _, name = spec.partition("/")
        return resolve_model_path(name, Path(runs_root) / run, runs_root)
    if spec and runs_root and (Path(runs_root) / spec).is_dir():
        return resolve_model_path(None, Path(runs_root) / spec, runs_root)
    if run_dir is None or not run_dir.is_dir():
        raise FileNotFoundError(
            f"model {spec!r} not found and run folder {run_dir} does not exist; train one with "
            f"`python 04_training/train_model_slm.py` or pass a model folder path")
    name = spec or "final"
    if name == "final" and (run_dir / "final").is_dir():
        return run_dir / "final"
    if name in ("latest", "final") or (spec is None):
        ck = latest_valid_checkpoint(run_dir, warn=lambda *_: None)
        if ck is not None:
            return ck
    elif name == "best":
        b = best_checkpoint(run_dir)
        if b is not None:
            return b
    elif _CKPT.match(name) and (run_dir / name).is_dir():
        return run_dir / name
    available = [p.name for p in list_checkpoints(run_dir)]
    for extra in ("final", "best"):
        if (run_dir / extra).is_dir():
            available.append(extra)
    raise FileNotFoundError(
        f"model {name!r} not found in {run_dir}; available: {', '.join(available) or 'none'}")
