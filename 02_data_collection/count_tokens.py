#!/usr/bin/env python3
"""Count the tokens of the processed corpus per split, source and decade with the trained
tokenizer (or another tokenizer folder); writes metadata/token_counts.json.

    python 02_data_collection/count_tokens.py
    python 02_data_collection/count_tokens.py --tokenizer path/to/tokenizer_or_model_folder
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, where config.py checks this Python
import config
from londonlm.core.cli import StageParser
from londonlm.core.artifacts import refuse_output_over_inputs
from londonlm.tokens.counts import count_tokens_with, format_token_counts
from londonlm.core.errors import run_main
from londonlm.corpus.ocr.files import check_output, output_file, same_as_stdout


def main(argv=None) -> int:
    p = StageParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", help="tokenizer (or model) folder; default 09_models/tokenizers/<--name>")
    p.add_argument("--name", default=config.TOKENIZER.name, help="tokenizer name under 09_models/tokenizers/")
    p.add_argument("--processed_dir", help="processed corpus folder (default: the root's)")
    p.add_argument("--output", help="JSON output (default metadata/token_counts.json)")
    p.add_argument("--root", help="project root (default $LONDONLM_ROOT or the repo)")
    a = p.parse_args(argv)
    layout = config.get_layout(a.root)
    tok_dir = Path(a.tokenizer) if a.tokenizer else layout.tokenizer_dir(a.name)
    processed = a.processed_dir or layout.processed_dir
    out = Path(a.output) if a.output else layout.metadata_dir / "token_counts.json"
    # before the counting: a report written over the corpus or the tokenizer would replace it
    refuse_output_over_inputs("--output", out, {"the corpus folder": processed, "the tokenizer folder": tok_dir})
    check_output("--output", a.output or out)  # a folder, a path under a file: refused before the counting
    counts = count_tokens_with(processed, tok_dir)
    # whole or not at all; a device or a pipe (/dev/null, /dev/stdout) written as it is, never
    # replaced by a file renamed over it
    with output_file(out) as f:
        f.write(json.dumps(counts, indent=2, default=str) + "\n")
    log = sys.stderr if same_as_stdout(out) else sys.stdout
    print(format_token_counts(counts), file=log)
    print(f"written {out}", file=log)
    return 0


if __name__ == "__main__":
    run_main(main)
