"""What a run recorded about the model being published: ``run_info.json``, the evaluation's
``metrics.json`` and samples, the trainer state, and the corpus summary. A model card states
these and nothing else; absolute local paths are cut to their last parts before they go public.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..core import FINAL, RunLayout, read_json, sha256_file
from ..corpus import MANIFEST, read_manifest, summarize
from ..evaluation import METRICS_FILE, SAMPLES_FILE, model_identity, stale_evaluation
from .access import PublishError
from .cards import read_samples


@dataclass
class RunFacts:
    run: RunLayout                       # the run the model folder belongs to
    run_info: dict | None
    evaluation_dir: Path                 # where the evaluation stage wrote this model's results
    metrics: dict | None
    trainer_state: dict | None
    trainer_state_source: str | None     # e.g. "checkpoint-600/trainer_state.json"
    corpus: dict | None                  # londonlm.corpus.manifest.summarize of the current manifest
    corpus_note: str
    leakage: dict | None = None          # the leakage probes on these weights, when run

    @property
    def tokenizer_fallback(self) -> Path | None:
        """The run's tokenizer, for a model folder saved without one."""
        tok = (self.run_info or {}).get("tokenizer_dir")
        return Path(tok) if tok and isinstance(tok, str) else None

    def evaluation_samples(self, limit: int = 5) -> list[dict]:
        path = self.evaluation_dir / SAMPLES_FILE
        return read_samples(path, limit) if self.metrics is not None and path.exists() else []


def gather_run_facts(model_dir: Path, run: RunLayout, processed_dir: Path | None,
                     root: Path | None = None) -> RunFacts:
    """The facts about ``model_dir``; a model folder outside ``run`` brings its own run when
    its parent folder is one (has run_info.json). An evaluation that scored other weights
    (or whose samples are not the ones it wrote) is refused, naming the command that
    re-evaluates this model (``root``: the project root to put in it)."""
    model_dir = Path(model_dir)
    if not run.contains(model_dir) and RunLayout(model_dir.parent).run_info.exists():
        run = RunLayout(model_dir.parent)
    run_info = read_json_or_none(run.run_info)
    eval_dir = run.evaluation_dir_for(model_dir)
    metrics = read_json_or_none(eval_dir / METRICS_FILE)
    problem = stale_evaluation(metrics, model_dir, eval_dir, root=root) if metrics else None
    if problem:
        raise PublishError(f"refusing to publish {model_dir}: {problem}")
    state, state_src = find_trainer_state(model_dir, run)
    corpus, note = load_corpus(processed_dir, run_info)
    return RunFacts(run=run, run_info=run_info, evaluation_dir=eval_dir, metrics=metrics,
                    trainer_state=state, trainer_state_source=state_src, corpus=corpus,
                    corpus_note=note, leakage=leakage_of(model_dir, run, metrics))


def leakage_of(model_dir: Path, run: RunLayout, metrics: dict | None) -> dict | None:
    """The leakage probes' result for these weights: the evaluation's (already checked against
    the weights), else the one the family or pipeline kept, if it scored these very weights."""
    if metrics and metrics.get("leakage"):
        return metrics["leakage"]
    kept = read_json_or_none(run.leakage) if model_dir.name == FINAL else None
    if isinstance(kept, dict) and (kept.get("model") or {}).get("weights_sha256") == \
            model_identity(model_dir)["weights_sha256"]:
        return kept.get("result")
    return None


def find_trainer_state(model_dir: Path, run: RunLayout | None) -> tuple[dict | None, str | None]:
    """The trainer state that describes ``model_dir``: its own (checkpoint-N), else the
    newest checkpoint's in the run (``final/`` is saved without one)."""
    candidates = [Path(model_dir) / "trainer_state.json"]
    if run is not None:
        candidates += [ck / "trainer_state.json" for ck in reversed(run.checkpoints())]
    for p in candidates:
        if p.exists():
            try:
                where = (p.relative_to(run.dir) if run is not None and p.is_relative_to(run.dir)
                         else Path(p.parent.name) / p.name)  # no local path in a public card
                state = read_json(p)
            except Exception:
                continue
            if isinstance(state, dict):  # a damaged one is passed over, as an unreadable one is
                return state, str(where)
    return None, None


def redact_local_paths(obj):
    """A copy of ``obj`` whose absolute-path strings keep only their last two parts
    (``/home/alice/.../tiny/final`` -> ``tiny/final``): the publisher's folder layout and
    user name stay out of a public repo; every number is unchanged."""
    if isinstance(obj, dict):
        return {k: redact_local_paths(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact_local_paths(v) for v in obj]
    if isinstance(obj, str) and re.match(r"^(/|~/|[A-Za-z]:[\\/])", obj) and "\n" not in obj:
        parts = [x for x in re.split(r"[\\/]", obj) if x and x != "~" and not x.endswith(":")]
        return "/".join(parts[-2:])
    return obj


def read_json_or_none(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        obj = read_json(path)
    except Exception as e:
        raise PublishError(f"{path} is not valid JSON ({e}); regenerate it or move it away") from None
    if not isinstance(obj, dict):  # not silently "not recorded": the card would drop what it holds
        raise PublishError(f"{path} holds a JSON {type(obj).__name__}, not an object; regenerate it or move it away")
    return obj


def read_corpus_rows(processed_dir: Path) -> list[dict]:
    try:
        return read_manifest(processed_dir)
    except Exception as e:  # CorpusError: a bad line names itself and the rebuild command
        raise PublishError(f"cannot read the corpus manifest: {e}") from None


def load_corpus(processed_dir: Path | None, run_info: dict | None) -> tuple[dict | None, str]:
    """(summary, note) of the corpus manifest; the note flags a manifest that changed since
    the run was trained."""
    if processed_dir is None or not (Path(processed_dir) / MANIFEST).exists():
        return None, ""
    rows = read_corpus_rows(Path(processed_dir))
    note = ""
    cache = (run_info or {}).get("cache")
    trained_on = cache.get("manifest_sha256") if isinstance(cache, dict) else None
    if trained_on and trained_on != sha256_file(Path(processed_dir) / MANIFEST):
        note = ("the corpus manifest changed after this model was trained; the figures below "
                "describe the current manifest, the token counts the training data.")
    return summarize(rows), note
