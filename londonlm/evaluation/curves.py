"""Training curves from a Hugging Face ``trainer_state.json``: loss, eval loss, learning rate,
throughput, gradient norm, drawn to a PNG with matplotlib's Agg backend (no display)."""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..core import LondonLMError, list_checkpoints

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


class TrainerStateError(LondonLMError, ValueError):
    """A trainer_state.json that cannot be read as one (missing, not JSON, not Trainer's shape)."""


def _number(x, finite: bool = False) -> bool:
    """A JSON number float() takes (a NaN loss is a value to draw; a step must be finite)."""
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return False
    try:
        return math.isfinite(float(x)) or not finite
    except OverflowError:  # an integer past float's range
        return False


def load_trainer_state(path: str | Path) -> list[dict]:
    """The ``log_history`` entries of a trainer_state.json (entries that are not objects are
    left out), or one TrainerStateError line naming the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise TrainerStateError(f"trainer state {path} is not a file; pass a checkpoint's "
                                f"trainer_state.json (or leave --trainer_state out)")
    try:
        state = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise TrainerStateError(f"trainer state {path} is not JSON ({' '.join(str(e).split())}); pass "
                                f"a checkpoint's trainer_state.json") from None
    logs = state.get("log_history", []) if isinstance(state, dict) else None
    if not isinstance(logs, list):
        raise TrainerStateError(f"trainer state {path} is not a Trainer state (a JSON object with a "
                                f"log_history list); pass a checkpoint's trainer_state.json")
    return [h for h in logs if isinstance(h, dict)]


def read_curves(trainer_state_path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """Series of (step, value): train loss, eval loss, learning rate, grad norm, throughput.
    Entries without a finite numeric step, and values that are not numbers, are left out."""
    logs = [h for h in load_trainer_state(trainer_state_path) if _number(h.get("step"), finite=True)]
    series: dict[str, list[tuple[float, float]]] = {
        "loss": [], "eval_loss": [], "learning_rate": [], "grad_norm": [], "throughput": []}
    tp_key = next((k for k in THROUGHPUT_KEYS if any(k in h for h in logs if "step" in h)), None)
    for h in logs:
        step = h["step"]
        for k in ("loss", "eval_loss", "learning_rate", "grad_norm"):
            if _number(h.get(k)):
                series[k].append((step, float(h[k])))
        # the run-end summary carries averages (train_loss etc.), not per-step values
        if tp_key and _number(h.get(tp_key)) and "train_runtime" not in h:
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
