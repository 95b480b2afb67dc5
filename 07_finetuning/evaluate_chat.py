#!/usr/bin/env python3
"""Evaluate a chat model against its base: held-out answer loss, anachronisms in answers to
60 "modern bait" questions at each year asked, answer length and repetition, and transcripts
(chat_eval.json, chat_transcripts.jsonl/.md) with a blind human-evaluation pack of them
(human_eval/: ratings sheet, form, key; rate with 05_evaluation/run_evaluation.py --import_ratings).

    python 07_finetuning/evaluate_chat.py --model tiny-chat
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, where config.py checks this Python
import config
from londonlm.core.cli import non_negative_int, positive_int, StageParser, writable_dir
from londonlm.chat.evaluate import ChatEvalOptions, check_recorded_base, evaluate_chat
from londonlm.chat.respond import chat_year, is_chat_model, read_chat_info
from londonlm.core.artifacts import refuse_output_over_inputs
from londonlm.core import CHAT_INFO, ModelNotFound
from londonlm.core.errors import UsageError, run_main
from londonlm.evaluation import model_identity
from londonlm.generation import check_model_dir
from londonlm.evaluation.human_eval import brought_samples, export_blind
from londonlm.core.layout import RunLayout, refuse_artifacts_folder


def main(argv=None) -> int:
    p = StageParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=f"{config.DEFAULT_PRESET}-chat",
                   help="chat model: a run name (its final/), RUN/checkpoint-N or a folder")
    p.add_argument("--base", help="base model to compare with (default: the one it was tuned from)")
    p.add_argument("--data_dir", help="dialogue dataset (default: data/london_historical/chat)")
    p.add_argument("--years", type=chat_year, nargs="+", default=list(ChatEvalOptions.years),
                   help="the eras asked for, each 1674-1913 (as the server and the chat REPL take them)")
    p.add_argument("--bait_limit", type=non_negative_int, default=0, help="only the first N bait questions (0 = all)")
    p.add_argument("--max_new_tokens", type=positive_int, default=ChatEvalOptions.max_new_tokens)
    p.add_argument("--out_dir", type=writable_dir, help="report folder (default: the run's evaluation folder)")
    p.add_argument("--root", help="project root (default $LONDONLM_ROOT or the repo)")
    a = p.parse_args(argv)
    layout = config.get_layout(a.root)
    chat_dir = layout.resolve_model(a.model, a.model.split("/")[0])
    if not is_chat_model(chat_dir):
        raise UsageError(f"{chat_dir} is not a chat model; make one with `python 07_finetuning/finetune_chat.py`")
    base = a.base or read_chat_info(chat_dir).get("base_model")
    if not base:
        raise UsageError("the chat model does not record its base model: pass --base")
    try:
        base_dir = layout.resolve_model(base, base)
    except ModelNotFound as e:
        if a.base:
            raise
        # the path fine-tuning recorded: gone when the project moved or the model came from elsewhere
        raise UsageError(f"the chat model's {CHAT_INFO} names its base model {base}, which is not here ({e}); "
                         f"pass --base with the base model") from None
    for model_dir in (chat_dir, base_dir):  # a damaged folder is said before the slow work
        check_model_dir(model_dir)
    if not a.base:  # the recorded base: still the weights it was tuned from?
        check_recorded_base(chat_dir, base_dir)
    out_dir = Path(a.out_dir) if a.out_dir else RunLayout(chat_dir.parent).evaluation_dir_for(chat_dir)
    data_dir = a.data_dir or layout.chat_data_dir
    # before the slow work: the report's files written into a model's folder or the dataset change them
    refuse_output_over_inputs("--out_dir", out_dir, {"the dataset folder": data_dir})
    refuse_output_over_inputs("--out_dir", out_dir, {"the chat model's folder": chat_dir,
                                                     "the base model's folder": base_dir}, inside=False)
    refuse_artifacts_folder("--out_dir", out_dir)  # another model's, a stage's, a run's
    options = ChatEvalOptions(years=tuple(a.years), bait_limit=a.bait_limit, max_new_tokens=a.max_new_tokens)
    evaluate_chat(chat_dir, base_dir, data_dir, out_dir, options)
    pack = brought_samples(chat_dir, a.model, eval_dir=out_dir)
    models = {f"{a.model} (chat answers)": {"path": str(chat_dir), **model_identity(chat_dir)},
              "base model (modern-bait answers)": {"path": str(base_dir), **model_identity(base_dir)}}
    human = export_blind(pack, out_dir / "human_eval", seed=options.seed, title="londonlm chat human evaluation",
                         models=models, brought=False)
    print(f"report: {out_dir}\nhuman evaluation pack: {human['items']} items in {out_dir / 'human_eval'}")
    return 0


if __name__ == "__main__":
    run_main(main)
