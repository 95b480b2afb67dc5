#!/usr/bin/env python3
"""Run the whole pipeline (corpus, tokenizer, training, evaluation, samples) on the
embedded First Folio sample, or on --source_dir; each stage skips when current.
Any other training flag (e.g. --eval_steps 50) goes to the training stage. With Old Bailey
Proceedings TEI in --source_dir, a period-chat step follows (dialogue dataset, chat
fine-tuning, chat evaluation): --chat auto (default) adds it when dialogue is found.

    python 10_scripts/run_pipeline.py
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, where config.py checks this Python
import config
from londonlm.core.cli import existing_dir, non_negative_int, positive_int, StageParser, year
from londonlm.core.errors import run_main
from londonlm.core.layout import plain_name
from londonlm.chat.evaluate import ChatEvalOptions
from londonlm.chat.preset import ChatTrainOptions
from londonlm.pipeline import CHAT_MODES, ChatStep, PipelinePlan, run_pipeline
from londonlm.training import JobRequest, build_config, parse_train_flags


def parse(argv):
    p = StageParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default=config.DEFAULT_PRESET, choices=list(config.PRESETS))
    p.add_argument("--source_dir", type=existing_dir, help="folder of .txt files instead of the embedded sample")
    p.add_argument("--sample_limit_chars", type=positive_int, help="use only part of the sample")
    p.add_argument("--max_steps", type=positive_int, help="override the preset's training steps")
    p.add_argument("--run_name", help="run folder under 09_models/checkpoints/ (default: preset)")
    p.add_argument("--root", help="project root (default $LONDONLM_ROOT or the repo)")
    p.add_argument("--overwrite", action="store_true", help="rebuild every stage")
    p.add_argument("--no_era_tokens", action="store_true", help="train without era tokens")
    p.add_argument("--cutoff_year", type=year,
                   help="time-lock the model: tokenizer and training see only documents dated up to "
                        "this year (a view of the collected corpus; undated ones are left out), run "
                        "folder PRESET-toYEAR, leakage probes in the evaluation")
    p.add_argument("--eval_max_tokens", type=non_negative_int, default=50_000,
                   help="validation tokens scored (0 = all)")
    p.add_argument("--chat", default="auto", choices=CHAT_MODES,
                   help="period-chat step: auto (when the source has Old Bailey dialogue), on, off")
    p.add_argument("--chat_source_dir", type=existing_dir,
                   help="Old Bailey TEI for the chat step (default: --source_dir)")
    p.add_argument("--chat_bait_limit", type=non_negative_int, default=0,
                   help="chat evaluation: only the first N modern-bait questions (0 = all)")
    a, extra = p.parse_known_args(argv)
    if a.sample_limit_chars and a.source_dir:  # it would be ignored: the folder replaces the sample
        p.error("--sample_limit_chars cuts the embedded sample, which --source_dir replaces; give one of them")
    if a.run_name is not None:  # checked as typed: '' would mean the preset's run, '../x' be named as its chat run
        plain_name(a.run_name, "--run_name")
    return a, extra


def chat_request(flags) -> JobRequest:
    """The chat step trains with the speed settings the pipeline's command line gave
    (--bf16 true|false, --attn_implementation, --fused_loss, --autotune); its own preset does the rest."""
    req = JobRequest.from_flags(flags.speed, flags.control, flags.trainer, flags.explicit)
    return JobRequest(speed=req.speed)


def main(argv=None) -> int:
    a, extra = parse(argv)
    preset = config.get_preset(a.preset)
    layout = config.get_layout(a.root)
    run_name = a.run_name or layout.cutoff_run_name(a.preset, a.cutoff_year)
    defaults = config.train_defaults(a.preset, layout)
    tokenizer_dir = layout.tokenizer_dir(config.TOKENIZER.name, a.cutoff_year)
    cutoff = {} if a.cutoff_year is None else {
        "cutoff_year": a.cutoff_year, "processed_dir": str(layout.cutoff_dir(a.cutoff_year)),
        "tokenizer_dir": str(tokenizer_dir)}
    flags = parse_train_flags(extra, prog="run_pipeline.py").override(
        preset=a.preset, run_name_dir=run_name, **cutoff,
        **({"max_steps": a.max_steps} if a.max_steps else {}),
        **({"era_tokens": False} if a.no_era_tokens else {}))
    chat_preset = config.CHAT_PRESETS.get(a.preset)
    chat_src = a.chat_source_dir or a.source_dir
    chat = ChatStep(a.chat, Path(chat_src) if chat_src else None, layout.chat_data_dir,
                    layout.chat_run(run_name), ChatTrainOptions(**chat_preset) if chat_preset else None,
                    chat_request(flags),
                    ChatEvalOptions(bait_limit=a.chat_bait_limit,  # answers leave room for the question
                                    max_new_tokens=min(ChatEvalOptions.max_new_tokens, preset.context_length // 4)))
    plan = PipelinePlan(
        processed_dir=layout.processed_dir, metadata_dir=layout.metadata_dir,
        tokenizer_dir=tokenizer_dir, cutoff_year=a.cutoff_year,
        cutoff_dir=layout.cutoff_dir(a.cutoff_year) if a.cutoff_year is not None else None,
        training=build_config(flags, defaults), vocab_size=preset.vocab_size,
        context_length=preset.context_length, min_frequency=preset.min_frequency,
        era_tokens=config.TOKENIZER.era_tokens and not a.no_era_tokens, era_width=config.TOKENIZER.era_width,
        validation_percent=config.CORPUS.validation_percent, min_chars=config.CORPUS.min_chars,
        year_range=(config.CORPUS.year_min, config.CORPUS.year_max), source_dir=a.source_dir,
        sample_limit_chars=a.sample_limit_chars, prompts=config.EVALUATION.sample_prompts,
        max_new_tokens=config.EVALUATION.sample_max_new_tokens,
        eval_max_tokens=a.eval_max_tokens or None, overwrite=a.overwrite, seed=config.TRAINING.seed, chat=chat)
    run_pipeline(plan)
    return 0


if __name__ == "__main__":
    run_main(main)
