"""Hyperparameter grid: one run per (learning rate x batch size), one after another, with the
same preset, seed, data, step count and validation blocks. Finished runs are skipped (while
current: :mod:`..currency`) and interrupted ones resume, so a grid can be stopped and continued."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from ...core import LondonLMError, RunLayout, UsageError, plain_name, record_field, user_error_message
from ...tokens import share_built_cache
from ..currency import finished, run_changes
from ..defaults import TrainDefaults
from ..dist import TrainingError
from ..flags import TrainFlags
from ..job import build_config
from ..run import run_training


# training flags the grid sets for each run itself. Given once for every run, each was replaced
# without a word, or (--output_dir) sent every run into one folder, outside the project: the
# second resumed or refused the first's checkpoint, and no run counted as finished
GRID_OWNED = {
    **TrainFlags.run_naming_flags("a grid", "PREFIX-lrLR-bsBS"),
    "learning_rate": "does not apply to a grid: each run's rate comes from --learning_rates (give one there)",
    "batch_size": "does not apply to a grid: each run's batch size comes from --batch_sizes (give one there)",
    "per_device_train_batch_size": "does not apply to a grid: each run's batch size comes from --batch_sizes",
}


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

    def __post_init__(self):
        # every run's folder name, before the plan is shown: one past a file system's 255 bytes
        # (a long --prefix) was an OSError traceback as the first run's folder was made
        named: dict[str, GridPoint] = {}
        for point in self.points():
            plain_name(point.name, "run name")
            # two rates alike to 6 significant digits (the name's {lr:g}) share one run folder: the
            # second point was refused as "trained with other settings", its advice (--fresh) moving
            # this grid's own first point aside
            twin = named.setdefault(point.name, point)
            if twin is not point:
                raise UsageError(f"--learning_rates {twin.learning_rate!r} and {point.learning_rate!r} would both "
                                 f"be run {point.name} (a run is named by its rate to 6 significant digits): "
                                 f"give rates that differ there")

    def points(self) -> list[GridPoint]:
        return [GridPoint(lr, bs, f"{self.prefix}-lr{lr:g}-bs{bs}")
                for lr, bs in itertools.product(self.learning_rates, self.batch_sizes)]


def other_settings(run: RunLayout, point: GridPoint, preset: str | None) -> str | None:
    """What a finished run under the point's name was asked to train with that the point
    would not (preset, learning rate, batch size), or None. Such a run (another grid's, or
    one trained by hand) was skipped as the point's own, its figures tabulated as this grid's.
    A record without its settings says nothing: the run is taken as the point's. (The rate
    is recorded as the float the grid passed, so equality is exact.)"""
    asked = record_field(run.read_run_info(), "settings", kind=dict)
    if asked is None:
        return None
    wanted = {"preset": preset, "learning_rate": point.learning_rate, "batch_size": point.batch_size}
    return ", ".join(f"{k} {asked.get(k)!r}, not {v!r}" for k, v in wanted.items()
                     if v is not None and asked.get(k) != v) or None


def share_cache(src: RunLayout, dst: RunLayout, log=print) -> None:
    """Hard-link a finished run's token cache into the next run (same data, no re-encoding; not
    while another process rebuilds it: :func:`~londonlm.tokens.share_built_cache`); the training
    step still checks it is compatible and rebuilds it when not."""
    share_built_cache(src.cache_dir, dst.cache_dir, log)


def point_flags(flags: TrainFlags, opts: GridOptions, point: GridPoint) -> TrainFlags:
    """The common command line with this point's run name, learning rate and batch size."""
    extra = {"max_steps": opts.max_steps} if opts.max_steps else {}
    if opts.fresh:
        extra["fresh"] = True
    if opts.eval_batch_size and "per_device_eval_batch_size" not in flags.explicit:
        extra["per_device_eval_batch_size"] = opts.eval_batch_size
    return flags.override(run_name_dir=point.name, learning_rate=point.learning_rate,
                          batch_size=point.batch_size, **extra)


def check_run_flags(opts: GridOptions, flags: TrainFlags, defaults: TrainDefaults) -> None:
    """The runs' own flags, checked as the first run's configuration is built (the others
    differ only in name, rate and batch), before the plan is shown: a value the Trainer
    refuses (``--eval_steps 1.5``) passed the dry run, then was one error per run and exit 1."""
    build_config(point_flags(flags, opts, opts.points()[0]), defaults)


def run_grid(opts: GridOptions, flags: TrainFlags, defaults: TrainDefaults,
             log=print) -> tuple[list[RunLayout], list[str]]:
    """Train every point in turn. Returns (finished runs, names of failed or stopped ones); a
    missing input (a :class:`LondonLMError` that is a FileNotFoundError) stops the grid.
    A finished run is skipped only while it is current (:mod:`..currency`); one made from
    another tokenizer, corpus or settings (``--max_steps`` raised, say) starts over."""
    layout = defaults.at_root(flags.run.root)
    points = opts.points()
    done, failed, prev = [], [], None
    for i, point in enumerate(points, 1):
        run, step = layout.run(point.name), f"[{i}/{len(points)}] {point.name}"
        try:
            config = build_config(point_flags(flags, opts, point), defaults)
            if finished(run) and not opts.fresh:
                other = other_settings(run, point, flags.model.preset)
                if other:
                    raise TrainingError(f"holds a finished run trained with other settings ({other}); --fresh "
                                        f"moves it aside and trains this point, or give another --prefix")
                changed = run_changes(run, config)
                if not changed:
                    log(f"{step}: finished earlier, skipped (--fresh retrains)")
                    done.append(run)
                    prev = run
                    continue
                log(f"{step}: {changed}; starting it over (the finished run is moved aside)")
                config = config.but(control={"fresh": True})
            if prev is not None:
                share_cache(prev, run, log)
            log(f"{step}: learning rate {point.learning_rate:g}, batch size {point.batch_size}")
            run_training(config)
        except (LondonLMError, OSError) as e:  # one bad run does not stop the grid
            if isinstance(e, LondonLMError) and isinstance(e, FileNotFoundError):
                # a missing input (tokenizer, corpus, --init_from model) is every run's: each
                # failed alike, an error line per run and exit 1; one line, exit 2
                raise
            # (nor a file where its run folder goes: an OSError the user mends, which stopped
            # the grid before the other runs)
            why = user_error_message(e)
            if why is None:
                raise
            log(f"error: {point.name}: {why}")
            failed.append(point.name)  # even when an earlier call's run of that name had finished
            continue
        if finished(run):
            done.append(run)
            prev = run
        else:
            failed.append(point.name)
    return done, failed
