"""The one-command pipeline: corpus -> tokenizer -> token cache + training -> evaluation
-> samples [-> period chat]. Each stage skips itself when its outputs are current: training
when a finished run recorded the same tokenizer, corpus and training settings (other ones start
a fresh run, the old one moved aside), evaluation and samples when they record the same
weights. The optional chat step (:class:`ChatStep`) builds the Old Bailey dialogue dataset,
fine-tunes the base run on it and evaluates the chat model against the base; each of the
three skips when current (sidecars, and the weights the evaluation records)."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

from .chat import ChatDataError, ChatDatasetOptions, ChatEvalOptions, ChatTrainOptions, chat_settings
from .core import PIPELINE_SUMMARY, RunLayout, SIDECAR, UsageError, current_or_make, read_json, read_json_object, record_field, sha256_file, write_json_atomic
from .corpus import COLLECT_CMD, MANIFEST, CorpusError, read_manifest
from .tokens import ERA_WIDTH
from .evaluation import model_identity
from .training import JobRequest, TrainingConfig, TrainingError, changed_inputs, finished, training_settings

SUMMARY = PIPELINE_SUMMARY  # in the run folder (moved aside with the run it describes)
METRICS = "pipeline_metrics.json"  # in the run's evaluation folder
SAMPLES = "pipeline_samples.json"
CHAT_METRICS = "pipeline_chat_eval.json"  # in the chat run's evaluation folder
CHAT_MODES = ("auto", "on", "off")


@dataclass
class ChatStep:
    """The optional chat step. ``mode``: ``on``, ``off``, or ``auto`` (on when ``source_dir``
    holds Old Bailey examinations the extractor can read; the embedded sample has none)."""

    mode: str
    source_dir: Path | None       # searched (recursively) for Old Bailey TEI *.xml
    data_dir: Path                # the dialogue dataset
    run: RunLayout                # the chat run (<base run>-chat)
    options: ChatTrainOptions | None  # None: no chat preset for this model preset
    request: JobRequest = JobRequest()  # speed settings etc. the pipeline's command line gave
    eval_options: ChatEvalOptions = ChatEvalOptions()
    dataset_options: ChatDatasetOptions = ChatDatasetOptions()

    def __post_init__(self):
        if self.mode not in CHAT_MODES:
            raise UsageError(f"--chat must be one of {', '.join(CHAT_MODES)}, got {self.mode!r}")


@dataclass
class PipelinePlan:
    processed_dir: Path
    metadata_dir: Path
    tokenizer_dir: Path
    training: TrainingConfig     # the run (its tree names the tokenizer and corpus above)
    vocab_size: int
    context_length: int
    min_frequency: int
    era_tokens: bool
    validation_percent: float
    min_chars: int
    year_range: tuple[int, int]
    source_dir: Path | None = None
    use_sample: bool | None = None
    sample_limit_chars: int | None = None
    prompts: tuple[str, ...] = ()
    max_new_tokens: int = 60
    eval_max_tokens: int | None = 50_000
    overwrite: bool = False
    seed: int = 42
    chat: ChatStep | None = None
    cutoff_year: int | None = None   # time lock: train on a view of the corpus up to this year
    cutoff_dir: Path | None = None   # where that view is written
    era_width: int = ERA_WIDTH       # years each era token covers

    def __post_init__(self):
        if (self.cutoff_year is None) != (self.cutoff_dir is None):
            raise UsageError("a cutoff needs both its year and the folder of its corpus view")

    @property
    def run(self) -> RunLayout:
        return self.training.run

    @property
    def corpus_dir(self) -> Path:
        """The corpus the tokenizer, training and evaluation read: the cutoff view, if any."""
        return self.cutoff_dir if self.cutoff_dir is not None else self.processed_dir


class TrainingStatus(NamedTuple):
    """What the training stage should do with the run on disk."""

    current: bool
    why: str
    restart: bool    # the run on disk was made from other inputs or settings: start over


def training_status(plan: PipelinePlan) -> TrainingStatus:
    """Whether the run is a finished one made from the current tokenizer, corpus and
    training settings; a run made from others must start over (``restart``), one that
    stopped part-way with the same ones resumes."""
    run = plan.run
    if not run.run_info.exists():
        return TrainingStatus(False, "no finished run", False)
    info = run.read_run_info()
    if not info:
        # a record emptied, cut short or of another shape says nothing: compared with the inputs,
        # it read as "tokenizer changed", and the run was moved aside and trained from scratch
        # (hours, for a real preset) where its checkpoints resume and write the record again
        return TrainingStatus(False, "its run_info.json is unreadable", False)
    changed = changed_inputs(info, plan.tokenizer_dir, plan.corpus_dir, training_settings(plan.training))
    if changed:
        return TrainingStatus(False, changed, True)
    if not finished(run):
        return TrainingStatus(False, "previous run did not finish", False)
    return TrainingStatus(True, "outputs are current", False)


def generate_samples(model_dir: Path, prompts, max_new_tokens: int, seed: int) -> list[dict]:
    """One sampled continuation per prompt (prompt i seeded with ``seed + i``), through the
    one generation interface: prompts start after <|endoftext|> as every training document
    does, with the project's sampling defaults."""
    from .generation import GenerationSettings, generate, load_model

    lm = load_model(str(model_dir))
    out = []
    for i, prompt in enumerate(prompts):
        settings = GenerationSettings(max_new_tokens=max_new_tokens, seed=seed + i)
        out.append({"prompt": prompt, "continuation": generate(lm, prompt, settings)[0].text})
    return out


def evaluate_validation(model_dir: Path, processed_dir: Path, max_tokens: int | None) -> dict:
    """Held-out loss, perplexity and bits per byte on the validation split, on a GPU when there
    is one (:func:`~londonlm.generation.load_model`'s ``auto`` device and dtype, both recorded)."""
    from .corpus import read_split_texts
    from .evaluation import evaluate_lm
    from .generation import load_model

    lm = load_model(str(model_dir))
    texts = [t for _, t in read_split_texts(processed_dir, "validation")]  # of one corpus
    result = evaluate_lm(lm.model, lm.tokenizer, texts, device=lm.device, max_eval_tokens=max_tokens)
    return {**result, "device": lm.device, "dtype": lm.dtype}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _validation_fits(result) -> bool:
    return isinstance(result, dict) and all(_number(result.get(k))
                                            for k in ("loss", "perplexity", "bits_per_byte", "tokens"))


def _samples_fit(result) -> bool:
    return isinstance(result, list) and all(isinstance(s, dict) and isinstance(s.get("prompt"), str)
                                            and isinstance(s.get("continuation"), str) for s in result)


def _chat_report_fits(result) -> bool:
    loss = record_field(result, "answer_loss", kind=dict)  # its chat/base figures absent when no answer fitted
    return loss is not None and all(isinstance(loss.get(m, {}), dict) for m in ("chat", "base")) and all(
        _number(record_field(result, "bait", "all", m, "anachronism_rate")) for m in ("chat", "base"))


def _train_stage(plan: PipelinePlan, log) -> None:
    """Train unless a finished run matches the current tokenizer, corpus and settings; a run
    made from other ones (or --overwrite) starts fresh, its old files moved aside, never
    resumed under settings it was not started with."""
    status = training_status(plan)
    if status.current and not plan.overwrite:
        log(f"training: {status.why} ({plan.run.dir}); skipping (use --overwrite to retrain)")
        return
    config = plan.training
    if (plan.overwrite or status.restart) and plan.run.movable_on_fresh():
        config = config.but(control={"fresh": True})
        log(f"training: {'--overwrite' if plan.overwrite else status.why}; starting a fresh "
            f"run (the previous one is moved aside)")
    from .training import run_training  # the Trainer's code, imported when a run trains (as chat's below)

    summary = run_training(config)
    if summary.get("interrupted"):
        raise TrainingError(f"training stopped early ({summary['interrupted']}); run the same "
                            f"command again to resume it")


def _chat_skip(step: ChatStep, why: str, log) -> None:
    """``auto`` leaves the step out with one line; ``on`` stops with the reason."""
    if step.mode == "on":
        raise ChatDataError(f"--chat on: {why}")
    log(f"chat: skipped ({why})")


def _chat_dataset(plan: PipelinePlan, step: ChatStep, log) -> dict | None:
    """The dialogue dataset's statistics, or None when ``auto`` finds no dialogue to use."""
    from .chat import build_chat_dataset

    if step.source_dir is None:
        _chat_skip(step, "the embedded sample has no courtroom dialogue: pass --source_dir with "
                         "Old Bailey Proceedings TEI (oldbailey_proceedings_*.xml)", log)
        return None
    if step.options is None:
        _chat_skip(step, f"no chat fine-tuning preset for {plan.training.output.preset!r}", log)
        return None
    try:
        return build_chat_dataset(step.source_dir, step.data_dir, step.dataset_options,
                                  overwrite=plan.overwrite, log=log)
    except ChatDataError as e:
        _chat_skip(step, str(e), log)
        return None


def _chat_inputs_changed(base_final: Path, step: ChatStep) -> str:
    """Why the chat run on disk was made from another base, dataset or settings ("" when it
    was not, or there is none): it then starts over, as the training stage does, instead of
    refusing to resume."""
    from .chat import fingerprints

    if not step.run.run_info.exists():
        return ""
    info = step.run.read_run_info()
    now = fingerprints(base_final, step.data_dir, info.get("inputs"))
    changed = [k for k in sorted(now) if (info.get("inputs") or {}).get(k) != now[k]]
    if chat_settings(step.options, step.request) != info.get("settings"):
        changed.append("settings")
    return f"{', '.join(changed)} changed" if changed else ""


def _chat_stage(plan: PipelinePlan, log) -> dict | None:
    """Dialogue dataset -> chat fine-tuning from the base run's final/ -> chat evaluation
    against the base; None when the step is off or ``auto`` found no dialogue."""
    from .chat import ChatTrainError, chat_time_lock, dataset_fingerprint, evaluate_chat, finetune_chat

    step = plan.chat
    if step is None or step.mode == "off":
        return None
    stats = _chat_dataset(plan, step, log)
    if stats is None:
        return None
    try:  # a time-locked base (--cutoff_year) is tuned on dialogue dated by its cutoff only
        chat_time_lock(plan.run.final, step.data_dir)
    except ChatTrainError as e:
        _chat_skip(step, str(e), log)
        return None
    changed = _chat_inputs_changed(plan.run.final, step)
    if changed:
        log(f"chat fine-tuning: {changed}; starting a fresh chat run (the previous one is moved aside)")
    info = finetune_chat(plan.run.final, step.data_dir, step.run, step.options, request=step.request,
                         fresh=bool(changed), overwrite=plan.overwrite, log=log)
    if info.get("interrupted"):  # as the base run's: it went on to evaluate a chat model not yet made
        raise TrainingError(f"chat fine-tuning stopped early ({info['interrupted']}); run the same "
                            f"command again to resume it")
    chat_final, eval_dir = step.run.final, step.run.evaluation_dir
    settings = {**asdict(step.eval_options), "base": model_identity(plan.run.final),
                "dataset": dataset_fingerprint(step.data_dir)}  # (a rebuild byte for byte is the same)
    report = current_or_make(
        eval_dir / CHAT_METRICS, model_identity(chat_final), settings,
        lambda: evaluate_chat(chat_final, plan.run.final, step.data_dir, eval_dir, step.eval_options, log=log),
        plan.overwrite, log, "chat evaluation", fits=_chat_report_fits)
    loss, bait = report["answer_loss"], report["bait"]["all"]
    return {"dataset": {k: stats[k] for k in ("conversations", "exchanges", "rejected")},
            "steps": info.get("global_step"), "train_wall_seconds": info.get("train_wall_seconds"),
            "answer_loss": {m: (loss.get(m) or {}).get("answer_loss") for m in ("chat", "base")},
            "anachronism_rate": {m: bait[m]["anachronism_rate"] for m in ("chat", "base")},
            "artifacts": {"chat_dataset": str(step.data_dir), "chat_model": str(chat_final),
                          "chat_evaluation": str(eval_dir)}}


def _report(summary: dict, log) -> None:
    info, ev = summary["run_info"], summary["validation"]
    log("\n=== done ===")
    for k, v in summary["artifacts"].items():
        log(f"{k:>12}: {v}")
    log(f"  parameters: {info['parameters'] / 1e6:.2f}M   steps: {info['global_step']}   "
        f"train tokens/s: {info.get('tokens_per_second')}")
    log(f"  validation: loss {ev['loss']:.4f}  perplexity {ev['perplexity']:.2f}  "
        f"bits/byte {ev['bits_per_byte']:.4f}")
    for smp in summary["samples"]:
        log(f"\n  > {smp['prompt']}{smp['continuation']}")
    chat = summary.get("chat")
    if chat:
        loss, rate = chat["answer_loss"], chat["anachronism_rate"]
        fig = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731 - no held-out answer fitted
        log(f"\n  chat: {chat['dataset']['conversations']:,} conversations, {chat['dataset']['exchanges']:,} "
            f"exchanges; held-out answer loss chat {fig(loss['chat'])} vs base {fig(loss['base'])}; "
            f"modern-bait anachronisms chat {rate['chat']:.1%} vs base {rate['base']:.1%}")
    log(f"\ntotal {summary['total_seconds']:.0f}s")


def _leakage_stage(plan: PipelinePlan, log) -> dict:
    """The leakage probes on a time-locked model (redone only when its weights change)."""
    from .evaluation import leakage_for_model, leakage_summary

    result = leakage_for_model(plan.run.final, plan.cutoff_year, out=plan.run.leakage,
                               overwrite=plan.overwrite, log=log)
    log(f"leakage probes (cutoff {plan.cutoff_year}): {leakage_summary(result)}")
    return result


def corpus_stage(plan: PipelinePlan, log) -> dict:
    """The corpus: built from the embedded sample or ``--source_dir``, but a corpus collected
    from other sources (``historical_data_collector.py``) is never replaced without
    ``--overwrite``: with no source named it is the corpus the pipeline trains on (a cutoff is a
    view of it); with another source named the pipeline stops before touching it."""
    from .corpus import SAMPLE_SOURCE_ID, CollectionOptions, build_corpus, collected_sources

    have = collected_sources(plan.processed_dir)
    nothing_named = plan.source_dir is None and plan.use_sample is None
    if nothing_named and have is None and not plan.overwrite:
        _refuse_a_stopped_collection(plan.processed_dir, SAMPLE_SOURCE_ID)
    if nothing_named and have not in (None, [SAMPLE_SOURCE_ID]) and not plan.overwrite:
        log(f"corpus: using the corpus collected in {plan.processed_dir} (sources: {', '.join(have)}); "
            f"--source_dir or --overwrite builds another")
        return {**(record_field(read_json_object(plan.processed_dir / SIDECAR), "counts", kind=dict) or {}),
                "skipped": True}
    options = CollectionOptions(year_range=plan.year_range, min_chars=plan.min_chars,
                                validation_percent=plan.validation_percent, overwrite=plan.overwrite, log=log)
    corpus = build_corpus(plan.processed_dir, plan.metadata_dir, options, source_dir=plan.source_dir,
                          use_sample=plan.use_sample, sample_limit_chars=plan.sample_limit_chars,
                          keep_other_sources=not plan.overwrite)
    require_validation(corpus, f"the corpus in {plan.processed_dir}", "add texts")
    return corpus


def _refuse_a_stopped_collection(processed_dir: Path, sample_id: str) -> None:
    """A collection from the user's sources stopped before its sidecar (Ctrl-C, a full disk)
    is no finished corpus, so it was not "the corpus collected": the pipeline built the embedded
    sample over it and trained (time-locked, too) on the First Folio, exit 0. Its manifest
    (the stopped run's, or the one before it) still names its sources: refused in one line."""
    if not (processed_dir / MANIFEST).is_file():
        return
    try:
        rows = read_manifest(processed_dir, keys=("source",))
        sources = sorted({str(r["source"]) for r in rows if r.get("source")})
    except CorpusError:  # a manifest cut mid-line says nothing of whose it was
        return
    if sources and sources != [sample_id]:
        raise UsageError(f"{processed_dir} holds a collection from {', '.join(sources)} that stopped before it "
                         f"finished (it has no {SIDECAR}); finish it with `{COLLECT_CMD}` and the options it was "
                         f"collected with, or pass --source_dir (or --overwrite) to build another corpus over it")


def require_validation(counts: dict, what: str, fix: str) -> None:
    """Stop before the tokenizer and training when nothing is held out: the run could neither
    evaluate nor report a validation loss (documents go to validation by a hash of their id)."""
    if counts.get("validation_documents") == 0:
        raise UsageError(f"{what} has no validation document ({counts.get('documents', 0)} documents, "
                         f"all in the training split), so nothing could be held out: {fix}")


def run_pipeline(plan: PipelinePlan, log=print) -> dict:
    """Run every stage in order; returns (and saves in the run folder) a summary."""
    from .corpus import cutoff_view
    from .tokens import train_tokenizer_stage

    t0, timings, run = time.time(), {}, plan.run
    with_chat = plan.chat is not None and plan.chat.mode != "off"
    total = 5 + with_chat + (plan.cutoff_year is not None)

    def stage(name, key, fn):
        log(f"\n=== {len(timings) + 1}/{total} {name} ===")
        s = time.time()
        result = fn()
        timings[key] = time.time() - s
        return result

    corpus = stage("corpus", "corpus", lambda: corpus_stage(plan, log))
    if plan.cutoff_year is not None:
        corpus = stage(f"corpus up to {plan.cutoff_year}", "cutoff", lambda: cutoff_view(
            plan.processed_dir, plan.cutoff_dir, plan.cutoff_year, overwrite=plan.overwrite, log=log))
        require_validation(corpus, f"the corpus up to {plan.cutoff_year} ({plan.cutoff_dir})",
                           "choose a later --cutoff_year, or collect more texts dated by it")
    stage("tokenizer", "tokenizer", lambda: train_tokenizer_stage(
        plan.corpus_dir, plan.tokenizer_dir, vocab_size=plan.vocab_size,
        min_frequency=plan.min_frequency, era_tokens=plan.era_tokens, era_width=plan.era_width,
        model_max_length=plan.context_length, overwrite=plan.overwrite, log=log))
    stage("token cache + training", "training", lambda: _train_stage(plan, log))
    ev_path, model = run.evaluation_dir / METRICS, model_identity(run.final)
    ev = stage("evaluation", "evaluation", lambda: current_or_make(
        ev_path, model, {"max_eval_tokens": plan.eval_max_tokens,
                         "manifest_sha256": sha256_file(plan.corpus_dir / MANIFEST)},
        lambda: evaluate_validation(run.final, plan.corpus_dir, plan.eval_max_tokens),
        plan.overwrite, log, "evaluation", fits=_validation_fits))
    log(f"validation: loss {ev['loss']:.4f}, perplexity {ev['perplexity']:.2f}, "
        f"bits/byte {ev['bits_per_byte']:.4f} ({ev['tokens']:,} tokens)")
    leakage = _leakage_stage(plan, log) if plan.cutoff_year is not None else None
    samples = stage("samples", "samples", lambda: current_or_make(
        run.evaluation_dir / SAMPLES, model, {"prompts": list(plan.prompts), "seed": plan.seed,
                                              "max_new_tokens": plan.max_new_tokens},
        lambda: generate_samples(run.final, plan.prompts, plan.max_new_tokens, plan.seed),
        plan.overwrite, log, "samples", fits=_samples_fit))
    chat = stage("period chat", "chat", lambda: _chat_stage(plan, log)) if with_chat else None
    summary = {"corpus": corpus, "run_info": read_json(run.run_info), "model": model, "validation": ev,
               "samples": samples, "timings_seconds": {k: round(v, 1) for k, v in timings.items()},
               "total_seconds": round(time.time() - t0, 1),
               "artifacts": {"corpus": str(plan.corpus_dir), "tokenizer": str(plan.tokenizer_dir),
                             "run": str(run.dir), "final_model": str(run.final),
                             "evaluation": str(ev_path), **(chat or {}).get("artifacts", {})}}
    if chat:
        summary["chat"] = {k: v for k, v in chat.items() if k != "artifacts"}
    if leakage is not None:
        summary["leakage"] = leakage
    save_summary(run.dir / SUMMARY, summary)
    _report(summary, log)
    return summary


def save_summary(path: Path, summary: dict) -> None:
    """Write the pipeline's summary, unless the one there says the same but for the timings
    (every stage was current): a rerun that made nothing would replace the timings of the
    call that made the outputs (hours of training) with its own seconds of skipping."""
    def _made(doc: dict) -> dict:
        return {k: v for k, v in doc.items() if k not in ("timings_seconds", "total_seconds")}

    old = read_json_object(path)
    if old and _made(old) == json.loads(json.dumps(_made(summary), default=str)):
        return
    write_json_atomic(path, summary)
