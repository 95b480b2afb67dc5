"""Everything a resume decides, in one place: which checkpoint a run resumes from (never silently
none when one was asked for, nor a start from scratch over an earlier run), what ``--fresh``
moves aside, and what the resumed run must keep the same or refuse: the tokenizer (token ids
must mean the same), the optimizer (its state only loads into the optimizer that wrote it) and
its settings and schedule (the saved state keeps the old ones), the cutoff (a checkpoint trained
on later text cannot become time-locked), the speed settings and micro-batch (so that it
continues as the uninterrupted run would), and where in the data stream it starts reading.

Listing, validation and model-spec resolution live in :mod:`londonlm.core.layout`, which every
consumer of models uses; this module is training's own.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainerCallback, TrainerState
from transformers.trainer_callback import ExportableState

from ..core import (BEST_INFO, LondonLMError, RunLayout, checkpoint_problem, checkpoint_step, earlier_run,
                    latest_valid_checkpoint, list_checkpoints, read_json_object, record_field, sha256_file, user_path,
                    write_json_atomic)
from ..corpus import MANIFEST
from ..tokens import read_metadata, same_tokenizer, tokenizer_identity
from .data import DataPosition, Position
from .dist import TrainingError, log
from .speed.settings import SpeedSettings
from .timelock import check_cutoff

TRAINER_STATE = "trainer_state.json"   # the Trainer's own file in every checkpoint


class ResumeError(LondonLMError, RuntimeError):
    """A resume request that cannot be honoured; the message lists what can."""


def resolve_resume(run: RunLayout, spec: str | None, fresh: bool, log=print) -> Path | None:
    """The checkpoint to resume from, never silently nothing when one was asked for.

    spec None: latest valid checkpoint (invalid ones are named and skipped), or a fresh
    start when the run has none. spec 'checkpoint-N' / a path: that one, or an error
    listing the available ones."""
    if fresh:
        if spec:
            raise ResumeError("--fresh and --resume_from_checkpoint contradict each other")
        return None
    if spec in (None, "", "auto"):
        ck = latest_resumable(run.dir, warn=log)
        if ck is None:
            refuse_over_earlier_run(run)
        else:
            log(f"resuming from {ck} (latest valid checkpoint; use --fresh to start over)")
        return ck
    if spec == "latest":
        ck = latest_resumable(run.dir, warn=log)
        candidates = [ck] if ck else []
    else:
        candidates = [user_path(spec), run.dir / spec]
    for c in candidates:
        if c.is_dir():
            return _named_checkpoint(run, spec, c)
    avail = [f"{p.name}{'' if resume_problem(p) is None else ' (invalid)'}"
             for p in list_checkpoints(run.dir)]
    raise ResumeError(f"checkpoint {spec!r} not found in {run.dir}; available: "
                      f"{', '.join(avail) or 'none'}. Use --fresh to start a new run.")


def _named_checkpoint(run: RunLayout, spec: str, c: Path) -> Path:
    """The folder ``spec`` named, if it is one of this run's checkpoints and can be resumed."""
    if checkpoint_step(c.resolve()) is None:
        # final/ or best/ (weights without the optimizer's state) passed the checks as a model,
        # then the Trainer failed on them: a TypeError traceback; '.', '..' were taken for
        # another run's checkpoint named after the folder above them
        raise ResumeError(
            f"--resume_from_checkpoint {spec}: {c} is no checkpoint-N folder (final/ and best/ hold "
            f"weights without the training state); name one of this run's checkpoints, or start a "
            f"new run from its weights with --init_from {c} --run_name NEW")
    if c.resolve().parent != run.dir.resolve():
        # another run's checkpoint would continue that run's weights, schedule and data
        # position under this run's name, settings and folder, overwriting its checkpoints
        raise ResumeError(
            f"checkpoint {c} is not one of this run's ({run.dir}): resume its own run "
            f"(--run_name {c.resolve().parent.name}), or start a new run from its weights with "
            f"--init_from {c} --run_name NEW")
    problem = resume_problem(c)
    if problem:
        raise ResumeError(f"checkpoint {c} cannot be resumed: {problem}. Pick another "
                          f"(`python 04_training/test_checkpoint.py --list-checkpoints`)")
    return c


def latest_resumable(run_dir: Path, warn=print) -> Path | None:
    """Newest checkpoint that :func:`resume_problem` passes; the others are named and skipped."""
    return latest_valid_checkpoint(run_dir, warn, problem_of=resume_problem)


def resume_problem(checkpoint: Path) -> str | None:
    """Why a checkpoint cannot be resumed: :func:`~londonlm.core.checkpoint_problem` (its files),
    else :func:`state_problem` (what its trainer_state.json says), or None."""
    return checkpoint_problem(checkpoint) or state_problem(checkpoint)


def state_problem(checkpoint: Path) -> str | None:
    """What in a checkpoint's trainer_state.json (an object with a step, by checkpoint_problem)
    the Trainer or this run cannot read back. Each of these was a traceback mid-resume: a field
    the Trainer's state does not know (TypeError), a ``log_history`` or ``stateful_callbacks``
    of another kind (AttributeError, KeyError), a data position that is no count (ValueError);
    and a step other than the folder's resumed step N's position from checkpoint-M's weights."""
    st = read_json_object(Path(checkpoint) / TRAINER_STATE) or {}
    known = {f.name for f in dataclasses.fields(TrainerState)}
    strange = sorted(set(st) - known)
    if strange:
        return f"trainer_state.json holds {strange[0]!r}, no field of the Trainer's state"
    if st.get("global_step") != checkpoint_step(checkpoint):
        return f"trainer_state.json's global_step {st.get('global_step')!r} is not the folder's step"
    history, callbacks = st.get("log_history", []), st.get("stateful_callbacks", {})
    if not isinstance(history, list) or not all(isinstance(e, dict) for e in history):
        return "trainer_state.json's log_history is not a list of records"
    if not isinstance(callbacks, dict) or not all(
            isinstance(e, dict) and all(isinstance(e.get(k, {}), dict) for k in ("args", "attributes"))
            for v in callbacks.values() for e in (v if isinstance(v, list) else [v])):
        return "trainer_state.json's stateful_callbacks are not the Trainer's records"
    position = recorded_position(checkpoint) or {}  # ({}: a checkpoint saved before positions were)
    count, blocks = position.get("consumed_samples", 0 if not position else None), position.get("blocks")
    if type(count) is not int or count < 0 or not (blocks is None or type(blocks) is int):
        return f"trainer_state.json's data position is damaged (consumed_samples {count!r}, blocks {blocks!r})"
    return None


def refuse_over_earlier_run(run: RunLayout) -> None:
    """Nothing can be resumed: a new run may start only in a folder that holds no earlier one,
    since starting over would replace its final/ and record with a run from scratch."""
    found = earlier_run(run.dir)
    if found:
        raise ResumeError(
            f"{run.dir} holds an earlier run ({'; '.join(found)}) but no checkpoint that can be "
            f"resumed; pass --fresh to start over (the old run is moved aside, nothing is "
            f"deleted), or train under another run name")


def move_run_aside(run: RunLayout) -> Path | None:
    """--fresh: move everything the old model produced (:meth:`RunLayout.movable_on_fresh`:
    checkpoints, final/, best/, run_info.json, logs, its evaluation and staged upload) to a
    dated sibling folder; nothing is deleted. The token cache stays."""
    return _move_aside(run, run.movable_on_fresh())


def move_later_aside(run: RunLayout, checkpoint: Path | None) -> Path | None:
    """A resume from ``checkpoint`` while the run holds later checkpoints (one named before its
    last, to go back; the default resume past damaged ones): those, and the final/, best/ and
    run_info.json they led to, are moved to a dated sibling folder, as --fresh moves a run. Left
    in place, the Trainer wrote each new checkpoint-N into the old folder file by file (a kill
    between its files left a new model beside the old optimizer and trainer_state.json, resumed
    as whole), and a rerun without the name resumed the abandoned later checkpoint, or skipped
    the run as finished with its final/."""
    if checkpoint is None:
        return None
    step = checkpoint_step(checkpoint)
    later = [p for p in list_checkpoints(run.dir) if checkpoint_step(p) > step]
    if not later:
        return None
    best = read_json_object(run.best / BEST_INFO) or {}
    ends = [run.final, run.run_info] + ([run.best] if not isinstance(best.get("step"), int)
                                        or best["step"] > step else [])
    return _move_aside(run, later + [p for p in ends if p.exists()])


# In a <run>.previous-* folder while a move into it is under way: the names it moves. A kill in
# the middle split the old run between the two folders (a rerun resumed or skipped the part left
# behind, or --fresh moved it to a second folder); :func:`finish_moving_aside` ends the move.
MOVING = ".moving.json"


def _move_aside(run: RunLayout, paths: list[Path]) -> Path | None:
    if not paths:
        return None
    dest, n = run.previous_dir(), 1
    while True:  # a second --fresh within the same second gets its own folder
        try:
            dest.mkdir(parents=True)
            break
        except FileExistsError:
            n += 1
            dest = dest.with_name(f"{run.previous_dir().name}-{n}")
    # run_info.json first: what a kill leaves behind is never a finished run to skip
    paths = sorted(paths, key=lambda p: p != run.run_info)
    write_json_atomic(dest / MOVING, {"names": [p.name for p in paths]})
    _move_names(run, dest, [p.name for p in paths])
    (dest / MOVING).unlink()
    return dest


def _move_names(run: RunLayout, dest: Path, names: list[str]) -> None:
    for name in names:
        if (run.dir / name).exists() and not (dest / name).exists():
            shutil.move(str(run.dir / name), str(dest / name))


def finish_moving_aside(run: RunLayout) -> list[Path]:
    """The moves aside of this run a kill cut short (:data:`MOVING` still in their folder),
    finished: the rest of what each listed goes to the same folder. Called before anything
    reads the run folder, so what is left there is the old run's."""
    done = []
    for dest in sorted(run.dir.parent.glob(f"{glob.escape(run.dir.name)}.previous-*")):
        names = read_json_object(dest / MOVING).get("names")
        if not isinstance(names, list):
            continue
        _move_names(run, dest, [n for n in names if isinstance(n, str) and n == Path(n).name
                                and n not in ("", ".", "..")])
        (dest / MOVING).unlink()
        done.append(dest)
    return done


# --------------------------------------------------------------------------- what the checkpoint recorded

def saved_attributes(checkpoint: Path, callback: type) -> dict | None:
    """What a stateful callback (``ExportableState``) saved in a checkpoint's trainer_state.json
    (its last entry), or None for a checkpoint saved before it existed."""
    rec = record_field(read_json_object(Path(checkpoint) / TRAINER_STATE), "stateful_callbacks", callback.__name__)
    if isinstance(rec, list):
        rec = rec[-1] if rec else None
    return record_field(rec, "attributes", kind=dict)


def recorded_position(checkpoint: Path) -> dict | None:
    """The :class:`~.data.DataPosition` a checkpoint recorded (None for one saved before it existed)."""
    return saved_attributes(checkpoint, DataPosition)


class RunRecord(TrainerCallback, ExportableState):
    """Every checkpoint carries what its run is (:func:`.record.start_record`: the settings,
    speed settings, micro-batch, tokenizer, data and parent that run_info.json records) in its
    trainer_state.json (``stateful_callbacks.RunRecord``). run_info.json is written when a run
    ends or stops on a signal; a run killed outright (SIGKILL, out of memory, a lost node) leaves
    checkpoints without one, and its resume would be judged against nothing: refused as AdamW
    when it trained with Muon, or let through with another learning rate."""

    def __init__(self, record: dict):
        self.record = json.loads(json.dumps(record, default=str))  # the Trainer saves it as JSON

    def state(self) -> dict:
        return {"args": {}, "attributes": {"record": self.record}}

    def on_train_begin(self, args, state, control, **kw):
        # a resumed checkpoint's state was loaded from its file, which may predate this entry
        state.stateful_callbacks.setdefault(type(self).__name__, self.state())


def recorded_run(checkpoint: Path) -> dict:
    """The :class:`RunRecord` a checkpoint carries ({} for one saved before it existed)."""
    out = (saved_attributes(checkpoint, RunRecord) or {}).get("record")
    return out if isinstance(out, dict) else {}


def checkpoint_step_of(checkpoint: Path) -> int:
    st = json.loads((Path(checkpoint) / TRAINER_STATE).read_text())
    return int(st.get("global_step", 0))


@dataclass
class Resumed:
    """The checkpoint a run resumes from (None: a new run) and what its run recorded."""

    checkpoint: Path | None = None
    # what the checkpoint's run recorded: its own RunRecord over the run's run_info.json (the
    # checkpoint knows the invocation that wrote it; run_info.json, the last to end or stop)
    info: dict = field(default_factory=dict)

    @property
    def step(self) -> int | None:
        """The step it resumes at (None for a new run)."""
        return checkpoint_step(self.checkpoint) if self.checkpoint is not None else None

    @property
    def speed(self) -> SpeedSettings | None:
        """The speed settings it was trained with: a resumed run keeps them (a later probe might
        choose otherwise)."""
        return SpeedSettings.recorded(self.info) if self.checkpoint is not None else None

    @property
    def micro_batch(self) -> tuple[int, int] | None:
        """(micro-batch, accumulation) it trained with."""
        b, a = self.info.get("batch_size"), self.info.get("gradient_accumulation_steps")
        return (b, a) if self.checkpoint is not None and b and a else None

    @property
    def trained_warmup(self) -> float | None:
        """The warm-up it trained with (its Trainer's: a share of its steps, or the preset's), which
        a resumed run keeps (:func:`.length.fit_length`); None for a new run or none recorded."""
        w = self.info.get("warmup_steps")
        return w if self.checkpoint is not None and isinstance(w, (int, float)) else None

    def start(self, samples_per_step: int, n_blocks: int, context_length: int) -> Position:
        """Where in the data stream the run starts: 0, or the blocks the checkpoint consumed
        (whatever world size consumed them)."""
        if self.checkpoint is None:
            return Position(0, 0, samples_per_step)
        step, rec = checkpoint_step_of(self.checkpoint), recorded_position(self.checkpoint)
        if rec:
            position = Position(int(rec["consumed_samples"]), step, samples_per_step)
            if rec.get("blocks") not in (None, n_blocks):
                log(f"warning: the training data changed since {self.checkpoint.name} ({rec['blocks']:,} "
                    f"blocks then, {n_blocks:,} now): its data position no longer means the same")
        else:  # a checkpoint saved before positions were recorded: the same step size assumed
            before = (self.info.get("tokens_per_step") or samples_per_step * context_length) // context_length
            position = Position(step * before, step, samples_per_step)
            log(f"note: {self.checkpoint.name} records no data position; assuming {before} blocks per "
                f"step before it")
        log(f"data: resuming after {position.start:,} blocks (epoch {position.start / n_blocks:.2f})")
        return position


def resumed(run: RunLayout, spec: str | None, fresh: bool) -> Resumed:
    """The checkpoint to resume (:func:`resolve_resume`) with its run's record."""
    checkpoint = resolve_resume(run, spec, fresh, log=log)
    if checkpoint is None:
        return Resumed()
    return Resumed(checkpoint, {**well_formed(run.read_run_info()), **well_formed(recorded_run(checkpoint))})


# The kind of each field of a run's record that a resume reads. A value of another kind (a hand
# edit, a damaged record: "settings": [1], "cache": 5) was an AttributeError or TypeError
# traceback mid-resume; it says nothing, as a record of another shape does (the other record's
# value, or none, decides).
RECORD_KINDS = {"settings": dict, "cache": dict, "shape": dict, "corpus_time": dict, "parent": dict,
                "batch_size": int, "gradient_accumulation_steps": int, "tokens_per_step": int,
                "warmup_steps": (int, float), "tokenizer_sha256": str, "tokenizer_dir": str,
                "precision": str, "attn_implementation": str, "fused_loss": bool, "pad_vocab": bool}


def well_formed(record: dict) -> dict:
    """``record`` without the fields :data:`RECORD_KINDS` says are of another kind (None stays)."""
    def fits(k, v):
        kind = RECORD_KINDS.get(k)
        return kind is None or v is None or (isinstance(v, kind) and (kind is bool or not isinstance(v, bool)))
    return {k: v for k, v in record.items() if fits(k, v)}


# --------------------------------------------------------------------------- what must not change

def tokenizer_fingerprint(tokenizer_dir: Path) -> str:
    return sha256_file(Path(tokenizer_dir) / "tokenizer.json")


def check_tokenizer(resume: Resumed, tok_dir: Path) -> None:
    """Resuming with a tokenizer that numbers tokens differently from the one the checkpoint
    was trained with would silently continue the old weights on renumbered tokens."""
    if resume.checkpoint is None:
        return
    theirs, mine = tokenizer_identity(resume.checkpoint), tokenizer_identity(tok_dir)
    if theirs is not None and mine is not None:
        differs = not same_tokenizer(theirs, mine)
    else:  # a checkpoint without its tokenizer: the run's record of the tokenizer file
        recorded = resume.info.get("tokenizer_sha256")
        differs = bool(recorded) and recorded != tokenizer_fingerprint(tok_dir)
    if differs:
        raise TrainingError(
            f"{resume.checkpoint} was trained with a different tokenizer than {tok_dir} (token ids would "
            f"change meaning). Pass --fresh to start this run over with the new tokenizer, or "
            f"continue these weights under it in a new run: --init_from {resume.checkpoint} "
            f"--resize_embeddings --run_name NEW. To resume, restore the old tokenizer"
            + (f" ({resume.info['tokenizer_dir']})" if resume.info.get("tokenizer_dir") else ""))


def check_optimizer(resume: Resumed, optimizer: str) -> None:
    """A checkpoint's optimizer state only loads into the optimizer that wrote it."""
    if resume.checkpoint is None:
        return
    before = (resume.info.get("settings") or {}).get("optimizer", "adamw")
    if before != optimizer:
        raise TrainingError(
            f"{resume.checkpoint} was trained with --optim {before}; resume it with --optim {before}, "
            f"or start a new run from its weights with --init_from {resume.checkpoint} --optim "
            f"{optimizer} --run_name NEW (or --fresh to start this run over)")


# Settings a resumed run cannot change: the optimizer's param groups (lr, weight decay, betas,
# eps) and the scheduler's base rates load from the checkpoint over the new values, and a new
# warm-up or schedule kind bends the old curve mid-run; the run would record values it never
# used. --max_steps stays free: extending a finished run is what a resume is for.
KEPT_ON_RESUME = ("learning_rate", "warmup_steps", "lr_scheduler_type", "lr_scheduler_kwargs", "weight_decay",
                  "adam_beta1", "adam_beta2", "adam_epsilon", "optim")


def _as_json(v):
    return json.loads(json.dumps(v, default=str))


def _shown(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _changed_settings(before: dict, now: dict) -> list[str]:
    """``--flag new (trained with old)`` for each kept setting the checkpoint's run recorded. The
    batch is not one of them: the optimizer's moments and a schedule counted in steps hold under
    another batch, the data position counts sequences, and going on with a larger batch is a
    documented use (README: ``launch_training.sh`` after the pipeline)."""
    changed = [f"--{k} {_shown(now[k])} (trained with {_shown(before[k])})" for k in KEPT_ON_RESUME
               if k in before and k in now and _as_json(before[k]) != _as_json(now[k])]
    return changed + _budget_changed(before.get("time_budget"), now.get("time_budget"))


def _budget_changed(before, now) -> list[str]:
    """A time budget given or dropped on resume is another schedule kind: a budgeted run trains a
    warmup-stable-decay schedule fitted to its budget (its seconds spent saved in scheduler.pt),
    an unbudgeted one the Trainer's over --max_steps. Dropped, the resume went on under the
    preset's warm-up and cosine (here 326 warm-up steps became 5, the rate jumping 100-fold);
    given, the budget was counted from the resume. Another budget stays free, as --max_steps is
    (the fitted schedule only moves its decay)."""
    if not isinstance(before, (int, float)) or not isinstance(now, (int, float)) or bool(before) == bool(now):
        return []
    if before:
        return [f"no --time_budget (trained under --time_budget {before:g}, its schedule fitted to it; "
                f"resume it with --time_budget {before:g}, or another budget to lengthen or shorten it)"]
    return [f"--time_budget {now:g} (trained without one, on the --lr_scheduler_type schedule over its "
            f"--max_steps; drop --time_budget, or give --max_steps to lengthen it)"]


def check_schedule(resume: Resumed, settings: dict) -> None:
    """The optimizer and schedule settings (``settings``: :func:`.job.training_settings`)
    must be those the checkpoint's run recorded in run_info.json."""
    if resume.checkpoint is None:
        return
    changed = _changed_settings(resume.info.get("settings") or {}, settings)
    if changed:
        raise TrainingError(
            f"cannot resume {resume.checkpoint} with other optimizer or schedule settings: {'; '.join(changed)}; "
            f"its saved optimizer and scheduler state hold the old ones. Resume it with the settings it "
            f"was trained with, pass --fresh to start this run over, or continue its weights in a new run: "
            f"--init_from {resume.checkpoint} --run_name NEW")


def check_shape(resume: Resumed, shape) -> None:
    """The model a resumed run builds (``shape``: its :class:`~.model.ModelShape`) must have the
    checkpoint's layers, heads and width: its weights and optimizer state were loaded into
    another (a run of another --n_layer or preset under the same name), which failed mid-resume
    with a ValueError traceback, after the token cache and the model were built."""
    if resume.checkpoint is None:
        return
    saved = read_json_object(resume.checkpoint / "config.json")
    changed = [f"--{k} {getattr(shape, k)} (trained with {saved[k]})" for k in ("n_layer", "n_head", "n_embd")
               if type(saved.get(k)) is int and saved[k] != getattr(shape, k)]
    if changed:
        raise TrainingError(
            f"cannot resume {resume.checkpoint} as a model of another shape: {'; '.join(changed)}. Resume it "
            f"with the shape it was trained with, pass --fresh to start this run over, or train under "
            f"another run name")


def check_data(resume: Resumed, cache_dir: Path, processed_dir: Path, context_length: int,
               era_tokens: bool) -> None:
    """A resumed run goes on over the data its checkpoints were trained on: the corpus, context
    and era tokens its run_info.json recorded (its token cache's, for a run stopped before it
    wrote one: the cache may have been rebuilt since for other settings, so it comes second). Another
    corpus (a different ``--processed_dir``, a changed manifest) or setting is refused before
    anything is written, where the cache would otherwise be rebuilt for it and the run go on."""
    if resume.checkpoint is None:
        return
    meta, cache = read_metadata(Path(cache_dir)) or {}, resume.info.get("cache") or {}
    manifest = Path(processed_dir) / MANIFEST
    shape = resume.info.get("shape") or {}
    trained = {"corpus": cache.get("manifest_sha256") or meta.get("manifest_sha256"),
               "era tokens": cache.get("era_tokens", meta.get("era_tokens")),
               "context": shape.get("context_length") or meta.get("context_length")}
    now = {"corpus": sha256_file(manifest) if manifest.is_file() else None, "era tokens": era_tokens,
           "context": context_length}
    shown = {"corpus": lambda v: f"manifest sha256 {str(v)[:12]}", "era tokens": lambda v: "on" if v else "off",
             "context": str}
    changed = [f"{k} {shown[k](now[k])} (trained with {shown[k](trained[k])})" for k in trained
               if trained[k] is not None and now[k] is not None and trained[k] != now[k]]
    if changed:
        raise TrainingError(
            f"cannot resume {resume.checkpoint} on other data than it was trained on: {'; '.join(changed)} "
            f"(corpus {processed_dir}). Resume it with the settings it was started with, pass --fresh to start "
            f"this run over, or continue its weights in a new run: --init_from {resume.checkpoint} --run_name NEW")


def check_resume(resume: Resumed, *, tok_dir: Path, optimizer: str, cache_dir: Path, processed_dir: Path,
                 context_length: int, era_tokens: bool, cutoff: int | None) -> None:
    """Everything a resumed run must keep, checked at once before any work: the tokenizer, the
    optimizer, the data (corpus, context, era tokens) and the time lock. Nothing for a new run."""
    if resume.checkpoint is None:
        return
    check_tokenizer(resume, tok_dir)
    check_optimizer(resume, optimizer)
    check_data(resume, cache_dir, processed_dir, context_length, era_tokens)
    check_cutoff(resume, cache_dir, cutoff)
