"""Hyperparameter grid: one run per (learning rate x batch size), one after another, with the
same preset, seed, data, step count and validation blocks. Finished runs are skipped and
interrupted ones resume, so a grid can be stopped and continued."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from ...core import LondonLMError, RunLayout, link_or_copy
from ..defaults import TrainDefaults
from ..flags import TrainFlags
from ..job import build_config
from ..run import run_training


@dataclass(frozen=True)
class GridPoint:
    learning_rate: float
    batch_size: int
    name: str


@dataclass
class GridOptions:
    prefix: str
    learning_rates: list[float]
    batch_sizes: list[int]
    max_steps: int | None = None
    fresh: bool = False            # retrain runs that already finished
    eval_batch_size: int | None = None  # the same validation blocks for every batch size

    def points(self) -> list[GridPoint]:
        return [GridPoint(lr, bs, f"{self.prefix}-lr{lr:g}-bs{bs}")
                for lr, bs in itertools.product(self.learning_rates, self.batch_sizes)]


def finished(run: RunLayout) -> bool:
    info = run.read_run_info()
    return bool(info) and run.final.is_dir() and not info.get("interrupted")


def share_cache(src: RunLayout, dst: RunLayout) -> None:
    """Hard-link a finished run's token cache into the next run (same data, no re-encoding);
    the training step still checks it is compatible and rebuilds it when not."""
    if not (src.cache_dir / "metadata.json").exists() or dst.cache_dir.exists():
        return
    dst.cache_dir.mkdir(parents=True)
    for f in src.cache_dir.iterdir():
        if f.is_file() and not f.name.startswith("."):
            link_or_copy(f, dst.cache_dir / f.name)


def point_flags(flags: TrainFlags, opts: GridOptions, point: GridPoint) -> TrainFlags:
    """The common command line with this point's run name, learning rate and batch size."""
    extra = {"max_steps": opts.max_steps} if opts.max_steps else {}
    if opts.fresh:
        extra["fresh"] = True
    if opts.eval_batch_size and "per_device_eval_batch_size" not in flags.explicit:
        extra["per_device_eval_batch_size"] = opts.eval_batch_size
    return flags.override(run_name_dir=point.name, learning_rate=point.learning_rate,
                          batch_size=point.batch_size, **extra)


def run_grid(opts: GridOptions, flags: TrainFlags, defaults: TrainDefaults,
             log=print) -> tuple[list[RunLayout], list[str]]:
    """Train every point in turn. Returns (finished runs, names of failed or stopped ones)."""
    layout = defaults.at_root(flags.run.root)
    points = opts.points()
    done, failed, prev = [], [], None
    for i, point in enumerate(points, 1):
        run = layout.run(point.name)
        if not opts.fresh and finished(run):
            log(f"[{i}/{len(points)}] {point.name}: finished earlier, skipped (--fresh retrains)")
            done.append(run)
            prev = run
            continue
        if prev is not None:
            share_cache(prev, run)
        log(f"[{i}/{len(points)}] {point.name}: learning rate {point.learning_rate:g}, "
            f"batch size {point.batch_size}")
        try:
            run_training(build_config(point_flags(flags, opts, point), defaults))
        except LondonLMError as e:  # one bad run does not stop the grid
            log(f"error: {point.name}: {e}")
            failed.append(point.name)  # even when an earlier call's run of that name had finished
            continue
        if finished(run):
            done.append(run)
            prev = run
        else:
            failed.append(point.name)
    return done, failed
