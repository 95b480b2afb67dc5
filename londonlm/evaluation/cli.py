"""``05_evaluation/run_evaluation.py``: argument parsing and wiring for the evaluation stage.

The stage script builds the parser here (with its presets and defaults from ``config.py``),
parses, makes the project :class:`~londonlm.core.layout.Layout` from ``--root`` and calls
:func:`run`; this module never imports ``config.py``. Model specs resolve through the layout,
and the output folder is :meth:`~londonlm.core.layout.RunLayout.evaluation_dir_for` (the rule
publishing reads back)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from ..core import (Layout, RunLayout, StageParser, UsageError, checkpoint_problem, existing_dir, existing_file,
                    number_in, positive_int, refuse_output_over_inputs, refuse_artifacts_folder,
                    writable_dir, year)
from ..corpus import read_split_texts
from ..generation import DTYPES
from . import human_eval
from .harness import TEXT_TASK

# filled with the device and dtype an evaluation ran with, so lm-eval's figures are comparable
# a seed every generator the evaluation seeds takes (torch, numpy and generate() all take [0, 2**32))
seed = number_in(0, 2**32, below=True)
LM_EVAL_HINT = ("lm_eval --model hf --model_args pretrained={path},dtype={dtype} --include_path "
                "londonlm/evaluation/lm_eval_tasks --tasks london_probes --device {device} --batch_size 8")


# the flags --import_ratings reads; every other one is the evaluation's and would go unused beside it
RATINGS_FLAGS = ("import_ratings", "key", "ci", "root")


class EvaluationParser(StageParser):
    """The stage's parser: besides each value's own check, a flag that the work asked for would
    not act on is refused in one line (a user who gave it expects it to change something)."""

    def parse_args(self, args=None, namespace=None):
        ns = super().parse_args(args, namespace)
        unused = unused_flag(ns, {a.dest for a in self._actions if a.option_strings and hasattr(ns, a.dest)
                                  and getattr(ns, a.dest) != a.default})
        if unused:
            self.error(unused)
        return ns


def unused_flag(args: argparse.Namespace, given: set[str]) -> str | None:
    """Why one of the ``given`` flags would change nothing in the run ``args`` asks for, or None."""
    if args.import_ratings is not None:
        extra = sorted(given - set(RATINGS_FLAGS))
        if extra:
            return (f"--{extra[0]} does not apply to --import_ratings (it only aggregates the ratings "
                    "beside --key); drop it, or evaluate in a separate run")
        return None
    for name in ("key", "ci"):
        if name in given:
            return f"--{name} applies only to --import_ratings; drop it, or add --import_ratings RATINGS"
    if "mc_files" in given and args.mode == "quick":
        return "--mc_files are scored in comprehensive mode only; add --mode comprehensive or drop --mc_files"
    if "lm_eval_text_dir" in given and TEXT_TASK not in args.lm_eval_tasks:
        return (f"--lm_eval_text_dir is read by the lm-eval task {TEXT_TASK} only; add "
                f"--lm_eval_tasks {TEXT_TASK} or drop --lm_eval_text_dir")
    return None


def build_parser(prog: str | None, presets: Sequence[str], default_preset: str,
                 default_mode: str = "quick") -> argparse.ArgumentParser:
    p = EvaluationParser(
        prog=prog, description="Evaluate a londonlm model: held-out loss/perplexity/bits per "
        "byte, knowledge probes, continuation quality, human-evaluation pack, training curves.",
        epilog="lm-eval-harness on the same folders: " + LM_EVAL_HINT.format(
            path="MODEL_DIR", dtype="bfloat16", device="cuda") + " (without a GPU: dtype=float32, --device cpu)")
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
    p.add_argument("--text_files", type=existing_file, nargs="*", default=[],
                   help="UTF-8 text files to score too (bits per byte, as bench/bpb.py)")
    p.add_argument("--probes", type=existing_file,
                   help="probe JSONL (default: the bundled londonlm/evaluation/data/probes.jsonl)")
    p.add_argument("--lm_eval_tasks", nargs="*", default=[], metavar="TASK",
                   help="also run lm-evaluation-harness tasks from londonlm/evaluation/lm_eval_tasks "
                        "(london_probes, london_text_bpb) and record them under lm_eval")
    p.add_argument("--lm_eval_text_dir", type=existing_dir, help="folder of .txt files for london_text_bpb")
    p.add_argument("--mc_files", type=existing_file, nargs="*", default=[],
                   help="extra multiple-choice JSONL files (native or MMLU form); comprehensive mode")
    p.add_argument("--out_dir", type=writable_dir, help="output folder (default: <run>/evaluation/, or "
                                     "<model>/evaluation/ for a model outside a run)")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one, else the CPU), cpu, "
                                                    "cuda or cuda:N")
    p.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="the weights' dtype (auto: bfloat16 on a GPU that has it, else float16; "
                        "float32 on CPU); recorded in metrics.json")
    p.add_argument("--seed", type=seed, default=0, help="seed of the sampled continuations and the "
                   "human-evaluation pack's order, 0 to 2**32-1")
    p.add_argument("--cutoff_year", type=year,
                   help="split the leakage probes at this year (default: the cutoff the model's run "
                        "recorded; none: every item counts as before the cutoff)")
    p.add_argument("--max_eval_tokens", type=positive_int, default=None,
                   help="cap on scored validation tokens (quick default 20000; comprehensive: all)")
    p.add_argument("--trainer_state", help="trainer_state.json for the curves (default: found "
                                           "in the model folder or the run's newest checkpoint)")
    p.add_argument("--root", help="project root (default: $LONDONLM_ROOT or the repository)")
    p.add_argument("--overwrite", action="store_true",
                   help="evaluate again though the output folder holds this evaluation (the same "
                        "weights, validation text, files and settings, its files intact), which is skipped")
    p.add_argument("--import_ratings", nargs="*", default=None, metavar="RATINGS",
                   help="aggregate filled human-evaluation ratings (CSV/JSON) instead of evaluating")
    p.add_argument("--key", help="blind_key.json for --import_ratings")
    p.add_argument("--ci", choices=("bootstrap", "t"), default="bootstrap",
                   help="confidence interval method for --import_ratings")
    return p


def load_validation(processed_dir: Path) -> tuple[list[str], list[int | None]]:
    """Texts and years of the manifest's validation documents, in manifest order, of one corpus
    (a corpus collected again while they are read is one line, not figures of two)."""
    texts, years = [], []
    for row, text in read_split_texts(processed_dir, "validation"):
        texts.append(text)
        y = row.get("year")
        years.append(int(y) if isinstance(y, (int, float)) else None)
    return texts, years


def _compare_specs(specs: Sequence[str], layout: Layout, run: RunLayout) -> list[Path]:
    out: list[Path] = []
    for s in specs:
        if s == "all":
            out += [c for c in run.checkpoints() if checkpoint_problem(c, False) is None]
            if run.final.is_dir():
                out.append(run.final)
        else:
            out.append(layout.resolve_model(s, run))
    return out


def evaluation_dir(layout: Layout, run: RunLayout, model_path: Path) -> Path:
    """The model's own run decides (a spec may name another run's checkpoint, or a path into
    a run under another root: its folder holds run_info.json), as publishing looks for it; a
    model outside every run keeps its evaluation beside it."""
    owner, parent = run, model_path.resolve().parent
    if parent.parent == layout.checkpoints_dir.resolve():
        owner = layout.run(parent.name)
    elif RunLayout(parent).run_info.is_file():
        owner = RunLayout(parent)
    return owner.evaluation_dir_for(model_path)


def import_ratings_main(paths: Sequence[str], key: str | None, ci: str) -> int:
    if not key:
        raise UsageError("--import_ratings needs --key path/to/blind_key.json")
    from .report import write_metrics  # imported here for the reason run() gives

    rows = human_eval.import_ratings(paths, key)
    agg = human_eval.aggregate(rows, method=ci)
    out = Path(key).parent / "human_eval_results.json"
    write_metrics(out, {"format_version": 1, "ci_method": ci, "ratings": len(rows),
                        "files": list(paths), "models": human_eval.key_models(key),
                        "results": agg})
    for model, crit in agg.items():
        parts = [f"{c} {v['mean']:.2f} [{v['low']:.2f}, {v['high']:.2f}] (n={v['n']})"
                 if v["mean"] is not None and v["low"] is not None else f"{c} n={v['n']}"
                 for c, v in crit.items()]
        print(f"{model}: " + "; ".join(parts))
    print(f"wrote {out}")
    return 0


def run(args: argparse.Namespace, layout: Layout) -> int:
    """Evaluate the model ``args`` name (or aggregate ratings with ``--import_ratings``)."""
    if args.import_ratings is not None:
        return import_ratings_main(args.import_ratings, args.key, args.ci)
    # imported once the command line stands: the evaluation's code imports torch (~3.5 s), which
    # --help and a refused flag need not wait for
    from .report import print_table
    from .run import EvaluationSettings, run_evaluation

    # --compare all reads the run's checkpoints: the run name is used as by --model final
    layout.check_run_name_used(args.run_name, args.model, *(None if s == "all" else s for s in args.compare))
    run_layout = layout.run(args.run_name or args.preset)
    model_path = layout.resolve_model(args.model, run_layout)
    compare = [c for c in _compare_specs(args.compare, layout, run_layout)
               if c.resolve() != model_path.resolve()]
    corpus = layout.corpus_of(model_path)
    texts, years = load_validation(corpus)
    out_dir = Path(args.out_dir) if args.out_dir else evaluation_dir(layout, run_layout, model_path)
    # the report written into the corpus or a model's own folder would mix with (and change) what it holds
    refuse_output_over_inputs("--out_dir", out_dir, {"the corpus folder": corpus})
    for path in (model_path, *compare):
        refuse_output_over_inputs("--out_dir", out_dir, {"the folder of the model": path}, inside=False)
    refuse_artifacts_folder("--out_dir", out_dir)  # another model's, a stage's, a run's
    settings = EvaluationSettings.from_flags(vars(args), compare=compare)
    m = run_evaluation(model_path, out_dir, settings, val_texts=texts, val_years=years, overwrite=args.overwrite)
    print_table(m)
    print(f"\nreport: {out_dir / 'report.md'}")
    print("lm-eval-harness: " + LM_EVAL_HINT.format(path=model_path, dtype=m["settings"]["dtype"],
                                                    device=m["settings"]["device"]))
    return 0
