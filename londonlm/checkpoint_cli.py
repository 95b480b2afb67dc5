"""``test_checkpoint.py`` / ``test_checkpoint_slm.py``: list a run's checkpoints, or load one
and print its step and validation loss, then generate from a prompt (or interactively)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from .checkpoints import checkpoint_step, describe_checkpoints, resolve_model_path


def checkpoint_facts(path: Path) -> dict:
    """Step and last validation loss from trainer_state.json (or run_info.json for final/)."""
    facts = {"path": str(path), "step": checkpoint_step(path), "eval_loss": None}
    state = path / "trainer_state.json"
    info = path.parent / "run_info.json"
    if state.exists():
        st = json.loads(state.read_text())
        facts["step"] = st.get("global_step", facts["step"])
        ev = [h["eval_loss"] for h in st.get("log_history", []) if "eval_loss" in h]
        facts["eval_loss"] = ev[-1] if ev else None
    elif info.exists():
        ri = json.loads(info.read_text())
        facts["step"] = ri.get("global_step")
        facts["eval_loss"] = ri.get("final_eval_loss")
    return facts


def main(argv: list[str], get_paths: Callable, default_preset: str, presets: list[str],
         prompt: str, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description="Inspect and try a training checkpoint.")
    p.add_argument("--preset", default=default_preset, choices=presets)
    p.add_argument("--run_name", help="run folder under 09_models/checkpoints/ (default: preset)")
    p.add_argument("--root", help="project root")
    p.add_argument("--list-checkpoints", "--list_checkpoints", dest="list_checkpoints",
                   action="store_true", help="list checkpoints (step, loss, time, validity)")
    p.add_argument("--checkpoint_path", "--checkpoint", dest="checkpoint",
                   help="checkpoint-N, latest, best, final or a path (default: latest)")
    p.add_argument("--prompt", default=prompt)
    p.add_argument("--max_new_tokens", type=int, default=50)
    p.add_argument("--interactive", action="store_true", help="prompt loop on stdin")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    run_dir = get_paths(a.root).run_dir(a.run_name or a.preset)
    if a.list_checkpoints:
        print(f"checkpoints in {run_dir}:")
        print(describe_checkpoints(run_dir))
        return 0
    try:
        path = resolve_model_path(a.checkpoint or "latest", run_dir)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    facts = checkpoint_facts(path)
    ev = f"{facts['eval_loss']:.4f}" if facts["eval_loss"] is not None else "n/a"
    print(f"checkpoint: {path}\nstep: {facts['step']}\nvalidation loss: {ev}")
    from .pipeline import generate_samples

    prompts = [a.prompt]
    while True:
        for smp in generate_samples(path, prompts, a.max_new_tokens, a.seed):
            print(f"> {smp['prompt']}{smp['continuation']}", flush=True)
        if not a.interactive:
            return 0
        try:
            line = input("prompt> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if line.strip() in ("/quit", "/exit"):
            return 0
        prompts = [line]
