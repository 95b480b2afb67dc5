"""Where every artifact lives: the one module that spells folder and file names.

``Layout`` covers the project root (data, tokenizers, runs); ``RunLayout`` one training run
(``checkpoint-N/``, ``final/``, ``best/``, ``run_info.json``, the token cache, evaluation and
Hub staging folders). Both are plain values: they compute paths and never create anything.
A user's model spec (``final``, ``best``, ``latest``, ``checkpoint-N``, ``RUN``,
``RUN/checkpoint-N`` or a folder) resolves here, with the checks that tell a usable model
folder from a half-written one, so serving, evaluation and publishing never import training.

``config.py`` builds a ``Layout`` from its values; scripts pass it (or a ``RunLayout``) in.
"""
from __future__ import annotations

import datetime
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .checkpoints import (BEST, RUN_INFO, best_checkpoint, best_info, checkpoint_name, checkpoint_problem,
                          checkpoint_step, earlier_run, latest_valid_checkpoint, list_checkpoints, weight_files)
from .artifacts import read_json_object, record_field, refuse_foreign_folder, refuse_output_over_inputs
from .cli import user_path
from .errors import LondonLMError, UsageError

# Names inside a run folder.
FINAL = "final"                      # save_pretrained folder of the finished run
LATEST = "latest"                    # a model spec: the run's latest valid checkpoint
CACHE = "pretokenized_data"          # token cache (train.bin, val.bin, metadata.json)
EVALUATION = "evaluation"            # evaluation stage outputs
HUB_STAGE = "hub_stage"              # publishing's staging folder
GGUF = "gguf"                        # llama.cpp exports (f16, q8_0)
TENSORBOARD = "runs"                 # the Trainer's TensorBoard logs
SIDECAR = "sidecar.json"             # every stage's record of its inputs, written last
CUTOFF_SUFFIX = "-to"                # tiny-to1750, processed-to1750: the cutoff in the name
PROFILE = "profile"                  # --profile_steps output in a run folder
LEAKAGE = "leakage.json"             # the leakage probes' result, in a run's evaluation folder
TRAINING_CONFIG = "training_config.json"  # the configuration tree a run trained with
PIPELINE_SUMMARY = "pipeline_summary.json"  # run_pipeline.py's record of the run's model and figures

ROOT_ENV = "LONDONLM_ROOT"


class RootNotAFolder(LondonLMError, NotADirectoryError):
    """The project root (--root, $LONDONLM_ROOT) is a file, or lies under one."""


class ModelNotFound(LondonLMError, FileNotFoundError):
    """A model spec names nothing usable; the message lists what exists."""


def usable_model(path: Path) -> Path:
    """``path``, unless it is a model folder (it has a config.json) whose config or weights
    cannot be read, or a file: then ModelNotFound says what is wrong, in one line, before any
    work (a file was reported as an output that could not be made beside it)."""
    if path.exists() and not path.is_dir():
        raise ModelNotFound(f"the model at {path} cannot be loaded: it is a file, not a model folder "
                            f"(a save_pretrained folder: config.json, weights, tokenizer.json)")
    if path.is_dir() and (path / "config.json").exists():
        problem = checkpoint_problem(path, need_training_state=False)
        if problem:
            raise ModelNotFound(f"the model at {path} cannot be loaded: {problem}")
    return path


def refuse_foreign_run_folder(flag: str, run_dir: str | os.PathLike, stage: str,
                              reads: Mapping[str, str | os.PathLike]) -> None:
    """One line when a training run's folder is another artifact's: a folder another stage's
    sidecar names (a tokenizer, a corpus, a dataset), one inside a folder the run reads
    (``reads``: what it is -> path), or a model's own folder (a config.json). A run writes
    checkpoints, final/, run_info.json and, for a staged run, its sidecar there: among that
    artifact's files, replacing its sidecar. Nor inside another run's own parts or a model's
    folder (:func:`enclosing_artifact`), which go whole with the run in them. Only reads."""
    run_dir = Path(run_dir)
    refuse_foreign_folder(run_dir / SIDECAR, stage, flag)
    refuse_output_over_inputs(flag, run_dir, reads)
    if (run_dir / "config.json").is_file():
        raise UsageError(f"{flag} {os.fspath(run_dir)} is a model's folder (it has a config.json): a run's "
                         f"checkpoints would go among its files; name a new folder (or train from those "
                         f"weights with --init_from {os.fspath(run_dir)}); nothing was written")
    found = enclosing_artifact(run_dir)
    if found:
        raise UsageError(f"{flag} {os.fspath(run_dir)} is or lies inside {found}, which is replaced, rotated "
                         f"away or moved aside whole (with this run in it), or whose files a run's would join; "
                         f"name a folder outside it; nothing was written")
    copy = next((p for p in _subfolders(Path(run_dir)) if _ROTATED.match(p.name)), None)
    if copy is not None:
        raise UsageError(f"{flag} {os.fspath(run_dir)} holds {copy.name}/, which is no checkpoint of the run but "
                         f"which the Trainer's checkpoint rotation counts as one (its name starts 'checkpoint-' "
                         f"and a step) and deletes; rename it (keep-{copy.name}) or move it out of the run "
                         f"folder; nothing was written")
    held = held_artifact(run_dir, reads)
    if held:
        raise UsageError(f"{flag} {os.fspath(run_dir)} holds {held}: the run's checkpoint-N/, final/, records "
                         f"and logs would go among them, and its --fresh, --overwrite or checkpoint rotation "
                         f"would move or delete by name what is not the run's; name a folder of the run's own "
                         f"(a new or empty one); nothing was written")


def enclosing_artifact(run_dir: str | os.PathLike) -> str | None:
    """What other artifact ``run_dir`` lies inside, in words: a training run (its own part, its
    final/, best/, a checkpoint-N/, its evaluation: what that run replaces whole, deletes as its
    checkpoints rotate, or moves on --fresh; or anywhere else in it, its token cache too) or a
    model's folder (config.json and weights).
    A run trained in another's final/ or checkpoint-2/ (exit 0) was deleted with it at that
    run's next save. Symlinks and '..' are resolved first."""
    child = Path(os.path.realpath(run_dir))
    for folder in child.parents:
        if (folder / "config.json").is_file() and weight_files(folder):
            return f"the model folder {folder}"
        if earlier_run(folder) and _run_part(RunLayout(folder), child):  # goes whole with it
            return f"{child} of the training run {folder}"
        if (folder / RUN_INFO).is_file() or list_checkpoints(folder) or (folder / CACHE / "metadata.json").is_file():
            # anywhere else in a run (its token cache, its top) a run's files join another's, which
            # then holds a run (:func:`held_artifact`); a final/ or best/ alone does not make one:
            # in the runs folder, that is a run so named
            return f"the training run {folder}"
        child = folder
    return None


# what a run folder holds of its own, beside checkpoint-N/: never another artifact in it
RUN_PARTS = frozenset({FINAL, BEST, RUN_INFO, SIDECAR, TENSORBOARD, EVALUATION, HUB_STAGE, GGUF, TRAINING_CONFIG,
                       PIPELINE_SUMMARY, CACHE, PROFILE})


def held_artifact(run_dir: str | os.PathLike, reads: Mapping[str, str | os.PathLike]) -> str | None:
    """What other artifact ``run_dir`` holds, in words; None for a new or empty folder or a run's
    own. A run's files go among what is there, and its --fresh moves aside (to a sibling of the
    folder), its rotation deletes and its save replaces whatever bears a run part's name
    (final/, best/, checkpoint-N/, runs/, evaluation/): in the runs folder itself, another run
    so named. Held: a folder the run reads (the project root and the corpus's parent hold the
    corpus and the tokenizer), a project's own folders, or, one or two levels down (past the
    run's own parts), another training run or a stage's outputs (a sidecar.json)."""
    real = Path(os.path.realpath(run_dir))
    if not real.is_dir():
        return None
    for what, path in reads.items():
        inner = Path(os.path.realpath(path))
        # (a tokenizer read from the run's own final/ or checkpoint is the run's, not another's)
        if real in inner.parents and not _own_part_name(inner.relative_to(real).parts[0]):
            return f"{what} {os.fspath(path)}"
    project = Layout(real)
    for folder in (project.models_dir, project.data_dir):
        if folder.is_dir():
            return f"a project's own folders ({folder}: it is a project root)"
    for child in _subfolders(real, skip=RUN_PARTS):
        for folder in (child, *_subfolders(child)):
            if earlier_run(folder):
                return f"the training run {folder}"
            if (folder / SIDECAR).is_file():
                return f"a stage's outputs {folder} (it has a sidecar.json)"
    return None


# what transformers' rotation (trainer_utils.sort_checkpoints: glob 'checkpoint-*', then a step
# read by re.match) takes for a checkpoint: a user's copy 'checkpoint-2-keep' or 'checkpoint-2.bak'
# is rotated away as step 2 (``_subfolders`` already leaves the run's own checkpoint-N/ out)
_ROTATED = re.compile(r"checkpoint-[0-9]+")


def _own_part_name(name: str) -> bool:
    return name in RUN_PARTS or checkpoint_step(name) is not None


def _subfolders(folder: Path, skip=frozenset()) -> list[Path]:
    """The folders directly in ``folder`` (its hidden ones, a save's temporary folders, and those
    named in ``skip`` left out); none where it cannot be listed."""
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in skip and not p.name.startswith(".")
                      and checkpoint_step(p) is None)
    except OSError:
        return []


def _run_part(run: "RunLayout", path: Path) -> bool:
    """Whether ``path`` (there yet or not) is one of the files ``run`` makes and replaces whole."""
    return (path in (run.final, run.best, run.evaluation_dir, run.hub_stage) or checkpoint_step(path) is not None
            or path in run.movable_on_fresh())


def artifact_of(folder: str | os.PathLike, own_stage: str | None = None) -> str | None:
    """What other artifact ``folder`` is, in words: a model's (a config.json), a stage's outputs
    (a sidecar.json; not ``own_stage``'s), a training run's (its record, final/ or
    checkpoints), a token cache's (its train.bin or val.bin); None for any other."""
    folder = Path(os.path.realpath(folder))
    side = folder / SIDECAR
    return ("a model's folder (it has a config.json)" if (folder / "config.json").is_file()
            else "a stage's output folder (it has a sidecar.json)"
            if side.is_file() and (own_stage is None or record_field(read_json_object(side), "stage") != own_stage)
            else "a training run's folder" if earlier_run(folder)
            # (a token cache has no sidecar; a file written among its splits was taken for damage)
            else "a token cache's folder (it has train.bin or val.bin)"
            if (folder / "train.bin").is_file() or (folder / "val.bin").is_file() else None)


def refuse_file_in_an_artifact(flag: str, path: str | os.PathLike) -> None:
    """One line when a file a command writes (a report, a filtered JSONL) would go into another
    artifact's folder (:func:`artifact_of`). There it replaced or joined the files that artifact
    is made of (``--output final/config.json`` replaced a model's config with a token count,
    exit 0)."""
    what = artifact_of(Path(path).absolute().parent)
    if what:
        raise UsageError(f"{flag} {os.fspath(path)} lies in {what}, whose files other commands read: "
                         f"name a file elsewhere; nothing was written")


def refuse_artifacts_folder(flag: str, folder: str | os.PathLike, own_stage: str | None = None) -> None:
    """One line when an output folder (an evaluation's, a sweep's, a comparison's, a GGUF
    export's: ``own_stage``, whose own earlier outputs are let be) is another artifact's own
    folder (:func:`artifact_of`): its files went among that artifact's, where a publish carried
    them, a rebuild of the artifact deleted them, or its sidecar made the folder its own. A
    folder inside is fine."""
    what = artifact_of(folder, own_stage)
    if what:
        raise UsageError(f"{flag} {os.fspath(folder)} is {what}: this command's files would go among its "
                         f"files; name a folder inside or beside it; nothing was written")


# --------------------------------------------------------------------------- one run

@dataclass(frozen=True)
class RunLayout:
    """The files of one training run, ``<checkpoints>/<name>/``."""

    dir: Path

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def final(self) -> Path:
        return self.dir / FINAL

    @property
    def best(self) -> Path:
        return self.dir / BEST

    @property
    def best_tmp(self) -> Path:
        return self.dir / f".{BEST}.tmp"

    @property
    def run_info(self) -> Path:
        return self.dir / RUN_INFO

    @property
    def cache_dir(self) -> Path:
        return self.dir / CACHE

    @property
    def evaluation_dir(self) -> Path:
        return self.dir / EVALUATION

    @property
    def hub_stage(self) -> Path:
        return self.dir / HUB_STAGE

    @property
    def profile(self) -> Path:
        return self.dir / PROFILE

    @property
    def training_config(self) -> Path:
        return self.dir / TRAINING_CONFIG

    @property
    def leakage(self) -> Path:
        return self.evaluation_dir / LEAKAGE

    def checkpoint(self, step: int) -> Path:
        return self.dir / checkpoint_name(step)

    def checkpoints(self) -> list[Path]:
        return list_checkpoints(self.dir)

    def latest_valid_checkpoint(self, warn=print) -> Path | None:
        return latest_valid_checkpoint(self.dir, warn=warn)

    def best_info(self) -> dict | None:
        return best_info(self.dir)

    def read_run_info(self) -> dict:
        """run_info.json as a dict ({} when missing or unreadable)."""
        return read_json_object(self.run_info)

    def has_final(self) -> bool:
        """Whether final/ holds a whole model (its config and weights that read): one cut short
        or lost is no finished run's model, to be skipped as current."""
        return checkpoint_problem(self.final, need_training_state=False) is None

    def contains(self, model_dir: str | os.PathLike) -> bool:
        """Whether ``model_dir`` is a folder directly inside this run."""
        return Path(model_dir).resolve().parent == self.dir.resolve()

    def evaluation_dir_for(self, model_dir: str | os.PathLike) -> Path:
        """Where the evaluation of ``model_dir`` is written: ``evaluation/`` for final/,
        ``evaluation/<name>/`` for any other folder of this run (each checkpoint's report
        apart), ``<model>/evaluation/`` for a model outside the run."""
        return self._per_model(model_dir, EVALUATION)

    def gguf_dir_for(self, model_dir: str | os.PathLike) -> Path:
        """Where GGUF exports of ``model_dir`` go, by the same rule as its evaluation."""
        return self._per_model(model_dir, GGUF)

    def _per_model(self, model_dir: str | os.PathLike, folder: str) -> Path:
        model_dir = Path(model_dir)
        if self.contains(model_dir):
            return self.dir / folder if model_dir.name == FINAL else self.dir / folder / model_dir.name
        return model_dir / folder

    def movable_on_fresh(self) -> list[Path]:
        """What ``--fresh`` moves aside: everything the old model produced (checkpoints,
        final/, best/, run_info.json, logs, its evaluation and pipeline summary, exports and
        staged upload); the token cache stays, since it depends on the data, not on the run."""
        if not self.dir.is_dir():
            return []
        # the pipeline's summary too: left behind, it would describe a model no longer there
        names = {FINAL, BEST, RUN_INFO, SIDECAR, TENSORBOARD, EVALUATION, HUB_STAGE, GGUF, TRAINING_CONFIG,
                 PIPELINE_SUMMARY}
        return sorted(p for p in self.dir.iterdir()
                      if p.name in names or checkpoint_step(p) is not None)

    def previous_dir(self, stamp: str | None = None) -> Path:
        """The dated sibling folder an old run is moved to by ``--fresh``."""
        stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
        return self.dir.parent / f"{self.name}.previous-{stamp}"

    def available_models(self) -> list[str]:
        # (a damaged checkpoint marked: "latest" passes over it, so naming it bare misled)
        names = [p.name + ("" if checkpoint_problem(p) is None else " (invalid)") for p in self.checkpoints()]
        return names + [n for n in (FINAL, BEST) if (self.dir / n).is_dir()]

    def resolve(self, spec: str | None) -> Path:
        """``final`` (default: final/, else the latest valid checkpoint), ``latest``,
        ``best`` or ``checkpoint-N`` of this run. Raises ModelNotFound naming what exists."""
        if not self.dir.is_dir():
            raise ModelNotFound(
                f"model {spec or FINAL!r} not found: run folder {self.dir} does not exist; train "
                f"one with `python 04_training/train_model_slm.py` or pass a model folder path")
        name = spec or FINAL
        found: Path | None = None
        if name == FINAL and self.final.is_dir():
            found = self.final
        elif name in (LATEST, FINAL):
            found = self.latest_valid_checkpoint(warn=lambda *_: None)
        elif name == BEST:
            found = best_checkpoint(self.dir)
        elif checkpoint_step(name) is not None and (self.dir / name).is_dir():
            found = self.dir / name
        if found is None:
            raise ModelNotFound(f"model {name!r} not found in {self.dir}; available: "
                                f"{', '.join(self.available_models()) or 'none'}")
        return found


def model_run_info(model_dir: str | os.PathLike) -> dict:
    """run_info.json of the run a model folder belongs to ({} when none): a run folder's own,
    else that of the folder holding ``final/``, ``best/`` or ``checkpoint-N/``."""
    model_dir = Path(model_dir)
    return RunLayout(model_dir).read_run_info() or RunLayout(model_dir.parent).read_run_info()


def _losses(ck: Path) -> tuple[str, str]:
    """Last logged training and validation loss of a checkpoint, formatted ('-' if none)."""
    logs = record_field(read_json_object(ck / "trainer_state.json"), "log_history", kind=list) or []

    def last(key: str) -> str:  # entries of another shape or kind (a hand-edited file) say nothing
        values = [h[key] for h in logs if isinstance(h, dict) and type(h.get(key)) in (int, float)]
        return f"{values[-1]:.4f}" if values else "-"
    return last("loss"), last("eval_loss")


def describe_checkpoints(run_dir: str | Path) -> str:
    """One line per checkpoint: name, step, last logged loss, validation loss, validity;
    the best-by-validation-loss one is marked, and best/ and final/ are named."""
    run = RunLayout(Path(run_dir))
    best = run.best_info()
    lines = []
    for ck in run.checkpoints():
        problem = checkpoint_problem(ck)
        loss, eval_loss = _losses(ck)
        when = datetime.datetime.fromtimestamp(ck.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        status = "ok" if problem is None else f"INVALID: {problem}"
        # (a best checkpoint damaged since is not offered as the best: "INVALID" and "<- best" misled)
        mark = "  <- best" if best and best.get("checkpoint") == ck.name and problem is None else ""
        lines.append(f"{ck.name:<18} step {checkpoint_step(ck):>7}  loss {loss:>8}  "
                     f"val {eval_loss:>8}  {when}  {status}{mark}")
    if best is not None:
        ev = best.get("eval_loss")
        where = f"{BEST}/ (copy)" if Path(best["path"]) == run.best else best["checkpoint"]
        lines.append(f"best: {best.get('checkpoint')} (step {best.get('step')}, val "
                     f"{ev:.4f}) -> {where}" if ev is not None else f"best: {best.get('checkpoint')}")
    if run.final.is_dir():
        lines.append(f"final: {run.final.name}/")
    return "\n".join(lines) if lines else "(no checkpoints)"


# --------------------------------------------------------------------------- the project

def _check_root(root: Path, origin: str) -> None:
    """A project root must be a folder, or not exist yet (the stages make it); a file there or
    above it would fail later, deep in some stage, with NotADirectoryError."""
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.is_dir():
        return
    where = "is a file" if probe == root else f"lies under {probe}, which is a file"
    fix = (f"point {ROOT_ENV} at a project folder (or unset it to use the repository)"
           if origin.startswith(ROOT_ENV) else "pass a folder")
    raise RootNotAFolder(f"{origin} is not a folder: it {where}; {fix}")


# the longest file or folder name (bytes) of the file systems a project lives on (ext4, XFS,
# Btrfs, tmpfs, APFS); a longer one was an OSError (ENAMETOOLONG) traceback where it was made
NAME_MAX = 255


def is_plain_name(name: str) -> bool:
    """Whether ``name`` is one file or folder name: '', '.', '..' or a path would put what is
    named after it in the folder above, or anywhere (``--name ../../x``); one longer than
    :data:`NAME_MAX` bytes cannot be made."""
    return bool(name) and name.strip() not in (".", "..") and "/" not in name and os.sep not in name \
        and "\0" not in name and len(name.encode("utf-8", "surrogatepass")) <= NAME_MAX


def plain_name(name: str, what: str) -> str:
    """``name`` when it is one folder name (:func:`is_plain_name`); another place is what --root
    and --output_dir are for."""
    if not is_plain_name(name):
        raise UsageError(f"{what} {name!r} is not a folder name (no '/', not empty, at most {NAME_MAX} bytes); "
                         f"to write elsewhere, give --root (or --output_dir)")
    return name


@dataclass(frozen=True)
class Layout:
    """Every artifact's place under one root (the repository, ``$LONDONLM_ROOT`` or --root)."""

    root: Path
    registry_file: Path | None = None   # the corpus registry (data_sources.yaml) shipped with the repo

    @classmethod
    def at(cls, root: str | os.PathLike | None = None, *, default_root: str | os.PathLike,
           registry_file: str | os.PathLike | None = None) -> "Layout":
        """A layout at an explicit root, else ``$LONDONLM_ROOT``, else ``default_root``. A root
        that is (or lies under) a file is refused here, naming where it came from, before any
        stage makes a folder under it; so is an empty one (``--root ""``, a variable that was not
        set), which would otherwise mean the default: the repository's own folders."""
        if root is not None and not str(root).strip():
            raise UsageError("--root is empty: give the project folder (or leave --root out for "
                             f"${ROOT_ENV} or the repository)")
        if root:
            chosen, origin = root, f"--root {root}"
        elif os.environ.get(ROOT_ENV):
            chosen, origin = os.environ[ROOT_ENV], f"{ROOT_ENV}={os.environ[ROOT_ENV]}"
        else:
            chosen, origin = default_root, f"the project root {default_root}"
        path = user_path(chosen).resolve()
        _check_root(path, origin)
        return cls(path, Path(registry_file) if registry_file else None)

    @property
    def data_dir(self) -> Path:
        return self.root / "data" / "london_historical"

    @property
    def downloads_dir(self) -> Path:
        return self.data_dir / "downloads"

    @property
    def processed_dir(self) -> Path:
        return self.data_dir / "processed"

    @property
    def metadata_dir(self) -> Path:
        return self.data_dir / "metadata"

    @property
    def models_dir(self) -> Path:
        return self.root / "09_models"

    @property
    def tokenizers_dir(self) -> Path:
        return self.models_dir / "tokenizers"

    @property
    def checkpoints_dir(self) -> Path:
        return self.models_dir / "checkpoints"

    @property
    def training_log(self) -> Path:
        return self.root / "04_training" / "model_training.log"

    def tokenizer_dir(self, name: str, cutoff_year: int | None = None) -> Path:
        """The tokenizer ``name``; with a cutoff, the one trained on that cutoff's corpus view
        (a tokenizer trained on later text would carry its words into a time-locked model)."""
        plain_name(name, "tokenizer name")
        return self.tokenizers_dir / (name if cutoff_year is None else f"{name}{CUTOFF_SUFFIX}{cutoff_year}")

    def corpus_of(self, model_dir: str | os.PathLike) -> Path:
        """The corpus a model was trained on: its run's recorded one when it still exists (a
        time-locked run reads a cutoff view), else the project's processed corpus."""
        recorded = model_run_info(model_dir).get("processed_dir")
        if recorded and (Path(recorded) / "manifest.jsonl").is_file():
            return Path(recorded)
        return self.processed_dir

    def cutoff_dir(self, cutoff_year: int) -> Path:
        """The view of the processed corpus that keeps only documents dated up to the cutoff."""
        return self.data_dir / f"processed{CUTOFF_SUFFIX}{cutoff_year}"

    @staticmethod
    def cutoff_run_name(base: str, cutoff_year: int | None) -> str:
        """``tiny`` -> ``tiny-to1750``: one run per cutoff, never one run seeded across two."""
        return base if cutoff_year is None else f"{base}{CUTOFF_SUFFIX}{cutoff_year}"

    def run(self, name: str) -> RunLayout:
        plain_name(name, "run name")
        return RunLayout(self.checkpoints_dir / name)

    def run_dir(self, name: str) -> Path:
        return self.run(name).dir

    def runs(self) -> list[RunLayout]:
        """Every run folder that has a run_info.json, by name."""
        if not self.checkpoints_dir.is_dir():
            return []
        return [RunLayout(p) for p in sorted(self.checkpoints_dir.iterdir())
                if (p / RUN_INFO).is_file()]

    def resolve_model(self, spec: str | None, run: str | RunLayout) -> Path:
        """A user's model spec to a model folder: an existing path; ``final``/``latest``/
        ``best``/``checkpoint-N`` of ``run``; another run's name (its final/, else latest);
        or ``RUN/checkpoint-N``. Raises ModelNotFound naming what is available, or what is
        wrong with a model folder that is there but damaged (so every stage that loads one says
        so in one line, before any work)."""
        return usable_model(self._find_model(spec, run))

    @staticmethod
    def names_run_model(spec: str | None) -> bool:
        """Whether ``spec`` picks a model of the default run (none, ``final``, ``latest``,
        ``best``, ``checkpoint-N``), not one of its own (a folder, another run,
        ``RUN/checkpoint-N``, a Hub id)."""
        return not spec or spec in (FINAL, LATEST, BEST) or (
            "/" not in spec and checkpoint_step(spec) is not None)

    def check_run_name_used(self, run_name: str | None, *specs: str | None) -> None:
        """Refuse ``--run_name`` when no model spec beside it reads that run: the run name would
        go unread, and the user would get another model than the run they named. A spec reads
        it when it names a model of the default run, names the run again (``RUN``,
        ``RUN/checkpoint-N``) or is a folder inside it."""
        if not run_name or any(self._reads_run(s, run_name) for s in specs):
            return
        named = ", ".join(str(s) for s in specs)
        raise UsageError(f"--run_name {run_name} goes unused: {named} "
                         f"{'names a model' if len(specs) == 1 else 'name models'} outside that run (a folder, "
                         f"another run or a Hub id), and --run_name picks the run of "
                         f"{FINAL}, {LATEST}, {BEST} or checkpoint-N: drop --run_name, or name one of those")

    def _reads_run(self, spec: str | None, run_name: str) -> bool:
        if self.names_run_model(spec) or spec == run_name or spec.startswith(f"{run_name}/"):
            return True
        path = user_path(spec)
        return path.exists() and self.run(run_name).contains(path)

    def _find_model(self, spec: str | None, run: str | RunLayout) -> Path:
        if spec and user_path(spec).exists():
            return user_path(spec)
        if spec and (user_path(spec).is_absolute() or spec.startswith(".")):
            raise ModelNotFound(f"model folder {spec} does not exist")
        if spec and "/" in spec:
            other, _, name = spec.partition("/")
            if other and (self.checkpoints_dir / other).is_dir():
                return self.run(other).resolve(name or None)
        elif spec and (self.checkpoints_dir / spec).is_dir():
            return self.run(spec).resolve(None)
        # the default run, only now: a spec that is a folder of its own needs none
        return (run if isinstance(run, RunLayout) else self.run(run)).resolve(spec)

    # -------------------------------------------------------------- chat fine-tuning (07_finetuning/)

    @property
    def chat_data_dir(self) -> Path:
        """The period-dialogue dataset: a ``datasets.save_to_disk`` folder that also holds its
        card (README.md), statistics, rejected exchanges and sidecar."""
        return self.data_dir / CHAT_DATA

    def chat_run_name(self, base_run: str) -> str:
        """The chat run fine-tuned from run ``base_run`` (``tiny`` -> ``tiny-chat``)."""
        return f"{base_run}{CHAT_SUFFIX}"

    def chat_run(self, base_run: str) -> RunLayout:
        return self.run(self.chat_run_name(base_run))


CHAT_DATA = "chat"                  # under data_dir: the dialogue dataset (datasets on disk)
CHAT_SUFFIX = "-chat"               # chat run name = base run name + suffix
CHAT_INFO = "chat_info.json"        # in a chat model folder: place, years, system line
CHAT_STATS = "stats.json"           # in the dialogue dataset folder: counts per file and reason
CHAT_REJECTED = "rejected.jsonl"    # in the dialogue dataset folder: each dropped exchange, why
CHAT_EVAL = "chat_eval.json"        # chat evaluation report, in the model's evaluation folder
