#!/usr/bin/env python3
"""Hyperparameter grid: train one run per (learning rate x batch size), one after another on
this machine, with the same preset, seed, data and step count, then write a summary table
and a validation-curve plot (10_scripts/compare_runs.py) to 09_models/comparisons/PREFIX.*.

With --cutoffs, a family of time-locked models instead: from the collected corpus, one view
per cutoff year (documents dated up to it), a tokenizer trained on each view, one run each
(PREFIX-toYEAR), the leakage probes on each final model, and the same table with the
cutoffs, years and probe results.

Runs are named PREFIX-lrLR-bsBS. Re-running the command skips finished runs and resumes
interrupted ones, so a grid can be stopped (Ctrl-C saves a checkpoint) and continued; a
finished run made from another tokenizer, corpus or settings (a new --max_steps) starts over,
the old one moved aside.
Defaults: the preset's learning rate x (0.5, 1, 2) and batch size x (0.5, 1) (config.py
TrainingDefaults.grid_*). Any other training flag passes through to every run.

    python 10_scripts/run_grid.py --preset tiny --max_steps 300
    python 10_scripts/run_grid.py --preset tiny --cutoffs 1700,1750,1800 --max_seconds 300
    python 10_scripts/run_grid.py --preset micro --learning_rates 1e-3,3e-3 --batch_sizes 4,8 \\
        --max_steps 40 --prefix lrgrid --eval_steps 10
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, where config.py checks this Python
import config
from londonlm.core.cli import number_in, positive_int, StageParser, year
from londonlm.core.errors import run_main
from londonlm.core.layout import plain_name


def _comma_list(kind):
    """An argparse type: a comma list of ``kind`` values, each checked, a repeated one once (it
    would name the same run twice), at least one."""
    def convert(text):
        values = list(dict.fromkeys(kind(x) for x in text.split(",") if x.strip()))
        if not values:
            raise argparse.ArgumentTypeError(f"give at least one value (got {text!r})")
        return values
    return convert


_floats = _comma_list(number_in(0, kind=float, above=True))
_ints = _comma_list(positive_int)
_years = _comma_list(year)


def parse(argv):
    p = StageParser(prog="run_grid.py", description=__doc__.splitlines()[0],
                    formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog="Other flags (e.g. --eval_steps 50) go to every training run.")
    p.add_argument("--preset", default=config.DEFAULT_PRESET, choices=list(config.PRESETS))
    p.add_argument("--learning_rates", type=_floats, help="comma list (default: preset lr x factors)")
    p.add_argument("--batch_sizes", type=_ints, help="comma list (default: preset batch x factors)")
    p.add_argument("--cutoffs", type=_years,
                   help="comma list of cutoff years: one time-locked model per year instead of a "
                        "learning-rate x batch grid")
    p.add_argument("--leakage_limit", type=positive_int, help=argparse.SUPPRESS)  # tests: fewer probe items
    p.add_argument("--max_steps", type=positive_int, help="steps per run (default: the preset's)")
    p.add_argument("--prefix", help="run-name prefix and summary name (default: grid-PRESET)")
    p.add_argument("--root", help="project root (default $LONDONLM_ROOT or the repo)")
    p.add_argument("--fresh", action="store_true", help="retrain runs that already finished")
    p.add_argument("--dry_run", action="store_true", help="print the runs and exit")
    a, extra = p.parse_known_args(argv)
    if a.prefix is not None:
        from londonlm.training.tools.compare import output_stem

        plain_name(a.prefix, "--prefix")  # every run's folder name begins with it
        output_stem(a.prefix, "--prefix")  # and the summary's files are named by it
    if a.cutoffs is not None:
        if a.learning_rates or a.batch_sizes:
            p.error("--cutoffs trains one model per cutoff with the preset's learning rate and batch "
                    "size; give --learning_rate/--batch_size (one each) instead of lists")
        if not a.cutoffs:
            p.error("--cutoffs: give at least one year")
        return a, extra
    t = config.TRAINING
    preset = config.get_preset(a.preset)
    a.learning_rates = a.learning_rates or [preset.learning_rate * f for f in t.grid_lr_factors]
    a.batch_sizes = a.batch_sizes or sorted({max(1, round(preset.batch_size * f))
                                             for f in t.grid_batch_factors})
    return a, extra


def report(done, failed, layout, prefix) -> int:
    """The comparison table of the finished runs; exit 1 when some failed."""
    from londonlm.training.tools.compare import compare_runs

    if not done:
        print("error: no run finished; nothing to summarise", file=sys.stderr)
        return 1
    out = layout.models_dir / "comparisons"
    _, table = compare_runs([r.dir for r in done], out, name=prefix)
    print(f"\n{table}\n\nsummary: {out / (prefix + '.md')} (and .csv)\nplot:    {out / (prefix + '.png')}")
    if failed:
        print(f"error: {len(failed)} run(s) failed or stopped early: {', '.join(failed)}; the lines "
              f"above say why; once fixed, the same command resumes them", file=sys.stderr)
        return 1
    return 0


def family(a, extra) -> int:
    """--cutoffs: one time-locked model per cutoff from the collected corpus."""
    from londonlm.family import FAMILY_OWNED, FamilyPlan, run_family
    from londonlm.training import parse_train_flags

    preset = config.get_preset(a.preset)
    prefix = a.prefix or f"family-{a.preset}"
    layout = config.get_layout(a.root)
    plan = FamilyPlan(prefix, a.cutoffs, layout, layout.processed_dir, config.TOKENIZER.name,
                      preset.vocab_size, preset.min_frequency, config.TOKENIZER.era_tokens,
                      preset.context_length, a.fresh, a.leakage_limit, config.TOKENIZER.era_width)
    # the runs' own flags are checked before the plan is shown: a bad one, dry or not, is one line
    flags = parse_train_flags(extra, prog="run_grid.py").refuse_given(FAMILY_OWNED).override(
        preset=a.preset, **({"max_steps": a.max_steps} if a.max_steps else {}))
    print(f"family {prefix}: {len(set(a.cutoffs))} time-locked runs of the {a.preset} preset, "
          f"seed {config.TRAINING.seed}")
    for y in sorted(set(a.cutoffs)):
        print(f"  {plan.run(y).name}: documents dated up to {y}")
    if a.dry_run:
        return 0
    done, failed = run_family(plan, flags, config.train_defaults(a.preset, layout))
    return report(done, failed, layout, prefix)


def main(argv=None) -> int:
    a, extra = parse(argv)
    if a.cutoffs is not None:
        return family(a, extra)
    from londonlm.training import parse_train_flags
    from londonlm.training.tools.grid import GRID_OWNED, GridOptions, check_run_flags, run_grid

    t = config.TRAINING
    preset = config.get_preset(a.preset)
    prefix = a.prefix or f"grid-{a.preset}"
    grid = GridOptions(prefix, a.learning_rates, a.batch_sizes, a.max_steps, a.fresh,
                       eval_batch_size=preset.batch_size)
    # checked before the plan: a bad run flag, or one the grid sets for each run, is one line
    flags = parse_train_flags(extra, prog="run_grid.py").refuse_given(GRID_OWNED).override(preset=a.preset)
    layout = config.get_layout(a.root)
    defaults = config.train_defaults(a.preset, layout)
    check_run_flags(grid, flags, defaults)
    print(f"grid {prefix}: {len(a.learning_rates)} learning rates x {len(a.batch_sizes)} batch "
          f"sizes = {len(grid.points())} runs of the {a.preset} preset, seed {t.seed}")
    for point in grid.points():
        print(f"  {point.name}")
    if a.dry_run:
        return 0
    done, failed = run_grid(grid, flags, defaults)
    return report(done, failed, layout, prefix)


if __name__ == "__main__":
    run_main(main)
