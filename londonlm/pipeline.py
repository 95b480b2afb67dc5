"""The one-command pipeline: corpus -> tokenizer -> token cache + training -> evaluation
-> samples. Each stage skips itself when its outputs are current."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from .artifacts import read_json, sha256_file, write_json_atomic
from .layout import RunLayout
from .training import TrainingError, TrainingJob, run_job

SUMMARY = "pipeline_summary.json"  # in the run folder
METRICS = "pipeline_metrics.json"  # in the run's evaluation folder
SAMPLES = "pipeline_samples.json"


@dataclass
class PipelinePlan:
    processed_dir: Path
    metadata_dir: Path
    tokenizer_dir: Path
    training: TrainingJob        # the run (its options name the tokenizer and corpus above)
    vocab_size: int
    context_length: int
    min_frequency: int
    era_tokens: bool
    validation_percent: float
    min_chars: int
    year_range: tuple[int, int]
    source_dir: Path | None = None
    use_sample: bool | None = None
    sample_limit_chars: int | None = None
    prompts: tuple[str, ...] = ()
    max_new_tokens: int = 60
    eval_max_tokens: int | None = 50_000
    overwrite: bool = False
    seed: int = 42

    @property
    def run(self) -> RunLayout:
        return self.training.opts.run


def training_current(run: RunLayout, tokenizer_dir: Path, processed_dir: Path) -> tuple[bool, str]:
    """A finished run whose tokenizer and corpus are the current ones."""
    if not run.has_final() or not run.run_info.exists():
        return False, "no finished run"
    info = run.read_run_info()
    if info.get("interrupted") or info.get("global_step", 0) < info.get("max_steps", 1):
        return False, "previous run did not finish"
    if info.get("tokenizer_sha256") != sha256_file(tokenizer_dir / "tokenizer.json"):
        return False, "tokenizer changed"
    if info.get("cache", {}).get("manifest_sha256") != sha256_file(processed_dir / "manifest.jsonl"):
        return False, "corpus changed"
    return True, "outputs are current"


def generate_samples(model_dir: Path, prompts, max_new_tokens: int, seed: int) -> list[dict]:
    """One sampled continuation per prompt (prompt i seeded with ``seed + i``), through the
    one generation interface: prompts start after <|endoftext|> as every training document
    does, with the project's sampling defaults."""
    from .generation import GenerationSettings, generate, load_model

    lm = load_model(str(model_dir))
    out = []
    for i, prompt in enumerate(prompts):
        settings = GenerationSettings(max_new_tokens=max_new_tokens, seed=seed + i)
        out.append({"prompt": prompt, "continuation": generate(lm, prompt, settings)[0].text})
    return out


def evaluate_validation(model_dir: Path, processed_dir: Path, max_tokens: int | None) -> dict:
    """Held-out loss, perplexity and bits per byte on the validation split."""
    from .corpus import iter_split_texts
    from .evaluation.lm import evaluate_lm
    from .generation import load_model

    lm = load_model(str(model_dir), device="cpu")
    texts = [t for _, t in iter_split_texts(processed_dir, "validation")]
    return evaluate_lm(lm.model, lm.tokenizer, texts, max_eval_tokens=max_tokens)


def _train_stage(plan: PipelinePlan, log) -> None:
    """Train unless a finished run matches the current tokenizer and corpus; a run made with
    another tokenizer or corpus (or --overwrite) starts fresh, its old files moved aside."""
    current, why = training_current(plan.run, plan.tokenizer_dir, plan.processed_dir)
    if current and not plan.overwrite:
        log(f"training: {why} ({plan.run.dir}); skipping (use --overwrite to retrain)")
        return
    opts = plan.training.opts
    if plan.run.checkpoints() and (plan.overwrite or why in ("tokenizer changed", "corpus changed")):
        opts = replace(opts, fresh=True)
        log(f"training: {'--overwrite' if plan.overwrite else why}; starting a fresh run "
            f"(previous one is moved aside)")
    summary = run_job(replace(plan.training, opts=opts))
    if summary.get("interrupted"):
        raise TrainingError(f"training stopped early ({summary['interrupted']}); run the same "
                            f"command again to resume it")


def _report(summary: dict, log) -> None:
    info, ev = summary["run_info"], summary["validation"]
    log("\n=== done ===")
    for k, v in summary["artifacts"].items():
        log(f"{k:>12}: {v}")
    log(f"  parameters: {info['parameters'] / 1e6:.2f}M   steps: {info['global_step']}   "
        f"train tokens/s: {info.get('tokens_per_second')}")
    log(f"  validation: loss {ev['loss']:.4f}  perplexity {ev['perplexity']:.2f}  "
        f"bits/byte {ev['bits_per_byte']:.4f}")
    for smp in summary["samples"]:
        log(f"\n  > {smp['prompt']}{smp['continuation']}")
    log(f"\ntotal {summary['total_seconds']:.0f}s")


def run_pipeline(plan: PipelinePlan, log=print) -> dict:
    """Run every stage in order; returns (and saves in the run folder) a summary."""
    from .corpus import build_corpus
    from .tokenizer_stage import train_tokenizer_stage

    t0, timings, run = time.time(), {}, plan.run

    def stage(name, key, fn):
        log(f"\n=== {name} ===")
        s = time.time()
        result = fn()
        timings[key] = time.time() - s
        return result

    corpus = stage("1/5 corpus", "corpus", lambda: build_corpus(
        plan.processed_dir, plan.metadata_dir, source_dir=plan.source_dir,
        use_sample=plan.use_sample, sample_limit_chars=plan.sample_limit_chars,
        validation_percent=plan.validation_percent, min_chars=plan.min_chars,
        year_range=plan.year_range, overwrite=plan.overwrite, log=log))
    stage("2/5 tokenizer", "tokenizer", lambda: train_tokenizer_stage(
        plan.processed_dir, plan.tokenizer_dir, vocab_size=plan.vocab_size,
        min_frequency=plan.min_frequency, era_tokens=plan.era_tokens,
        model_max_length=plan.context_length, overwrite=plan.overwrite, log=log))
    stage("3/5 token cache + training", "training", lambda: _train_stage(plan, log))
    ev_path = run.evaluation_dir / METRICS
    ev = stage("4/5 evaluation", "evaluation", lambda: evaluate_validation(
        run.final, plan.processed_dir, plan.eval_max_tokens))
    write_json_atomic(ev_path, ev)
    log(f"validation: loss {ev['loss']:.4f}, perplexity {ev['perplexity']:.2f}, "
        f"bits/byte {ev['bits_per_byte']:.4f} ({ev['tokens']:,} tokens)")
    samples = stage("5/5 samples", "samples", lambda: generate_samples(
        run.final, plan.prompts, plan.max_new_tokens, plan.seed))
    write_json_atomic(run.evaluation_dir / SAMPLES, samples)
    summary = {"corpus": corpus, "run_info": read_json(run.run_info), "validation": ev,
               "samples": samples, "timings_seconds": {k: round(v, 1) for k, v in timings.items()},
               "total_seconds": round(time.time() - t0, 1),
               "artifacts": {"corpus": str(plan.processed_dir), "tokenizer": str(plan.tokenizer_dir),
                             "run": str(run.dir), "final_model": str(run.final),
                             "evaluation": str(ev_path)}}
    write_json_atomic(run.dir / SUMMARY, summary)
    _report(summary, log)
    return summary
