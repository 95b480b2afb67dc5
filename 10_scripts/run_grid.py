#!/usr/bin/env python3
"""Hyperparameter grid: train one run per (learning rate x batch size), one after another on
this machine, with the same preset, seed, data and step count, then write a summary table
and a validation-curve plot (10_scripts/compare_runs.py) to 09_models/comparisons/PREFIX.*.

Runs are named PREFIX-lrLR-bsBS. Re-running the command skips finished runs and resumes
interrupted ones, so a grid can be stopped (Ctrl-C saves a checkpoint) and continued.
Defaults: the preset's learning rate x (0.5, 1, 2) and batch size x (0.5, 1) (config.py
TrainingDefaults.grid_*). Any other training flag passes through to every run.

    python 10_scripts/run_grid.py --preset tiny --max_steps 300
    python 10_scripts/run_grid.py --preset micro --learning_rates 1e-3,3e-3 --batch_sizes 4,8 \\
        --max_steps 40 --prefix lrgrid --eval_steps 10
"""
import argparse
import itertools
import json
import os
import shutil
import sys

import config


def _floats(s):
    return [float(x) for x in s.split(",") if x.strip()]


def _ints(s):
    return [int(x) for x in s.split(",") if x.strip()]


def share_cache(src_run, dst_run):
    """Hard-link a finished run's token cache into the next run (same data, no re-encoding);
    the training stage still checks it is compatible and rebuilds it when not."""
    src, dst = src_run / "pretokenized_data", dst_run / "pretokenized_data"
    if not (src / "metadata.json").exists() or dst.exists():
        return
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith("."):
            try:
                os.link(f, dst / f.name)
            except OSError:
                shutil.copy2(f, dst / f.name)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="run_grid.py", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Other flags (e.g. --eval_steps 50) go to every training run.")
    p.add_argument("--preset", default=config.DEFAULT_PRESET, choices=list(config.PRESETS))
    p.add_argument("--learning_rates", type=_floats, help="comma list (default: preset lr x factors)")
    p.add_argument("--batch_sizes", type=_ints, help="comma list (default: preset batch x factors)")
    p.add_argument("--max_steps", type=int, help="steps per run (default: the preset's)")
    p.add_argument("--prefix", help="run-name prefix and summary name (default: grid-PRESET)")
    p.add_argument("--root", help="project root (default $LONDONLM_ROOT or the repo)")
    p.add_argument("--fresh", action="store_true", help="retrain runs that already finished")
    p.add_argument("--dry_run", action="store_true", help="print the runs and exit")
    a, extra = p.parse_known_args(argv)
    preset = config.get_preset(a.preset)
    t = config.TRAINING
    lrs = a.learning_rates or [preset.learning_rate * f for f in t.grid_lr_factors]
    bss = a.batch_sizes or sorted({max(1, round(preset.batch_size * f)) for f in t.grid_batch_factors})
    if any(x <= 0 for x in lrs) or any(b <= 0 for b in bss):
        p.error("learning rates and batch sizes must be positive")
    prefix = a.prefix or f"grid-{a.preset}"
    paths = config.get_paths(a.root)
    grid = [(lr, bs, f"{prefix}-lr{lr:g}-bs{bs}") for lr, bs in itertools.product(lrs, bss)]
    print(f"grid {prefix}: {len(lrs)} learning rates x {len(bss)} batch sizes = {len(grid)} runs "
          f"of the {a.preset} preset, seed {t.seed}")
    for lr, bs, name in grid:
        print(f"  {name}")
    if a.dry_run:
        return 0
    from londonlm.compare import compare_runs
    from londonlm.train_cli import main as train_main

    presets = {k: config.asdict(v) for k, v in config.PRESETS.items()}
    # the same validation blocks for every run (their number is eval_max_batches x eval batch)
    eval_bs = [] if any(x.startswith("--per_device_eval_batch_size") for x in extra) else \
        ["--per_device_eval_batch_size", str(preset.batch_size)]
    failed, done, prev = [], [], None
    for i, (lr, bs, name) in enumerate(grid, 1):
        run_dir = paths.run_dir(name)
        info = run_dir / "run_info.json"
        if not a.fresh and info.exists() and (run_dir / "final").is_dir() \
                and not json.loads(info.read_text()).get("interrupted"):
            print(f"[{i}/{len(grid)}] {name}: finished earlier, skipped (--fresh retrains)")
            done.append(run_dir)
            prev = run_dir
            continue
        if prev is not None:
            share_cache(prev, run_dir)
        print(f"[{i}/{len(grid)}] {name}: learning rate {lr:g}, batch size {bs}", flush=True)
        targv = ["--preset", a.preset, "--run_name", name, "--learning_rate", str(lr),
                 "--batch_size", str(bs), *(["--root", a.root] if a.root else []),
                 *(["--max_steps", str(a.max_steps)] if a.max_steps else []),
                 *(["--fresh"] if a.fresh else []), *eval_bs, *extra]
        rc = train_main(targv, presets=presets, default_preset=a.preset, get_paths=config.get_paths,
                        tokenizer_name=config.TOKENIZER.name, seed=t.seed,
                        wandb_project=t.wandb_project, prog="run_grid.py",
                        dataloader_workers=t.dataloader_workers)
        ok = rc == 0 and info.exists() and not json.loads(info.read_text()).get("interrupted")
        (done if ok else failed).append(run_dir if ok else name)
        prev = run_dir if ok else prev
    if not done:
        print("error: no run finished; nothing to summarise", file=sys.stderr)
        return 1
    out = paths.models_dir / "comparisons"
    _, table = compare_runs(done, out, name=prefix)
    print(f"\n{table}\n\nsummary: {out / (prefix + '.md')} (and .csv)\nplot:    {out / (prefix + '.png')}")
    if failed:
        print(f"error: {len(failed)} run(s) failed or stopped early: {', '.join(failed)}; run the "
              f"same command again to resume them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
