#!/usr/bin/env python3
"""Export a trained model to GGUF (f16 and q8_0) for llama.cpp, Ollama, LM Studio and friends.

    python 10_scripts/export_gguf.py --preset tiny

Writes <run>/gguf/<run>-f16.gguf and <run>-q8_0.gguf (a checkpoint's files go to
<run>/gguf/<checkpoint>/) with a sidecar.json; current files are kept unless --overwrite.
--verify then runs each file in llama.cpp (needs `pip install llama-cpp-python`) and compares
its greedy tokens with transformers on a fixed prompt. Run a file with llama.cpp, e.g.
`llama-cli -m 09_models/checkpoints/tiny/gguf/tiny-q8_0.gguf -p "Up betimes, and" -n 60`.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, where config.py checks this Python
import config
from londonlm.core.cli import positive_int, StageParser, free_text, writable_dir
from londonlm.core.errors import run_main
from londonlm.export.gguf import QUANT_TYPES, GGUFOptions, default_output, export_gguf
from londonlm.export.gguf_check import greedy_agreement, require_llama_cpp
from londonlm.core.layout import RUN_INFO, RunLayout



def build_parser() -> argparse.ArgumentParser:
    p = StageParser(prog="export_gguf.py", description=__doc__.split("\n\n")[0],
                    epilog="example: " + __doc__.split("\n\n")[1].strip())
    p.add_argument("--model", help="final (default), best, latest, checkpoint-N, another run's "
                                   "name, RUN/checkpoint-N or a model folder")
    p.add_argument("--run_name", help="run folder under 09_models/checkpoints/ (default: preset)")
    p.add_argument("--preset", default=config.DEFAULT_PRESET, choices=list(config.PRESETS),
                   help="names the default run (default: %(default)s)")
    p.add_argument("--root", help="project root (default $LONDONLM_ROOT or the repo)")
    p.add_argument("--out_dir", type=writable_dir, help="output folder (default: <run>/gguf/)")
    p.add_argument("--types", nargs="+", default=list(QUANT_TYPES), choices=QUANT_TYPES,
                   help="GGUF tensor types, one file each (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="rebuild even when current")
    p.add_argument("--verify", action="store_true",
                   help="run each file in llama.cpp and compare greedy tokens with transformers")
    p.add_argument("--prompt", type=free_text, default=config.EVALUATION.sample_prompts[0],
                   help="prompt for --verify (default: %(default)r)")
    p.add_argument("--steps", type=positive_int, default=32, help="greedy tokens for --verify")
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    layout = config.get_layout(a.root)
    layout.check_run_name_used(a.run_name, a.model)
    run = layout.run(a.run_name or a.preset)
    model_dir = layout.resolve_model(a.model, a.run_name or a.preset)
    if not run.contains(model_dir) and (model_dir.parent / RUN_INFO).is_file():
        run = RunLayout(model_dir.parent)   # --model named another run's folder
    out_dir, stem = default_output(run, model_dir)
    if a.verify:
        require_llama_cpp()  # before the export: not after minutes of writing files
    result = export_gguf(model_dir, Path(a.out_dir) if a.out_dir else out_dir,
                         GGUFOptions(types=tuple(a.types), stem=stem, overwrite=a.overwrite))
    if a.verify:
        for qtype, path in result.files.items():
            check = greedy_agreement(model_dir, path, a.prompt, a.steps)
            print(f"{qtype}: {check.matching_prefix}/{check.steps} greedy tokens identical to "
                  f"transformers before the first difference ({check.matching_positions} equal "
                  f"positions); llama.cpp tokenizer agrees: {check.prompt_tokens_agree}")
            print(json.dumps(check.to_dict()))
    return 0


if __name__ == "__main__":
    run_main(main)
