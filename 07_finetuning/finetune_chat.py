#!/usr/bin/env python3
"""Fine-tune a pre-trained run into a period chat model on the Old Bailey dialogue dataset:
role tokens and chat template added, loss on the answers only, packed conversations that
never attend to each other; trained by the training package, so the training flags work
(--bf16 true|false, --optim muon, --time_budget, --autotune, --gradient_accumulation_steps,
every TrainingArguments flag), under torchrun too, with exact resume; writes <run>-chat/final/.

    python 07_finetuning/finetune_chat.py --preset tiny --init_from tiny
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, where config.py checks this Python
import config
from londonlm.chat.finetune_cli import chat_run_name, main as chat_main  # noqa: F401 (chat_run_name: tests)
from londonlm.core.errors import run_main


def main(argv=None) -> int:
    return chat_main(sys.argv[1:] if argv is None else list(argv), config.CHAT_PRESETS,
                     config.DEFAULT_PRESET, config.get_layout,
                     description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    run_main(main)
