"""The one-command pipeline: corpus -> tokenizer -> token cache + training -> evaluation
-> samples. Each stage skips itself when its outputs are current."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .artifacts import read_json, sha256_file, write_json_atomic


@dataclass
class PipelinePlan:
    processed_dir: Path
    metadata_dir: Path
    tokenizer_dir: Path
    run_dir: Path
    preset: str
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
    train_argv: list[str] = field(default_factory=list)
    prompts: tuple[str, ...] = ()
    max_new_tokens: int = 60
    eval_max_tokens: int | None = 50_000
    overwrite: bool = False
    seed: int = 42


def training_current(run_dir: Path, tokenizer_dir: Path, processed_dir: Path) -> tuple[bool, str]:
    """A finished run whose tokenizer and corpus are the current ones."""
    info_path = run_dir / "run_info.json"
    if not (run_dir / "final" / "config.json").exists() or not info_path.exists():
        return False, "no finished run"
    info = read_json(info_path)
    if info.get("interrupted") or info.get("global_step", 0) < info.get("max_steps", 1):
        return False, "previous run did not finish"
    if info.get("tokenizer_sha256") != sha256_file(tokenizer_dir / "tokenizer.json"):
        return False, "tokenizer changed"
    if info.get("cache", {}).get("manifest_sha256") != sha256_file(processed_dir / "manifest.jsonl"):
        return False, "corpus changed"
    return True, "outputs are current"


def generate_samples(model_dir: Path, prompts, max_new_tokens: int, seed: int) -> list[dict]:
    """Sampled continuations of fixed prompts. Prompts start after <|endoftext|>, as every
    document does in the packed training stream."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    out = []
    for i, prompt in enumerate(prompts):
        torch.manual_seed(seed + i)
        ids = [tok.eos_token_id] + tok.encode(prompt, add_special_tokens=False)
        room = model.config.n_positions - len(ids)  # learned positions end at the context
        if room <= 0:
            ids = ids[-(model.config.n_positions // 2):]
            room = model.config.n_positions - len(ids)
        with torch.inference_mode():
            gen = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=min(max_new_tokens, room), do_sample=True, temperature=0.8,
                                 top_p=0.95, pad_token_id=tok.pad_token_id)
        text = tok.decode(gen[0, len(ids):], skip_special_tokens=True)
        out.append({"prompt": prompt, "continuation": text})
    return out


def evaluate_validation(model_dir: Path, processed_dir: Path, max_tokens: int | None) -> dict:
    """Held-out loss, perplexity and bits per byte on the validation split."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .corpus import iter_split_texts
    from .evaluation.lm import evaluate_lm

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    texts = [t for _, t in iter_split_texts(processed_dir, "validation")]
    return evaluate_lm(model, tok, texts, max_eval_tokens=max_tokens)


def run_pipeline(plan: PipelinePlan, train: Callable[[list[str]], int], log=print) -> dict:
    """Run every stage in order; ``train`` is the training entry point (argv -> exit code)."""
    from .corpus import build_corpus
    from .tokenizer_stage import train_tokenizer_stage

    t0 = time.time()
    timings = {}

    def stage(name):
        log(f"\n=== {name} ===")
        return time.time()

    s = stage("1/5 corpus")
    corpus = build_corpus(plan.processed_dir, plan.metadata_dir, source_dir=plan.source_dir,
                          use_sample=plan.use_sample, sample_limit_chars=plan.sample_limit_chars,
                          validation_percent=plan.validation_percent, min_chars=plan.min_chars,
                          year_range=plan.year_range, overwrite=plan.overwrite, log=log)
    timings["corpus"] = time.time() - s

    s = stage("2/5 tokenizer")
    train_tokenizer_stage(plan.processed_dir, plan.tokenizer_dir, vocab_size=plan.vocab_size,
                          min_frequency=plan.min_frequency, era_tokens=plan.era_tokens,
                          model_max_length=plan.context_length, overwrite=plan.overwrite, log=log)
    timings["tokenizer"] = time.time() - s

    s = stage("3/5 token cache + training")
    current, why = training_current(plan.run_dir, plan.tokenizer_dir, plan.processed_dir)
    if current and not plan.overwrite:
        log(f"training: {why} ({plan.run_dir}); skipping (use --overwrite to retrain)")
    else:
        argv = list(plan.train_argv)
        if plan.run_dir.exists() and any(plan.run_dir.glob("checkpoint-*")) and (
                plan.overwrite or why in ("tokenizer changed", "corpus changed")):
            argv.append("--fresh")
            log(f"training: {'--overwrite' if plan.overwrite else why}; starting a fresh run "
                f"(previous one is moved aside)")
        rc = train(argv)
        if rc != 0:
            raise RuntimeError(f"training failed with exit code {rc}")
    timings["training"] = time.time() - s

    s = stage("4/5 evaluation")
    final = plan.run_dir / "final"
    ev_path = plan.run_dir / "evaluation" / "pipeline_metrics.json"
    ev = evaluate_validation(final, plan.processed_dir, plan.eval_max_tokens)
    write_json_atomic(ev_path, ev)
    log(f"validation: loss {ev['loss']:.4f}, perplexity {ev['perplexity']:.2f}, "
        f"bits/byte {ev['bits_per_byte']:.4f} ({ev['tokens']:,} tokens)")
    timings["evaluation"] = time.time() - s

    s = stage("5/5 samples")
    samples = generate_samples(final, plan.prompts, plan.max_new_tokens, plan.seed)
    write_json_atomic(plan.run_dir / "evaluation" / "pipeline_samples.json", samples)
    timings["samples"] = time.time() - s

    info = read_json(plan.run_dir / "run_info.json")
    summary = {"corpus": corpus, "run_info": info, "validation": ev, "samples": samples,
               "timings_seconds": {k: round(v, 1) for k, v in timings.items()},
               "total_seconds": round(time.time() - t0, 1),
               "artifacts": {"corpus": str(plan.processed_dir), "tokenizer": str(plan.tokenizer_dir),
                             "run": str(plan.run_dir), "final_model": str(final),
                             "evaluation": str(ev_path)}}
    write_json_atomic(plan.run_dir / "pipeline_summary.json", summary)
    log("\n=== done ===")
    for k, v in summary["artifacts"].items():
        log(f"{k:>12}: {v}")
    log(f"  parameters: {info['parameters'] / 1e6:.2f}M   steps: {info['global_step']}   "
        f"train tokens/s: {info.get('tokens_per_second')}")
    log(f"  validation: loss {ev['loss']:.4f}  perplexity {ev['perplexity']:.2f}  "
        f"bits/byte {ev['bits_per_byte']:.4f}")
    for smp in samples:
        log(f"\n  > {smp['prompt']}{smp['continuation']}")
    log(f"\ntotal {summary['total_seconds']:.0f}s")
    return summary
