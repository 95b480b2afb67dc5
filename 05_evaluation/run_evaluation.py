#!/usr/bin/env python3
"""Evaluate a trained londonlm model: held-out loss, perplexity and bits per byte (sliding
window, agrees with shared/bench/bpb.py), historical knowledge probes, continuation quality
(ROUGE vs the true text, repetition, anachronisms, period style), a blind human-evaluation
pack (comprehensive mode), training curves, and a report (metrics.json, samples.jsonl,
report.md, PNG plots) in <run>/evaluation/.

    python 05_evaluation/run_evaluation.py --preset tiny --mode quick

Compare checkpoints:  --compare checkpoint-200 checkpoint-400   (or --compare all)
Aggregate ratings:    --import_ratings ratings.csv --key <run>/evaluation/human_eval/blind_key.json
The model folders also load in lm-eval-harness's Hugging Face backend:

    lm_eval --model hf --model_args pretrained=09_models/checkpoints/tiny/final,dtype=float32 \\
        --tasks lambada_openai,hellaswag,arc_easy --device cpu --batch_size 8
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, where config.py checks this Python
import config
from londonlm.core.errors import run_main
from londonlm.evaluation.cli import build_parser, run


def main(argv: list[str] | None = None) -> int:
    args = build_parser("run_evaluation.py", list(config.PRESETS), config.DEFAULT_PRESET,
                        default_mode=config.EVALUATION.mode).parse_args(argv)
    return run(args, config.get_layout(args.root))


if __name__ == "__main__":
    run_main(main)
