"""Training curves from a Hugging Face ``trainer_state.json``: loss, eval loss, learning rate,
throughput, gradient norm, drawn to a PNG with matplotlib's Agg backend (no display)."""
from __future__ import annotations

import json
from pathlib import Path

from ..core import list_checkpoints

THROUGHPUT_KEYS = ("tokens_per_second", "train_tokens_per_second", "throughput_tokens_per_s",
                   "tokens_per_sec", "samples_per_second", "train_samples_per_second")


def find_trainer_state(model_or_run: str | Path) -> Path | None:
    """``trainer_state.json`` of a checkpoint folder, else of the newest checkpoint of the run
    that holds it (``final/`` has none)."""
    p = Path(model_or_run)
    if (p / "trainer_state.json").is_file():
        return p / "trainer_state.json"
    for run in (p, p.parent):
        for ck in reversed(list_checkpoints(run)):
            if (ck / "trainer_state.json").is_file():
                return ck / "trainer_state.json"
    return None


def read_curves(trainer_state_path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """Series of (step, value): train loss, eval loss, learning rate, grad norm, throughput."""
    state = json.loads(Path(trainer_state_path).read_text(encoding="utf-8"))
    logs = state.get("log_history", [])
    series: dict[str, list[tuple[float, float]]] = {
        "loss": [], "eval_loss": [], "learning_rate": [], "grad_norm": [], "throughput": []}
    tp_key = next((k for k in THROUGHPUT_KEYS if any(k in h for h in logs if "step" in h)), None)
    for h in logs:
        step = h.get("step")
        if step is None:
            continue
        for k in ("loss", "eval_loss", "learning_rate", "grad_norm"):
            if isinstance(h.get(k), (int, float)):
                series[k].append((step, float(h[k])))
        # the run-end summary carries averages (train_loss etc.), not per-step values
        if tp_key and isinstance(h.get(tp_key), (int, float)) and "train_runtime" not in h:
            series["throughput"].append((step, float(h[tp_key])))
    series["throughput_key"] = tp_key  # type: ignore[assignment]
    return series


def summarize_curves(series: dict) -> dict:
    def last(k):
        return series[k][-1][1] if series.get(k) else None

    best = min(series["eval_loss"], key=lambda x: x[1]) if series.get("eval_loss") else None
    return {"steps": max((s for k in ("loss", "eval_loss") for s, _ in series.get(k, [])),
                         default=None),
            "last_train_loss": last("loss"), "last_eval_loss": last("eval_loss"),
            "best_eval_loss": best[1] if best else None, "best_eval_step": best[0] if best else None,
            "throughput_key": series.get("throughput_key")}


def plot_curves(trainer_state_path: str | Path, out_png: str | Path, title: str = "") -> dict:
    """Draw the curves to ``out_png``; returns the summary (steps, last/best losses)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_curves(trainer_state_path)
    panels = [("loss", "loss (nats/token)"), ("learning_rate", "learning rate"),
              ("throughput", f"throughput ({series.get('throughput_key') or 'n/a'})"),
              ("grad_norm", "gradient norm")]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (key, label) in zip(axes.flat, panels):
        if key == "loss":
            for k, style in (("loss", "-"), ("eval_loss", "o-")):
                if series[k]:
                    xs, ys = zip(*series[k])
                    ax.plot(xs, ys, style, label="train" if k == "loss" else "validation")
            if series["loss"] or series["eval_loss"]:
                ax.legend()
        elif series[key]:
            xs, ys = zip(*series[key])
            ax.plot(xs, ys)
        if not any(series[k] for k in ((key,) if key != "loss" else ("loss", "eval_loss"))):
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("step")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return summarize_curves(series)
