#!/usr/bin/env python3
"""Compare training runs side by side: a table (preset, parameters, tokens seen, wall time,
best validation loss and bits per byte) and one PNG of their validation curves, written to
09_models/comparisons/ (or --out_dir).

    python 10_scripts/compare_runs.py tiny tiny-lr1e-3          # runs by name (or folder)
    python 10_scripts/compare_runs.py --prefix grid-            # every grid-* run
    python 10_scripts/compare_runs.py                           # every finished run
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, where config.py checks this Python
import config
from londonlm.core.cli import StageParser, writable_dir
from londonlm.core.errors import run_main


def file_stem(text: str) -> str:
    """--name, refused at parse time unless a plain file name (the outputs' stem: a folder part
    would write outside --out_dir, an empty one hidden files) short enough for a file name."""
    from londonlm.training.tools.compare import CompareError, output_stem

    try:
        return output_stem(text)
    except CompareError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def run_spec(text: str) -> str:
    """A run name or folder, refused at parse time when blank (`""` resolved to the current
    folder, and the error then named `.` instead of what was typed)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} names no run; give a run name under "
                                         f"09_models/checkpoints/ or a run folder")
    return text


def main(argv=None) -> int:
    p = StageParser(prog="compare_runs.py", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="*", type=run_spec, help="run names under 09_models/checkpoints/ or run folders "
                                          "(default: every run with a run_info.json)")
    p.add_argument("--prefix", help="with no runs named: only runs whose name starts with this")
    p.add_argument("--root", help="project root (default $LONDONLM_ROOT or the repo)")
    p.add_argument("--out_dir", type=writable_dir, help="where NAME.md/.csv/.png go (default 09_models/comparisons)")
    p.add_argument("--name", type=file_stem, default="comparison",
                   help="output file stem, a plain file name (default: comparison)")
    p.add_argument("--x", choices=["tokens", "step"], default="tokens",
                   help="x axis of the curves (tokens is fair across batch sizes)")
    a = p.parse_args(argv)
    from londonlm.training.tools.compare import compare_runs, find_runs

    layout = config.get_layout(a.root)
    out = Path(a.out_dir) if a.out_dir else layout.models_dir / "comparisons"
    _, table = compare_runs(find_runs(layout, a.runs, a.prefix), out, x=a.x, name=a.name,
                            runs_dir=layout.checkpoints_dir)
    print(table)
    print(f"\ntable: {out / (a.name + '.md')} (and .csv)\nplot:  {out / (a.name + '.png')}")
    return 0


if __name__ == "__main__":
    run_main(main)
