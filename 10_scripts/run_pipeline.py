#!/usr/bin/env python3
"""Run the whole pipeline (corpus, tokenizer, training, evaluation, samples) on the
embedded First Folio sample, or on --source_dir; each stage skips when current.

    python 10_scripts/run_pipeline.py
"""
import argparse
import sys

import config
from londonlm.pipeline import PipelinePlan, run_pipeline
from londonlm.train_cli import main as train_main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default=config.DEFAULT_PRESET, choices=list(config.PRESETS))
    p.add_argument("--source_dir", help="folder of .txt files instead of the embedded sample")
    p.add_argument("--sample_limit_chars", type=int, help="use only part of the sample")
    p.add_argument("--max_steps", type=int, help="override the preset's training steps")
    p.add_argument("--run_name", help="run folder under 09_models/checkpoints/ (default: preset)")
    p.add_argument("--root", help="project root (default $LONDONLM_ROOT or the repo)")
    p.add_argument("--overwrite", action="store_true", help="rebuild every stage")
    p.add_argument("--no_era_tokens", action="store_true", help="train without era tokens")
    p.add_argument("--eval_max_tokens", type=int, default=50_000,
                   help="validation tokens scored (0 = all)")
    a, extra = p.parse_known_args(argv)
    preset = config.get_preset(a.preset)
    paths = config.get_paths(a.root)
    run_name = a.run_name or a.preset
    train_argv = ["--preset", a.preset, "--run_name_dir", run_name]
    if a.root:
        train_argv += ["--root", a.root]
    if a.max_steps:
        train_argv += ["--max_steps", str(a.max_steps)]
    if a.no_era_tokens:
        train_argv += ["--era_tokens", "false"]
    train_argv += extra  # any other training flag passes through
    plan = PipelinePlan(
        processed_dir=paths.processed_dir, metadata_dir=paths.metadata_dir,
        tokenizer_dir=paths.tokenizer_dir(config.TOKENIZER.name), run_dir=paths.run_dir(run_name),
        preset=a.preset, vocab_size=preset.vocab_size, context_length=preset.context_length,
        min_frequency=preset.min_frequency,
        era_tokens=config.TOKENIZER.era_tokens and not a.no_era_tokens,
        validation_percent=config.CORPUS.validation_percent, min_chars=config.CORPUS.min_chars,
        year_range=(config.CORPUS.year_min, config.CORPUS.year_max), source_dir=a.source_dir,
        sample_limit_chars=a.sample_limit_chars, train_argv=train_argv,
        prompts=config.EVALUATION.sample_prompts,
        max_new_tokens=config.EVALUATION.sample_max_new_tokens,
        eval_max_tokens=a.eval_max_tokens or None, overwrite=a.overwrite, seed=config.TRAINING.seed)

    def train(targv):
        return train_main(targv, presets={k: config.asdict(v) for k, v in config.PRESETS.items()},
                          default_preset=a.preset, get_paths=config.get_paths,
                          tokenizer_name=config.TOKENIZER.name, seed=config.TRAINING.seed,
                          wandb_project=config.TRAINING.wandb_project,
                          dataloader_workers=config.TRAINING.dataloader_workers)
    try:
        run_pipeline(plan, train)
    except Exception as e:  # every stage raises errors whose message names the fix
        if type(e).__name__ in ("CorpusError", "StageInputMissing", "TrainingError", "CacheError",
                                "RuntimeError", "FileNotFoundError"):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
