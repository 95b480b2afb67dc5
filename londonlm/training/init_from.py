"""``--init_from``: continued pre-training from existing weights. Resolves the parent model,
checks before any data work that its weights are complete, its context fits and its tokenizer
gives token ids the same meaning, and records the parent in the new run's run_info.json."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..core import (Layout, ModelNotFound, RunLayout, checkpoint_problem, model_run_info, model_step, sha256_file,
                    user_path)
from .base import TrainingError


def tokenizer_identity(folder: Path) -> dict | None:
    """What decides token ids: BPE vocabulary, merges and (when known) added tokens, from
    ``tokenizer.json`` or a slow tokenizer's ``vocab.json`` + ``merges.txt``; padding or
    truncation settings do not count. None when the folder holds no tokenizer."""
    folder = Path(folder)
    if (folder / "tokenizer.json").exists():
        d = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        model = d.get("model") or {}
        return {"vocab": model.get("vocab"),
                "merges": [" ".join(m) if isinstance(m, list) else m for m in model.get("merges") or []],
                "added": sorted((t["id"], t["content"]) for t in d.get("added_tokens") or [])}
    if (folder / "vocab.json").exists():
        merges = []
        if (folder / "merges.txt").exists():
            merges = [ln for ln in (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
                      if ln and not ln.startswith("#version")]
        return {"vocab": json.loads((folder / "vocab.json").read_text(encoding="utf-8")),
                "merges": merges, "added": None}
    return None


def same_tokenizer(a: dict, b: dict) -> bool:
    return (a["vocab"] == b["vocab"] and a["merges"] == b["merges"]
            and (a["added"] is None or b["added"] is None or a["added"] == b["added"]))


def tokenizer_fingerprint(tokenizer_dir: Path) -> str:
    return sha256_file(Path(tokenizer_dir) / "tokenizer.json")


@dataclass
class InitSource:
    """The weights a continued pre-training run starts from (resolved before any data work)."""
    path: Path
    spec: str
    config: object
    tokenizer_problem: str | None   # set: the weights' token ids differ from the tokenizer's
    note: str | None

    def follow(self, old_dir: Path, new_dir: Path) -> None:
        """The parent was inside a run that --fresh just moved from old_dir to new_dir."""
        try:
            rel = self.path.resolve().relative_to(old_dir.resolve())
        except ValueError:
            return
        if (new_dir / rel).exists():
            self.path = new_dir / rel


def _runs_with_weights(layout: Layout) -> list[str]:
    root = layout.checkpoints_dir
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and (RunLayout(p).final.is_dir() or RunLayout(p).checkpoints()))


def find_parent(spec: str, run: RunLayout, layout: Layout) -> Path:
    """A model folder path, ``RUN`` / ``RUN/final|best|latest|checkpoint-N`` under the runs
    folder, or ``final``/``best``/``checkpoint-N`` of this run."""
    try:
        if not user_path(spec).exists() and "/" not in spec and (run.dir / spec).is_dir():
            return run.resolve(spec)
        return layout.resolve_model(spec, run)
    except ModelNotFound as e:
        raise TrainingError(f"--init_from {spec!r}: {e}. Give a model folder, a run name, or "
                            f"RUN/final|best|latest|checkpoint-N; runs with weights: "
                            f"{', '.join(_runs_with_weights(layout)) or 'none'}") from None


def _tokenizer_problem(src: Path, cfg, tokenizer, tok_dir: Path) -> tuple[str | None, str | None]:
    """(why the parent's token ids differ from the tokenizer's, a note when unchecked)."""
    theirs, mine = tokenizer_identity(src), tokenizer_identity(tok_dir)
    info = model_run_info(src)
    problem = note = None
    if theirs is None:
        if info.get("tokenizer_sha256") and info["tokenizer_sha256"] != tokenizer_fingerprint(tok_dir):
            problem = (f"it was trained with tokenizer {info.get('tokenizer_dir')} "
                       f"(sha256 {info['tokenizer_sha256'][:12]}), not {tok_dir}")
        elif not info:
            note = "no tokenizer saved with the weights: only the vocabulary size was checked"
    elif mine is None or not same_tokenizer(theirs, mine):
        n_theirs = len(theirs["vocab"] or {}) + len(theirs["added"] or [])
        problem = (f"its tokenizer (saved with the weights, ~{n_theirs} entries) differs from "
                   f"{tok_dir} ({len(tokenizer)} tokens): token ids would not mean the same")
    if problem is None and cfg.vocab_size < len(tokenizer):
        problem = f"its vocabulary ({cfg.vocab_size}) is smaller than the tokenizer's ({len(tokenizer)})"
    eos = getattr(cfg, "eos_token_id", None)
    if problem is None and eos is not None and eos != tokenizer.eos_token_id:
        problem = f"its eos id {eos} differs from the tokenizer's {tokenizer.eos_token_id}"
    if problem and theirs is not None:
        problem += f"; to keep it, pass --tokenizer_dir {src}"
    elif problem and info.get("tokenizer_dir"):
        problem += f"; to keep it, pass --tokenizer_dir {info['tokenizer_dir']}"
    return problem, note


def resolve_init_source(spec: str, run: RunLayout, layout: Layout, tokenizer, tok_dir: Path,
                        context_length: int) -> InitSource:
    """The parent weights of ``--init_from spec``, checked: complete weights, a context at
    least ``context_length``, and whether the tokenizer matches."""
    from transformers import AutoConfig

    src = find_parent(spec, run, layout)
    problem = checkpoint_problem(src, need_training_state=False)
    if problem:
        raise TrainingError(f"--init_from {src}: cannot load weights: {problem}")
    cfg = AutoConfig.from_pretrained(str(src))
    if getattr(cfg, "n_positions", context_length) < context_length:
        raise TrainingError(f"--init_from {src}: its context ({cfg.n_positions}) is shorter than "
                            f"--max_length {context_length}; lower --max_length to at most "
                            f"{cfg.n_positions}")
    tok_problem, note = _tokenizer_problem(src, cfg, tokenizer, tok_dir)
    return InitSource(src, spec, cfg, tok_problem, note)


def parent_record(init: InitSource) -> dict:
    """The ``parent`` entry of run_info.json: where the weights came from, which run and step,
    and whether the embeddings were resized to a different tokenizer."""
    src = init.path
    info = model_run_info(src)
    resized = init.tokenizer_problem is not None  # only reached with --resize_embeddings
    return {"path": str(src.resolve()), "init_from": init.spec,
            "config_sha256": sha256_file(src / "config.json"),
            "step": model_step(src) if (src / "trainer_state.json").exists() else info.get("global_step"),
            "run_dir": info.get("run_dir"), "run_name": info.get("run_name"),
            "preset": info.get("preset"), "tokens_seen": info.get("tokens_seen"),
            "tokenizer_sha256": info.get("tokenizer_sha256"),
            "tokenizer": "resized" if resized else "same", "resized_embeddings": resized}
