#!/usr/bin/env python3
"""Race our training against the seed guide's recipe on one device, the same seconds each, on
the same data, both scored in bits per byte on the same held-out text, at the end and along the
way (so each recipe's time to a given bpb can be read off).

    python benchmarks/gpu_race.py --dry_run                                   # the steps
    python benchmarks/gpu_race.py --device cpu --preset micro --seconds 30 \
        --source_dir DIR --work DIR --json FILE                               # the smoke race
    python benchmarks/gpu_race.py --prepare --data .gpu_race --source_dir ../shared/corpus   # CPU
    python benchmarks/gpu_race.py --data .gpu_race --bench_md BENCHMARKS.md   # on the GPU
    python benchmarks/gpu_race.py --data .gpu_race --variant_seconds 60 --deadline 540 \
        --variant muon='--optimizer muon' --variant lr1e-3='--learning_rate 1e-3'   # what each change buys
    python benchmarks/gpu_race.py --from_json OUT/gpu_race.json --bench_md BENCHMARKS.md \
        --plot benchmarks/plots/gpu_race_slm.png                              # a lease's, drawn here

(benchmarks/gpu_lease.sh runs each device call whole: the carried wheels, the install, the step;
BENCHMARKS.md, "The GPU race", says which calls a lease holds.)

Recipes. ``seed_recipe``: ../shared/bench/baseline_clm.py with the guide's flags (bf16, AdamW
3e-4, dropout 0.1, GPT-2 Small's 16 x 2 sequences of 512 tokens, warm-up 1,000 of 60,000
steps; ``regular``: the guide's 8 x 4 x 1024, warm-up 2,000; another preset: its shape, the same
optimizer, batch and dropout), its schedule fitted
like ours: a short first pass measures its step time on this device, then its steps are what
fits the seconds and its warm-up the guide's share of them. ``ours``: the project's training
command with the preset's defaults and ``--time_budget``.

Variants (``--variant NAME=FLAGS``, repeated): ours with some training flags changed, each run
after the race for ``--variant_seconds`` (default: the race's seconds) and scored the same way,
so that what each change buys is read beside ours unchanged on the same machine in the same
call. Where ``--variant_seconds`` differs from ``--seconds``, ours unchanged runs for those
seconds too (the variant ``base``) and each variant is compared with it. ``--deadline`` skips a
variant that would end past that many seconds since the race began, and cuts scoring short of
it (the final models are scored first), since a device call is cut off at its limit.
``--variants_only`` runs the variants and ``base`` without the race, for a lease that holds no
more; ``--seed_bpb`` then gives the seed recipe's final bpb of an earlier race on the same data,
and each run's time to it is read off its curve as the race's own would be. Every run compiles (where it compiles at all) into a compile cache of its own, from cold.
benchmarks/gpu_lease.sh holds the device calls whole.

Data (benchmarks/race/data.py): a part of --source_dir (whole files by a hash of their names,
up to --source_mb), built by the project's corpus stage, whose held-out documents are chosen
by a hash of their ids; the project's tokenizer trained on the training documents; our token
cache; copies of baseline_clm.py and bpb.py. ``--prepare`` makes that folder on a CPU, to be
carried to a GPU machine (which gets the working tree and carried ignored paths only).

Curves: both recipes run under benchmarks/race/snapshot_shim/, which copies the weights to host
memory every seconds/--curve_points seconds of training and writes them as model folders when
the process exits; every copy and each final model is scored after training by bpb.py (in one
process, on the device: benchmarks/race/score.py). Writes --json ({"ours": {"bpb": ...},
"seed_recipe": {"bpb": ...}, ...}) and, with --bench_md, the block between
``<!-- gpu-race:begin -->`` and ``<!-- gpu-race:end -->`` (another preset's: ``gpu-race-PRESET``;
a variants-only call's: ``...-variants``), and --plot (default: the JSON's path as .png), every
run's held-out bpb over its seconds with the seed recipe's final bpb across and a mark at a third
of its seconds (benchmarks/race/plot.py), linked from the block where it lies in --bench_md's
folder; ``--from_json`` draws both from an earlier race's JSON, running nothing. Exit 0 when both recipes were
scored (with ``--variants_only``: ours unchanged), 1 when one was not (a variant that failed or
was skipped is a row saying why), 2 on bad input or no CUDA for --device cuda.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import itertools
import json
import math
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # this checkout's londonlm and config.py, before an installed copy
    sys.path.insert(1, str(REPO))

from londonlm.core.processes import run_to_log  # noqa: E402
from gpu.report import check_block  # noqa: E402  (benchmarks/ is this script's folder)
from race import data as race_data, plot as race_plot, recipes as R, report  # noqa: E402

SHARED_BENCH = REPO.parent / "shared" / "bench"
SCORER = REPO / "benchmarks" / "race" / "score.py"
FIRST_PASS = (3.0, 30.0)  # its seconds: a tenth of the race's, within these bounds
SCORE_BYTES = {"cuda": 100_000, "cpu": 20_000}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_race.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="slm", choices=list(presets()), help="the preset raced (default slm)")
    p.add_argument("--seconds", type=float, default=180.0, help="training seconds per recipe")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--data", type=Path, help="the race's data folder (default WORK/data with "
                   "--source_dir, else .gpu_race in the repository)")
    p.add_argument("--source_dir", type=Path, help="texts to prepare the data from (e.g. ../shared/corpus)")
    p.add_argument("--source_mb", type=float, default=16.0, help="at most this many MB of source files (0: all)")
    p.add_argument("--prepare", action="store_true", help="only prepare --data from --source_dir (on a CPU)")
    p.add_argument("--work", type=Path, help="scratch folder for the runs (default: a new temporary one)")
    p.add_argument("--json", type=Path, help="results file (default WORK/gpu_race.json)")
    p.add_argument("--bench_md", type=Path, help="write the race's block into this file (e.g. BENCHMARKS.md)")
    p.add_argument("--curve_points", type=int, default=6, help="weight snapshots per recipe (every seconds/N)")
    p.add_argument("--score_bytes", type=int, help="bytes of each held-out document scored (default "
                   f"{SCORE_BYTES['cuda']:,} on cuda, {SCORE_BYTES['cpu']:,} on cpu, where scoring is slower)")
    p.add_argument("--first_pass_seconds", type=float, help="the seed recipe's timing pass "
                   f"(default: a tenth of --seconds, {FIRST_PASS[0]:g}-{FIRST_PASS[1]:g} s)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS",
                   help="also race ours with these training flags changed, e.g. muon='--optimizer muon' "
                        "(repeat for more; each runs after the race)")
    p.add_argument("--variant_seconds", type=float, help="training seconds per variant (default: --seconds; "
                   "otherwise ours unchanged also runs for them, as the variant 'base')")
    p.add_argument("--variants_only", action="store_true", help="run the variants and ours unchanged ('base') "
                   "at --variant_seconds, not the race (a lease too short for both); it writes a block of its "
                   "own (gpu-race-variants for slm)")
    p.add_argument("--seed_bpb", type=float, metavar="BPB", help="with --variants_only: the seed recipe's final "
                   "held-out bpb from an earlier race on the same data (--data) and device kind, which each variant "
                   "and ours unchanged are read against (the time each takes to reach it), as the race's own are")
    p.add_argument("--deadline", type=float, help="seconds after the race began by which it must end: a variant "
                   "that would end later (estimated from the runs before it) is skipped, and scoring stops "
                   "short of it (final models first, then the curve's snapshots)")
    p.add_argument("--plot", type=Path, help="the picture of every run's held-out bpb over its seconds (default: "
                   "the --json path as .png); the block links it where it lies in --bench_md's folder")
    p.add_argument("--from_json", type=Path, metavar="FILE", help="run nothing: draw the picture and (with "
                   "--bench_md) write the block of an earlier race from its JSON, e.g. a lease's, on any machine")
    p.add_argument("--dry_run", action="store_true", help="print the steps and commands; run nothing")
    a = p.parse_args(argv)
    a.score_bytes = SCORE_BYTES[a.device] if a.score_bytes is None else a.score_bytes
    # finite too: nan passed every "<= 0" test (a race of nan seconds; nan MB of sources a traceback)
    seconds = {"--seconds": a.seconds, "--variant_seconds": a.variant_seconds, "--deadline": a.deadline,
               "--first_pass_seconds": a.first_pass_seconds}
    bad = [flag for flag, v in seconds.items() if v is not None and not (math.isfinite(v) and v > 0)]
    if bad:
        p.error(f"{', '.join(bad)}: a positive, finite number of seconds")
    if a.curve_points < 1 or a.score_bytes < 1:
        p.error("--curve_points and --score_bytes must be positive")
    if not (math.isfinite(a.source_mb) and a.source_mb >= 0):
        p.error("--source_mb: a number of MB, 0 or more (0: all)")
    if a.variants_only and not a.variant:
        p.error("--variants_only needs at least one --variant")
    if a.seed_bpb is not None and not (a.variants_only and a.seed_bpb > 0):
        p.error("--seed_bpb is a positive bpb, given with --variants_only (a race measures its own)")
    try:
        a.variants = variants(a.variant, a.seconds if a.variant_seconds is None else a.variant_seconds, a.seconds,
                              base=a.variants_only)
    except ValueError as e:
        p.error(str(e))
    if a.prepare and not a.source_dir:
        p.error("--prepare needs --source_dir")
    a.work = (a.work or Path(tempfile.gettempdir()) / f"londonlm_gpu_race_{time.strftime('%Y%m%d_%H%M%S')}").resolve()
    a.data = (a.data or (a.work / "data" if a.source_dir else REPO / ".gpu_race")).resolve()
    a.json = (a.json or a.work / "gpu_race.json").resolve()
    a.plot = (a.plot or (a.from_json or a.json).with_suffix(".png")).resolve()
    # a file written over another of the call's files lost it: --plot over the race's JSON (its one
    # record from a lease), --json over --bench_md
    files = {"--plot": a.plot, **({"--bench_md": a.bench_md.resolve()} if a.bench_md else {}),
             **({"--from_json": a.from_json.resolve()} if a.from_json else {"--json": a.json})}
    for (f1, q1), (f2, q2) in itertools.combinations(files.items(), 2):
        if q1 == q2:
            p.error(f"{f1} and {f2} name one file, {q1}: name another")
    if a.first_pass_seconds is None:
        a.first_pass_seconds = min(max(a.seconds / 10, FIRST_PASS[0]), FIRST_PASS[1])
    return a


def variants(specs: list[str], seconds: float, race_seconds: float, base: bool = False) -> list[R.Variant]:
    """The ``--variant`` runs in order, led by ``base`` (ours unchanged) when their seconds
    differ from the race's or when ``base`` (no race to compare with): each change is compared
    with ours at the same seconds."""
    out = [R.parse_variant(spec, seconds) for spec in specs]
    names = [v.name for v in out]
    if len(set(names)) < len(names):
        raise ValueError(f"--variant: each name once (given {', '.join(names)})")
    if out and (base or seconds != race_seconds):
        out.insert(0, R.Variant(R.BASE_VARIANT, (), seconds))
    return out


def presets() -> dict:
    import config  # the repository's (put on sys.path above)

    return config.PRESETS


def plan(a: argparse.Namespace, preset) -> list[tuple[str, list[str]]]:
    """The steps in order, each with what it runs (the dry run prints it)."""
    d = race_data.RaceData(a.data, {"train": [{"path": "texts/TRAIN.txt"}], "heldout": [{"path": "texts/HELDOUT.txt"}]})
    seed = R.seed_recipe(preset.name)
    run = a.work / "race-STAMP"
    first = R.seed_cmd(d.script("baseline_clm.py"), d.files("train"), d.tokenizer, preset, seed, R.GUIDE_STEPS,
                       seed.warmup_steps, a.first_pass_seconds, run / "seed_first_pass")
    main = R.seed_cmd(d.script("baseline_clm.py"), d.files("train"), d.tokenizer, preset, seed, 0, 0,
                      a.seconds, run / "seed")
    ours = R.ours_cmd(preset.name, run / "root", d.tokenizer, d.processed, a.seconds)
    every = a.seconds / a.curve_points
    data_step = (f"prepare {a.data} from {a.source_dir} (at most {a.source_mb:g} MB of whole files by a hash "
                 f"of their names): corpus stage ({race_data.VALIDATION_PERCENT:g}% held out by a hash of "
                 f"document ids), tokenizer ({preset.vocab_size} tokens), token cache, reference scripts"
                 if a.source_dir else f"use the prepared data in {a.data} ({race_data.RECORD})")
    race_steps = [] if a.variants_only else [
        ("seed_recipe first pass", [f"under the snapshot shim (clock only) on {a.device}", _cmd(first)]),
        ("seed_recipe fitted", [f"steps = what fits {a.seconds:g} s at the first pass's step time (after 3 "
                                f"steps); warm-up = {seed.warmup_steps} / {R.GUIDE_STEPS:,} of them",
                                _cmd(main).replace("--max-steps 0", "--max-steps STEPS")
                                .replace("--warmup-steps 0", "--warmup-steps WARMUP")]),
        ("ours", [f"token cache copied from {d.cache} into the run folder", _cmd(ours)]),
        ("score", [f"weights every {every:g} s of training (snapshot shim) and each final model, scored by "
                   f"bpb.py on the held-out documents (first {a.score_bytes:,} bytes of each), on {a.device}",
                   _cmd([sys.executable, str(SCORER), "--bpb", str(d.script("bpb.py")), "--device", a.device,
                         "--max_bytes", str(a.score_bytes), "--files", "HELDOUT...", "--models", "MODELS..."])])]
    return [
        ("data", [data_step]),
        *race_steps,
        *[(f"variant {v.name}", [f"ours with {shlex.join(v.flags) or 'nothing'} changed, {v.seconds:g} s, weights "
                                 f"every {v.seconds / a.curve_points:g} s, scored by bpb.py like the race's"
                                 + (f"; skipped if it would end past {a.deadline:g} s" if a.deadline else ""),
                                 _cmd(R.ours_cmd(preset.name, run / "root", d.tokenizer, d.processed, v.seconds,
                                                 list(v.flags), v.run_name))])
          for v in a.variants],
        ("report", [f"write {a.json}" + (f" and the {report.block_name(preset.name, not a.variants_only)} block "
                                         f"of {a.bench_md}" if a.bench_md else "")]),
    ]


def _cmd(cmd: list[str]) -> str:
    return "$ " + shlex.join(cmd)


def dry_run(a: argparse.Namespace, preset) -> int:
    what = (f"variants of ours only, {a.variants[0].seconds:g} s each" if a.variants_only
            else f"{a.seconds:g} s per recipe")
    print(f"GPU race plan: {preset.name}, {what} on {a.device}; scratch {a.work}")
    for i, (name, lines) in enumerate(plan(a, preset), 1):
        print(f"{i}. {name}")
        for line in lines:
            print(f"     {line}")
    return 0


def run_timeout(seconds: float) -> float:
    """How long a run given ``seconds`` of training may take: start-up, tokenizing, a compile,
    the final evaluation and save beside them."""
    return 4 * seconds + 900


def run_logged(cmd: list[str], env: dict, log: Path, timeout: float) -> str | None:
    """None when ``cmd`` exits 0, else why not (its last output lines). Past ``timeout`` its
    whole process group (data-loader workers too) is stopped."""
    rc = run_to_log(cmd, log, timeout, env=env, cwd=REPO)
    if rc is None:
        return f"timed out after {timeout:g} s (see {log})"
    if rc == 0:
        return None
    tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-3:]
    return f"exit {rc}: {' | '.join(tail)[-600:]} (see {log})"


def read_clock(snapshots: Path) -> list[tuple[int, float]]:
    path = snapshots / "clock.json"
    return [tuple(x) for x in json.loads(path.read_text())["steps"]] if path.exists() else []


def snapshot_dirs(snapshots: Path) -> list[Path]:
    return sorted(snapshots.glob("snap-*"), key=lambda p: p.name)


def with_tokenizer(model_dirs: list[Path], tokenizer: Path) -> None:
    """bpb.py reads the tokenizer from the model folder: a snapshot gets the race's."""
    for folder in model_dirs:
        for f in tokenizer.iterdir():
            if f.is_file() and f.name != "sidecar.json" and not (folder / f.name).exists():
                shutil.copy2(f, folder / f.name)


def flops_per_token(shape: dict) -> float:
    """FLOPs per token of a shape (``n_layer``, ``n_head``, ``n_embd``, ``context_length``,
    ``vocab_size``: run_info.json's ``shape``, since a variant may change the context) over the
    real vocabulary, as the acceptance's MFU counts it: a padded vocabulary's extra rows are
    waste, not model FLOPs."""
    from londonlm.training.model import ModelShape

    return ModelShape(shape["n_layer"], shape["n_head"], shape["n_embd"], shape["context_length"],
                      shape["vocab_size"]).flops_per_token(shape["context_length"])


def recipe_result(tokens: int, clock: list, snapshots: Path, final: Path, flops: float, peak: float | None,
                  **fields) -> dict:
    """The figures both recipes report, from the shim's clock (the same instrument on both):
    training seconds to the last step's end, tokens per second over them, MFU."""
    seconds = clock[-1][1] if clock else None
    rate = round(tokens / seconds, 1) if seconds else None
    return {"status": "ok", "tokens": tokens, "train_seconds": round(seconds, 1) if seconds else None,
            "tokens_per_s": rate, "mfu": report.mfu(rate, flops, peak), "flops_per_token": flops,
            "model": str(final), "snapshots": [str(p) for p in snapshot_dirs(snapshots)], **fields}


def run_seed(a, d, preset, run: Path, env, peak) -> dict:
    """The first pass (its clock only), the fitted steps and warm-up, then the race run."""
    seed = R.seed_recipe(preset.name)
    script, files = d.script("baseline_clm.py"), d.files("train")
    first_out, out = run / "seed_first_pass", run / "seed"
    first = R.seed_cmd(script, files, d.tokenizer, preset, seed, R.GUIDE_STEPS, seed.warmup_steps,
                       a.first_pass_seconds, first_out)
    err = run_logged(first, env(first_out / "snapshots", 0), run / "logs" / "seed_first_pass.log",
                     run_timeout(a.seconds))
    clock = read_clock(first_out / "snapshots")
    if err or not clock:
        return {"status": "failed", "error": f"first pass: {err or 'no step recorded'}"}
    steps = R.fit_steps(clock, a.seconds)
    warmup = R.warmup_for(steps, seed)
    fit = {"first_pass_seconds": a.first_pass_seconds, "first_pass_steps": clock[-1][0],
           "fitted_steps": steps, "warmup_steps": warmup}
    print(f"    seed_recipe: {clock[-1][0]} steps in {clock[-1][1]:.1f} s -> {steps} steps, warm-up {warmup}",
          flush=True)
    cmd = R.seed_cmd(script, files, d.tokenizer, preset, seed, steps, warmup, a.seconds, out)
    err = run_logged(cmd, env(out / "snapshots", a.seconds / a.curve_points), run / "logs" / "seed.log",
                     run_timeout(a.seconds))
    if err:
        return {"status": "failed", "error": err, **fit, "command": shlex.join(cmd)}
    r = json.loads((out / "baseline_result.json").read_text())
    cut = "" if r["steps"] >= steps else f", cut by the seconds at step {r['steps']}"
    summary = (f"{seed.batch_size} x {seed.grad_accum} x {preset.context_length}, AdamW {R.GUIDE_LR:g} cosine, "
               f"warm-up {warmup} of {steps} steps (fitted{cut}), dropout {R.GUIDE_DROPOUT:g}, "
               f"{'bf16' if '--bf16' in cmd else 'fp32'}, not compiled")
    return recipe_result(r["useful_tokens"], read_clock(out / "snapshots"), out / "snapshots", out / "model",
                         flops_per_token({**dataclasses.asdict(preset), "vocab_size": d.record["tokenizer_vocab"]}),
                         peak, steps=r["steps"], own_train_seconds=r["train_seconds"], params=r["params"], summary=summary,
                         command=shlex.join(cmd), **fit)


def compiled(model_dir: Path) -> str:
    """Whether the run trained compiled: the TrainingArguments the Trainer saved beside the model."""
    import torch

    try:
        args = torch.load(model_dir / "training_args.bin", weights_only=False)
    except (OSError, RuntimeError, AttributeError):
        return "compile unknown"
    return "torch.compile" if getattr(args, "torch_compile", False) else "not compiled"


def ours_summary(info: dict, compiled_note: str) -> str:
    """The settings column of one of ours' rows, from its run_info.json."""
    s, fit = info.get("settings", {}), info.get("time_budget") or {}
    context = info["shape"]["context_length"]  # a variant may change it
    summary = (f"{s.get('batch_size')} x {s.get('gradient_accumulation_steps')} x {context}, "
               f"{s.get('optimizer')} {s.get('learning_rate'):g} warmup-stable-decay fitted to the budget "
               f"({fit.get('fitted_total_steps')} steps), warm-up {warmup_used(info)}, dropout "
               f"{s.get('dropout')}, {info.get('precision')}, attention {info.get('attn_implementation')}, "
               f"fused loss {'on' if info.get('fused_loss') else 'off'}, {compiled_note}")
    if info.get("final_weights_step") not in (None, info["global_step"]):  # --load_best_model_at_end
        summary += f"; final/ is step {info['final_weights_step']}'s weights (its best evaluation)"
    pauses = info.get("pauses")
    if pauses:  # the training seconds that were not steps (a run recorded before 2026-11-28: none)
        summary += (f"; {pauses['evaluations']} evaluations took {pauses['evaluating_seconds']:g} s, "
                    f"{pauses['checkpoints']} checkpoints {pauses['checkpoint_seconds']:g} s")
    return summary


def warmup_used(info: dict) -> str:
    """The warm-up one of ours trained with, from its run_info.json: a budgeted run fits its
    warm-up to the steps the budget holds (a preset's share of them: slm's 1,000 of 60,000),
    first from the estimated pace (run_info's ``warmup_steps``, the Trainer's), then from the
    measured one (``time_budget.warmup_steps``, where the run records it). The preset's own
    (``settings``, as asked) only where neither is recorded, and said to be."""
    fitted = (info.get("time_budget") or {}).get("warmup_steps")
    if fitted is not None:
        return f"{fitted:g}"
    started = info.get("warmup_steps")
    if started is not None:  # a run that records no refit: the warm-up it started with
        return f"{started:g} (as started)"
    asked = (info.get("settings") or {}).get("warmup_steps")
    return "unrecorded" if asked is None else f"{asked:g} (as asked)"


def run_ours(a, d, preset, run: Path, env, peak, variant: R.Variant | None = None) -> dict:
    """Our training command with the preset's defaults and --time_budget (a variant's flags
    after them); the prepared token cache copied into its run folder (a copy: a rebuild must
    never write into --data)."""
    from londonlm.core.layout import Layout

    name = f"ours_{variant.name}" if variant else "ours"
    seconds, flags = (variant.seconds, list(variant.flags)) if variant else (a.seconds, [])
    run_name = variant.run_name if variant else R.OURS_RUN
    layout = Layout(run / "root").run(run_name)
    shutil.copytree(d.cache, layout.cache_dir)
    cmd = R.ours_cmd(preset.name, run / "root", d.tokenizer, d.processed, seconds, flags, run_name)
    snaps = run / f"{name}_snapshots"
    err = run_logged(cmd, env(snaps, seconds / a.curve_points, run / "compile_cache" / name),
                     run / "logs" / f"{name}.log", run_timeout(seconds))
    fields = {"flags": flags, "seconds": seconds} if variant else {}
    if err:
        return {"status": "failed", "error": err, "command": shlex.join(cmd), **fields}
    info = layout.read_run_info()
    tokens = info.get("tokens_seen") or info["global_step"] * info["tokens_per_step"]
    summary = ours_summary(info, compiled(layout.final))
    best = {"best_model": str(layout.best), "best_step": info.get("best_step")} if layout.best.is_dir() else {}
    return recipe_result(tokens, read_clock(snaps), snaps, layout.final,
                         flops_per_token(info["shape"]), peak,
                         steps=info["global_step"], own_train_seconds=info.get("train_wall_seconds"),
                         params=info.get("parameters"), summary=summary, command=shlex.join(cmd),
                         speed=info.get("speed"), time_budget=info.get("time_budget") or {}, **best, **fields)


def score_all(a, d, results: dict, run: Path, env, clock: RaceClock, log_name: str = "score") -> None:
    """Every snapshot and final model of the runs in ``results``, scored in one process; each
    run's ``bpb`` (its final model), ``curve`` (snapshots, then the final model at its last step)
    and, where it kept one (--save_best), ``best_bpb`` (its best/ model). The final models go
    first: where --deadline stops the scoring, they are what it has scored. A folder the scorer
    could not load is ``unscored`` (with why), the rest of the run's curve kept; a final model
    that could not be scored fails its run with why."""
    done = {name: r for name, r in results.items() if r.get("status") == "ok"}
    for r in done.values():
        r["snapshots"] = [m for m in r["snapshots"] if not m.endswith(f"snap-{r['steps']:07d}")]
    models = [Path(m) for r in done.values() for m in (r["model"], r.get("best_model")) if m]
    models += [Path(m) for r in done.values() for m in r["snapshots"]]
    if not models:
        return
    with_tokenizer([Path(m) for r in done.values() for m in r["snapshots"]], d.tokenizer)
    cmd = [sys.executable, str(SCORER), "--bpb", str(d.script("bpb.py")), "--device", a.device,
           "--max_bytes", str(a.score_bytes), "--files", *map(str, d.files("heldout")), "--models", *map(str, models)]
    log = run / "logs" / f"{log_name}.log"
    err = run_logged(cmd, env(None, 0), log, clock.timeout(run_timeout(a.seconds)))
    scores, failed = read_scores(log)
    for r in done.values():
        unscored = [{"model": m, "error": failed[m]} for m in (r.get("best_model"), *r["snapshots"]) if m in failed]
        if unscored:  # the others scored all the same
            r["unscored"] = unscored
        if r["model"] not in scores:
            why = failed.get(r["model"]) or err or "no score"
            r.update(status="failed", error=f"scoring: {why}")
            continue
        r["bpb"] = scores[r["model"]]["bpb"]
        r["scored"] = scores[r["model"]]
        if r.get("best_model") in scores:
            r["best_bpb"] = scores[r["best_model"]]["bpb"]
        curve = []
        for snap in r["snapshots"]:  # (a copy at the last step is the final model: scored once)
            meta = json.loads((Path(snap) / "snapshot.json").read_text())
            if snap in scores:
                curve.append({"seconds": meta["seconds"], "step": meta["step"], "bpb": scores[snap]["bpb"]})
        curve.append({"seconds": r["train_seconds"], "step": r["steps"], "bpb": r["bpb"]})
        r["curve"] = curve


def read_scores(log: Path) -> tuple[dict, dict]:
    """score.py's JSON lines in its log: the scores by model folder, and the folders it could
    not score with why (it goes on past one)."""
    scores, failed = {}, {}
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"model"' in line:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short where the scoring was stopped
                continue
            model = row.pop("model")
            if "error" in row:
                failed[model] = row["error"]
            else:
                scores[model] = row
    return scores, failed


def machine(device: str) -> dict:
    import platform

    import torch
    import transformers

    from train_throughput import cpu_description  # benchmarks/ is on sys.path (this script's folder)

    if device == "cuda":
        from gpu.report import machine_info

        return machine_info()
    return {"cpu": cpu_description(), "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def data_facts(d, score_bytes: int) -> dict:
    rec = d.record
    return {"folder": str(d.dir), "train_documents": len(rec["train"]), "heldout_documents": len(rec["heldout"]),
            "heldout_ids": [x["id"] for x in rec["heldout"]], "train_tokens": rec["tokens"].get("train"),
            "validation_documents": len(rec["validation"]), "validation_ids": [x["id"] for x in rec["validation"]],
            "validation_tokens": rec["tokens"].get("validation"), "tokenizer_vocab": rec["tokenizer_vocab"],
            "scored_bytes": sum(min(x["bytes"], score_bytes) for x in rec["heldout"]),
            "sources": [s["name"] for s in rec["sources"]], "bytes": rec.get("bytes")}


def race(a, preset, d) -> dict:
    from londonlm.core.hardware import peak_flops

    info = machine(a.device)
    peak = peak_flops(info.get("gpu"))
    run = a.work / f"race-{time.strftime('%Y%m%d-%H%M%S')}"
    env = functools.partial(R.race_env, a.device, hf_cache=a.work / "hf_datasets_cache")
    results = {"meta": {"command": shlex.join(["python", "benchmarks/gpu_race.py", *a.argv]),
                        "date": time.strftime("%Y-%m-%d"), "device": a.device, "machine": info,
                        "preset": preset.name, "seconds": a.seconds, "curve_every": a.seconds / a.curve_points,
                        "score_bytes": a.score_bytes, "run": str(run), "data": data_facts(d, a.score_bytes),
                        "curve_points": a.curve_points,
                        "variants": [{"name": v.name, "flags": list(v.flags), "seconds": v.seconds}
                                     for v in a.variants]}}
    if a.seed_bpb is not None:  # an earlier race's: this call runs no seed recipe
        results["meta"]["seed_bpb_given"] = a.seed_bpb
    clock = RaceClock(a.deadline)
    if not a.variants_only:
        race_recipes(a, d, preset, run, env, peak, clock, results)
    if a.variants:
        results["variants"] = {}
    for v in a.variants:
        results["variants"][v.name] = r = run_variant(a, d, preset, run, env, peak, v, clock)
        print(f"    {r['status']}: {r.get('error') or r.get('bpb')}", flush=True)
        report.compare(results)
        report.write_json(results, a.json)
    return results


def race_recipes(a, d, preset, run: Path, env, peak, clock: RaceClock, results: dict) -> None:
    """The seed recipe and ours, each for --seconds, then scored together."""
    for name, step in (("seed_recipe", run_seed), ("ours", run_ours)):
        print(f"[race] {name}: {a.seconds:g} s of training on {a.device} ...", flush=True)
        with clock.ours(a.seconds) if name == "ours" else contextlib.nullcontext():
            results[name] = step(a, d, preset, run, env, peak)
        print(f"    {results[name]['status']}: {results[name].get('error') or results[name]['summary']}", flush=True)
        report.write_json(results, a.json)  # after each recipe: a run cut short keeps what it measured
    print("[race] scoring every snapshot and final model with bpb.py ...", flush=True)
    t0 = time.monotonic()
    score_all(a, d, {k: results[k] for k in report.RECIPES}, run, env, clock)
    clock.add((time.monotonic() - t0) / 2)  # ours' half of the scoring
    report.compare(results)
    report.write_json(results, a.json)


def run_variant(a, d, preset, run: Path, env, peak, v: R.Variant, clock: RaceClock) -> dict:
    """One variant trained and scored, or skipped where it would end past --deadline."""
    late = clock.too_late(v.seconds)
    if late:
        print(f"[race] variant {v.name}: skipped ({late})", flush=True)
        return {"status": "skipped", "error": late, "flags": list(v.flags), "seconds": v.seconds}
    print(f"[race] variant {v.name} ({shlex.join(v.flags) or 'ours unchanged'}): {v.seconds:g} s ...", flush=True)
    with clock.ours(v.seconds):
        r = run_ours(a, d, preset, run, env, peak, v)
        score_all(a, d, {v.name: r}, run, env, clock, f"score_{v.name}")
    return r


class RaceClock:
    """Seconds since the race began, and what each run of ours cost beyond its training
    seconds (start-up, data, the final evaluation and save, writing snapshots, scoring): the
    estimate by which ``--deadline`` skips a variant that would not end in time."""

    def __init__(self, deadline: float | None, now: Callable[[], float] = time.monotonic):
        self.deadline, self.now = deadline, now
        self.start = now()
        self.overheads: list[float] = []

    @contextlib.contextmanager
    def ours(self, training_seconds: float):
        """Times a run of ours given ``training_seconds``: the rest is its overhead."""
        t0 = self.now()
        try:
            yield
        finally:
            self.overheads.append(self.now() - t0 - training_seconds)

    def add(self, seconds: float) -> None:
        """More overhead of the last run (its scoring, done apart)."""
        if self.overheads:
            self.overheads[-1] += seconds

    def timeout(self, seconds: float, margin: float = 15.0) -> float:
        """``seconds``, or less where the deadline comes sooner (``margin`` before it, for the
        report; at least 30 s)."""
        if self.deadline is None:
            return seconds
        return min(seconds, max(30.0, self.deadline - (self.now() - self.start) - margin))

    def too_late(self, seconds: float) -> str | None:
        """Why a run of ``seconds`` would end past the deadline, or None when it fits (or
        there is no deadline). Its overhead is the largest seen so far."""
        if self.deadline is None:
            return None
        elapsed = self.now() - self.start
        beside = max(self.overheads, default=0.0)
        ends = elapsed + seconds + beside
        if ends <= self.deadline:
            return None
        return (f"would end at about {ends:.0f} s ({elapsed:.0f} s gone, {seconds:g} s of training and "
                f"{beside:.0f} s beside it), past --deadline {self.deadline:g} s")


def main(argv: list[str] | None = None) -> int:
    a = parse(sys.argv[1:] if argv is None else argv)
    a.argv = sys.argv[1:] if argv is None else argv
    preset = presets()[a.preset]
    if a.dry_run:
        return dry_run(a, preset)
    if a.from_json:
        return from_json(a)
    from londonlm.core import LondonLMError

    if a.bench_md and not a.prepare:
        try:  # before the race: a lease spent on a race whose block cannot be written
            check_block(a.bench_md, *report.markers(preset.name, not a.variants_only))
        except (OSError, ValueError) as e:
            print(f"error: --bench_md {e}", file=sys.stderr)
            return 2

    if a.device == "cuda" and not a.prepare:
        import torch

        if not torch.cuda.is_available():
            print("error: no CUDA GPU here; use --device cpu for the smoke race, --prepare to make the data "
                  "on a CPU, or --dry_run", file=sys.stderr)
            return 2
    try:
        if a.source_dir:
            d = race_data.prepare(a.data, a.source_dir, preset, SHARED_BENCH, int(a.source_mb * 1e6))
        else:
            d = race_data.load(a.data)
        if a.prepare:
            print(f"prepared {a.data}: {d.record['bytes'] / 2**20:.1f} MiB; carry it (the GPU machine gets "
                  f"the working tree and carried paths, 64 MiB in all)")
            return 0
        if (d.record["preset"], d.record["context_length"]) != (preset.name, preset.context_length):
            raise race_data.RaceDataError(f"{a.data} was prepared for the {d.record['preset']} preset; prepare "
                                          f"it for {preset.name} (--prepare --preset {preset.name})")
    except (race_data.RaceDataError, LondonLMError) as e:  # bad input: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    results = race(a, preset, d)
    print(f"wrote {report.write_json(results, a.json)}")
    try:
        write_records(results, a.plot, a.bench_md)
    except (OSError, ValueError) as e:  # the file changed during the race: the JSON has it all
        print(f"error: cannot write the block: {e} (the race's results are in {a.json}: --from_json)",
              file=sys.stderr)
        return 2
    for name, r in report.runs(results):
        print(f"{name}: bpb {r.get('bpb')}, {r.get('steps')} steps, {r.get('tokens')} tokens, "
              f"{r.get('train_seconds')} s ({r.get('status')})")
    needed = [results["variants"][R.BASE_VARIANT]] if a.variants_only else [results[n] for n in report.RECIPES]
    ok = all(math.isfinite(r.get("bpb") or math.nan) for r in needed)
    return 0 if ok else 1


def write_records(results: dict, png: Path, bench_md: Path | None) -> None:
    """The picture (where matplotlib is installed: the GPU machine's image may lack it, and
    ``--from_json`` draws it afterwards) and, with ``bench_md``, the block, linking the picture."""
    try:
        drawn = race_plot.draw(results, png)
    except Exception as e:  # noqa: BLE001  (no matplotlib, an unwritable folder: the block matters more)
        drawn = None
        print(f"no picture: {type(e).__name__}: {e} (draw it from the JSON on another machine: --from_json)")
    if drawn:
        print(f"wrote {drawn}")
    if bench_md:
        print(f"wrote the {report.block_name(results['meta']['preset'], report.raced(results))} block of "
              f"{report.write_block(results, bench_md, drawn)}")


def from_json(a: argparse.Namespace) -> int:
    """``--from_json``: an earlier race's picture and block, from its JSON; bad input one line."""
    try:
        results = json.loads(a.from_json.read_text(encoding="utf-8"))
        if not isinstance(results, dict) or not isinstance(results.get("meta"), dict) or "preset" not in results["meta"]:
            raise ValueError("it holds no race (no meta.preset)")
        report.markdown(results)  # a JSON missing what a race's holds fails here, before anything is written
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        # (RecursionError: arrays nested past the decoder's depth)
        print(f"error: cannot read {a.from_json} as a race's JSON: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    try:
        write_records(results, a.plot, a.bench_md)
    except (OSError, ValueError) as e:  # (ValueError: its markers do not pair, a file not UTF-8)
        print(f"error: cannot write the block: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
