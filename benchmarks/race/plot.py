"""The race's picture: every run's held-out bits per byte over its seconds of training, the
seed recipe's final bpb as a line across, and the issue's mark, a third of the seed recipe's
seconds (ours is to reach that line by then: 3x its time to quality). Drawn from the race's
JSON alone, so a lease's results are drawn on any machine after the call (``gpu_race.py
--from_json``), matplotlib or not on the GPU's."""
from __future__ import annotations

from pathlib import Path

from . import report

# the two recipes keep their colours whatever variants ran; the variants take the rest in order
COLOURS = {"ours": "tab:blue", "seed_recipe": "tab:orange"}
SPEEDUP = 3  # the target: the seed recipe's final bpb in a third of its seconds


def series(results: dict) -> list[tuple[str, list[tuple[float, float]]]]:
    """(run, [(seconds, bpb), ...]) for every run with a scored curve, in the race's order."""
    out = []
    for name, r in report.runs(results):
        points = sorted((p["seconds"], p["bpb"]) for p in r.get("curve", []) if p.get("bpb") is not None)
        if points:
            out.append((name, points))
    return out


def seed_seconds(results: dict) -> float | None:
    """The seconds behind the seed recipe's final bpb, the race's own (a variants-only call's
    ``--seed_bpb`` came from a race of the same seconds); None without a seed bpb."""
    return results["meta"]["seconds"] if report.seed_bpb(results) is not None else None


def draw(results: dict, png: Path) -> Path | None:
    """Draws the picture into ``png``; None (nothing written) when no run has a scored curve."""
    lines = series(results)
    if not lines:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = results["meta"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    taken = {matplotlib.colors.to_hex(c) for c in COLOURS.values()}
    others = iter(c for c in plt.rcParams["axes.prop_cycle"].by_key()["color"] if matplotlib.colors.to_hex(c) not in taken)
    for name, points in lines:
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", markersize=3, label=name, color=COLOURS.get(name) or next(others, None))
    seed, secs = report.seed_bpb(results), seed_seconds(results)
    if seed is not None:
        ax.axhline(seed, color="tab:orange", linestyle="--", linewidth=1,
                   label=f"seed recipe's final bpb ({seed:.4g})")
    if seed is not None and secs:
        ax.axvline(secs / SPEEDUP, color="grey", linestyle=":", linewidth=1,
                   label=f"{secs / SPEEDUP:.0f} s: {SPEEDUP}x the seed recipe's time")
    where = m["machine"].get("gpu") or "CPU"
    ax.set(xlabel="seconds of training", ylabel="held-out bits per byte",
           title=f"{m['preset']}: held-out bpb over training time ({where}, {m['date']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
