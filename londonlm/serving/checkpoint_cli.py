"""``test_checkpoint.py`` / ``test_checkpoint_slm.py``: list a run's checkpoints, or load one
and print its step and validation loss, then generate from a prompt (or interactively)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core import (Layout, RunLayout, StageParser, UsageError, describe_checkpoints, existing_dir, free_text,
                    model_step, non_negative_int, positive_int, read_json_object, record_field)


def _loss(value) -> float | None:
    """A recorded loss, or None for anything that is no number (a hand-edited or damaged record)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def checkpoint_facts(path: Path) -> dict:
    """Step and last validation loss from trainer_state.json (or run_info.json for final/).
    A record that is damaged or not the Trainer's shape gives no loss ("n/a"), never a
    traceback: the weights beside it may still be fine to try."""
    path = Path(path)
    facts = {"path": str(path), "step": model_step(path), "eval_loss": None}
    state = path / "trainer_state.json"
    if state.exists():
        history = record_field(read_json_object(state), "log_history", kind=list) or []
        ev = [h["eval_loss"] for h in history if isinstance(h, dict) and "eval_loss" in h]
        facts["eval_loss"] = _loss(ev[-1]) if ev else None
    else:
        facts["eval_loss"] = _loss(RunLayout(path.parent).read_run_info().get("final_eval_loss"))
    return facts


def _parser(default_preset: str, presets: list[str], prompt: str,
            max_new_tokens: int, prog: str | None) -> argparse.ArgumentParser:
    p = StageParser(prog=prog, description="Inspect and try a training checkpoint.")
    p.add_argument("--preset", default=default_preset, choices=presets)
    # --run_name_dir as training names the folder: resume_training.sh passes its flags here to list
    p.add_argument("--run_name", "--run_name_dir", dest="run_name",
                   help="run folder under 09_models/checkpoints/ (default: preset)")
    p.add_argument("--root", type=existing_dir, help="project root")
    p.add_argument("--list-checkpoints", "--list_checkpoints", dest="list_checkpoints",
                   action="store_true", help="list checkpoints (step, loss, time, validity)")
    p.add_argument("--checkpoint_path", "--checkpoint", dest="checkpoint",
                   help="checkpoint-N, latest, best, final or a path (default: latest)")
    p.add_argument("--prompt", type=free_text, default=prompt)
    p.add_argument("--max_new_tokens", type=positive_int, default=max_new_tokens)
    p.add_argument("--interactive", action="store_true", help="prompt loop on stdin")
    p.add_argument("--seed", type=non_negative_int, default=0)
    return p


def _prompts(first: str, interactive: bool):
    """The first prompt, then (interactive) each line typed until EOF or /quit (read as the
    REPL reads them: a line that is not valid UTF-8 is refused and the loop goes on)."""
    from .repl import typed_lines

    yield first
    if interactive:
        yield from typed_lines(None, "prompt> ", sys.stdout)


def main(argv: list[str], layout: Layout, default_preset: str, presets: list[str],
         prompt: str, max_new_tokens: int, prog: str | None = None) -> int:
    a = _parser(default_preset, presets, prompt, max_new_tokens, prog).parse_args(argv)
    if a.root:
        layout = Layout.at(a.root, default_root=layout.root, registry_file=layout.registry_file)
    run = layout.run(a.run_name or a.preset)
    if a.list_checkpoints:
        # a run folder that is not there (a mistyped --run_name, a --root or $LONDONLM_ROOT
        # elsewhere) has nothing to list: say where we looked instead of "(no checkpoints)"
        if not run.dir.is_dir():
            raise UsageError(f"no run folder at {run.dir}: check --run_name/--preset and --root "
                             f"(or $LONDONLM_ROOT)")
        print(f"checkpoints in {run.dir}:")
        print(describe_checkpoints(run.dir))
        return 0
    path = layout.resolve_model(a.checkpoint or "latest", run)  # ModelNotFound lists what exists
    from ..generation import GenerationSettings, check_model_dir, generate, load_model
    from .repl import for_terminal

    check_model_dir(path)  # a folder that is no model is the one error line, before any facts
    facts = checkpoint_facts(path)
    ev = f"{facts['eval_loss']:.4f}" if facts["eval_loss"] is not None else "n/a"
    print(f"checkpoint: {path}\nstep: {facts['step']}\nvalidation loss: {ev}")
    lm = load_model(path)
    settings = GenerationSettings(max_new_tokens=a.max_new_tokens, seed=a.seed)
    out = for_terminal(sys.stdout)  # the model's control characters shown, not sent to a terminal
    for prompt in _prompts(a.prompt, a.interactive):
        sample = generate(lm, prompt, settings)[0]
        out.write(f"> {prompt}{sample.text}\n")
        out.flush()
    return 0
