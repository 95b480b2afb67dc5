#!/usr/bin/env python3
"""Train the byte-level BPE tokenizer on the processed corpus's training split.

Writes a Hugging Face tokenizer folder (tokenizer.json, vocab.json, merges.txt, ...) under
09_models/tokenizers/<name>/ with a sidecar; skips when current.

    python 03_tokenizer/train_historical_tokenizer.py --preset tiny
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, where config.py checks this Python
import config
from londonlm.core.cli import non_negative_int, number_in, positive_int, StageParser, vocabulary, writable_dir
from londonlm.core.errors import run_main
from londonlm.tokens.stage import train_tokenizer_stage
from londonlm.tokens.tokenizer import MAX_ERA_WIDTH


def parse(argv=None):
    p = StageParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default=config.DEFAULT_PRESET, choices=list(config.PRESETS),
                   help="preset whose vocabulary size and context length to use")
    p.add_argument("--vocab_size", type=vocabulary, help="vocabulary size (default: the preset's)")
    p.add_argument("--min_frequency", type=positive_int, help="minimum pair frequency for a merge")
    p.add_argument("--sample_chars", type=non_negative_int, default=config.TOKENIZER.sample_chars,
                   help="train on a sample of at most this many characters of the training split, chosen by "
                        "a hash of document ids (0: all of it)")
    p.add_argument("--no_era_tokens", action="store_true",
                   help="do not add <|1650s|>-style era tokens")
    p.add_argument("--era_width", type=number_in(1, MAX_ERA_WIDTH), default=config.TOKENIZER.era_width,
                   help="years each era token covers (50: <|1650s|> is 1650-1699); recorded in the tokenizer, "
                        "which every later stage maps a document's year by")
    p.add_argument("--name", default=config.TOKENIZER.name, help="folder under 09_models/tokenizers/")
    p.add_argument("--output_dir", type=writable_dir, help="tokenizer folder (overrides --name)")
    p.add_argument("--processed_dir", help="processed corpus folder")
    p.add_argument("--root", help="project root (default $LONDONLM_ROOT or the repo)")
    p.add_argument("--overwrite", action="store_true", help="retrain even when current")
    a = p.parse_args(argv)
    return a


def main(argv=None) -> int:
    a = parse(argv)
    preset = config.get_preset(a.preset)
    layout = config.get_layout(a.root)
    train_tokenizer_stage(
        a.processed_dir or layout.processed_dir, a.output_dir or layout.tokenizer_dir(a.name),
        vocab_size=a.vocab_size or preset.vocab_size,
        min_frequency=a.min_frequency or preset.min_frequency,
        era_tokens=config.TOKENIZER.era_tokens and not a.no_era_tokens,
        era_width=a.era_width, model_max_length=preset.context_length,
        sample_chars=a.sample_chars, overwrite=a.overwrite)
    return 0


if __name__ == "__main__":
    run_main(main)
