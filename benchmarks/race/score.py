#!/usr/bin/env python3
"""Bits per byte of several model folders on the same held-out files, by the shared scorer
../shared/bench/bpb.py run in this one process (its own code: the import of torch and
transformers paid once, not once per folder), on a GPU when asked.

    python benchmarks/race/score.py --bpb ../shared/bench/bpb.py --device cuda \
        --max_bytes 100000 --files held1.txt held2.txt --models run/snap-0000100 run/final

bpb.py loads each model on the CPU and builds its windows with ``torch.tensor``; for
``--device cuda`` the model it loads is moved to the GPU and torch's default device is the GPU
while it scores, so its windows are made there too. Nothing else of it changes: the same
windows, stride, tokens scored and byte count. Prints one JSON line per model:
{"model": ..., "bpb": ..., "bytes": ..., "tokens": ..., ...}; a folder that fails to load or
score gets {"model": ..., "error": "..."} (its traceback on stderr) and the next one is scored
all the same. Exit 0 when every folder was scored, 1 when one was not.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import sys
import traceback
from pathlib import Path


def load_bpb(path: Path):
    """The shared scorer as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("shared_bpb", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _OnDevice:
    """bpb.py's ``AutoModelForCausalLM`` with every loaded model moved to ``device``."""

    def __init__(self, auto, device: str):
        self.auto, self.device = auto, device

    def from_pretrained(self, *args, **kwargs):
        return self.auto.from_pretrained(*args, **kwargs).to(self.device)


def score(bpb, model_dir: Path, files: list[Path], max_bytes: int, device: str = "cpu") -> dict:
    """bpb.py's own ``main`` on one model folder; its printed JSON line, parsed."""
    import torch

    argv = [str(model_dir), *map(str, files), "--max-bytes", str(max_bytes)]
    out = io.StringIO()
    old_argv, old_auto = sys.argv, bpb.AutoModelForCausalLM
    sys.argv = ["bpb.py", *argv]
    try:
        if device != "cpu":
            bpb.AutoModelForCausalLM = _OnDevice(old_auto, device)
        with contextlib.redirect_stdout(out), torch.device(device):
            bpb.main()
    finally:
        sys.argv, bpb.AutoModelForCausalLM = old_argv, old_auto
    return {"model": str(model_dir), **json.loads(out.getvalue().strip().splitlines()[-1])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bpb", type=Path, required=True, help="the shared scorer, bpb.py")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--max_bytes", type=int, default=0, help="bpb.py's --max-bytes (per file)")
    p.add_argument("--files", type=Path, nargs="+", required=True)
    p.add_argument("--models", type=Path, nargs="+", required=True)
    a = p.parse_args(argv)
    bpb = load_bpb(a.bpb)
    failed = 0
    for model in a.models:
        try:
            row = score(bpb, model, a.files, a.max_bytes, a.device)
        except Exception as e:  # noqa: BLE001 - one folder that fails must not cost the others their scores
            traceback.print_exc()
            failed += 1
            row = {"model": str(model), "error": error_line(e)}
        print(json.dumps(row), flush=True)
    return 1 if failed else 0


def error_line(e: BaseException, limit: int = 400) -> str:
    """An exception as one short line (transformers' load errors run to many lines)."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}"[:limit]


if __name__ == "__main__":
    sys.exit(main())
