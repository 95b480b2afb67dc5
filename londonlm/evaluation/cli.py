"""``05_evaluation/run_evaluation.py``: argument parsing and wiring for the evaluation stage.

The stage script passes in the path layout and defaults from the root ``config.py``; this
module never imports it."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

LM_EVAL_HINT = ("lm_eval --model hf --model_args pretrained={path},dtype=float32 "
                "--tasks lambada_openai,hellaswag,arc_easy --device cpu --batch_size 8")


def build_parser(prog: str | None, presets: Sequence[str], default_preset: str,
                 default_mode: str = "quick") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description="Evaluate a londonlm model: held-out loss/perplexity/bits per "
        "byte, knowledge probes, continuation quality, human-evaluation pack, training curves.",
        epilog="lm-eval-harness on the same folders: " + LM_EVAL_HINT.format(path="MODEL_DIR"))
    p.add_argument("--mode", choices=("quick", "comprehensive"), default=default_mode,
                   help="quick: capped validation tokens, probes, 4 greedy samples (<= 2 min on "
                        "CPU for tiny); comprehensive: everything, whole validation split")
    p.add_argument("--model", default=None,
                   help="model folder, checkpoint-N, latest, best, final, a run name or "
                        "RUN/checkpoint-N (default: the run's final/, else its latest checkpoint)")
    p.add_argument("--preset", default=default_preset, choices=list(presets),
                   help="preset whose run folder is used when --run_name is not given")
    p.add_argument("--run_name", help="run folder under 09_models/checkpoints/ (default: preset)")
    p.add_argument("--compare", nargs="*", default=[],
                   help="other models/checkpoints (same spec forms as --model) to compare; "
                        "'all' = every checkpoint of the run plus final")
    p.add_argument("--text_files", nargs="*", default=[],
                   help="plain-text files to score too (bits per byte, as bench/bpb.py)")
    p.add_argument("--probes", help="probe JSONL (default: the bundled londonlm/data/probes.jsonl)")
    p.add_argument("--mc_files", nargs="*", default=[],
                   help="extra multiple-choice JSONL files (native or MMLU form); comprehensive mode")
    p.add_argument("--out_dir", help="output folder (default: <run>/evaluation/, or "
                                     "<model>/evaluation/ for a model outside a run)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max_eval_tokens", type=int, default=None,
                   help="cap on scored validation tokens (quick default 20000; comprehensive: all)")
    p.add_argument("--trainer_state", help="trainer_state.json for the curves (default: found "
                                           "in the model folder or the run's newest checkpoint)")
    p.add_argument("--root", help="project root (default: $LONDONLM_ROOT or the repository)")
    p.add_argument("--import_ratings", nargs="*", default=None, metavar="RATINGS",
                   help="aggregate filled human-evaluation ratings (CSV/JSON) instead of evaluating")
    p.add_argument("--key", help="blind_key.json for --import_ratings")
    p.add_argument("--ci", choices=("bootstrap", "t"), default="bootstrap",
                   help="confidence interval method for --import_ratings")
    return p


def load_validation(processed_dir: Path) -> tuple[list[str], list[int | None]]:
    """Texts and years of the manifest's validation documents, in manifest order."""
    from londonlm.corpus import iter_split_texts

    texts, years = [], []
    for row, text in iter_split_texts(processed_dir, "validation"):
        texts.append(text)
        y = row.get("year")
        years.append(int(y) if isinstance(y, (int, float)) else None)
    return texts, years


def _resolve(spec: str | None, run_dir: Path, runs_root: Path) -> Path:
    from londonlm.checkpoints import resolve_model_path

    return resolve_model_path(spec, run_dir=run_dir, runs_root=runs_root)


def _compare_specs(specs: Sequence[str], run_dir: Path, runs_root: Path) -> list[Path]:
    from londonlm.checkpoints import checkpoint_problem, list_checkpoints

    out: list[Path] = []
    for s in specs:
        if s == "all":
            out += [c for c in list_checkpoints(run_dir) if checkpoint_problem(c, False) is None]
            if (run_dir / "final").is_dir():
                out.append(run_dir / "final")
        else:
            out.append(_resolve(s, run_dir, runs_root))
    return out


def _print_table(m: dict) -> None:
    v = m["lm"]["validation"]
    print(f"\n{'metric':<34}{'value':>12}")
    print("-" * 46)
    rows = [("validation loss (nats/token)", v["loss"]), ("validation perplexity", v["perplexity"]),
            ("validation bits per byte", v["bits_per_byte"]),
            ("validation tokens scored", v["tokens"])]
    for name, pr in m["probes"].items():
        rows += [(f"probes[{name}] acc per byte", pr["accuracy"]["per_byte"]),
                 (f"probes[{name}] acc sum", pr["accuracy"]["sum"]),
                 (f"probes[{name}] chance", pr["chance"])]
    g = m.get("generation", {}).get("greedy")
    if g:
        rows += [("greedy ROUGE-L F1", g.get("rougeL")),
                 ("greedy repeated 3-gram rate", g.get("repeated_3gram_rate")),
                 ("greedy anachronism rate", g.get("anachronism_rate"))]
    rows.append(("time (s)", m["timing_s"]["total"]))
    for name, val in rows:
        s = "-" if val is None else (f"{val:.4f}" if isinstance(val, float) else str(val))
        print(f"{name:<34}{s:>12}")
    for r in m.get("compare") or []:
        print(f"  compare {r['name']:<28} bpb {r['bits_per_byte']:.4f}  probes {r['probe_accuracy']:.3f}")


def import_ratings_main(paths: Sequence[str], key: str | None, ci: str) -> int:
    from . import human_eval

    if not key:
        print("error: --import_ratings needs --key path/to/blind_key.json", file=sys.stderr)
        return 2
    rows = human_eval.import_ratings(paths, key)
    agg = human_eval.aggregate(rows, method=ci)
    out = Path(key).parent / "human_eval_results.json"
    from .report import write_metrics

    write_metrics(out, {"format_version": 1, "ci_method": ci, "ratings": len(rows),
                        "files": list(paths), "results": agg})
    for model, crit in agg.items():
        parts = [f"{c} {v['mean']:.2f} [{v['low']:.2f}, {v['high']:.2f}] (n={v['n']})"
                 if v["mean"] is not None and v["low"] is not None else f"{c} n={v['n']}"
                 for c, v in crit.items()]
        print(f"{model}: " + "; ".join(parts))
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None, get_paths: Callable, presets: Sequence[str],
         default_preset: str, prog: str | None = None, default_mode: str = "quick") -> int:
    a = build_parser(prog, presets, default_preset, default_mode).parse_args(argv)
    from londonlm.corpus import CorpusError

    from .human_eval import RatingsError
    from .probes import ProbeFormatError

    try:
        if a.import_ratings is not None:
            return import_ratings_main(a.import_ratings, a.key, a.ci)
        from . import run_evaluation

        paths = get_paths(a.root)
        runs_root = paths.checkpoints_dir
        run_dir = runs_root / (a.run_name or a.preset)
        model_path = _resolve(a.model, run_dir, runs_root)
        compare = _compare_specs(a.compare, run_dir, runs_root)
        compare = [c for c in compare if c.resolve() != model_path.resolve()]
        texts, years = load_validation(paths.processed_dir)
        if a.out_dir:
            out_dir = Path(a.out_dir)
        elif model_path.resolve().parent.parent == runs_root.resolve():
            out_dir = model_path.parent / "evaluation"
            if model_path.name != "final":  # keep each checkpoint's report apart
                out_dir = out_dir / model_path.name
        else:
            out_dir = model_path / "evaluation"
        m = run_evaluation(model_path, out_dir, val_texts=texts, val_years=years, mode=a.mode,
                           probes_path=a.probes, extra_mc_files=a.mc_files,
                           text_files=a.text_files, compare=compare, device=a.device,
                           seed=a.seed, max_eval_tokens=a.max_eval_tokens,
                           trainer_state_path=a.trainer_state)
    except (FileNotFoundError, ProbeFormatError, RatingsError, CorpusError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _print_table(m)
    print(f"\nreport: {out_dir / 'report.md'}")
    print("lm-eval-harness: " + LM_EVAL_HINT.format(path=model_path))
    return 0
