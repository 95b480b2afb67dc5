#!/usr/bin/env python3
"""What the training DataLoader costs at each pass over the data and at each evaluation, with
its worker processes started anew every time (the Trainer's way with workers, and the project's
GPU default until 2026-11-28), kept (``--dataloader_persistent_workers``), or none (the blocks read
in the training process: the default now, on a GPU too).

    python benchmarks/data_loader.py --passes 20 --evaluations 6 --runs 3

The loaders are the real ones: :class:`londonlm.training.step.trainer.RunTrainer`'s training and
evaluation DataLoaders (accelerate's wrapper, the stream sampler, signal-proof workers) over a
token cache of the project's format (1 MiB chunks, each CRC-checked on its first read in a
process), written here from random tokens. Sized by default like the H200 race's data: 2.44 M
training tokens, 1.0 M validation tokens, blocks of 512, micro-batches of 32 (where each pass's
first batch waited ~0.2 s on that machine, read off its log). ``--resident_gib`` makes the
training process as large as a training process is (a worker is a fork of it).

Per setting, the median over ``--runs`` (alternated) of: the seconds to the first batch of a pass
(the wait a step sees where a pass begins: worker start and the first reads, CRC checks
included), the seconds for the rest of a pass's batches and for the whole pass (the first pass
apart: every setting starts its workers then), the seconds to an evaluation's first batch, and the CPU seconds the training process itself
spends on a pass (its threads, not the workers': what a step waits for where spare cores run
the workers, as on a GPU machine). A pass is one ``iter()`` of the loader, as the Trainer's epoch loop does.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from train_throughput import cpu_description  # noqa: E402  (names the CPU family/model)
SETTINGS = {  # name -> (workers, persistent)
    "per-pass workers": (2, False),
    "persistent workers": (2, True),
    "no workers": (0, False),
}


def write_split(folder: Path, name: str, tokens: int, seed: int):
    """A split in the cache's format: uint16 tokens and their chunks' CRC-32s; its checked reader."""
    from londonlm.tokens.chunks import CHUNK_BYTES, CheckedTokens, ChunkSums

    data = np.random.default_rng(seed).integers(0, 30000, tokens, dtype=np.uint16).tobytes()
    path = folder / f"{name}.bin"
    path.write_bytes(data)
    sums = ChunkSums()
    sums.update(data)
    crcs = sums.finish()
    return lambda: CheckedTokens(path, tokens, crcs, CHUNK_BYTES)


def make_trainer(train, evals, block: int, batch: int, workers: int, persistent: bool, out: Path):
    from transformers import GPT2Config, GPT2LMHeadModel, TrainingArguments, default_data_collator

    from londonlm.training.data import StreamSampler
    from londonlm.training.step.trainer import RunTrainer

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=1, n_embd=8, n_positions=block, vocab_size=30000))
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=batch,
                             per_device_eval_batch_size=batch, use_cpu=True, report_to=[],
                             dataloader_num_workers=workers, dataloader_persistent_workers=persistent,
                             ignore_data_skip=True, disable_tqdm=True)
    stream = StreamSampler(len(train), 0, 0, batch)
    return RunTrainer(model=model, args=args, train_dataset=train, eval_dataset=evals,
                      data_collator=default_data_collator, stream=stream)


def measure(make_data, setting: str, a, out: Path) -> dict:
    """One run of one setting: a fresh trainer (fresh readers: nothing verified yet)."""
    workers, persistent = SETTINGS[setting]
    train, evals = make_data()
    trainer = make_trainer(train, evals, a.block, a.batch, workers, persistent, out)
    loader = trainer.get_train_dataloader()
    first, rest, cpu = [], [], []
    for _ in range(a.passes):
        c0 = time.process_time()
        t0 = time.perf_counter()
        it = iter(loader)
        next(it)
        t1 = time.perf_counter()
        for _ in it:
            pass
        first.append(t1 - t0)
        rest.append(time.perf_counter() - t1)
        cpu.append(time.process_time() - c0)
    eval_first = []
    for _ in range(a.evaluations):  # what each evaluation does: ask for the loader, read it
        t0 = time.perf_counter()
        it = iter(trainer.get_eval_dataloader())
        next(it)
        eval_first.append(time.perf_counter() - t0)
        for _ in it:
            pass
    del it, loader, trainer
    med = statistics.median
    later = [f + r for f, r in zip(first[1:], rest[1:])] or [first[0] + rest[0]]
    return {"pass_first_batch_s": med(first[1:] or first), "first_pass_first_batch_s": first[0],
            "pass_rest_s": med(rest[1:] or rest), "pass_s": med(later),
            "pass_cpu_s": med(cpu[1:] or cpu), "eval_first_batch_s": med(eval_first[1:] or eval_first),
            "passes_total_s": sum(first) + sum(rest)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train_tokens", type=int, default=2_440_740)
    p.add_argument("--validation_tokens", type=int, default=997_226)
    p.add_argument("--block", type=int, default=512)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--passes", type=int, default=20)
    p.add_argument("--evaluations", type=int, default=6)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--resident_gib", type=float, default=2.0,
                   help="memory the training process holds (touched) while the loaders run")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    from londonlm.training.data import PackedBlocks

    resident = np.ones(int(a.resident_gib * 2**30) // 8)  # noqa: F841  (held: a worker forks it)
    results: dict[str, list[dict]] = {s: [] for s in a.settings}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train_reader = write_split(tmp, "train", a.train_tokens, 0)
        eval_reader = write_split(tmp, "validation", a.validation_tokens, 1)

        def make_data():
            return PackedBlocks(train_reader(), a.block), PackedBlocks(eval_reader(), a.block)

        for run in range(a.runs):
            for setting in a.settings:
                results[setting].append(measure(make_data, setting, a, tmp / "out"))
                print(f"run {run + 1} {setting}: {json.dumps(results[setting][-1])}", flush=True)
    med = statistics.median
    table = {s: {k: med(r[k] for r in runs) for k in runs[0]} for s, runs in results.items()}
    print(f"\n{cpu_description()}; {a.train_tokens:,} training tokens in blocks of {a.block}, micro-batch "
          f"{a.batch}; {a.passes} passes, {a.evaluations} evaluations; median of {a.runs} runs")
    print("| setting | a pass's first batch, s | the rest of a pass, s | a pass, s | an evaluation's first batch, s "
          "| the first pass's first batch, s | all passes, s | the training process's CPU seconds a pass |")
    print("|---|---|---|---|---|---|---|---|")
    for s, r in table.items():
        print(f"| {s} | {r['pass_first_batch_s']:.3f} | {r['pass_rest_s']:.3f} | {r['pass_s']:.3f} "
              f"| {r['eval_first_batch_s']:.3f} | {r['first_pass_first_batch_s']:.3f} | {r['passes_total_s']:.2f} | {r['pass_cpu_s']:.3f} |")
    if a.json:
        a.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "median": table,
                                      "runs": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
