"""Publishing the corpus as a Hub dataset: ``manifest.jsonl`` + ``texts/`` + a dataset card,
staged and checked against the manifest's hashes before anything is sent."""
from __future__ import annotations

from pathlib import Path

from ..artifacts import link_or_copy, sha256_file, write_text_atomic
from ..cards import render_dataset_card
from ..manifest import COLLECT_CMD, MANIFEST, summarize
from .access import HubTarget, PublishError
from .facts import read_corpus_rows
from .publish import PublishResult
from .staging import Log, list_folder, prepare_stage_dir
from .upload import upload_to_hub
from .verify import VerificationReport

DATASET_COMMIT_MESSAGE = "Upload londonlm corpus"


def stage_dataset(processed_dir: Path, stage_dir: Path, repo_id: str,
                  model_repo_id: str | None = None, log: Log = print) -> tuple[dict, list[str]]:
    """Stage manifest.jsonl + texts/ + README.md; returns (corpus summary, problems) where
    problems lists texts that are missing or whose sha256 disagrees with the manifest."""
    processed_dir = Path(processed_dir)
    if not (processed_dir / MANIFEST).exists():
        raise PublishError(f"no corpus manifest at {processed_dir / MANIFEST}; run `{COLLECT_CMD}` first")
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
    write_text_atomic(stage_dir / "README.md", render_dataset_card(corpus, repo_id, model_repo_id=model_repo_id))
    log(f"staged dataset: {len(rows)} documents -> {stage_dir}")
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
