"""Step 1 of a run, the plan: tokenizer, resume decision, parent weights (``--init_from``), model
shape and the time lock. Everything here only reads, so whatever is wrong with the request (a
missing tokenizer, an unknown checkpoint, a parent that does not fit, a bad shape, text past the
cutoff) fails in seconds, before the token cache is built or read.

The time lock (``--cutoff_year``) is :mod:`.timelock`'s; everything a resume must keep is
:func:`.resume.check_resume`'s. Both are called from :func:`plan_run`, once each.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..core import (Layout, ModelNotFound, RunLayout, checkpoint_problem, checkpoint_step, model_run_info,
                    model_step, read_json_object, record_field, refuse_foreign_run_folder, sha256_file, user_path)
from ..tokens import era_tokens_of, load_tokenizer as load_project_tokenizer, require_whole_save
from .dist import TrainingError, is_main_process, log, same_on_all_ranks, world_size
from .model import ModelShape
from .job import TrainingConfig
from ..tokens import same_tokenizer, tokenizer_identity
from .resume import Resumed, check_resume, check_shape, move_later_aside, move_run_aside, resumed, tokenizer_fingerprint
from .timelock import time_lock


@dataclass
class TrainingPlan:
    tokenizer: object
    resume: Resumed              # the checkpoint the Trainer resumes from (none: a new run), its record
    init: "InitSource | None"    # --init_from parent weights (a new run, step 0)
    parent: dict | None          # run_info.json "parent" (from init, or kept when resuming one)
    shape: ModelShape
    tokens_per_step: int
    world: int
    corpus_time: dict = field(default_factory=dict)  # cutoff and years (run_info.json "corpus_time")

    @property
    def resumes_continued_run(self) -> bool:
        """Resuming a run that was itself started with --init_from: its checkpoint holds the
        weights (and the shape), not the preset."""
        return self.resume.checkpoint is not None and bool(self.resume.info.get("parent"))


def load_tokenizer(tok_dir: Path, vocab_size: int | None = None):
    """The trained tokenizer, or an error naming the command that makes it (or, for a damaged
    one, the file and the rebuild: :func:`londonlm.tokens.load_tokenizer`)."""
    tokenizer = load_project_tokenizer(tok_dir)
    require_whole_save(tok_dir)  # (after its files read: a damaged one is named as such)
    if vocab_size and vocab_size != len(tokenizer):
        raise TrainingError(f"--vocab_size {vocab_size} differs from the tokenizer's "
                            f"{len(tokenizer)}; retrain the tokenizer with --vocab_size "
                            f"{vocab_size} or drop the flag")
    return tokenizer


# --------------------------------------------------------------------------- --init_from

@dataclass
class InitSource:
    """The weights a continued pre-training run starts from (resolved before any data work)."""
    path: Path
    spec: str
    config: object
    tokenizer_problem: str | None   # set: the weights' token ids differ from the tokenizer's
    note: str | None

    def follow(self, old_dir: Path, new_dir: Path) -> None:
        """The parent was inside a run that --fresh just moved from old_dir to new_dir."""
        try:
            rel = self.path.resolve().relative_to(old_dir.resolve())
        except ValueError:
            return
        if (new_dir / rel).exists():
            self.path = new_dir / rel


def _runs_with_weights(layout: Layout) -> list[str]:
    root = layout.checkpoints_dir
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and (RunLayout(p).final.is_dir() or RunLayout(p).checkpoints()))


def find_parent(spec: str, run: RunLayout, layout: Layout) -> Path:
    """A model folder path, ``RUN`` / ``RUN/final|best|latest|checkpoint-N`` under the runs
    folder, or ``final``/``best``/``checkpoint-N`` of this run."""
    try:
        if not user_path(spec).exists() and "/" not in spec and (run.dir / spec).is_dir():
            return run.resolve(spec)
        return layout.resolve_model(spec, run)
    except ModelNotFound as e:
        raise TrainingError(f"--init_from {spec!r}: {e}. Give a model folder, a run name, or "
                            f"RUN/final|best|latest|checkpoint-N; runs with weights: "
                            f"{', '.join(_runs_with_weights(layout)) or 'none'}") from None


def _tokenizer_problem(src: Path, cfg, tokenizer, tok_dir: Path) -> tuple[str | None, str | None]:
    """(why the parent's token ids differ from the tokenizer's, a note when unchecked)."""
    theirs, mine = tokenizer_identity(src), tokenizer_identity(tok_dir)
    info = model_run_info(src)
    problem = note = None
    if theirs is None:
        if info.get("tokenizer_sha256") and info["tokenizer_sha256"] != tokenizer_fingerprint(tok_dir):
            problem = (f"it was trained with tokenizer {info.get('tokenizer_dir')} "
                       f"(sha256 {info['tokenizer_sha256'][:12]}), not {tok_dir}")
        elif not info:
            note = "no tokenizer saved with the weights: only the vocabulary size was checked"
    elif mine is None or not same_tokenizer(theirs, mine):
        n_theirs = len(theirs["vocab"] or {}) + len(theirs["added"] or [])
        problem = (f"its tokenizer (saved with the weights, ~{n_theirs} entries) differs from "
                   f"{tok_dir} ({len(tokenizer)} tokens): token ids would not mean the same")
    if problem is None and cfg.vocab_size < len(tokenizer):
        problem = f"its vocabulary ({cfg.vocab_size}) is smaller than the tokenizer's ({len(tokenizer)})"
    eos = getattr(cfg, "eos_token_id", None)
    if problem is None and eos is not None and eos != tokenizer.eos_token_id:
        problem = f"its eos id {eos} differs from the tokenizer's {tokenizer.eos_token_id}"
    if problem and theirs is not None:
        problem += f"; to keep it, pass --tokenizer_dir {src}"
    elif problem and info.get("tokenizer_dir"):
        problem += f"; to keep it, pass --tokenizer_dir {info['tokenizer_dir']}"
    return problem, note


def resolve_init_source(spec: str, run: RunLayout, layout: Layout, tokenizer, tok_dir: Path,
                        context_length: int) -> InitSource:
    """The parent weights of ``--init_from spec``, checked: complete weights, a context at
    least ``context_length``, and whether the tokenizer matches."""
    from transformers import AutoConfig

    src = find_parent(spec, run, layout)
    problem = checkpoint_problem(src, need_training_state=False)
    if problem:
        raise TrainingError(f"--init_from {src}: cannot load weights: {problem}")
    cfg = AutoConfig.from_pretrained(str(src))
    if getattr(cfg, "n_positions", context_length) < context_length:
        raise TrainingError(f"--init_from {src}: its context ({cfg.n_positions}) is shorter than "
                            f"--max_length {context_length}; lower --max_length to at most "
                            f"{cfg.n_positions}")
    tok_problem, note = _tokenizer_problem(src, cfg, tokenizer, tok_dir)
    return InitSource(src, spec, cfg, tok_problem, note)


def parent_record(init: InitSource) -> dict:
    """The ``parent`` entry of run_info.json: where the weights came from, which run and step,
    and whether the embeddings were resized to a different tokenizer."""
    src = init.path
    info = model_run_info(src)
    resized = init.tokenizer_problem is not None  # only reached with --resize_embeddings
    return {"path": str(src.resolve()), "init_from": init.spec,
            "config_sha256": sha256_file(src / "config.json"),
            "step": model_step(src) if (src / "trainer_state.json").exists() else info.get("global_step"),
            "run_dir": info.get("run_dir"), "run_name": info.get("run_name"),
            "preset": info.get("preset"), "tokens_seen": info.get("tokens_seen"),
            "tokenizer_sha256": info.get("tokenizer_sha256"),
            "tokenizer": "resized" if resized else "same", "resized_embeddings": resized}


def _check_init_against_resume(config: TrainingConfig, init: InitSource, resume: Resumed,
                               resumed_parent: dict | None) -> None:
    """--init_from on a run with checkpoints: only the same command resuming the same run."""
    if resume.checkpoint is None:
        return
    recorded = Path(resumed_parent.get("path", "")) if resumed_parent else None
    if recorded is not None and recorded != init.path.resolve() and resumed_parent.get("init_from") == init.spec:
        # the same --init_from, which now names other weights (a run name or `latest`: the parent
        # trained on since, its final/ written): the run's weights are in its checkpoint, and the
        # stop's "run the same command again" was refused, offering only --fresh
        log(f"--init_from {init.spec} now names {init.path}; this run was continued from {recorded}, "
            f"and its weights are in {resume.checkpoint.name}")
        return
    if recorded is None or recorded != init.path.resolve():
        raise TrainingError(
            f"--init_from starts a new run but {config.run.dir} already has checkpoints "
            f"({resume.checkpoint.name})" + (f" of a run continued from {resumed_parent['path']}"
                                             if resumed_parent else "")
            + "; pass --fresh or a new --run_name")
    log(f"resuming the run continued from {init.path}; its weights are in {resume.checkpoint.name}")


def _shape_from_parent(config: TrainingConfig, init: InitSource, tokenizer) -> ModelShape:
    """A continued run's shape is its parent's; shape flags that disagree are refused."""
    cfg = init.config
    parent_shape = {"n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd}
    clash = {k: v for k, v in config.model.shape_overrides.items()
             if k in parent_shape and v != parent_shape[k]}
    if clash:
        raise TrainingError(
            f"--init_from {init.path}: the shape comes from the parent weights "
            f"({', '.join(f'{k}={v}' for k, v in parent_shape.items())}); drop "
            f"{', '.join(f'--{k} {v}' for k, v in clash.items())}")
    if init.tokenizer_problem and not config.model.resize_embeddings:
        raise TrainingError(
            f"--init_from {init.path}: {init.tokenizer_problem}. Or pass --resize_embeddings "
            f"to resize the embeddings to this tokenizer (rows of re-numbered tokens start "
            f"out meaningless)")
    rows = len(tokenizer) if init.tokenizer_problem else cfg.vocab_size
    return ModelShape(cfg.n_layer, cfg.n_head, cfg.n_embd, config.model.context_length, rows)


def validated(shape: ModelShape) -> ModelShape:
    try:
        shape.validate()
    except ValueError as e:
        raise TrainingError(str(e)) from None
    return shape


# --------------------------------------------------------------------------- the plan

def _log_plan(plan: TrainingPlan, config: TrainingConfig) -> None:
    s = plan.shape
    log(f"model: {s.n_layer} layers x {s.n_embd} wide, {s.n_head} heads, context "
        f"{config.model.context_length}, vocab {len(plan.tokenizer)} (embedding rows {s.vocab_size}): "
        f"{s.n_params / 1e6:.2f}M parameters" + (f"; weights from {plan.init.path}" if plan.init else ""))
    if plan.init and plan.init.note:
        log(f"warning: --init_from {plan.init.path}: {plan.init.note}")


def _saved(checkpoint: Path | None, key: str) -> int | None:
    """A positive whole number from a resumed checkpoint's config.json (None: none there)."""
    if checkpoint is None:
        return None
    value = record_field(read_json_object(Path(checkpoint) / "config.json"), key, kind=int)
    return value if value is not None and value > 0 else None


def _resumed_layers(m, resume: Resumed, continued: bool) -> tuple[int, int, int]:
    """(layers, heads, width) of a resume without --init_from: the preset's and the shape flags',
    but a continued run's checkpoint's own when no shape flag is given. Its shape is its parent's,
    and `resume_training.sh` (which names no --init_from) was refused as "another shape:
    --n_layer 2 (trained with 3)" for a parent of another shape than the preset."""
    layers = (m.n_layer, m.n_head, m.n_embd)
    if not continued or m.shape_overrides:
        return layers
    saved = tuple(_saved(resume.checkpoint, k) for k in ("n_layer", "n_head", "n_embd"))
    return saved if all(saved) else layers


def _parent_and_shape(config: TrainingConfig, tokenizer, resume: Resumed):
    """(the --init_from parent, the parent record, the model's shape)."""
    m = config.model
    resumed_parent = resume.info.get("parent")  # resuming a continued run: shape is the checkpoint's
    if not m.init_from:
        # the embedding rows the checkpoint saved: the tokenizer's size, or more for one saved before
        # the vocabulary padding was cut off on saving (then all its rows are the model's own)
        rows = _saved(resume.checkpoint, "vocab_size") or len(tokenizer)
        shape = ModelShape(*_resumed_layers(m, resume, bool(resumed_parent)), m.context_length, rows)
        return None, resumed_parent, shape
    init = resolve_init_source(m.init_from, config.run, config.output.layout, tokenizer,
                               config.data.tokenizer_dir, m.context_length)
    _check_init_against_resume(config, init, resume, resumed_parent)
    return init, resumed_parent or parent_record(init), _shape_from_parent(config, init, tokenizer)


# what transformers gives a tokenizer whose folder states no model_max_length
UNSTATED = int(1e29)


def state_model_context(tokenizer, positions: int, tok_dir) -> None:
    """The plan's tokenizer, the one saved with the model (each checkpoint's, final/'s), states
    the model's positions as its ``model_max_length``. GPT-2's positions come from --max_length
    (a continued run's from its parent), which may
    differ from the tokenizer folder's maximum (the tokenizer stage's context): final/'s
    tokenizer then said 64 beside a model of 128 positions, and ``truncation=True`` cut every
    input to half what the model reads (with a false "longer than the maximum" warning below
    that); or it said 1024 beside 512 positions, letting through inputs the model fails on.
    The folder's own tokenizer is left as it is; the difference is said."""
    stated = tokenizer.model_max_length
    if stated == positions:
        return
    log(f"note: the model has {positions} positions and the tokenizer in {tok_dir} states "
        + (f"model_max_length {stated}" if stated < UNSTATED else "no model_max_length")
        + f"; the tokenizer saved with the model (checkpoints, final/) states {positions}")
    tokenizer.model_max_length = positions


def check_run_folder(config: TrainingConfig) -> None:
    """The run folder (--output_dir) is no other artifact's (:func:`~londonlm.core.layout.
    refuse_foreign_run_folder`): not the tokenizer's or the corpus's, nor inside them, nor a
    model's own folder, nor inside another run's own parts or a model's folder. Its checkpoints,
    final/, token cache and run_info.json went there among that artifact's files, which a later
    --fresh or publish then carried, or were deleted with it. Only reads: called before the
    run's lock makes the folder."""
    refuse_foreign_run_folder("--output_dir", config.run.dir, "training run",
                              {"the tokenizer folder": config.data.tokenizer_dir,
                               "the corpus folder": config.data.processed_dir})


def plan_run(config: TrainingConfig) -> TrainingPlan:
    """Every check before any work, in one pass, reading only: the tokenizer, the checkpoint
    to resume (agreed by every rank), the parent weights and the shape, the time lock, and
    what the resumed run must keep (:func:`.resume.check_resume`). Call it holding the run's
    lock (:func:`.runlock.run_lock`), after :func:`check_run_folder`."""
    data = config.data
    tokenizer = load_tokenizer(data.tokenizer_dir, config.model.vocab_size)
    resume = resumed(config.run, config.control.resume_from, config.control.fresh)
    same_on_all_ranks(checkpoint_step(resume.checkpoint) if resume.checkpoint else -1,
                      "the checkpoint to resume from")
    init, parent, shape = _parent_and_shape(config, tokenizer, resume)
    check_shape(resume, shape)
    # the positions the saved model reads: a continued run keeps its parent's whatever --max_length
    # (resumed without --init_from: its checkpoint's, which are its parent's)
    positions = init.config.n_positions if init else (
        parent and _saved(resume.checkpoint, "n_positions")) or shape.n_positions
    state_model_context(tokenizer, positions, data.tokenizer_dir)
    corpus_time = time_lock(config, tokenizer, init.path if init else None)
    era = data.era_tokens if data.era_tokens is not None else bool(era_tokens_of(tokenizer))
    check_resume(resume, tok_dir=data.tokenizer_dir, optimizer=config.optim.optimizer,
                 cache_dir=config.run.cache_dir, processed_dir=data.processed_dir,
                 context_length=config.model.context_length, era_tokens=era, cutoff=corpus_time["cutoff_year"])
    world = world_size()
    tokens_per_step = config.sequences_per_step * world * config.model.context_length
    plan = TrainingPlan(tokenizer, resume, init, parent, validated(shape), tokens_per_step, world, corpus_time)
    _log_plan(plan, config)
    return plan


def start_fresh(config: TrainingConfig, plan: TrainingPlan) -> None:
    """--fresh: move the old run aside (rank 0), following a parent that lived inside it. A
    resume from before the run's last checkpoint moves what came after it aside
    (:func:`.resume.move_later_aside`). Both after the plan's checks: a run they refuse moves nothing."""
    if not is_main_process():
        return
    later = move_later_aside(config.run, plan.resume.checkpoint)
    if later:
        log(f"resuming {plan.resume.checkpoint.name}: what the run saved after it (later checkpoints, "
            f"their final/ and record) moved to {later}")
    if not config.control.fresh:
        return
    moved = move_run_aside(config.run)
    if moved:
        log(f"--fresh: previous run moved to {moved}")
        if plan.init is not None:
            plan.init.follow(config.run.dir, moved)
