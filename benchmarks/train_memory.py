#!/usr/bin/env python3
"""Where a training process's memory goes: resident memory (RSS) and its peak (VmHWM) at each
step of :func:`londonlm.training.run.run_training` (imports, plan, speed choice and probe, data,
model, Trainer, each optimizer step, the final evaluation and saving), for one run of the stage
script's command line.

    python benchmarks/train_memory.py -- --preset tiny --root ROOT --tokenizer_dir TOK \\
        --output_dir ROOT/run --max_steps 5 --eval_steps 5 --save_steps 5

Everything after ``--`` is ``04_training/train_model_slm.py``'s command line. Each line printed is
``<checkpoint> rss=<MiB> peak=<MiB> (+<MiB since the last line>)``; ``--json FILE`` writes them.
The process is the real training process (the script's ``main``), wrapped only to read
``/proc/self/status`` between its steps.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARKS: list[dict] = []


def status() -> tuple[float, float]:
    """(RSS, peak RSS) of this process in MiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def mark(name: str) -> None:
    rss, peak = status()
    last = MARKS[-1]["rss_mib"] if MARKS else 0.0
    MARKS.append({"at": name, "rss_mib": round(rss, 1), "peak_mib": round(peak, 1),
                  "seconds": round(time.perf_counter() - T0, 2)})
    print(f"[memory] {name:<34} rss={rss:7.1f} peak={peak:7.1f} ({rss - last:+7.1f})", flush=True)


def wrap(module, name: str, label: str | None = None) -> None:
    real = getattr(module, name)

    def wrapped(*a, **k):
        out = real(*a, **k)
        mark(f"after {label or name}")
        return out

    setattr(module, name, wrapped)


T0 = time.perf_counter()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, help="write the checkpoints here")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the training command line")
    a = p.parse_args()
    argv = a.train_args[1:] if a.train_args[:1] == ["--"] else a.train_args
    mark("python started")
    sys.path.insert(0, str(REPO))
    import torch  # noqa: F401

    mark("import torch")
    import transformers  # noqa: F401

    mark("import transformers")
    import config
    from londonlm.training import cli, run
    from londonlm.training.step import trainer as step_trainer

    mark("import londonlm.training")
    for name in ("plan_run", "configure_torch", "choose_speed", "fit_batch_to_memory", "prepare_data", "make_model",
                 "build_trainer", "finish"):
        wrap(run, name)
    real_train = run.train

    def train(trainer, *args, **kw):
        from transformers import TrainerCallback

        class Steps(TrainerCallback):
            def on_step_end(self, args, state, control, **k):
                mark(f"step {state.global_step}")

            def on_evaluate(self, args, state, control, **k):
                mark(f"evaluate at step {state.global_step}")

            def on_save(self, args, state, control, **k):
                mark(f"checkpoint {state.global_step} saved")

        trainer.add_callback(Steps())
        mark("before the first step")
        return real_train(trainer, *args, **kw)

    run.train = train
    del step_trainer
    try:
        cli.main(argv, config.train_defaults("slm"), description="train_memory")
    finally:
        mark("end")
        if a.json:
            a.json.write_text(json.dumps(MARKS, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
