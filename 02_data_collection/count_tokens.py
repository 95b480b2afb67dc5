#!/usr/bin/env python3
"""Count the tokens of the processed corpus per split, source and decade with the trained
tokenizer (or another tokenizer folder); writes metadata/token_counts.json.

    python 02_data_collection/count_tokens.py
    python 02_data_collection/count_tokens.py --tokenizer path/to/tokenizer_or_model_folder
"""
import argparse
import sys
from pathlib import Path

import config
from londonlm.artifacts import StageInputMissing, write_json_atomic
from londonlm.corpus import CorpusError
from londonlm.corpus_report import count_tokens, format_token_counts
from londonlm.tokenizer import load_tokenizer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", help="tokenizer (or model) folder; default 09_models/tokenizers/<--name>")
    p.add_argument("--name", default=config.TOKENIZER.name, help="tokenizer name under 09_models/tokenizers/")
    p.add_argument("--processed_dir", help="processed corpus folder (default: the root's)")
    p.add_argument("--output", help="JSON output (default metadata/token_counts.json)")
    p.add_argument("--root", help="project root (default $LONDONLM_ROOT or the repo)")
    a = p.parse_args(argv)
    paths = config.get_paths(a.root)
    tok_dir = Path(a.tokenizer) if a.tokenizer else paths.tokenizer_dir(a.name)
    try:
        tok = load_tokenizer(tok_dir)
        counts = count_tokens(a.processed_dir or paths.processed_dir, tok)
    except (CorpusError, StageInputMissing, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    counts["tokenizer"] = str(tok_dir)
    out = Path(a.output) if a.output else paths.metadata_dir / "token_counts.json"
    write_json_atomic(out, counts)
    print(format_token_counts(counts))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
