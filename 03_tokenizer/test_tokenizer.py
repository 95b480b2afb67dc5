#!/usr/bin/env python3
"""Report on the trained tokenizer: exact round trip over every document (exit 1 on any
failure, including text that encodes to a control token), bytes/token and tokens/word on
validation, period-word fertility, top merges.

    python 03_tokenizer/test_tokenizer.py
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, where config.py checks this Python
import config
from londonlm.core.cli import StageParser, writable_file
from londonlm.core.artifacts import refuse_output_over_inputs, write_json_atomic
from londonlm.core.layout import refuse_file_in_an_artifact
from londonlm.core.errors import run_main
from londonlm.tokens.stage import format_report, tokenizer_report


def main(argv=None) -> int:
    p = StageParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizer", help="tokenizer folder (default: 09_models/tokenizers/<name>)")
    p.add_argument("--name", default=config.TOKENIZER.name)
    p.add_argument("--processed_dir", help="processed corpus folder")
    p.add_argument("--root", help="project root")
    p.add_argument("--json", type=writable_file, help="also write the report as JSON here")
    a = p.parse_args(argv)
    layout = config.get_layout(a.root)
    tok_dir, processed = a.tokenizer or layout.tokenizer_dir(a.name), a.processed_dir or layout.processed_dir
    if a.json:  # before the report: written over the corpus or the tokenizer, it would replace it
        refuse_output_over_inputs("--json", a.json, {"the corpus folder": processed, "the tokenizer folder": tok_dir})
        refuse_file_in_an_artifact("--json", a.json)
    rep = tokenizer_report(tok_dir, processed)
    print(format_report(rep))
    if a.json:
        write_json_atomic(a.json, rep)
    return 1 if rep["roundtrip"]["failures"] else 0


if __name__ == "__main__":
    run_main(main)
