"""Publishing one model: check the target first (cheap failures before slow work), stage a
Hub-ready folder, verify it offline, write README/LICENSE/metrics, check the card's YAML, and
only then upload. A dry run stops before the network."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core import Layout, RunLayout, link_or_copy, write_json_atomic, write_text_atomic
from .access import HubTarget, PublishError
from .cards import DEFAULT_PROMPT, LICENSES, CardInputs, license_text, render_model_card
from .chat import (ChatFacts, chat_card_text, gather_chat_facts, is_chat_run, run_chat_snippet,
                   stage_chat_files, verify_chat_folder)
from .facts import RunFacts, gather_run_facts, redact_local_paths
from .staging import Log, StagedFile, list_folder, one_save, prepare_stage_dir, stage_model_files
from .upload import UploadResult, upload_to_hub
from .verify import VerificationReport, check_docs, verify_model_folder


@dataclass
class PublishResult:
    stage_dir: Path
    files: list[StagedFile]
    report: VerificationReport
    repo_id: str | None
    dry_run: bool
    upload: UploadResult | None = None
    model_dir: Path | None = None


@dataclass
class CardOptions:
    """What the model card and LICENSE say beyond the measured facts."""

    license_id: str = "mit"
    model_name: str | None = None            # default: the repo name
    prompt: str = DEFAULT_PROMPT             # verification's fixed prompt and the card's snippet
    copyright_holder: str = "the londonlm contributors"
    dataset_repo_id: str | None = None       # the corpus published alongside, if any


def refusal(failures: list[str], model_dir: Path) -> str:
    """One line (run_main's contract): each failure's own lines flattened, joined with '; '."""
    reasons = "; ".join(" ".join(str(f).split()) for f in failures)
    return (f"refusing to publish: verification of the staged folder failed: {reasons}; "
            f"fix the model folder {model_dir} (or retrain) and try again")


def publish_model(layout: Layout, run: RunLayout, target: HubTarget, *, checkpoint: str | None = None,
                  stage_dir: Path | None = None, card: CardOptions | None = None,
                  gguf: bool = False, log: Log = print) -> PublishResult:
    """Stage, verify and (unless ``target.dry_run``) upload ``checkpoint`` (a model spec, see
    ``Layout.resolve_model``; default the run's final/). ``stage_dir`` defaults to the run's
    hub_stage/; ``gguf`` adds f16 and q8_0 GGUF files for llama.cpp (exported into the run's
    gguf/ folder, or reused there when current). Raises PublishError (or ModelNotFound)."""
    card = card or CardOptions()
    if card.license_id not in LICENSES:
        raise PublishError(f"unknown --license {card.license_id!r}; choose one of: {', '.join(LICENSES)}")
    target = target.checked()
    model_dir = Path(layout.resolve_model(checkpoint, run))
    with one_save(model_dir):  # (the run may be training now, and save the folder again)
        facts = gather_run_facts(model_dir, run, layout.corpus_of(model_dir), root=layout.root)
        chat = gather_chat_facts(model_dir, facts, layout) if is_chat_run(model_dir, facts.run_info) else None
        stage_dir = prepare_stage_dir(Path(stage_dir) if stage_dir else run.hub_stage)
        log(f"staging {'chat model ' if chat else ''}{model_dir} -> {stage_dir}")
        stage_model_files(model_dir, stage_dir, facts.tokenizer_fallback, log=log)
        if chat:
            stage_chat_files(model_dir, stage_dir)
    log("verifying the staged folder offline (load, special ids, generate, usage snippet)")
    report = verify_model_folder(stage_dir, prompt=card.prompt)
    if chat:
        verify_chat_folder(stage_dir, report)
    _write_docs(stage_dir, model_dir, facts, report, target, card, chat)

    result = PublishResult(stage_dir=stage_dir, files=list_folder(stage_dir), report=report,
                           repo_id=target.repo_id, dry_run=target.dry_run, model_dir=model_dir)
    if not report.ok:
        raise PublishError(refusal(report.failures, model_dir))
    log(f"verification passed ({len(report.passed)} checks)")
    if gguf:
        _stage_gguf(model_dir, run, stage_dir, log)
        result.files = list_folder(stage_dir)
    if not target.dry_run:
        result.upload = upload_to_hub(stage_dir, target, repo_type="model", log=log)
    return result


def _stage_gguf(model_dir: Path, run: RunLayout, stage_dir: Path, log: Log) -> None:
    """Export (or reuse) the model's GGUF files and stage them beside the safetensors. Exported
    from the staged folder, not ``model_dir`` again: a training that saved the model since would
    give GGUF files of other weights than the safetensors beside them (the export's inputs are
    hashes, so a current export of ``model_dir`` is still reused). Staged under the export's lock:
    another export replacing the files once it is let go would put its files in this upload."""
    from ..export import GGUFOptions, default_output, export_gguf

    def stage(result) -> None:
        for path in result.files.values():
            link_or_copy(path, stage_dir / path.name)
            log(f"staged {path.name}")

    out_dir, stem = default_output(run, model_dir)
    export_gguf(stage_dir, out_dir, GGUFOptions(stem=stem), log=log, then=stage)


def _samples(facts: RunFacts, report: VerificationReport) -> tuple[list[dict], str]:
    """The evaluation's samples when there are some, else the verification's generation."""
    samples = facts.evaluation_samples()
    if samples:
        return samples, ("From the evaluation stage (continuations of held-out validation "
                         "passages, `samples.jsonl`), unedited.")
    if report.generation is not None:
        return ([{"prompt": report.prompt, "text": report.generation,
                  "settings": "greedy decoding, generated while verifying this upload"}],
                "Generated from the staged files while verifying this upload, unedited.")
    return [], ""


def _write_chat_docs(stage_dir: Path, facts: RunFacts, chat: ChatFacts, report: VerificationReport,
                     model_id: str, card: CardOptions) -> None:
    """A chat model's card (its snippet then run against the staged files) and its evaluation."""
    if report.facts:
        text = _card_text(facts, chat_card_text, chat, model_id, card.license_id, report.facts, facts.run_info)
        write_text_atomic(stage_dir / "README.md", text)
        from .cards.chat_card import card_snippet

        run_chat_snippet(card_snippet(text), model_id, stage_dir, report)
    if chat.evaluation is not None:
        write_json_atomic(stage_dir / "chat_eval.json", redact_local_paths(chat.evaluation))


def _card_text(facts: RunFacts, render, *args) -> str:
    """The card ``render`` writes from the run's recorded files; a value of a shape no run writes
    (a hand-edited or damaged file) is one line naming those files, not a traceback."""
    try:
        return render(*args)
    except (TypeError, AttributeError, KeyError, ValueError, IndexError) as e:
        files = [str(facts.run.run_info), str(facts.evaluation_dir / "metrics.json")]
        if facts.trainer_state_source:
            files.append(facts.trainer_state_source)
        raise PublishError(f"cannot write the model card: a value recorded in {', '.join(files)} has an "
                           f"unexpected shape ({type(e).__name__}: {e}); regenerate the file or move it "
                           f"away") from None


def _write_docs(stage_dir: Path, model_dir: Path, facts: RunFacts, report: VerificationReport,
                target: HubTarget, card: CardOptions, chat: ChatFacts | None = None) -> None:
    """README.md (when the model loaded), LICENSE and metrics.json, then their checks."""
    samples, samples_source = _samples(facts, report)
    name = card.model_name or (target.repo_id.split("/")[1] if target.repo_id else f"londonlm-{facts.run.name}")
    if chat is not None:
        _write_chat_docs(stage_dir, facts, chat, report, target.repo_id or name, card)
    inputs = CardInputs(model_name=name, model_facts=report.facts, repo_id=target.repo_id,
                        license=card.license_id, checkpoint=model_dir.name,  # never the local path
                        run_info=facts.run_info, trainer_state=facts.trainer_state,
                        trainer_state_source=facts.trainer_state_source, metrics=facts.metrics,
                        samples=samples, samples_source=samples_source, corpus=facts.corpus,
                        corpus_note=facts.corpus_note, usage_prompt=card.prompt,
                        dataset_repo_id=card.dataset_repo_id, leakage=facts.leakage)
    if report.facts and chat is None:
        write_text_atomic(stage_dir / "README.md", _card_text(facts, render_model_card, inputs))
    write_text_atomic(stage_dir / "LICENSE", license_text(card.license_id, card.copyright_holder, facts.corpus))
    if facts.metrics is not None:
        write_json_atomic(stage_dir / "metrics.json", redact_local_paths(facts.metrics))
    check_docs(stage_dir, card.license_id, report)
