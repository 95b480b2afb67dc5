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

import config
from londonlm.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], get_paths=config.get_paths, presets=list(config.PRESETS),
                  default_preset=config.DEFAULT_PRESET, prog="run_evaluation.py",
                  default_mode=config.EVALUATION.mode))
