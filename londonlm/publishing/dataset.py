"""Publishing the corpus as a Hub dataset: ``manifest.jsonl`` + ``texts/`` + a dataset card,
staged and checked against the manifest's hashes before anything is sent, plus one
``datasets`` table per split (``data/<split>.parquet``: the texts with the manifest's columns)
so ``datasets.load_dataset(repo)`` gives train and validation with their texts."""
from __future__ import annotations

import tempfile
from pathlib import Path

from ..core import link_or_copy, sha256_file, write_text_atomic
from ..corpus import COLLECT_CMD, MANIFEST, corpus_time_facts, reading_corpus, summarize
from .access import HubTarget, PublishError
from .cards import render_dataset_card
from .cards.dataset_card import corpus_splits, split_file
from .facts import read_corpus_rows
from .publish import PublishResult
from .staging import Log, list_folder, prepare_stage_dir
from .upload import upload_to_hub
from .verify import VerificationReport

DATASET_COMMIT_MESSAGE = "Upload londonlm corpus"
# the manifest's columns in the split tables (with ``text``); ``split`` and ``path`` are implied
COLUMNS = {"id": "string", "source": "string", "source_kind": "string", "title": "string",
           "author": "string", "year": "int32", "decade": "int32", "license": "string",
           "url": "string", "sha256": "string", "chars": "int64", "words": "int64", "london": "bool"}


def _cell(value, dtype: str):
    if value is None or (dtype != "string" and isinstance(value, str)):
        return None
    return str(value) if dtype == "string" else bool(value) if dtype == "bool" else int(value)


def write_split_tables(rows: list[dict], processed_dir: Path, stage_dir: Path, splits) -> list[str]:
    """``data/<split>.parquet`` for each of ``splits``, written through ``datasets`` (its
    arrow cache in a temporary folder, never the user's): rows are streamed, not held."""
    from datasets import Dataset, Features, Value

    features = Features({**{k: Value(t) for k, t in COLUMNS.items()}, "text": Value("string")})

    def documents(split: str):
        for r in rows:
            if r.get("split") == split:
                yield {**{k: _cell(r.get(k), t) for k, t in COLUMNS.items()},
                       "text": (processed_dir / r["path"]).read_text(encoding="utf-8")}

    written = []
    with tempfile.TemporaryDirectory() as cache:
        for split in splits:
            table = Dataset.from_generator(documents, gen_kwargs={"split": split},
                                           features=features, cache_dir=cache)
            (stage_dir / split_file(split)).parent.mkdir(parents=True, exist_ok=True)
            table.to_parquet(str(stage_dir / split_file(split)))
            written.append(split_file(split))
    return written


def stage_dataset(processed_dir: Path, stage_dir: Path, repo_id: str,
                  model_repo_id: str | None = None, log: Log = print) -> tuple[dict, list[str]]:
    """Stage manifest.jsonl + texts/ + README.md; returns (corpus summary, problems) where
    problems lists texts that are missing or whose sha256 disagrees with the manifest."""
    processed_dir = Path(processed_dir)
    if not (processed_dir / MANIFEST).exists():
        raise PublishError(f"no corpus manifest at {processed_dir / MANIFEST}; run `{COLLECT_CMD}` first")
    # Held shared from the rows to the card, as every reader of a corpus holds it: a collection
    # then is refused rather than staging its new manifest beside the old rows' texts and tables,
    # and a writer that takes no lock is caught before anything is uploaded. The staged texts are
    # hard links (or copies), so the upload after it reads no more of the corpus.
    with reading_corpus(processed_dir) as unchanged:
        corpus, problems = _stage_corpus(processed_dir, stage_dir, repo_id, model_repo_id)
        unchanged()
    log(f"staged dataset: {corpus['documents']} documents -> {stage_dir}")
    return corpus, problems


def _stage_corpus(processed_dir: Path, stage_dir: Path, repo_id: str,
                  model_repo_id: str | None) -> tuple[dict, list[str]]:
    rows = read_corpus_rows(processed_dir)
    if not rows:
        raise PublishError(f"{processed_dir / MANIFEST} lists no documents")
    stage_dir = prepare_stage_dir(stage_dir)
    problems = []
    for r in rows:
        rel = str(r.get("path", ""))
        src = (processed_dir / rel).resolve()
        if not rel or ".." in Path(rel).parts or not src.is_relative_to(processed_dir.resolve()):
            problems.append(f"{r.get('id')}: unsafe path {rel!r}")
            continue
        if not src.exists():
            problems.append(f"{r.get('id')}: {rel} missing")
            continue
        if r.get("sha256") and sha256_file(src) != r["sha256"]:
            problems.append(f"{r.get('id')}: {rel} does not match its manifest sha256")
            continue
        link_or_copy(src, stage_dir / rel)
    link_or_copy(processed_dir / MANIFEST, stage_dir / MANIFEST)
    corpus = summarize(rows)
    if not problems:  # a refused corpus is not worth converting
        write_split_tables(rows, processed_dir, stage_dir, corpus_splits(corpus))
    write_text_atomic(stage_dir / "README.md", render_dataset_card(
        corpus, repo_id, model_repo_id=model_repo_id, corpus_time=corpus_time_facts(processed_dir)))
    return corpus, problems


def publish_dataset(processed_dir: Path, target: HubTarget, *, stage_dir: Path,
                    model_repo_id: str | None = None, log: Log = print) -> PublishResult:
    """Stage, check and (unless ``target.dry_run``) upload the corpus. Raises PublishError."""
    target = target.checked("--dataset_repo_id", require_repo=True)
    corpus, problems = stage_dataset(Path(processed_dir), Path(stage_dir), target.repo_id, model_repo_id, log=log)
    report = VerificationReport()
    report.check(not problems, "every manifest text present and matching its sha256",
                 "; ".join(problems[:10]) + (f" (+{len(problems) - 10} more)" if len(problems) > 10 else ""))
    report.facts = {"documents": corpus["documents"]}
    result = PublishResult(stage_dir=Path(stage_dir), files=list_folder(Path(stage_dir)),
                           report=report, repo_id=target.repo_id, dry_run=target.dry_run)
    if not report.ok:
        raise PublishError("refusing to publish the dataset:\n  - " + "\n  - ".join(report.failures)
                           + "\nrebuild the corpus with the data collection stage")
    if not target.dry_run:
        result.upload = upload_to_hub(Path(stage_dir), target, repo_type="dataset", log=log)
    return result
