"""Chat fine-tuning from a pre-trained run (``--init_from``), trained by the training package
(:mod:`londonlm.training.finetune`): the same ``TrainingArguments``, Trainer, precision and
autotune policy, ``--optim``, time budget, agreed stops and exact resume as pre-training.
This module supplies only what differs: the dataset, answer-only labels, packing, and the
chat run's ``final/``, record and sidecar.

- Loss on the answers only: the labels of :func:`londonlm.chat.template.encode_chat`.
- Conversations longer than the context are cut at exchange boundaries into windows that
  each repeat the system line (:func:`londonlm.chat.template.windows`).
- Packing without cross-talk: windows are packed into rows of the context length and their
  ``position_ids`` restart at 0 for each window; with no attention mask, ``transformers``
  turns restarting positions into a block-diagonal causal mask (a token never attends to
  another conversation), and the learned position embeddings see the same positions as
  unpacked. ``packing=False`` pads each window instead (same loss, more padding).
- Resumable like pre-training: ``checkpoint-N`` folders with optimizer and scheduler state;
  a rerun resumes from the latest valid one when the inputs and settings are unchanged, at
  any world size (torchrun), keeping the precision and kernels it was trained with.
- Outputs: ``final/`` (weights, tokenizer with the chat template, generation config that
  stops at ``<|end|>``, ``chat_info.json``), ``run_info.json``, then the sidecar, last.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

from ..core import (CHAT_INFO, RunLayout, SIDECAR, checkpoint_problem, earlier_run,
                    model_run_info, read_json_object, record_field, refuse_foreign_run_folder,
                    sha256_file, sidecar_current, weights_sha256, write_json_atomic, write_sidecar)
from ..generation import check_finite, check_model_dir, check_tokenizer_fits, load_model_tokenizer, load_weights_to_train
from ..training import (FineTuneData, FineTuneJob, JobRequest, ModelConfig, OutputConfig, Resumed, SpeedSettings,
                        TrainingError, config_from_values, fine_tune, is_main_process, move_run_aside,
                        recover_run_folder, run_lock, save_model_folder, training_arguments)
from .dataset import dataset_place, load_chat_dataset
from .preset import CHAT_FORMAT, ChatTrainOptions, chat_settings
from .respond import ChatModelDamaged, has_chat_tokens, read_chat_info
from .template import IGNORE, ChatIds, add_chat_tokens, prepare_model_for_chat, windows

STAGE = "chat_finetune"


class ChatTrainError(TrainingError):
    """Fine-tuning cannot start or go on; the message names the fix."""


# --------------------------------------------------------------------------- data

def encode_conversations(rows, tokenizer, max_len: int) -> tuple[list, dict]:
    """Every dataset row cut into windows; returns (windows, counts)."""
    ids = ChatIds.of(tokenizer)
    out, dropped, exchanges = [], 0, 0
    for row in rows:
        pieces, d = windows(tokenizer, row["messages"], max_len, ids=ids)
        out.extend(pieces)
        dropped += d
        exchanges += row["n_exchanges"]
    answer_tokens = sum(sum(w.answer_mask) for w in out)
    return out, {"conversations": len(rows), "windows": len(out), "exchanges": exchanges,
                 "exchanges_over_context": dropped, "tokens": sum(len(w) for w in out),
                 "answer_tokens": answer_tokens}


def pack(encodings, max_len: int) -> list[dict]:
    """First-fit-decreasing packing into rows of at most ``max_len`` tokens; positions restart
    at each window (that restart is what keeps attention inside a conversation)."""
    rows: list[dict] = []
    for enc in sorted(encodings, key=len, reverse=True):
        row = next((r for r in rows if len(r["input_ids"]) + len(enc) <= max_len), None)
        if row is None:
            row = {"input_ids": [], "labels": [], "position_ids": []}
            rows.append(row)
        row["input_ids"] += enc.input_ids
        row["labels"] += enc.labels
        row["position_ids"] += list(range(len(enc)))
    return rows


def unpacked(encodings) -> list[dict]:
    return [{"input_ids": list(e.input_ids), "labels": list(e.labels)} for e in encodings]


class ChatCollator:
    """Pads a batch to its longest row. Packed rows: padding gets positions of its own (a
    separate block that nothing attends to), no attention mask and ``use_cache=False`` (with
    a cache or a mask, transformers does not derive the block-diagonal mask from the
    positions); unpacked rows: an attention mask."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        packed = "position_ids" in features[0]
        batch = {"input_ids": [], "labels": []}
        if packed:
            batch["position_ids"] = []
        else:
            batch["attention_mask"] = []
        for f in features:
            n = len(f["input_ids"])
            batch["input_ids"].append(f["input_ids"] + [self.pad_id] * (width - n))
            batch["labels"].append(f["labels"] + [IGNORE] * (width - n))
            if packed:
                batch["position_ids"].append(f["position_ids"] + list(range(width - n)))
            else:
                batch["attention_mask"].append([1] * n + [0] * (width - n))
        out = {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
        if packed:
            out["use_cache"] = False
        return out


# --------------------------------------------------------------------------- model

def _check_base(base_dir: Path) -> None:
    problem = checkpoint_problem(base_dir, need_training_state=False)
    if problem:
        raise ChatTrainError(f"base model {base_dir} cannot be used ({problem}); pass --init_from "
                             f"with a finished run (e.g. `tiny`) or a model folder")
    check_model_dir(base_dir)  # its config against its weights, before the run's shape is read from it


def load_base_for_chat(base_dir: Path):
    """(model, tokenizer) of a base model with the chat tokens and template added."""
    _check_base(base_dir)
    tokenizer = load_model_tokenizer(str(base_dir))
    model = load_weights_to_train(base_dir)  # float32, whatever dtype the base's config records
    check_tokenizer_fits(tokenizer, model, base_dir)
    check_finite(model, base_dir)
    prepare_model_for_chat(model, tokenizer, new=add_chat_tokens(tokenizer))
    return model, tokenizer


def dataset_fingerprint(data_dir: Path, recorded: dict | None = None) -> str:
    """The dataset's identity: its sidecar (sources, settings, each output as written) less the time
    of the build. The sidecar file's own hash changed with every build, so a dataset rebuilt byte
    for byte (``--overwrite``, after damage) made each chat run from it "other inputs": a half-done
    run refused its checkpoints (--fresh), the pipeline trained a finished one again from scratch.
    ``recorded``: a run's recorded inputs; one that holds the file's hash (as runs before this
    recorded) of this very sidecar is given back as it is."""
    sidecar = data_dir / SIDECAR
    if isinstance(recorded, dict) and sidecar.is_file() and recorded.get("dataset") == sha256_file(sidecar):
        return recorded["dataset"]
    doc = {k: v for k, v in read_json_object(sidecar).items() if k != "created"}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def fingerprints(base_dir: Path, data_dir: Path, recorded: dict | None = None) -> dict[str, str]:
    """What the chat run depends on: the base weights and tokenizer, and the dataset
    (``recorded``: the run's recorded inputs, :func:`dataset_fingerprint`)."""
    out = {"base_weights": weights_sha256(base_dir) or "",  # (every shard of a sharded base)
           "dataset": dataset_fingerprint(data_dir, recorded)}
    if (base_dir / "tokenizer.json").exists():
        out["base_tokenizer"] = sha256_file(base_dir / "tokenizer.json")
    return out


# --------------------------------------------------------------------------- training

def chat_trainer_values(run: RunLayout, options: ChatTrainOptions) -> dict:
    """The chat preset's ``TrainingArguments`` values."""
    import torch

    cuda = torch.cuda.is_available()
    return dict(
        output_dir=str(run.dir), max_steps=options.max_steps,
        per_device_train_batch_size=options.batch_size, per_device_eval_batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum, learning_rate=options.learning_rate,
        lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": options.min_lr_ratio},
        warmup_steps=options.warmup_steps, weight_decay=options.weight_decay,
        max_grad_norm=options.max_grad_norm, logging_steps=options.logging_steps,
        save_steps=options.save_steps, save_total_limit=options.save_total_limit,
        eval_strategy="steps", eval_steps=options.eval_steps, report_to=[], seed=options.seed,
        data_seed=options.seed, remove_unused_columns=False, dataloader_num_workers=0,
        dataloader_pin_memory=cuda, optim="adamw_torch_fused" if cuda else "adamw_torch",
        ddp_find_unused_parameters=False, prediction_loss_only=True, disable_tqdm=True,
        logging_nan_inf_filter=False)  # as pre-training: no host sync per micro-batch


def chat_config(run: RunLayout, options: ChatTrainOptions, request: JobRequest, base_dir: Path):
    """The chat run's configuration tree (the training package's): the chat preset's values,
    then the Trainer flags the command line gave; validated as built, so bad values fail
    before any work."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(base_dir))
    if options.max_length > cfg.n_positions:  # a fine-tuned model keeps its base's position table
        # (rows longer than it asked for positions it has none of: an IndexError traceback at the
        # first step, after the run folder was written)
        raise ChatTrainError(f"--max_length {options.max_length} is longer than the base model's context "
                             f"({cfg.n_positions} positions, {base_dir}): give --max_length {cfg.n_positions} "
                             f"or less, or leave it out to use the base model's")
    model = ModelConfig(cfg.n_layer, cfg.n_head, cfg.n_embd, options.max_length or cfg.n_positions)
    control = replace(request.control, profile_dir=run.profile)
    values = {**chat_trainer_values(run, options), **request.trainer}
    return config_from_values(values, model=model, data=None, request=request.speed_request(),
                              optimizer=request.optimizer or options.optimizer, control=control,
                              output=OutputConfig(run, run.name), explicit=request.explicit)


def _log_callback(log):
    from transformers import TrainerCallback

    class LogLines(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in (logs or {}).items()
                     if k in ("loss", "eval_loss", "learning_rate", "grad_norm")}
            if shown and state.is_world_process_zero:
                log(f"step {state.global_step}/{state.max_steps}: " +
                    ", ".join(f"{k} {v}" for k, v in shown.items()))

    return LogLines()


def _resume_point(run: RunLayout, inputs: dict, settings: dict, fresh: bool, log) -> Path | None:
    """The checkpoint to resume from, after checking it was made from the same inputs and
    settings; ``fresh`` moves an old run aside first (nothing is deleted)."""
    if fresh:
        moved = move_run_aside(run) if is_main_process() else None
        if moved is not None:
            log(f"chat fine-tuning: previous run moved to {moved}")
        return None
    ckpt = run.latest_valid_checkpoint(warn=log)
    if ckpt is None:
        _refuse_over_earlier_run(run)
        return None
    plan = run.read_run_info()
    if plan.get("inputs") != inputs or plan.get("settings") != settings:
        raise ChatTrainError(f"{run.dir} holds checkpoints made from other inputs or settings; "
                             f"rerun with --fresh to start over (the old run is moved aside)")
    log(f"chat fine-tuning: resuming from {ckpt}")
    return ckpt


def chat_time_lock(base_dir: Path, data_dir: Path, dataset=None) -> dict | None:
    """A time-locked base (its run's ``corpus_time`` names a cutoff) is fine-tuned only on
    conversations dated by its cutoff: ChatTrainError otherwise. Those of 1818 taught a model
    locked to 1750 later text, which a time lock promises it never saw. Returns the chat run's
    ``corpus_time`` (the base's, its years widened to the dialogue's), None for a base with no cutoff."""
    record = record_field(model_run_info(base_dir), "corpus_time", kind=dict)
    cutoff = (record or {}).get("cutoff_year")
    if not isinstance(cutoff, int) or isinstance(cutoff, bool):
        return None
    dataset = load_chat_dataset(data_dir) if dataset is None else dataset
    years = [int(y) for split in dataset.values() for y in split["year"]]
    late, undated = max(years, default=0), sum(not y for y in years)
    if late > cutoff or undated:
        what = f"conversations dated up to {late}" if late > cutoff else f"{undated} undated conversations"
        raise ChatTrainError(f"the base model {base_dir} is time-locked to {cutoff}, and the chat dataset at "
                             f"{data_dir} holds {what}: fine-tuning would teach it later text. Give it dialogue from "
                             f"Proceedings dated by {cutoff} only (07_finetuning/build_chat_dataset.py "
                             f"--source_dir, or the pipeline's --chat_source_dir), or tune a base without a cutoff")
    dated = [y for y in years if y]
    span = [y for y in (record.get("years") or []) if isinstance(y, int)] + dated
    return {**record, "years": [min(span), max(span)]} if span else dict(record)


def _refuse_over_earlier_run(run: RunLayout) -> None:
    """Nothing to resume: start only where no earlier chat run would be replaced."""
    found = earlier_run(run.dir)
    if found:
        raise ChatTrainError(
            f"{run.dir} holds an earlier chat run ({'; '.join(found)}) but no checkpoint that can be "
            f"resumed; pass --fresh (or --overwrite) to start over (the old run is moved aside, "
            f"nothing is deleted), or name another run with --run_name")


def _chat_data(dataset, tokenizer, options: ChatTrainOptions, max_len: int, log) -> tuple:
    """(FineTuneData, train counts, validation counts)."""
    train_enc, train_counts = encode_conversations(dataset["train"], tokenizer, max_len)
    eval_enc, eval_counts = encode_conversations(dataset["validation"], tokenizer, max_len)
    if not train_enc:
        raise ChatTrainError(f"no training conversation fits {max_len} tokens; rebuild the dataset")
    shape = pack if options.packing else (lambda e, _n: unpacked(e))
    train_rows, eval_rows = shape(train_enc, max_len), shape(eval_enc, max_len)
    log(f"chat data: {train_counts['windows']:,} train windows in {len(train_rows):,} rows of <= {max_len} "
        f"tokens ({train_counts['answer_tokens']:,} answer tokens), {len(eval_rows):,} validation rows; "
        f"{train_counts['exchanges_over_context']} exchanges longer than the context left out")
    data = FineTuneData(train_rows, eval_rows, ChatCollator(tokenizer.pad_token_id), max_len)
    return data, train_counts, eval_counts


@dataclass(frozen=True)
class _ChatInputs:
    """What one chat run is made from, checked before it is locked and trained."""

    base_dir: Path
    data_dir: Path
    dataset: object  # the DatasetDict (load_chat_dataset)
    fingerprints: dict  # :func:`fingerprints`, the run's recorded inputs
    settings: dict  # :func:`chat_settings`
    corpus_time: dict | None  # :func:`chat_time_lock`: the base's cutoff carried to the chat run


def finetune_chat(base_dir: str | Path, data_dir: str | Path, run: RunLayout,
                  options: ChatTrainOptions = ChatTrainOptions(), *, request: JobRequest = JobRequest(),
                  fresh: bool = False, overwrite: bool = False, log=print) -> dict:
    """Fine-tune ``base_dir`` on the dialogue dataset at ``data_dir`` into ``run``; returns
    the run summary (skips when the run is current). ``request``: what the command line asked
    beyond the chat preset (speed, optimizer, time budget, stops, other Trainer flags). Single
    process or torchrun: every rank calls this; rank 0 logs and writes."""
    log = log if is_main_process() else (lambda _m: None)
    base_dir, data_dir = Path(base_dir), Path(data_dir)
    refuse_foreign_run_folder("--output_dir", run.dir, STAGE,  # its sidecar would replace theirs
                              {"the chat dataset folder": data_dir, "the base model's folder": base_dir})
    dataset = load_chat_dataset(data_dir)
    inputs = fingerprints(base_dir, data_dir, run.read_run_info().get("inputs"))
    settings = chat_settings(options, request)
    current, why = sidecar_current(run.dir / SIDECAR, inputs, settings)
    if current and _whole_chat_final(run) and not overwrite:
        log(f"chat fine-tuning: {why} ({run.dir}); skipping (use --overwrite to retrain)")
        return run.read_run_info()
    _check_base(base_dir)
    made_of = _ChatInputs(base_dir, data_dir, dataset, inputs, settings, chat_time_lock(base_dir, data_dir, dataset))
    config = chat_config(run, options, request, base_dir)  # bad Trainer values fail before any work
    _ = training_arguments(config).device  # joins the process group under torchrun: the lock's ranks agree
    # locked before a resume is chosen: a run another process trained had its checkpoints, final/
    # and record moved aside under it (--fresh, --overwrite, the pipeline over changed settings) or
    # its record replaced, and only then did the training's lock (fine_tune's, before) say so
    with run_lock(run):
        return _tune(run, made_of, options, config, fresh or overwrite, log)


def _tune(run: RunLayout, made_of: _ChatInputs, options: ChatTrainOptions, config, fresh: bool, log) -> dict:
    """The chat run trained (or resumed) under its lock, saved and recorded (:func:`finetune_chat`)."""
    recover_run_folder(run)  # a move aside or a final/ swap a kill cut short, before the run is read
    resume = _resume_point(run, made_of.fingerprints, made_of.settings, fresh, log)
    previous = run.read_run_info() if resume is not None else {}
    model, tokenizer = load_base_for_chat(made_of.base_dir)
    max_len = config.model.context_length
    data, train_counts, eval_counts = _chat_data(made_of.dataset, tokenizer, options, max_len, log)
    base = {"stage": STAGE, "base_model": str(made_of.base_dir), "inputs": made_of.fingerprints,
            "settings": made_of.settings}
    if is_main_process():
        run.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run.run_info, {**base, "status": "running",
                                         **(kept.record() if (kept := SpeedSettings.recorded(previous)) else {})})
    job = FineTuneJob(config, Resumed(resume, previous), [_log_callback(log)], locked=True)
    result = fine_tune(job, model, tokenizer, data)
    trainer, outcome, speed = result.trainer, result.outcome, result.speed.settings
    info = {**base, "data_dir": str(made_of.data_dir), "optimizer": config.optim.optimizer,
            "resumed_from": str(resume) if resume else None, **_record(result, model),
            **({"corpus_time": made_of.corpus_time} if made_of.corpus_time else {}),
            "data": {"train": train_counts, "validation": eval_counts, "train_rows": len(data.train),
                     "packing": options.packing, "max_length": max_len}}
    if outcome.interrupted:
        log(f"chat fine-tuning stopped ({outcome.interrupted}) at step {outcome.state.global_step}; "
            f"checkpoint saved. Run the same command again to resume")
        if is_main_process():
            write_json_atomic(run.run_info, info)
        return info
    metrics = _final_eval(trainer) if data.eval else {}
    info["eval_answer_loss"] = metrics.get("eval_loss")
    _save_final(trainer, tokenizer, run, made_of)
    if is_main_process():
        write_json_atomic(run.run_info, info)
        write_sidecar(run.dir / SIDECAR, STAGE, made_of.fingerprints, made_of.settings,
                      counts={"global_step": outcome.state.global_step, **train_counts})
    loss = metrics.get("eval_loss")
    log(f"chat model: {run.final} (step {outcome.state.global_step}, {outcome.wall_seconds:.0f}s, "
        f"{speed.precision}, " + (f"validation answer loss {loss:.4f})" if loss is not None else "no validation rows)"))
    return info


def _whole_chat_final(run: RunLayout) -> bool:
    """Whether final/ is still the chat model this run saved: the weights that read, and the chat
    files beside them. One whose chat_info.json or tokenizer was lost or damaged since was skipped
    as current, yet was no chat model any more (evaluate_chat.py: "does not record its base model",
    the server answered it as a plain model); it is written again from the last checkpoint."""
    if not run.has_final():
        return False
    try:
        info, tokens = read_chat_info(run.final), has_chat_tokens(run.final)
    except ChatModelDamaged:  # (a torn chat_info.json or tokenizer: written again)
        return False
    return tokens and isinstance(info.get("place"), str) and isinstance(info.get("base_model"), str) \
        and (run.final / "tokenizer_config.json").is_file()


def _record(result, model) -> dict:
    """run_info.json's account of the training itself: steps, time, tokens, speed settings."""
    outcome, speed = result.outcome, result.speed
    out = {"status": "stopped" if outcome.interrupted else "finished",
           "global_step": outcome.state.global_step, "max_steps": outcome.state.max_steps,
           "train_loss_mean": outcome.train_loss_mean, "train_wall_seconds": round(outcome.wall_seconds, 1),
           "tokens_seen": outcome.tokens_seen, "pauses": outcome.pauses, "interrupted": outcome.interrupted,
           **speed.settings.record(), "speed": speed.record(),
           "world_size": result.trainer.args.world_size,
           "parameters": sum(p.numel() for p in model.parameters())}
    if result.time_budget is not None:
        out["time_budget"] = result.time_budget
    return out


def _final_eval(trainer) -> dict:
    """Validation metrics at the last step: the Trainer's own when it just evaluated there."""
    last = next((h for h in reversed(trainer.state.log_history) if "eval_loss" in h), None)
    if last and last.get("step") == trainer.state.global_step:
        return last
    return trainer.evaluate()


def _save_final(trainer, tokenizer, run: RunLayout, made_of: _ChatInputs) -> None:
    """final/: weights, tokenizer + template, generation config, and what the chat expects (a
    time-locked model's cutoff too: the eras it answers end there, wherever the folder goes)."""
    years = sorted({y for split in made_of.dataset.values() for y in split["year"] if y})
    place = dataset_place(made_of.data_dir)
    cutoff = (made_of.corpus_time or {}).get("cutoff_year")

    def chat_info(folder: Path) -> None:
        write_json_atomic(folder / CHAT_INFO, {
            "format": CHAT_FORMAT, "place": place, "years": [years[0], years[-1]] if years else [],
            "system_line": "{place}, {year}.", "base_model": str(made_of.base_dir), "dataset": str(made_of.data_dir),
            **({"cutoff_year": cutoff} if cutoff is not None else {})})

    save_model_folder(trainer, run.final, tokenizer, chat_info)
