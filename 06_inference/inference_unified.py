#!/usr/bin/env python3
"""Generate text with a trained londonlm model: one prompt, several samples, streaming, or a REPL.

    python 06_inference/inference_unified.py --model final --run_name tiny --prompt "Up betimes, and" --seed 1

Sampling defaults come from the model's generation_config.json; flags override them. Text goes
to stdout, model and timing information to stderr.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Literal, Optional

import config


@dataclass
class InferenceArguments:
    model: Optional[str] = field(default=None, metadata={"help": (
        "A run name, final, latest, best, checkpoint-N, RUN/checkpoint-N, a model folder, or a Hub "
        "id already in the local Hugging Face cache (default: the run's final model, else its "
        "latest checkpoint).")})
    run_name: Optional[str] = field(default=None, metadata={
        "help": "Run folder under 09_models/checkpoints/ (default: the preset name)."})
    preset: str = field(default=config.DEFAULT_PRESET, metadata={"help": "Preset naming the default run."})
    root: Optional[str] = field(default=None, metadata={
        "help": "Project root (default: $LONDONLM_ROOT or the repository)."})
    prompt: Optional[str] = field(default=None, metadata={
        "help": "Text to continue (default: a sample prompt from config.py)."})
    interactive: bool = field(default=False, metadata={
        "help": "Interactive prompt loop with history and /commands (/help lists them)."})
    num_samples: int = field(default=1, metadata={"help": "Samples per prompt."})
    max_new_tokens: Optional[int] = field(default=None, metadata={"help": "Tokens to generate."})
    max_length: Optional[int] = field(default=None, metadata={
        "help": "Alternative to --max_new_tokens: prompt + generated tokens in total."})
    temperature: Optional[float] = field(default=None, metadata={"help": "0 = greedy; up to 5."})
    top_p: Optional[float] = field(default=None, metadata={"help": "Nucleus sampling, in (0, 1]."})
    top_k: Optional[int] = field(default=None, metadata={"help": "Top-k sampling (0 = off)."})
    repetition_penalty: Optional[float] = field(default=None, metadata={"help": "1 = off; in (0, 10]."})
    no_repeat_ngram_size: Optional[int] = field(default=None, metadata={
        "help": "Never repeat an n-gram of this size (0 = off)."})
    seed: Optional[int] = field(default=None, metadata={
        "help": "Seed for reproducible samples (sample i uses seed + i); default random."})
    stream: bool = field(default=False, metadata={
        "help": "Print tokens as they are generated (--interactive on a terminal always does)."})
    era: Optional[str] = field(default=None, metadata={
        "help": "Condition on a period, e.g. 1660s (needs a tokenizer with era tokens)."})
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata={"help": "Where to run."})

    def __post_init__(self):
        for name in ("num_samples", "max_new_tokens", "max_length"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1, got {value}")
        if self.max_new_tokens is not None and self.max_length is not None:
            raise ValueError("give --max_new_tokens or --max_length, not both")
        if self.interactive and self.prompt is not None:
            raise ValueError("--prompt and --interactive exclude each other; type prompts in the loop")
        if self.prompt is not None and "\x00" in self.prompt:
            raise ValueError("--prompt contains a NUL character")
        from londonlm.generation import FALLBACK_DEFAULTS, GenerationSettings

        # range checks before the (slow) model load; the library raises the same messages
        given = {k: v for k, v in self.overrides().items() if v is not None}
        GenerationSettings(**{**FALLBACK_DEFAULTS, **given}).validate()

    def overrides(self) -> dict:
        return {k: getattr(self, k) for k in ("max_new_tokens", "temperature", "top_p", "top_k",
                                               "repetition_penalty", "no_repeat_ngram_size",
                                               "num_samples", "seed")}


def main(argv: list[str] | None = None) -> int:
    from transformers import HfArgumentParser
    from transformers.utils import logging as hf_logging

    from londonlm.generation import GenerationError, load_model, normalize_era, print_generation, run_repl

    parser = HfArgumentParser(InferenceArguments, prog="inference_unified.py",
                              description=__doc__.splitlines()[0])
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    paths = config.get_paths(args.root)
    try:
        lm = load_model(args.model, run_dir=paths.run_dir(args.run_name or args.preset),
                        runs_root=paths.checkpoints_dir, device=args.device)
        settings = lm.defaults.updated(**args.overrides())
        settings.era = normalize_era(args.era, lm.eras)
        print(f"model {lm.model_id} · {lm.n_params:,} parameters · step {lm.step} · {lm.device}",
              file=sys.stderr, flush=True)
        if args.interactive:
            if sys.stdin.isatty():
                import readline  # noqa: F401  (arrow-key editing and history for input())
            return run_repl(lm, settings, sys.stdout, stream_tokens=args.stream or sys.stdin.isatty(),
                            max_length=args.max_length)
        prompt = args.prompt if args.prompt is not None else config.EVALUATION.sample_prompts[0]
        print_generation(lm, prompt, settings, sys.stdout, info=sys.stderr,
                         stream_tokens=args.stream, max_length=args.max_length)
    except GenerationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into `head`
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
