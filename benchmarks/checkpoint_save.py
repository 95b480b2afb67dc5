#!/usr/bin/env python3
"""What a training checkpoint costs to write, by part, with torch.save's CRC-32 of every archive
record computed (torch's default) and not (what the project's trainer writes since 2026-11-28).

    python benchmarks/checkpoint_save.py --runs 5

The checkpoint is the real one: :class:`londonlm.training.step.trainer.RunTrainer`'s
``_save_checkpoint`` on the project's model (``build_model``, GPT-2 Small by default: 12 x 768,
30,000 tokens, context 512) with AdamW's moments filled by one step, as every evaluation of a
``slm`` run writes one (model.safetensors, optimizer.pt, scheduler.pt, rng_state.pth,
trainer_state.json). Its parts are timed in the same call: the model's weights (``save_model``),
the optimizer, scheduler and RNG archives (torch.save), and the rest. Each run writes into a
fresh folder and syncs nothing, and the folder is deleted after it is timed, before its pages
are written back: the page cache takes the writes, as it does on a machine whose memory holds a
run's few checkpoints (a run keeps 5), and what is timed is the writer's own work. Where the
disk is slower than the writes come, the kernel makes the writer wait for it and either setting
waits alike (on the 24 GiB machine of 2026-11-28, ten undeleted checkpoints in a row took
0.3-4 s each for the same optimizer archive).
The settings alternate run by run; the table gives the medians.

Why CRC-32 can go: ``torch.load`` never checks it (a byte flipped in an archive's data loads
without a word: checked on torch 2.13), so it guards nothing a resume reads, and a checkpoint cut
short is caught by the end-of-archive check the resume already makes
(``londonlm.core.checkpoints``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from train_throughput import cpu_description  # noqa: E402  (names the CPU family/model)

SETTINGS = ("crc", "no crc")


def trainer_with_state(a, out: Path):
    """A RunTrainer over the model whose optimizer has taken one step (AdamW's moments exist)."""
    import torch
    from transformers import TrainingArguments

    from londonlm.training.model import ModelShape, build_model
    from londonlm.training.step.trainer import RunTrainer

    torch.manual_seed(0)
    model = build_model(ModelShape(a.n_layer, a.n_head, a.n_embd, a.context, a.vocab), 0, 0, 0, seed=0)
    args = TrainingArguments(output_dir=str(out), save_strategy="steps", save_steps=1, report_to=[],
                             use_cpu=a.device == "cpu", learning_rate=3e-4, max_steps=1)
    trainer = RunTrainer(model=model.to(a.device), args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=1)
    x = torch.randint(0, a.vocab, (1, 16), device=a.device)
    model(input_ids=x, labels=x).loss.backward()
    trainer.optimizer.step()
    return trainer


def timed_save(trainer, step: int, crc: bool) -> dict:
    """Seconds of one checkpoint, whole and by part (the parts wrapped with timers): with ``crc``
    the Trainer's own ``_save_checkpoint`` with torch's default, else the project trainer's."""
    import torch
    from transformers import Trainer

    parts: dict[str, float] = {}

    def timing(name, fn):
        def wrapped(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                parts[name] = parts.get(name, 0.0) + time.perf_counter() - t0
        return wrapped

    trainer.state.global_step = step
    with ExitStack() as stack:
        for name, attr in (("model", "save_model"), ("optimizer+scheduler", "_save_optimizer_and_scheduler"),
                           ("rng", "_save_rng_state")):
            stack.enter_context(mock.patch.object(trainer, attr, timing(name, getattr(trainer, attr))))
        torch.serialization.set_crc32_options(True)
        save = Trainer._save_checkpoint if crc else type(trainer)._save_checkpoint
        t0 = time.perf_counter()
        save(trainer, trainer.model, None)
        whole = time.perf_counter() - t0
    parts["rest"] = whole - sum(parts.values())
    return {"whole": whole, **parts}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="checkpoints written per setting (alternated)")
    p.add_argument("--n_layer", type=int, default=12)
    p.add_argument("--n_head", type=int, default=12)
    p.add_argument("--n_embd", type=int, default=768)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--vocab", type=int, default=30000)
    p.add_argument("--device", choices=("cuda", "cpu"), help="where the model and its optimizer state "
                   "live (a GPU's checkpoint copies them to the host first); default: cuda where there is one")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args()
    import torch

    a.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA GPU is visible to torch")

    with tempfile.TemporaryDirectory(prefix="ckpt_bench_") as tmp:
        trainer = trainer_with_state(a, Path(tmp))
        size = None
        runs: dict[str, list[dict]] = {s: [] for s in SETTINGS}
        for i in range(a.runs):
            for s in SETTINGS:
                step = 2 * i + SETTINGS.index(s) + 1
                runs[s].append(timed_save(trainer, step, crc=s == "crc"))
                folder = Path(tmp) / f"checkpoint-{step}"
                size = sum(f.stat().st_size for f in folder.iterdir())
                # deleted before its pages reach the disk: the next write is not throttled by
                # this one's writeback (a machine with little memory or a slow disk would be)
                shutil.rmtree(folder)
    med = {s: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for s, rs in runs.items()}
    where = torch.cuda.get_device_name(0) + ", " if a.device == "cuda" else ""
    print(f"# {where}{cpu_description()}; GPT-2 {a.n_layer} x {a.n_embd}, vocabulary {a.vocab}, "
          f"a checkpoint of {size / 1e9:.2f} GB; median of {a.runs} runs each, seconds")
    keys = list(med["crc"])
    print("| setting | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for s in SETTINGS:
        print(f"| {s} | " + " | ".join(f"{med[s][k]:.3f}" for k in keys) + " |")
    print(f"ratio (crc / no crc), whole checkpoint: {med['crc']['whole'] / med['no crc']['whole']:.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps({"cpu": cpu_description(), "device": where.rstrip(", ") or "cpu",
                                            "gb": size / 1e9, "median": med,
                                            "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
