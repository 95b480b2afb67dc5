#!/usr/bin/env python3
"""Build the period-dialogue dataset: Old Bailey examinations (TEI XML) as chat conversations,
one per witness examination, written with `datasets.save_to_disk` plus a dataset card,
per-file statistics and every rejected exchange with its reason; skips when current.

    python 07_finetuning/build_chat_dataset.py --source_dir my_texts/
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, where config.py checks this Python
import config
from londonlm.core.cli import existing_dir, percent, StageParser, writable_dir, writable_file
from londonlm.core.artifacts import refuse_output_over_inputs, write_json_atomic
from londonlm.core.layout import refuse_file_in_an_artifact
from londonlm.chat.dataset import ChatDatasetOptions, build_chat_dataset, format_statistics
from londonlm.core.errors import run_main


def main(argv=None) -> int:
    p = StageParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source_dir", type=existing_dir, help="folder searched (recursively) for Old Bailey TEI *.xml "
                                        "(default: the downloads folder)")
    p.add_argument("--out_dir", type=writable_dir, help="dataset folder (default: data/london_historical/chat)")
    p.add_argument("--validation_percent", type=percent, default=ChatDatasetOptions.validation_percent,
                   help="share of trials held out")
    p.add_argument("--root", help="project root (default $LONDONLM_ROOT or the repo)")
    p.add_argument("--overwrite", action="store_true", help="rebuild even when current")
    p.add_argument("--json", type=writable_file, help="also write the statistics as JSON here")
    a = p.parse_args(argv)
    layout = config.get_layout(a.root)
    source, out = a.source_dir or layout.downloads_dir, a.out_dir or layout.chat_data_dir
    if a.json:  # before the build: written over a TEI source or into the dataset, it would replace it
        refuse_output_over_inputs("--json", a.json, {"the source folder": source, "the dataset folder": out})
        refuse_file_in_an_artifact("--json", a.json)
    stats = build_chat_dataset(source, out,
                               ChatDatasetOptions(validation_percent=a.validation_percent),
                               overwrite=a.overwrite)
    print("\n".join(format_statistics(stats)))
    if a.json:
        write_json_atomic(a.json, stats)
    return 0


if __name__ == "__main__":
    run_main(main)
