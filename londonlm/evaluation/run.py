"""The evaluation stage's run: one model (and optionally others to compare) through held-out
LM metrics, probes, leakage probes, continuation quality, curves, human-evaluation export and
the report (:func:`run_evaluation`); or one model folder through the leakage probes alone,
kept while its weights stay the same (:func:`leakage_for_model`, for the family of
time-locked runs and the pipeline).

Models load through :func:`.model.load_for_evaluation` and are measured by the modules of
:mod:`.metrics`; the folder the results go to is the caller's choice (the CLI takes it from
:meth:`londonlm.core.layout.RunLayout.evaluation_dir_for`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..core import LondonLMError, current_or_make, now_iso, read_json, sha256_file, versions, write_text_atomic
from ..generation import LoadedModel, encode_text, model_changed, model_stamp, pick_device
from ..tokens import era_token_for, era_tokens_of, tokenizer_identity_sha256
from . import curves, human_eval, report
from .harness import check_harness_request, run_harness
from .metrics import generation_quality
from .metrics.leakage import run_leakage_probes
from .metrics.lm import evaluate_lm, model_context_length
from .metrics.probes import default_probes_path, load_mc_jsonl, score_items
from .model import (METRICS_FILE, SAMPLES_FILE, MissingInput, corpus_time_of, load_for_evaluation,
                    model_identity, outputs_record, weights_sha256)

QUICK_MAX_EVAL_TOKENS = 20_000
HUMAN_EVAL_DIR = "human_eval"
MODES = ("quick", "comprehensive")


EMPTY_VALIDATION = ("the validation text is empty: the corpus's {n} validation document(s) hold no "
                    "text to score; rebuild the corpus (`python 02_data_collection/"
                    "historical_data_collector.py --overwrite`) or restore its processed/texts files")
ONE_TOKEN_VALIDATION = ("the validation text is too short to score: each of the corpus's {n} validation "
                        "document(s) is one token or none (such as {example!r}), and a text's first token is not "
                        "predicted, so nothing would be scored; rebuild the corpus with longer documents "
                        "(`python 02_data_collection/historical_data_collector.py --overwrite`)")


class EvaluationError(LondonLMError, ValueError):
    """A bad evaluation request (unknown mode, no validation texts)."""


@dataclass(frozen=True)
class EvaluationSettings:
    """What one evaluation measures and how: the stage's flags (named as they are), built once
    and passed whole. ``device``, ``dtype`` and ``max_eval_tokens`` are as asked; the run
    resolves them (``auto``, the quick mode's cap) into the copy it measures with and records.
    ``leakage_limit``: N leakage items of each file (tests; no flag)."""
    mode: str = "quick"
    probes: Path | None = None            # the probe JSONL (None: the bundled one)
    mc_files: tuple[Path, ...] = ()       # extra multiple-choice files (comprehensive)
    text_files: tuple[Path, ...] = ()     # plain-text files scored too
    compare: tuple[Path, ...] = ()        # other model folders measured beside
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    max_eval_tokens: int | None = None
    trainer_state: Path | None = None     # trainer_state.json for the curves (None: found)
    lm_eval_tasks: tuple[str, ...] = ()
    lm_eval_text_dir: Path | None = None
    cutoff_year: int | None = None        # the leakage probes' split (None: the run's own)
    leakage_limit: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise EvaluationError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not (isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed < 2**32):
            raise EvaluationError(f"seed must be an integer from 0 to 2**32-1, got {self.seed!r}")
        for name in ("mc_files", "text_files", "compare", "lm_eval_tasks"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @classmethod
    def from_flags(cls, flags: Mapping[str, Any], **given: Any) -> "EvaluationSettings":
        """The settings of parsed flags (``vars(args)``: those that are settings), ``given`` over them."""
        known = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in flags.items() if k in known}, **given})

    @property
    def quick(self) -> bool:
        return self.mode == "quick"

    def resolved(self) -> "EvaluationSettings":
        """The device picked and the quick mode's token cap filled (the dtype follows the loaded weights)."""
        cap = QUICK_MAX_EVAL_TOKENS if self.max_eval_tokens is None and self.quick else self.max_eval_tokens
        return replace(self, device=pick_device(self.device), max_eval_tokens=cap)


def _model_info(lm: LoadedModel, path: Path, sha: str | None = None) -> dict:
    """What the model is, and which weights exactly (``weights_sha256``, see :mod:`.model`):
    every figure written is tied to them."""
    model = lm.model
    ident = model_identity(path, sha)
    return {"path": str(path), "name": lm.model_id, "params": lm.n_params,
            "n_positions": model_context_length(model), "vocab_size": model.config.vocab_size,
            "step": lm.step, "run": ident["run"],
            "weights_sha256": ident["weights_sha256"]}


@contextmanager
def _timed(timing: dict, key: str):
    t = time.time()
    yield
    timing[key] = time.time() - t


# --------------------------------------------------------------------------- LM metrics

def _by_century(per_doc: list[dict], years: Sequence[int | None]) -> dict:
    groups: dict[str, list] = {}
    for d in per_doc:
        y = years[d["index"]] if d["index"] < len(years) else None
        key = f"{(y // 100) * 100}s" if isinstance(y, int) else "undated"
        g = groups.setdefault(key, [0.0, 0, 0, 0])
        g[0] += d["nll"]
        g[1] += d["tokens"]
        g[2] += d["bytes"]
        g[3] += 1
    return {k: {"documents": v[3], "tokens": v[1], "bytes": v[2],
                "loss": v[0] / v[1] if v[1] else None,
                "bits_per_byte": v[0] / (math.log(2) * v[2]) if v[2] else None}
            for k, v in sorted(groups.items())}


def _prefix_lists(tok, years: Sequence[int | None] | None, n: int, with_era: bool) -> list[list[int]]:
    eot = tok.eos_token_id if tok.eos_token_id is not None else tok.bos_token_id
    eras = set(era_tokens_of(tok)) if with_era else set()
    out = []
    for i in range(n):
        pre = [eot]
        y = years[i] if years is not None and i < len(years) else None
        t = era_token_for(tok, y)
        if with_era and t in eras:
            pre.append(tok.convert_tokens_to_ids(t))
        out.append(pre)
    return out


def _lm_metrics(model, tok, texts, years, text_files, *, device, max_tokens, quick) -> dict:
    """The bench-comparable validation figure first (no prefix, first token unscored), then
    (comprehensive) EOT-prefixed and era-conditioned variants, then each text file."""
    files = {f: scorable_text_file(tok, f) for f in text_files}  # before any measuring
    v = _scored(evaluate_lm(model, tok, texts, device=device, max_eval_tokens=max_tokens,
                            return_per_document=years is not None, return_texts=True), texts)
    per_doc = v.pop("per_document", None)
    out: dict = {"validation": v}
    if per_doc is not None and per_doc:
        out["validation_by_century"] = _by_century(per_doc, years)
    if not quick:
        r = evaluate_lm(model, tok, texts, device=device, max_eval_tokens=max_tokens,
                        prepend_tokens=_prefix_lists(tok, years, len(texts), False))
        out["validation_eot_prefixed"] = {**r, "prefix": "EOT"}
        if era_tokens_of(tok) and years is not None:
            r = evaluate_lm(model, tok, texts, device=device, max_eval_tokens=max_tokens,
                            prepend_tokens=_prefix_lists(tok, years, len(texts), True))
            out["validation_era_conditioned"] = {**r, "prefix": "EOT + era token"}
    for f, text in files.items():
        out[f"file:{Path(f).name}"] = evaluate_lm(model, tok, [text], device=device,
                                                  max_eval_tokens=max_tokens if quick else None)
    return out


# a text this long has two tokens or more: no vocabulary holds a token of 4,096 bytes
SHORT_TEXT_BYTES = 4096


def scorable_text_file(tok, path: Path) -> str:
    """:func:`read_text_file`'s text, refused when it is one token: a text's first token is
    not predicted, so it scored nothing and its row said "-" with exit 0, the figure asked
    for missing without a word (as a file with no text is refused)."""
    text = read_text_file(path)
    if len(text.encode("utf-8")) < SHORT_TEXT_BYTES and len(encode_text(tok, text)) < 2:
        raise EvaluationError(f"text file {path} is one token ({text.strip()[:40]!r}): a text's first token "
                              f"is not predicted, so nothing would be scored; pass a longer text")
    return text


def read_text_file(path: Path) -> str:
    """A ``--text_files`` file's text, every byte of it: UTF-8, as ../shared/bench/bpb.py reads
    it. bpb.py drops the bytes it cannot decode; scored that way a Latin-1 file loses each
    accented letter unseen and a binary file scores nothing (no tokens, no figure), so a file
    that is not UTF-8 is refused by name instead, and one with no text in it."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise EvaluationError(f"text file {path} is not UTF-8 text ({e.reason}: byte 0x{data[e.start]:02x} "
                              f"at byte {e.start}, line {line}); save it as UTF-8 "
                              f"(iconv -f cp1252 -t utf-8 for a Windows/Latin-1 file)") from None
    if not text.strip():
        raise EvaluationError(f"text file {path} is empty: nothing to score; pass a file with text")
    return text


def _leakage(lm: LoadedModel, model_path: Path, cutoff_year, limit, log) -> tuple[dict | None, dict]:
    """(the run's recorded corpus years, the leakage probes split at the cutoff)."""
    record = corpus_time_of(model_path)
    if cutoff_year is None and record:
        cutoff_year = record.get("cutoff_year")
    result = run_leakage_probes(lm, cutoff_year, limit=limit)
    log(f"leakage probes: {report.leakage_summary(result)}")
    return record, result


def _read_probe_sets(settings: EvaluationSettings) -> tuple[dict, dict]:
    """Every MC file, read up front so a malformed one fails before minutes of scoring;
    returns (name -> items, name -> file)."""
    files = {"london": str(settings.probes or default_probes_path())}
    if not settings.quick:
        for f in settings.mc_files:
            files.setdefault(Path(f).stem, str(f))
    return {name: load_mc_jsonl(f) for name, f in files.items()}, files


def _probe_metrics(model, tok, probe_sets: dict, device: str) -> tuple[dict, list[dict]]:
    probes, rows = {}, []
    for name, items in probe_sets.items():
        res = score_items(model, tok, items, device=device)
        rows += [{"set": name, **row} for row in res.pop("items")]
        probes[name] = res
    return probes, rows


# --------------------------------------------------------------------------- comparison

def _compare_row(lm: LoadedModel, path: Path, sha: str | None, scored_texts, probe_items, *, device) -> dict:
    """A compared model's row, its figures over ``scored_texts``: the very text the evaluated
    model scored, uncapped. A cap in each model's own tokens covered more or less of the text
    for a model of another tokenizer (a third as much for one of near-byte tokens), so their
    bits per byte, the figure said to compare across tokenizers, were of different texts."""
    info = _model_info(lm, path, sha)
    cv = evaluate_lm(lm.model, lm.tokenizer, scored_texts, device=device)
    cp = score_items(lm.model, lm.tokenizer, probe_items, device=device)
    return {"name": info["name"], "path": str(path), "step": info["step"],
            "weights_sha256": info["weights_sha256"], "tokenizer_sha256": tokenizer_identity_sha256(path),
            "loss": cv["loss"], "bits_per_byte": cv["bits_per_byte"], "tokens": cv["tokens"], "bytes": cv["bytes"],
            "probe_accuracy": cp["accuracy"]["per_byte"], "probe_chance": cp["chance"]}


def _compare_and_human_eval(main_row: dict, samples: list[dict], val_texts, scored_texts, probe_items,
                            out: Path, plots: dict, settings: EvaluationSettings, compare_shas: list):
    """Rows for every ``compare`` model (training order when steps are known) and, in
    comprehensive mode, the blind human-evaluation pack; returns (compare_rows, human).
    ``compare_shas``: each compared model's weights_sha256, already streamed for the inputs
    record (GBs each: hashed once)."""
    def texts_of(rows, key):
        return [{"prompt": s["prompt"], "text": s[key]} for s in rows]

    he_mode = "greedy" if settings.quick else "sampled"
    he_samples = {main_row["name"]: texts_of([s for s in samples if s["mode"] == he_mode], "generated")}
    rows = [main_row]
    for cpath, sha in zip(map(Path, settings.compare), compare_shas, strict=True):
        lm = load_for_evaluation(cpath, settings.device, settings.dtype)  # the main model's: comparable figures
        rows.append(_compare_row(lm, cpath, sha, scored_texts, probe_items, device=settings.device))
        if not settings.quick:
            _, cs = generation_quality.evaluate_generation(
                lm.model, lm.tokenizer, val_texts, n_passages=16, continuation_tokens=64,
                prompt_tokens=48, modes=("sampled",), seed=settings.seed, device=settings.device)
            he_samples[rows[-1]["name"]] = texts_of(cs, "generated")
        del lm
    compare_rows: list[dict] = []
    if settings.compare:
        compare_rows = sorted(rows, key=lambda r: (r["step"] is None, r["step"] or 0))
        report.plot_comparison(compare_rows, out / "compare.png")
        plots["compare"] = "compare.png"
    human = None
    if not settings.quick:
        # the true continuations join as a blind control: raters' scores for real period
        # text give the ceiling each model is measured against
        he_samples["reference (true text)"] = texts_of(
            [s for s in samples if s["mode"] == "sampled"], "reference")
        models = {r["name"]: {k: r.get(k) for k in ("path", "step", "weights_sha256")} for r in rows}
        human = human_eval.export_blind(he_samples, out / HUMAN_EVAL_DIR, seed=settings.seed, models=models)
    return compare_rows, human


# --------------------------------------------------------------------------- the run

def _check_request(settings: EvaluationSettings, val_texts) -> None:
    if not val_texts:
        raise EvaluationError("no validation texts: the corpus manifest has no split == 'validation' "
                              "documents; run the corpus stage first or pass --text_files")
    if not any(t.strip() for t in val_texts):  # scoring no tokens would give NaN metrics
        raise EvaluationError(EMPTY_VALIDATION.format(n=len(val_texts)))
    for f in settings.text_files:
        if not Path(f).is_file():
            raise MissingInput(f"text file not found: {f}")
        read_text_file(f)
    # what is read only at the end is checked now: a bad one must not cost the measuring
    if settings.trainer_state is not None:
        curves.load_trainer_state(settings.trainer_state)
    if settings.lm_eval_tasks:
        check_harness_request(settings.lm_eval_tasks, settings.lm_eval_text_dir, settings.probes)


# the files an evaluation writes in its folder, beside its plots (*.png) and human_eval/'s pack
WRITTEN = (METRICS_FILE, SAMPLES_FILE, "probe_items.jsonl", "report.md")


def refuse_inputs_written_over(out: Path, settings: EvaluationSettings) -> None:
    """One line, before any work, when a file the evaluation reads (a text to score, the probes,
    a multiple-choice file, the trainer state) is one it writes in ``out``: ``--text_files
    out/report.md`` was scored, then replaced by the report, the user's text lost, exit 0."""
    out = Path(os.path.realpath(out))
    reads = [*settings.text_files, *settings.mc_files, settings.probes, settings.trainer_state]
    for path in (Path(p) for p in reads if p is not None):
        real = Path(os.path.realpath(path))
        if real.parent == out and (real.name in WRITTEN or real.suffix == ".png") or \
                real.parent == out / HUMAN_EVAL_DIR and real.name in human_eval.PACK_FILES.values():
            raise EvaluationError(f"{path} is read by this evaluation and is one of the files it writes in {out} "
                                  f"(metrics.json, samples.jsonl, probe_items.jsonl, report.md, plots, "
                                  f"{HUMAN_EVAL_DIR}/): move it, or give another --out_dir; nothing was written")


def refuse_unwritable_outputs(out: Path, settings: EvaluationSettings, probe_names) -> None:
    """One line, before the model loads, when a path the evaluation writes holds what no file
    can replace: a folder (or a pipe, a socket, a device) where report.md, metrics.json, a plot
    or the pack goes, a file where its folder goes. Found when written, it came after minutes of
    measuring, with some files already written beside it and the evaluation lost."""
    files = [*WRITTEN, *(f"probes_{n}.png" for n in probe_names), "training_curves.png"]
    files += ["compare.png"] if settings.compare else []
    folders = [out] + ([out / HUMAN_EVAL_DIR] if not settings.quick else [])
    files += [f"{HUMAN_EVAL_DIR}/{f}" for f in human_eval.PACK_FILES.values()] if not settings.quick else []
    for folder in folders:
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise EvaluationError(f"cannot use {folder}: it is a file where the evaluation's folder goes; move it "
                                  f"aside or give another --out_dir (nothing was written)")
    for path in (out / f for f in files):
        if os.path.exists(path) and not os.path.isfile(path):  # links followed: a link to a file is replaced
            what = "a folder" if os.path.isdir(path) else "not a regular file"
            raise EvaluationError(f"cannot use {path}: it is {what} where the evaluation writes a file; move it "
                                  f"aside or give another --out_dir (nothing was written)")


def _scored(v: dict, texts: Sequence[str]) -> dict:
    """``v``, unless it scored no tokens (its loss would be NaN): then an EvaluationError that
    says why, documents of no text, or of one token each (whose only token nothing predicts)."""
    if not v["tokens"]:
        example = next((t.strip()[:40] for t in texts if t.strip()), None)
        raise EvaluationError(EMPTY_VALIDATION.format(n=len(texts)) if example is None
                              else ONE_TOKEN_VALIDATION.format(n=len(texts), example=example))
    return v


def _training_curves(model_path: Path, trainer_state_path, out: Path, plots: dict, title: str, log=print):
    """The curves of the given trainer state (checked before measuring), else of the one found
    beside the model: a damaged one found is skipped with a line, the evaluation kept."""
    state = Path(trainer_state_path) if trainer_state_path else curves.find_trainer_state(model_path)
    if state is None or not state.is_file():
        return None
    try:
        training = curves.plot_curves(state, out / "training_curves.png", title=title)
    except curves.TrainerStateError as e:
        if trainer_state_path:
            raise
        log(f"no training curves: {e}")
        return None
    training["trainer_state"] = str(state)
    plots["curves"] = "training_curves.png"
    return training


def evaluation_inputs(model_path: Path, settings: EvaluationSettings, val_texts: Sequence[str]) -> dict:
    """Everything the figures of an evaluation come from: the weights scored and compared (and
    what the run recorded of the model), the validation text, every file it reads (probes,
    texts, the trainer state of the curves, the lm-eval texts) and the settings as resolved.
    Recorded in metrics.json; an evaluation that recorded the same is current."""
    state = settings.trainer_state or curves.find_trainer_state(model_path)
    texts = Path(settings.lm_eval_text_dir) if settings.lm_eval_text_dir else None
    files = [settings.probes or default_probes_path(), *settings.mc_files, *settings.text_files,
             *([state] if state else []), *(sorted(texts.rglob("*")) if texts else [])]
    validation = hashlib.sha256()
    for text in val_texts:  # each text's length first: two splits of one string hash apart
        validation.update(f"{len(text)}:".encode() + text.encode("utf-8", "surrogatepass"))
    # the model: its weights, and the step, run and cutoff its run recorded (the leakage
    # probes split at that cutoff unless one is given)
    return {"model": {**model_identity(model_path), "path": str(model_path)},
            "corpus_time": corpus_time_of(model_path),
            "compare": [weights_sha256(c) for c in settings.compare],
            "validation_sha256": validation.hexdigest(),
            "files": {str(f): sha256_file(f) for f in files if Path(f).is_file()},
            "settings": json.loads(json.dumps(asdict(settings), default=str))}


def current_evaluation(out: Path, inputs: dict) -> dict | None:
    """The metrics.json in ``out`` when it recorded ``inputs`` and every file it was written
    with is still the same; else None (missing, torn, of other inputs, a file edited or gone)."""
    try:
        old = read_json(out / METRICS_FILE) if (out / METRICS_FILE).is_file() else None
    except ValueError:
        return None
    if not isinstance(old, dict) or old.get("inputs") != inputs or not isinstance(old.get("outputs"), dict):
        return None
    intact = all((out / name).is_file() and sha256_file(out / name) == sha for name, sha in old["outputs"].items())
    return old if intact else None


def run_evaluation(model_path: str | Path, out_dir: str | Path, settings: EvaluationSettings, *,
                   val_texts: list[str], val_years: list[int | None] | None = None,
                   overwrite: bool = False, log=print) -> dict:
    """Evaluate one model (and the ``compare`` models beside it); write metrics.json,
    samples.jsonl, report.md and plots into ``out_dir``; return the metrics dict.
    ``lm_eval_tasks`` also scores the model with lm-evaluation-harness
    (``londonlm/evaluation/lm_eval_tasks``), recorded beside our own figures under ``lm_eval``.
    The leakage probes split their items at ``cutoff_year`` (default: the cutoff its run
    recorded). ``device`` and ``dtype`` are :func:`~londonlm.generation.load_model`'s (``auto``:
    bf16 on a GPU, fp32 on CPU); the resolved ones are recorded under ``settings``. An
    evaluation of the same inputs already in ``out_dir`` (:func:`evaluation_inputs`, its files
    intact) is returned as it is, unless ``overwrite``."""
    _check_request(settings, val_texts)
    refuse_inputs_written_over(Path(out_dir), settings)
    t_start, timing = time.time(), {}
    settings = settings.resolved()
    out, model_path = Path(out_dir), Path(model_path)
    # the folder's files before their hash: a training that saves it again before the load below
    # gave figures of other weights than the weights_sha256 recorded
    read = model_stamp(model_path)
    inputs = evaluation_inputs(model_path, settings, val_texts)
    old = None if overwrite else current_evaluation(out, inputs)
    if old is not None:
        log(f"evaluation: outputs are current ({out / METRICS_FILE}); skipping (--overwrite evaluates again)")
        return old
    torch.manual_seed(settings.seed)
    probe_sets, probe_files = _read_probe_sets(settings)
    refuse_unwritable_outputs(out, settings, probe_sets)
    with _timed(timing, "load"):
        lm = load_for_evaluation(model_path, settings.device, settings.dtype)
    if lm.stamp[:1] != read:
        raise model_changed(model_path, "evaluated")
    # from here on the dtype the weights were loaded in ("auto" resolved): compared models load
    # in it too, and metrics.json records it
    info, settings = _model_info(lm, model_path, inputs["model"]["weights_sha256"]), replace(settings, dtype=lm.dtype)
    log(f"evaluating {info['name']} ({info['params']:,} parameters) in {settings.mode} mode on "
        f"{settings.device} ({settings.dtype})")
    scores = _measure(lm, model_path, val_texts, val_years, probe_sets, settings, timing=timing, log=log)
    out.mkdir(parents=True, exist_ok=True)  # (only now: a refusal after the load leaves no empty folder)
    plots = _probe_plots(scores["probes"], out)
    training = _training_curves(model_path, settings.trainer_state, out, plots, info["name"], log)
    compare_rows, human = [], None
    if settings.compare or not settings.quick:
        with _timed(timing, "compare_and_human_eval"):
            compare_rows, human = _compare_and_human_eval(
                _main_row(info, model_path, scores), scores["samples"], val_texts,
                scores["scored_texts"], probe_sets["london"], out, plots, settings, inputs["compare"])
    harness = _harness_scores(model_path, settings, read, timing)
    timing["total"] = time.time() - t_start
    metrics = _metrics_document(info, settings, probe_files, scores, training, compare_rows, human, timing)
    if harness is not None:
        metrics["lm_eval"] = harness
    metrics["inputs"] = inputs
    _write_outputs(out, metrics, plots, scores["samples"], scores["probe_rows"])
    log(f"wrote {out / METRICS_FILE} and report.md in {timing['total']:.1f} s")
    return metrics


def _harness_scores(model_path: Path, settings: EvaluationSettings, read: tuple, timing: dict) -> dict | None:
    """lm-evaluation-harness's scores (None without ``lm_eval_tasks``). The harness loads the
    folder again, by its path: it must still be the one evaluated (``read``: its stamp before)."""
    if not settings.lm_eval_tasks:
        return None
    with _timed(timing, "lm_eval"):
        harness = run_harness(model_path, settings.lm_eval_tasks, text_dir=settings.lm_eval_text_dir,
                              probes_path=settings.probes, device=settings.device, dtype=settings.dtype)
    if model_stamp(model_path) != read:
        raise model_changed(model_path, "evaluated")
    return harness


def _measure(lm: LoadedModel, model_path: Path, val_texts, val_years, probe_sets: dict,
             settings: EvaluationSettings, *, timing: dict, log) -> dict:
    """The loaded model through each measure, each timed: held-out LM metrics, the probes, the
    leakage probes, continuations of held-out passages."""
    model, tok, quick, device = lm.model, lm.tokenizer, settings.quick, settings.device
    with _timed(timing, "lm"):
        lm_metrics = _lm_metrics(model, tok, val_texts, val_years, settings.text_files, device=device,
                                 max_tokens=settings.max_eval_tokens, quick=quick)
    v = lm_metrics["validation"]
    scored_texts = v.pop("texts")  # what the compared models score (not written: the corpus's text)
    log(f"validation: loss {v['loss']:.4f}  ppl {v['perplexity']:.2f}  bpb {v['bits_per_byte']:.4f}"
        f"  ({v['tokens']} tokens{', capped' if v['truncated'] else ''})")
    with _timed(timing, "probes"):
        probes, probe_rows = _probe_metrics(model, tok, probe_sets, device)
    with _timed(timing, "leakage"):
        corpus_time, leakage = _leakage(lm, model_path, settings.cutoff_year, settings.leakage_limit, log)
    with _timed(timing, "generation"):
        generation, samples = generation_quality.evaluate_generation(
            model, tok, val_texts, n_passages=4 if quick else 16,
            continuation_tokens=32 if quick else 64, prompt_tokens=48,
            modes=("greedy",) if quick else ("greedy", "sampled"), seed=settings.seed, device=device)
    return {"lm": lm_metrics, "scored_texts": scored_texts, "probes": probes, "probe_rows": probe_rows,
            "corpus_time": corpus_time, "leakage": leakage, "generation": generation, "samples": samples}


def _probe_plots(probes: dict, out: Path) -> dict[str, str]:
    """A bar chart per probe set; returns plot name -> file name (the report links them)."""
    plots: dict[str, str] = {}
    for name, res in probes.items():
        report.plot_probe_categories(res, out / f"probes_{name}.png",
                                     title=f"Probe accuracy by category ({name})")
        plots[f"probes_{name}"] = f"probes_{name}.png"
    return plots


def _main_row(info: dict, model_path: Path, scores: dict) -> dict:
    """The evaluated model's row of the comparison, in the form of :func:`_compare_row`'s."""
    v, london = scores["lm"]["validation"], scores["probes"]["london"]
    return {"name": info["name"], "path": str(model_path), "step": info["step"],
            "weights_sha256": info["weights_sha256"], "tokenizer_sha256": tokenizer_identity_sha256(model_path),
            "loss": v["loss"], "bits_per_byte": v["bits_per_byte"], "tokens": v["tokens"], "bytes": v["bytes"],
            "probe_accuracy": london["accuracy"]["per_byte"], "probe_chance": london["chance"]}


def _write_outputs(out: Path, metrics: dict, plots: dict, samples: list, probe_rows: list) -> None:
    """samples.jsonl, probe_items.jsonl, report.md, then metrics.json: last, so its presence
    means the folder is complete, and with the sha256 of each file beside it (the human
    evaluation pack included), so a later evaluation that stops part-way leaves files that no
    longer match and publishing refuses them."""
    report.write_jsonl(out / SAMPLES_FILE, samples)
    report.write_jsonl(out / "probe_items.jsonl", probe_rows)
    write_text_atomic(out / "report.md", report.render_markdown(metrics, plots, samples))
    human = metrics.get("human_eval") or {}
    metrics["outputs"] = outputs_record(out, [SAMPLES_FILE, "probe_items.jsonl", "report.md", *plots.values(),
                                              *(f"{HUMAN_EVAL_DIR}/{Path(human[k]).name}"
                                                for k in ("sheet", "form", "key") if k in human)])
    report.write_metrics(out / METRICS_FILE, metrics)


def _metrics_document(info: dict, settings: EvaluationSettings, probe_files: dict, scores: dict, training,
                      compare_rows, human, timing: dict) -> dict:
    v = scores["lm"]["validation"]
    return {
        "format_version": report.METRICS_FORMAT_VERSION,
        "created": now_iso(),
        "mode": settings.mode,
        "model": info,
        "settings": {"seed": settings.seed, "device": settings.device, "dtype": settings.dtype,
                     "max_eval_tokens": settings.max_eval_tokens,
                     "max_eval_tokens_meaning": "cap on scored validation tokens (documents in "
                     "manifest order, last one cut at a word boundary); null = whole split",
                     "context_length": v["context_length"], "stride": v["stride"],
                     "probe_files": probe_files, "text_files": [str(f) for f in settings.text_files]},
        "lm": scores["lm"],
        "probes": scores["probes"],
        "generation": scores["generation"],
        "training": training,
        "compare": compare_rows,
        "human_eval": human,
        "timing_s": {k: round(x, 2) for k, x in timing.items()},
        "versions": versions(),
        "corpus_time": scores["corpus_time"],
        "leakage": scores["leakage"],
    }


# --------------------------------------------------------------------------- leakage alone

def leakage_for_model(model_dir: str | Path, cutoff_year: int | None, *, out: Path,
                      limit: int | None = None, overwrite: bool = False, log=print) -> dict:
    """The leakage probes' result for ``model_dir`` under ``cutoff_year``, from ``out`` when that holds
    the result for these very weights and settings, else computed and written there."""
    return current_or_make(
        Path(out), model_identity(model_dir), {"cutoff_year": cutoff_year, "limit": limit},
        lambda: run_leakage_probes(load_for_evaluation(model_dir, device="auto"), cutoff_year, limit=limit),
        overwrite, log, "leakage probes")
