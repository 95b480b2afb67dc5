#!/usr/bin/env python3
"""Fine-tune a pre-trained run into a period chat model on the Old Bailey dialogue dataset:
role tokens and chat template added, loss on the answers only, packed conversations that
never attend to each other, resumable checkpoints; writes <run>-chat/final/.

    python 07_finetuning/finetune_chat.py --preset tiny --init_from tiny
"""
import argparse
from dataclasses import replace
from pathlib import Path

try:
    import config  # the project's settings; importable once `bash install.sh` has run
except ModuleNotFoundError:  # started by an interpreter without the project installed
    raise SystemExit("error: londonlm is not installed for this Python: run `bash install.sh`, "
                     "then use .venv/bin/python (or `source .venv/bin/activate` first)")
from londonlm.chat.finetune import ChatTrainOptions, finetune_chat
from londonlm.errors import UsageError, run_main

def chat_run_name(layout, base_dir: Path, spec: str) -> str:
    """``<base run>-chat`` when the base model lives in a run folder, else from the folder name."""
    run = base_dir.parent if base_dir.parent.parent == layout.checkpoints_dir else base_dir
    return layout.chat_run_name(run.name if run.name else spec)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default=config.DEFAULT_PRESET, choices=list(config.CHAT_PRESETS))
    p.add_argument("--init_from", help="base model: a run name (its final/), RUN/checkpoint-N, "
                                       "best, latest or a folder (default: the preset's run)")
    p.add_argument("--run_name", help="chat run folder under 09_models/checkpoints/ (default: <base run>-chat)")
    p.add_argument("--data_dir", help="dialogue dataset (default: data/london_historical/chat)")
    p.add_argument("--max_steps", type=int)
    p.add_argument("--learning_rate", type=float)
    p.add_argument("--batch_size", type=int)
    p.add_argument("--no_packing", action="store_true", help="pad each conversation instead of packing")
    p.add_argument("--fresh", action="store_true", help="start over; an old run is moved aside")
    p.add_argument("--overwrite", action="store_true", help="retrain even when current (old run moved aside)")
    p.add_argument("--root", help="project root (default $LONDONLM_ROOT or the repo)")
    a = p.parse_args(argv)
    layout = config.get_layout(a.root)
    overrides = {k: v for k, v in (("max_steps", a.max_steps), ("learning_rate", a.learning_rate),
                                   ("batch_size", a.batch_size)) if v is not None}
    if any(v <= 0 for v in overrides.values()):
        raise UsageError("--max_steps, --learning_rate and --batch_size must be positive")
    options = replace(ChatTrainOptions(**config.CHAT_PRESETS[a.preset]), packing=not a.no_packing, **overrides)
    base_dir = layout.resolve_model(a.init_from, a.preset)
    run = layout.run(a.run_name or chat_run_name(layout, base_dir, a.init_from or a.preset))
    finetune_chat(base_dir, a.data_dir or layout.chat_data_dir, run, options,
                  fresh=a.fresh, overwrite=a.overwrite)
    return 0


if __name__ == "__main__":
    run_main(main)
