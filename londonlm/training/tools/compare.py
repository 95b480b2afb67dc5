"""Experiments side by side: read several runs' ``run_info.json`` (written by the training
stage) into one table — preset, parameters, tokens seen, wall time, best validation loss,
bits per byte — and draw their validation curves on one PNG."""
from __future__ import annotations

import csv
import json
import math
import os
import sys
from pathlib import Path

from ...core import (Layout, LondonLMError, RunLayout, UsageError, atomic_writer, distinct_tokenizers, is_plain_name,
                     md_cell, read_json, read_json_object, record_field, refuse_artifacts_folder, sheet_cell,
                     user_path, write_text_atomic)

COLUMNS = [("run", "run"), ("preset", "preset"), ("params_m", "params (M)"),
           ("learning_rate", "lr"), ("batch_size", "batch"), ("steps", "steps"),
           ("tokens_seen", "tokens seen"), ("wall_s", "wall (s)"),
           ("best_val_loss", "best val loss"), ("best_step", "best step"),
           ("final_val_loss", "final val loss"), ("best_val_bpb", "best val bpb"),
           ("parent", "parent"), ("status", "status")]


# shown when any compared run is time-locked (a family from run_grid.py --cutoffs)
TIME_COLUMNS = [("cutoff", "cutoff"), ("years", "years"), ("facts_before", "facts ≤ cutoff"),
                ("facts_after", "facts > cutoff"), ("leak", "leak?")]


class CompareError(LondonLMError, RuntimeError):
    """A run that cannot be compared; the message names what is missing."""


def output_stem(name: str, flag: str | None = None) -> str:
    """``name`` when it can name the outputs: a plain file name (no folder, whose files would
    go elsewhere) short enough for its longest file, written through atomic_writer's
    ``.NAME.png.XXXXXXXX.tmp``: a longer one was an OSError (ENAMETOOLONG) traceback."""
    if not (is_plain_name(name) and is_plain_name(f".{name}.png.00000000.tmp")):
        raise CompareError(f"{flag + ' ' if flag else ''}{name!r} must be a plain file name (no folder, not "
                           f"empty, not . or .., at most 237 bytes); the files go in --out_dir")
    return name


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def readable(run_dir: Path, warn=_warn) -> bool:
    """Whether a discovered run can be compared; one that cannot is named in a warning and
    left out, so one torn run_info.json does not stop a comparison of the others."""
    try:
        load_run(run_dir)
    except CompareError as e:
        warn(f"{e}; left out")
        return False
    return True


def find_runs(layout: Layout, specs: list[str], prefix: str | None = None, warn=_warn) -> list[Path]:
    """Run folders from names under the layout's runs folder or paths; with no specs, every
    run (optionally only names starting with ``prefix``) that has a readable run_info.json."""
    if not specs:
        found = [r.dir for r in layout.runs()
                 if r.name.startswith(prefix or "") and readable(r.dir, warn)]
        if not found:
            raise CompareError(f"no finished runs{f' named {prefix}*' if prefix else ''} in "
                               f"{layout.checkpoints_dir}; train some with "
                               f"04_training/train_model_slm.py")
        return found
    out, seen = [], set()
    for s in specs:
        p = user_path(s)
        run = RunLayout(p) if p.is_dir() else layout.run(s)
        if not run.run_info.is_file():
            have = [r.name for r in layout.runs()]
            raise CompareError(f"run {s!r}: no {run.run_info.name} in {run.dir} (train it first, "
                               f"or let it finish); runs available: {', '.join(have) or 'none'}")
        # one run named twice (by name and by path, a link, a shell glob beside a name): it was
        # two identical rows and two curves under one label, as if two runs agreed
        real = os.path.realpath(run.dir)
        if real in seen:
            warn(f"run {s!r} is {run.dir}, named already; compared once")
            continue
        seen.add(real)
        out.append(run.dir)
    return out


def shown(text: str) -> str:
    """Text for the table, the CSV and the plot with every lone surrogate as U+FFFD: a run
    folder named in bytes that are no UTF-8 (Python keeps them as surrogate escapes), or a
    ``"\\ud800"`` escape in a record's string. Written as they were, they raised
    UnicodeEncodeError (a traceback) in the CSV."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _is_number(v) -> bool:
    try:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    except OverflowError:  # an integer past a float's range (10**400): no step or loss
        return False


def _number(value, what: str) -> int | float | None:
    """A number of a record (None stays None). Another kind, or an integer past a float's
    range, raises TypeError/OverflowError (a malformed record, for :func:`load_run`): the
    table's arithmetic repeated text or a list by the token count (``"6.2" * 5399``; a count
    of 10**12 exhausted memory), sorted numbers among text, or overflowed: each a traceback."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} is {value!r}, not a number")
    float(value)  # OverflowError for 10**400
    return value


def _field(record: dict, key: str) -> int | float | None:
    return _number(record.get(key), key)


def _point(point) -> tuple[int | float, float]:
    """One (step, loss) of a recorded validation curve, both numbers (see :func:`_number`)."""
    step, loss = point
    return _number(step, "a curve's step"), float(_number(loss, "a curve's loss"))


def _checkpoint_curve(checkpoint: Path) -> list[list[float]] | None:
    """(step, eval_loss) from one checkpoint's trainer_state.json; None when the file is torn or
    not the Trainer's record, so the run's row is not refused for a side file (as its run_info)."""
    history = record_field(read_json_object(checkpoint / "trainer_state.json"), "log_history", kind=list)
    if history is None:
        return None
    points = [[h.get("step"), h["eval_loss"]] for h in history if isinstance(h, dict) and "eval_loss" in h]
    return points if all(_is_number(s) and _is_number(v) for s, v in points) else None


def _curve_from_checkpoints(run: RunLayout) -> list[list[float]]:
    """The validation curve of a run whose run_info.json holds none: the latest checkpoint
    whose record can be read."""
    for ck in reversed(run.checkpoints()):
        curve = _checkpoint_curve(ck)
        if curve is not None:
            return curve
    return []


def read_info(run: RunLayout) -> dict:
    """The run's run_info.json as an object, or a CompareError naming the file."""
    try:
        info = json.loads(run.run_info.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise CompareError(f"run {run.name}: cannot read {run.run_info} ({e})") from None
    if not isinstance(info, dict):
        raise CompareError(f"run {run.name}: {run.run_info} holds a {type(info).__name__}, not an object")
    return info


def load_run(run_dir: Path) -> dict:
    """One table row plus its validation curve; a run_info.json that is not the record the
    training stage writes is a CompareError naming it."""
    run = RunLayout(Path(run_dir))
    info = read_info(run)
    try:
        return _row(run, info)
    # a field of another shape, kind or size (ArithmeticError: past a float's range)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ArithmeticError) as e:
        raise CompareError(f"run {run.name}: {run.run_info} is malformed "
                           f"({type(e).__name__}: {e})") from None


def _row(run: RunLayout, info: dict) -> dict:
    """The table row of one run (``curve``: [(step, tokens, loss)])."""
    curve = [_point(p) for p in info.get("eval_curve") or _curve_from_checkpoints(run)]
    tps = _field(info, "tokens_per_step") or 0
    # the best of the evaluations that gave a number: min() over a curve that opens with NaN
    # (an evaluation that overflowed) returned that NaN whatever came after; one of only NaN
    # (a diverged run) is shown as NaN, not as a run with no evaluation
    finite = [p for p in curve if math.isfinite(p[1])]
    best = min(finite, key=lambda x: x[1]) if finite else None
    best_loss = best[1] if best else float("nan") if curve else _field(info, "best_eval_loss")
    vt = _field(info.get("cache") or {}, "tokens_validation")
    vb = _field(info, "validation_bytes")
    bpb = best_loss * vt / (math.log(2) * vb) if best_loss is not None and vt and vb else None
    parameters = _field(info, "parameters")
    parent = info.get("parent") or {}
    row = {
        "run": run.name, "run_dir": str(run.dir), "preset": info.get("preset"),
        "params_m": round(parameters / 1e6, 3) if parameters else None,
        "learning_rate": info.get("learning_rate"), "batch_size": info.get("batch_size"),
        "steps": info.get("global_step"), "tokens_seen": info.get("tokens_seen"),
        "wall_s": info.get("total_train_wall_seconds", info.get("train_wall_seconds")),
        "best_val_loss": best_loss, "best_step": best[0] if best else info.get("best_step"),
        "final_val_loss": info.get("final_eval_loss"), "best_val_bpb": bpb,
        "parent": parent.get("run_name") or (Path(parent["path"]).parent.name if parent.get("path") else ""),
        "status": f"interrupted ({info['interrupted']})" if info.get("interrupted") else "finished",
        "tokenizer_sha256": info.get("tokenizer_sha256"),
        "curve": [(s, float(s) * tps, v) for s, v in curve],
        **time_row(run, info),
    }
    return {k: shown(v) if isinstance(v, str) else v for k, v in row.items()}


def _accuracy(side: dict | None) -> str | None:
    """``0.31 [0.22, 0.41] n=70`` (per-byte rule, 95% interval) for one side of the leakage
    probes, None when that side has no item."""
    if not side or not side.get("n"):
        return None
    acc = side.get("per_byte") or {}
    low, high = acc.get("ci95") or (None, None)
    ci = f" [{low:.2f}, {high:.2f}]" if low is not None else ""
    return f"{acc['accuracy']:.2f}{ci} n={side['n']}"


def time_row(run: RunLayout, info: dict) -> dict:
    """The cutoff, years and leakage probe results of one run (what the family table adds)."""
    record = info.get("corpus_time") or {}
    years = record.get("years") or [None, None]
    return {"cutoff": _field(record, "cutoff_year"),  # sorted: a number, as the training stage writes
            "years": f"{years[0]}–{years[1]}" if years[0] is not None else None,
            **_leakage_columns(run)}


def _leakage_columns(run: RunLayout) -> dict:
    """The probe results kept in the run's leakage.json. One that is torn or of another shape
    is simply not shown: it is no reason to refuse the run, as a malformed run_info.json is."""
    try:
        result = read_json(run.leakage)["result"] if run.leakage.is_file() else {}
        facts = result.get("facts") or {}
        return {"facts_before": _accuracy(facts.get("before")), "facts_after": _accuracy(facts.get("after")),
                "leak": None if not facts else ("YES" if result.get("flag") else "no")}
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError,
            ArithmeticError):  # nested past the parser's depth; a figure past a float's range
        return dict.fromkeys(("facts_before", "facts_after", "leak"))


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e-2 or abs(v) >= 1e5 else f"{v:.4f}".rstrip("0").rstrip(".")
    if isinstance(v, int) and v >= 10_000:
        return f"{v:,}"
    return str(v)


def columns_for(rows: list[dict]) -> list[tuple[str, str]]:
    """The table's columns: the time-lock ones only when some run has a cutoff."""
    if any(r.get("cutoff") is not None for r in rows):
        return COLUMNS[:1] + TIME_COLUMNS + COLUMNS[1:]
    return COLUMNS


def _sort_key(value) -> tuple:
    """Numbers in order, then the rest (none, NaN, infinite): a NaN among the keys (a diverged
    run's loss) compares false both ways, and sorted() then left the other runs out of order."""
    return (0, value) if _is_number(value) else (1, 0)


def tokenizers_note(rows: list[dict]) -> str | None:
    """A line under the table when the runs were trained with different tokenizers (their
    recorded ``tokenizer.json`` sha256)."""
    n = distinct_tokenizers(rows)
    return (f"note: these runs were trained with {n} different tokenizers, so their losses (nats per "
            f"token) are not comparable; compare them by best val bpb (bits per byte)") if n > 1 else None


def format_table(rows: list[dict], sort_by: str | None = "best_val_loss") -> str:
    """A Markdown table (readable as plain text too), best run first (a family of cutoffs:
    earliest cutoff first). Runs of different tokenizers are ordered by bits per byte, not by
    a loss per token (a tokenizer of longer tokens has a higher one), and a note says so."""
    columns = columns_for(rows)
    note = tokenizers_note(rows)
    if columns is not COLUMNS:
        sort_by = "cutoff"
    elif note and sort_by == "best_val_loss":
        sort_by = "best_val_bpb"
    if sort_by:
        rows = sorted(rows, key=lambda r: _sort_key(r.get(sort_by)))
    # md_cell: a run folder named "a|b" ended its cell early and pushed its row out of line
    cells = [[h for _, h in columns]] + [[md_cell(_fmt(r.get(k))) for k, _ in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    line = lambda c: "| " + " | ".join(x.ljust(w) for x, w in zip(c, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(line, cells[1:]), *(["", note] if note else [])])


def write_csv(rows: list[dict], path: Path) -> None:
    """The table as CSV, each text cell a spreadsheet opens as text (:func:`sheet_cell`): a run
    folder named ``=HYPERLINK(...)`` (or a preset, parent or status so written) was a live formula."""
    names = [k for k, _ in columns_for(rows)] + ["run_dir"]
    with atomic_writer(path) as f:  # whole or not at all: a stopped comparison keeps the old table
        w = csv.DictWriter(f, fieldnames=names, extrasaction="ignore")
        w.writeheader()
        w.writerows({k: sheet_cell(r.get(k)) for k in names} for r in rows)


def plot_validation_curves(rows: list[dict], png: Path, x: str = "tokens",
                           title: str = "validation loss") -> None:
    """All runs' validation loss on one axis; x is ``tokens`` (fair across batch sizes) or
    ``step``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        if not r["curve"]:
            continue
        xs = [c[1] if x == "tokens" else c[0] for c in r["curve"]]
        ax.plot(xs, [c[2] for c in r["curve"]], "o-", ms=3, label=r["run"])
    ax.set_xlabel("tokens seen" if x == "tokens" else "step")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(title)
    if any(r["curve"] for r in rows):
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_writer(png, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
    finally:
        plt.close(fig)


def refuse_out_dir_in_runs(out_dir: Path, run_dirs: list[Path], runs_dir: Path | None = None) -> None:
    """One line, before anything is written, when the output folder is or lies inside a run's
    folder: a compared one, or any under ``runs_dir`` (the checkpoints folder; beside the runs
    is fine). The comparison's files mixed with the run's and changed what it holds (in
    ``final/`` they would go with the model to the Hub)."""
    real = Path(os.path.realpath(out_dir))
    runs = [Path(os.path.realpath(d)) for d in run_dirs]
    if runs_dir is not None:
        top = Path(os.path.realpath(runs_dir))
        if real != top and real.is_relative_to(top):
            runs.append(top / real.relative_to(top).parts[0])
    for run in runs:
        if real.is_relative_to(run):
            where = "is" if real == run else "lies inside"
            raise UsageError(f"--out_dir {out_dir} {where} the run folder {run}: the comparison's files would "
                             f"mix with the run's; name a folder outside every run (default: "
                             f"09_models/comparisons); nothing was written")


def compare_runs(run_dirs: list[Path], out_dir: Path, x: str = "tokens",
                 name: str = "comparison", runs_dir: Path | None = None) -> tuple[list[dict], str]:
    """Table (printed form returned; ``<name>.md``/``.csv`` written) and ``<name>.png``;
    ``runs_dir``: the checkpoints folder, none of whose runs may receive them."""
    output_stem(name, "--name")
    refuse_out_dir_in_runs(Path(out_dir), run_dirs, runs_dir)
    refuse_artifacts_folder("--out_dir", out_dir)  # a model's, a stage's, a run's elsewhere
    rows = [load_run(p) for p in run_dirs]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = format_table(rows)
    write_csv(rows, out_dir / f"{name}.csv")
    plot_validation_curves(rows, out_dir / f"{name}.png", x=x,
                           title=f"validation loss: {len(rows)} runs")
    write_text_atomic(out_dir / f"{name}.md", table + "\n")  # the table last, each file written whole
    return rows, table
