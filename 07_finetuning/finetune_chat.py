#!/usr/bin/env python3
"""Fine-tune a pre-trained run into a period chat model on the Old Bailey dialogue dataset:
role tokens and chat template added, loss on the answers only, packed conversations that
never attend to each other; trained by the training package, so the training flags work
(--bf16 true|false, --optim muon, --time_budget, --autotune, --gradient_accumulation_steps,
every TrainingArguments flag), under torchrun too, with exact resume; writes <run>-chat/final/.

    python 07_finetuning/finetune_chat.py --preset tiny --init_from tiny
"""
try:
    import config  # the project's settings; importable once `bash install.sh` has run
except ModuleNotFoundError:  # started by an interpreter without the project installed
    raise SystemExit("error: londonlm is not installed for this Python: run `bash install.sh`, "
                     "then use .venv/bin/python (or `source .venv/bin/activate` first)")
from londonlm.chat.finetune_cli import chat_run_name, main as chat_main  # noqa: F401 (chat_run_name: tests)
from londonlm.core.errors import run_main


def main(argv=None) -> int:
    import sys

    return chat_main(sys.argv[1:] if argv is None else list(argv), config.CHAT_PRESETS,
                     config.DEFAULT_PRESET, config.get_layout,
                     description=__doc__.splitlines()[0])


if __name__ == "__main__":
    run_main(main)
