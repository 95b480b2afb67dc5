"""Publishing a period chat model: recognised by its chat template (or the chat run's
``run_info.json``), staged with the template (``chat_template.jinja`` / ``tokenizer_config.json``)
and ``chat_info.json``, checked through ``apply_chat_template``, and carded with
:func:`londonlm.publishing.cards.chat_card.render_chat_model_card`, which says where every training
conversation came from; the card's snippet (a ``text-generation`` pipeline given a list of
messages) is run against the staged folder before anything is uploaded."""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

from ..chat import dataset_fingerprint, is_chat_model, read_chat_info
from ..core import (CHAT_EVAL, CHAT_INFO, CHAT_STATS, Layout, SIDECAR, link_or_copy, weight_files,
                    write_json_atomic)
from ..generation import load_model_tokenizer
from .access import PublishError
from .facts import RunFacts, read_json_or_none, redact_local_paths
from .verify import VerificationReport

CHAT_STAGE = "chat_finetune"                    # run_info.json "stage" of a chat run
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")  # transformers 5 / 4.4x
REBUILD = "python 07_finetuning/build_chat_dataset.py"
EVALUATE = "python 07_finetuning/evaluate_chat.py"


@dataclass
class ChatFacts:
    info: dict                   # chat_info.json (place, years, base model)
    dataset_stats: dict          # the dialogue dataset's stats.json
    evaluation: dict | None      # chat_eval.json, when it describes these weights
    base_model: str              # the base model, without local path


def is_chat_run(model_dir: Path, run_info: dict | None) -> bool:
    """A chat model: its tokenizer has the chat template and role tokens, or its run says so."""
    model_dir = Path(model_dir)
    return (is_chat_model(model_dir) or any((model_dir / f).exists() for f in TEMPLATE_FILES)
            or (run_info or {}).get("stage") == CHAT_STAGE)


def _weights_mtime(model_dir: Path) -> float:
    return max(w.stat().st_mtime for w in weight_files(model_dir))  # (every shard of a sharded set)


def gather_chat_facts(model_dir: Path, facts: RunFacts, layout: Layout) -> ChatFacts:
    """What the chat card states. Refuses a model whose dialogue dataset is gone or changed
    since fine-tuning (the card could not say where its conversations came from), and an
    evaluation older than the weights."""
    info = read_chat_info(model_dir)
    data_dir = Path(info["dataset"]) if info.get("dataset") else layout.chat_data_dir
    if not (data_dir / CHAT_STATS).exists():
        data_dir = layout.chat_data_dir
    stats = read_json_or_none(data_dir / CHAT_STATS)
    if stats is None:
        raise PublishError(f"refusing to publish {model_dir}: its card must say where every training "
                           f"conversation came from, and the dialogue dataset's {CHAT_STATS} is not in "
                           f"{data_dir}; rebuild it with `{REBUILD}` (and fine-tune again)")
    trained_on = ((facts.run_info or {}).get("inputs") or {}).get("dataset")
    if trained_on and (data_dir / SIDECAR).exists() and \
            dataset_fingerprint(data_dir, {"dataset": trained_on}) != trained_on:
        raise PublishError(f"refusing to publish {model_dir}: the dialogue dataset in {data_dir} changed "
                           f"after this model was fine-tuned; fine-tune again with "
                           f"`python 07_finetuning/finetune_chat.py` so the card describes its data")
    report_path = facts.evaluation_dir / CHAT_EVAL
    evaluation = read_json_or_none(report_path)
    if evaluation is not None and report_path.stat().st_mtime < _weights_mtime(model_dir):
        raise PublishError(f"refusing to publish {model_dir}: {report_path} was written before these "
                           f"weights; evaluate them again with `{EVALUATE} --model {model_dir}`")
    base = info.get("base_model") or (facts.run_info or {}).get("base_model") or "unknown"
    return ChatFacts(info, stats, evaluation, redact_local_paths(base))


def stage_chat_files(model_dir: Path, stage_dir: Path) -> None:
    """The template file(s) next to the tokenizer, and chat_info.json without local paths."""
    for name in TEMPLATE_FILES:
        if (Path(model_dir) / name).exists():
            link_or_copy(Path(model_dir) / name, stage_dir / name)
    info = read_chat_info(model_dir)
    if info:
        write_json_atomic(stage_dir / CHAT_INFO, redact_local_paths(info))


def verify_chat_folder(folder: Path, report: VerificationReport) -> None:
    """The staged tokenizer has the chat template and role tokens, and ``apply_chat_template``
    gives exactly the ids the model was fine-tuned on."""
    from ..chat import ChatFormatError, encode_chat

    try:
        tok = load_model_tokenizer(str(folder), local_files_only=True)
    except Exception as e:
        report.check(False, "chat tokenizer loads", f"{type(e).__name__}: {e}")
        return
    if not report.check(bool(getattr(tok, "chat_template", None)), "tokenizer has its chat template",
                        "no chat_template in the staged tokenizer files"):
        return
    msgs = [{"role": "system", "content": "Old Bailey, London, 1818."},
            {"role": "user", "content": "Where do you live?"}, {"role": "assistant", "content": "In Fleet-street."}]
    try:
        stock = list(tok.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"])
        ours = encode_chat(tok, msgs).input_ids
        report.check(stock == ours, "apply_chat_template gives the ids the model was trained on",
                     f"{len(stock)} ids from the template, {len(ours)} from training's encoder")
    except (ChatFormatError, Exception) as e:
        report.check(False, "apply_chat_template gives the ids the model was trained on", f"{type(e).__name__}: {e}")


def run_chat_snippet(code: str, model_id: str, folder: Path, report: VerificationReport) -> None:
    """The card's chat snippet as written, with the repo id pointed at the staged folder."""
    code = code.replace(f'model="{model_id}"', f"model={str(folder)!r}")
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            exec(compile(code, "<chat model card snippet>", "exec"), {"__name__": "__snippet__"})
        report.snippet_output = buf.getvalue().strip()
        report.check(True, "chat model card snippet runs (pipeline with a list of messages)")
    except Exception as e:
        report.check(False, "chat model card snippet runs (pipeline with a list of messages)",
                     f"{type(e).__name__}: {e}")


def chat_card_text(facts: ChatFacts, name: str, license_id: str, model_facts: dict, run_info: dict | None) -> str:
    from .cards.chat_card import ChatCardInputs, render_chat_model_card

    return render_chat_model_card(ChatCardInputs(
        model_name=name, base_model=facts.base_model, dataset_stats=facts.dataset_stats,
        model_facts=model_facts, license=license_id, place=facts.info.get("place") or "Old Bailey, London",
        evaluation=facts.evaluation, fine_tuning=run_info))


__all__ = ["ChatFacts", "chat_card_text", "gather_chat_facts", "is_chat_run", "run_chat_snippet",
           "stage_chat_files", "verify_chat_folder"]
