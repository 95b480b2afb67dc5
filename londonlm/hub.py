"""Publishing a trained run (and optionally its corpus) to the Hugging Face Hub.

Flow of :func:`publish_model`: check the repo id and token first (cheap failures before
slow work), stage a Hub-ready folder, **verify it offline** (load with
``AutoModelForCausalLM``/``AutoTokenizer``/``pipeline``, generate, compare special-token
ids, run the card's usage snippet), write README/LICENSE/metrics, check the card's YAML,
and only then upload with ``huggingface_hub``. ``dry_run`` stops before the network.

The token is read from ``HF_TOKEN`` or the saved login and only ever handed to
``HfApi``; error messages pass through :func:`mask_secret` before being raised.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .artifacts import read_json, sha256_file, write_json_atomic, write_text_atomic
from .checkpoints import list_checkpoints, resolve_model_path
from .model_card import (DEFAULT_PROMPT, LICENSES, CardInputs, license_text, read_samples,
                         render_dataset_card, render_model_card, summarize_manifest,
                         usage_snippet)
from .tokenizer import TOKENIZER_FILES, era_tokens_of

STAGE_MARKER = ".londonlm_stage"  # marks a folder we may wipe; never uploaded
MODEL_FILES = ("config.json", "generation_config.json")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
REQUIRED_DOCS = ("README.md", "LICENSE")
SPECIAL_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
Log = Callable[[str], None]


class PublishError(RuntimeError):
    """A problem the user can fix; the message says how (and never contains the token)."""


# ---------------------------------------------------------------- ids, tokens, secrets
def validate_repo_id(repo_id: str | None, flag: str = "--repo_id") -> str:
    """``namespace/name`` with Hub-legal characters, else a PublishError naming the fix."""
    rid = (repo_id or "").strip()
    hint = f"pass {flag} as 'your-username/model-name' (letters, digits, '-', '_', '.')"
    if not rid:
        raise PublishError(f"{flag} is required; {hint}")
    parts = rid.split("/")
    if len(parts) != 2 or not all(_REPO_PART.match(p) for p in parts):
        raise PublishError(f"invalid {flag} {rid!r}; {hint}")
    if any(bad in rid for bad in ("--", "..")) or rid.endswith((".git", ".ipynb")) \
            or parts[1].endswith((".", "-")):
        raise PublishError(f"invalid {flag} {rid!r}: '--', '..', a trailing '.'/'-' or a "
                           f"'.git' suffix are not allowed; {hint}")
    from huggingface_hub.utils import HFValidationError, validate_repo_id as hf_validate

    try:
        hf_validate(rid)
    except HFValidationError as e:
        raise PublishError(f"invalid {flag} {rid!r} ({e}); {hint}") from None
    return rid


def resolve_token(explicit: str | None = None) -> str | None:
    """An explicit token, else ``HF_TOKEN``, else the token saved by ``hf auth login``."""
    if explicit:
        return explicit
    env = os.environ.get("HF_TOKEN", "").strip()
    if env:
        return env
    return _saved_token()


def _saved_token() -> str | None:
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # a broken token file must not crash a dry run
        return None


def require_token(token: str | None) -> str:
    if not token:
        raise PublishError("no Hugging Face token: set HF_TOKEN (a write token from "
                           "https://huggingface.co/settings/tokens) or run `hf auth login`; "
                           "or use --dry_run to stage and verify without uploading")
    return token


def mask_secret(text: str, secret: str | None) -> str:
    """Replace every occurrence of ``secret`` (and any hf_ token) in ``text``."""
    out = str(text)
    if secret:
        out = out.replace(secret, "hf_***")
    return re.sub(r"hf_[A-Za-z0-9]{8,}", "hf_***", out)


def hub_endpoint(endpoint: str | None = None) -> str:
    """The Hub URL: explicit, else ``HF_ENDPOINT`` read now (not at import), else the default."""
    from huggingface_hub import constants

    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


# ---------------------------------------------------------------- staging
@dataclass
class StagedFile:
    path: str
    size: int


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def list_folder(folder: Path) -> list[StagedFile]:
    """Files ``upload_folder`` would send, with sizes (the stage marker excluded)."""
    folder = Path(folder)
    return [StagedFile(p.relative_to(folder).as_posix(), p.stat().st_size)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != STAGE_MARKER]


def prepare_stage_dir(stage_dir: Path) -> Path:
    """Empty ``stage_dir`` for a new staging, refusing to wipe a folder we did not create."""
    stage_dir = Path(stage_dir)
    if stage_dir.exists():
        if not stage_dir.is_dir():
            raise PublishError(f"staging path {stage_dir} is a file; pass another --stage_dir")
        if any(stage_dir.iterdir()) and not (stage_dir / STAGE_MARKER).exists():
            raise PublishError(f"staging folder {stage_dir} is not empty and was not created by "
                               f"the publisher; pass an empty or new --stage_dir")
        shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True)
    (stage_dir / STAGE_MARKER).write_text("staged by londonlm.hub; safe to delete\n")
    return stage_dir


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link when possible (weights can be GBs), else copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def stage_model_files(model_dir: Path, stage_dir: Path, tokenizer_fallback: Path | None = None,
                      log: Log = print) -> None:
    """Copy weights, configs and tokenizer files into ``stage_dir``. Nothing is "fixed":
    a config that disagrees with its tokenizer is copied as is so verification reports it."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise PublishError(f"{model_dir} has no config.json; pass a model folder such as the "
                           f"run's final/ or a checkpoint-N")
    index = model_dir / "model.safetensors.index.json"
    if (model_dir / "model.safetensors").exists():
        _link_or_copy(model_dir / "model.safetensors", stage_dir / "model.safetensors")
    elif index.exists():  # sharded safetensors: the index and every shard it names
        _link_or_copy(index, stage_dir / index.name)
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            _link_or_copy(model_dir / shard, stage_dir / shard)
    elif (model_dir / "pytorch_model.bin").exists():
        # The Hub and transformers prefer safetensors (no pickle): convert once here.
        from transformers import AutoModelForCausalLM

        log("converting pytorch_model.bin to model.safetensors")
        AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True) \
            .save_pretrained(str(stage_dir))
    else:
        raise PublishError(f"no model weights in {model_dir} (model.safetensors or "
                           f"pytorch_model.bin); pick another --checkpoint")
    _link_or_copy(model_dir / "config.json", stage_dir / "config.json")
    tok_src = model_dir if (model_dir / "tokenizer.json").exists() else tokenizer_fallback
    if tok_src is None or not (Path(tok_src) / "tokenizer.json").exists():
        raise PublishError(f"no tokenizer.json in {model_dir}"
                           + (f" or {tokenizer_fallback}" if tokenizer_fallback else "")
                           + "; publish a folder saved with its tokenizer (the run's final/)")
    for name in TOKENIZER_FILES:
        if (Path(tok_src) / name).exists():
            _link_or_copy(Path(tok_src) / name, stage_dir / name)
    if (model_dir / "generation_config.json").exists():
        _link_or_copy(model_dir / "generation_config.json", stage_dir / "generation_config.json")
    else:
        # Written from config.json's own ids (not the tokenizer's) so a mismatch still surfaces.
        cfg = json.loads((model_dir / "config.json").read_text())
        gen = {k: cfg.get(k) for k in SPECIAL_IDS if cfg.get(k) is not None}
        gen.update(do_sample=True, temperature=0.8, top_p=0.95, top_k=50,
                   repetition_penalty=1.1, max_new_tokens=100)
        write_json_atomic(stage_dir / "generation_config.json", gen)
        log("generation_config.json missing in the model folder; wrote one from config.json")


# ---------------------------------------------------------------- verification
@dataclass
class VerificationReport:
    passed: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    prompt: str = DEFAULT_PROMPT
    generation: str | None = None
    snippet_output: str | None = None
    facts: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def check(self, ok: bool, what: str, why: str = "") -> bool:
        (self.passed if ok else self.failures).append(what if ok else f"{what}: {why}")
        return ok


def _ids_match(value, expected: int) -> bool:
    return expected in value if isinstance(value, list) else value == expected


def check_special_ids(folder: Path, tokenizer, report: VerificationReport) -> None:
    """bos/eos/pad ids in config.json and generation_config.json (raw JSON, so library
    defaults cannot hide a missing key) must equal the tokenizer's."""
    for fname in MODEL_FILES:
        try:
            cfg = json.loads((folder / fname).read_text())
        except Exception as e:
            report.check(False, f"{fname} readable", str(e))
            continue
        for key in SPECIAL_IDS:
            expected = getattr(tokenizer, key, None)
            if expected is None:
                continue
            got = cfg.get(key)
            report.check(got is not None and _ids_match(got, expected),
                         f"{fname} {key} matches the tokenizer",
                         f"{fname} has {key}={got!r} but the tokenizer's is {expected} "
                         f"({getattr(tokenizer, key.replace('_id', ''), '?')!r})")


def verify_model_folder(folder: Path, prompt: str = DEFAULT_PROMPT, max_new_tokens: int = 20,
                        run_snippet: bool = True) -> VerificationReport:
    """Load ``folder`` offline the way a Hub user would and collect every problem found."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    folder = Path(folder)
    rep = VerificationReport(prompt=prompt)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        rep.check((folder / name).exists(), f"{name} present", "missing from the staged folder")
    rep.check(any((folder / w).exists() for w in WEIGHT_FILES), "model.safetensors present",
              "no safetensors weights in the staged folder")
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        rep.check(True, "AutoTokenizer loads")
    except Exception as e:
        rep.check(False, "AutoTokenizer loads", f"{type(e).__name__}: {e}")
        return rep
    try:
        model, info = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True,
                                                           output_loading_info=True)
        model.eval()
        rep.check(True, "AutoModelForCausalLM loads")
        bad = {k: sorted(map(str, info.get(k) or ()))[:5]
               for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        rep.check(not any(bad.values()), "every weight loads from model.safetensors",
                  "; ".join(f"{k}: {', '.join(v)}" for k, v in bad.items() if v)
                  + " (a model with randomly initialised parts must not be published)")
    except Exception as e:
        rep.check(False, "AutoModelForCausalLM loads", f"{type(e).__name__}: {e}")
        return rep
    cfg = model.config
    check_special_ids(folder, tok, rep)
    rows = model.get_input_embeddings().weight.shape[0]
    rep.check(cfg.vocab_size >= len(tok), "config vocab_size >= len(tokenizer)",
              f"vocab_size {cfg.vocab_size} < {len(tok)} tokenizer entries; token ids past the "
              f"embedding would crash")
    rep.check(rows == cfg.vocab_size, "embedding rows == config vocab_size",
              f"{rows} embedding rows but config says {cfg.vocab_size}")
    ids = tok.encode(prompt, add_special_tokens=False)
    back = tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    rep.check(back == prompt, "tokenizer round-trips the prompt", f"decoded {back!r}")
    n_pos = int(getattr(cfg, "n_positions", 0) or getattr(cfg, "max_position_embeddings", 0) or 1024)
    new_tokens = max(1, min(max_new_tokens, n_pos - len(ids) - 1))
    snippet_tokens = max(1, min(40, n_pos - len(ids) - 2))  # room for the era token too
    eras = era_tokens_of(tok)
    rep.facts = {"n_layer": getattr(cfg, "n_layer", None), "n_head": getattr(cfg, "n_head", None),
                 "n_embd": getattr(cfg, "n_embd", None), "n_positions": n_pos,
                 "vocab_size": cfg.vocab_size, "tokenizer_size": len(tok),
                 "parameters": sum(p.numel() for p in model.parameters()),
                 "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                 "pad_token_id": tok.pad_token_id, "era_tokens": eras,
                 "snippet_max_new_tokens": snippet_tokens}
    if rep.failures:  # generating with mismatched ids would only add noise to the report
        return rep
    try:
        gen = pipeline("text-generation", model=model, tokenizer=tok, device="cpu")
        out = gen(prompt, max_new_tokens=new_tokens, do_sample=False, return_full_text=True)
        text = out[0]["generated_text"]
        rep.check(isinstance(text, str) and text.startswith(prompt),
                  "pipeline('text-generation') generates from the fixed prompt",
                  f"output does not continue the prompt: {text!r}")
        rep.generation = text
    except Exception as e:
        rep.check(False, "pipeline('text-generation') generates", f"{type(e).__name__}: {e}")
    if run_snippet:
        code = usage_snippet(str(folder), prompt, eras[-1] if eras else None, snippet_tokens)
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                exec(compile(code, "<model card usage snippet>", "exec"), {"__name__": "__snippet__"})
            rep.snippet_output = buf.getvalue().strip()
            rep.check(bool(rep.snippet_output), "model card usage snippet runs", "printed nothing")
        except Exception as e:
            rep.check(False, "model card usage snippet runs", f"{type(e).__name__}: {e}")
    return rep


def check_docs(folder: Path, license_id: str, report: VerificationReport) -> None:
    """README.md has parseable YAML metadata with the keys the Hub needs; LICENSE exists."""
    import yaml

    for name in REQUIRED_DOCS:
        report.check((Path(folder) / name).exists(), f"{name} present", "missing")
    readme = Path(folder) / "README.md"
    if not readme.exists():
        return
    text = readme.read_text(encoding="utf-8")
    m = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    if not report.check(m is not None, "README.md has YAML front matter", "no '---' block"):
        return
    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as e:
        report.check(False, "README.md metadata parses", str(e).replace("\n", " "))
        return
    for key, want in (("license", license_id), ("library_name", "transformers"),
                      ("pipeline_tag", "text-generation"), ("language", "en")):
        got = meta.get(key)
        report.check(got == want or (isinstance(got, list) and want in got),
                     f"README.md metadata {key}", f"expected {want!r}, found {got!r}")


# ---------------------------------------------------------------- run facts
def evaluation_dir(model_dir: Path, run_dir: Path | None) -> Path:
    """Where the evaluation stage (``londonlm.evaluation.cli``) writes this model's
    metrics.json: ``<run>/evaluation/`` for final/, ``<run>/evaluation/<name>/`` for any
    other folder of the run, ``<model>/evaluation/`` for a model outside a run."""
    model_dir = Path(model_dir)
    if run_dir is not None and model_dir.resolve().parent == Path(run_dir).resolve():
        base = Path(run_dir) / "evaluation"
        return base if model_dir.name == "final" else base / model_dir.name
    return model_dir / "evaluation"


def find_trainer_state(model_dir: Path, run_dir: Path | None) -> tuple[dict | None, str | None]:
    """The trainer state that describes ``model_dir``: its own (checkpoint-N), else the
    newest checkpoint's in the run (``final/`` is saved without one)."""
    candidates = [Path(model_dir) / "trainer_state.json"]
    if run_dir is not None:
        candidates += [ck / "trainer_state.json" for ck in reversed(list_checkpoints(run_dir))]
    for p in candidates:
        if p.exists():
            try:
                where = (p.relative_to(run_dir) if run_dir and p.is_relative_to(run_dir)
                         else Path(p.parent.name) / p.name)  # no local path in a public card
                return read_json(p), str(where)
            except Exception:
                continue
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


def _read_json_or_none(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        obj = read_json(path)
        return obj if isinstance(obj, dict) else None
    except Exception as e:
        raise PublishError(f"{path} is not valid JSON ({e}); regenerate it or move it away") from None


def load_corpus(processed_dir: Path | None, run_info: dict | None) -> tuple[dict | None, str, list[dict]]:
    """(summary, note, rows) of the corpus manifest; the note flags a manifest that changed
    since the run was trained."""
    if processed_dir is None or not (Path(processed_dir) / "manifest.jsonl").exists():
        return None, "", []
    from .corpus import read_manifest

    try:
        rows = read_manifest(processed_dir)
    except Exception as e:  # CorpusError: a bad line names itself and the rebuild command
        raise PublishError(f"cannot read the corpus manifest: {e}") from None
    note = ""
    trained_on = ((run_info or {}).get("cache") or {}).get("manifest_sha256")
    if trained_on and trained_on != sha256_file(Path(processed_dir) / "manifest.jsonl"):
        note = ("the corpus manifest changed after this model was trained; the figures below "
                "describe the current manifest, the token counts the training data.")
    return summarize_manifest(rows), note, rows


# ---------------------------------------------------------------- upload
@dataclass
class UploadResult:
    repo_url: str
    commit_url: str | None
    revision: str


def upload_to_hub(folder: Path, repo_id: str, *, token: str, repo_type: str = "model",
                  private: bool = False, revision: str | None = None,
                  commit_message: str = "Upload londonlm model", endpoint: str | None = None,
                  log: Log = print) -> UploadResult:
    """create_repo(exist_ok) + create_branch(exist_ok) + upload_folder; errors masked."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    if constants.is_offline_mode():
        raise PublishError("Hugging Face offline mode is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE "
                           "is set); unset it to publish, or use --dry_run")
    url = hub_endpoint(endpoint)
    api = HfApi(endpoint=url, token=token)
    branch = revision or "main"
    try:
        repo_url = api.create_repo(repo_id, repo_type=repo_type, private=True if private else None,
                                   exist_ok=True)
        if private:  # create_repo leaves an existing public repo public: make it private too
            api.update_repo_settings(repo_id, repo_type=repo_type, private=True)
        if branch != "main":
            api.create_branch(repo_id, branch=branch, repo_type=repo_type, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type,
                                 revision=branch, commit_message=commit_message,
                                 ignore_patterns=[STAGE_MARKER])
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        hint = {401: "the token was rejected: check HF_TOKEN or run `hf auth login` again",
                403: "the token lacks write access to this namespace: use a write token or "
                     "your own username in --repo_id",
                404: "repository or branch not found: check --repo_id and --revision"}.get(status, "")
        raise PublishError(mask_secret(f"upload to {url}/{repo_id} failed"
                                       f"{f' (HTTP {status})' if status else ''}: "
                                       f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
                                       f"{'; ' + hint if hint else ''}", token)) from None
    except Exception as e:  # connection refused, DNS, timeouts, bad README metadata
        raise PublishError(mask_secret(f"upload to {url}/{repo_id} failed: "
                                       f"{type(e).__name__}: {e}; check the network and "
                                       f"HF_ENDPOINT", token)) from None
    commit_url = getattr(info, "commit_url", None)
    log(f"uploaded to {repo_url} (branch {branch})")
    return UploadResult(repo_url=str(repo_url), commit_url=commit_url, revision=branch)


# ---------------------------------------------------------------- model publishing
@dataclass
class PublishResult:
    stage_dir: Path
    files: list[StagedFile]
    report: VerificationReport
    repo_id: str | None
    dry_run: bool
    upload: UploadResult | None = None
    model_dir: Path | None = None


def publish_model(*, run_dir: Path | None, stage_dir: Path, repo_id: str | None,
                  checkpoint: str | None = None, runs_root: Path | None = None,
                  processed_dir: Path | None = None, license_id: str = "mit",
                  model_name: str | None = None, private: bool = False,
                  revision: str | None = None, commit_message: str = "Upload londonlm model",
                  dry_run: bool = False, token: str | None = None, endpoint: str | None = None,
                  prompt: str = DEFAULT_PROMPT, copyright_holder: str = "the londonlm contributors",
                  dataset_repo_id: str | None = None, log: Log = print) -> PublishResult:
    """Stage, verify and (unless ``dry_run``) upload one model. Raises PublishError."""
    if license_id not in LICENSES:
        raise PublishError(f"unknown --license {license_id!r}; choose one of: {', '.join(LICENSES)}")
    if repo_id is not None or not dry_run:
        repo_id = validate_repo_id(repo_id)
    if not dry_run:
        token = require_token(resolve_token(token))
    try:
        model_dir = resolve_model_path(checkpoint, run_dir, runs_root)
    except FileNotFoundError as e:
        raise PublishError(str(e)) from None
    run_dir = Path(run_dir) if run_dir else None
    if run_dir is None or not Path(model_dir).resolve().is_relative_to(run_dir.resolve()):
        # a checkpoint path elsewhere: its run is the parent of checkpoint-N/final/best
        parent = Path(model_dir).parent
        run_dir = parent if (parent / "run_info.json").exists() else run_dir
    run_info = _read_json_or_none(run_dir / "run_info.json") if run_dir else None
    eval_dir = evaluation_dir(Path(model_dir), run_dir)
    metrics = _read_json_or_none(eval_dir / "metrics.json")
    trainer_state, state_src = find_trainer_state(Path(model_dir), run_dir)
    corpus, corpus_note, _ = load_corpus(processed_dir, run_info)

    stage_dir = prepare_stage_dir(Path(stage_dir))
    log(f"staging {model_dir} -> {stage_dir}")
    tok_fallback = Path(run_info["tokenizer_dir"]) if run_info and run_info.get("tokenizer_dir") else None
    stage_model_files(Path(model_dir), stage_dir, tok_fallback, log=log)

    log("verifying the staged folder offline (load, special ids, generate, usage snippet)")
    report = verify_model_folder(stage_dir, prompt=prompt)

    samples_path = eval_dir / "samples.jsonl"
    samples, samples_source = [], ""
    if metrics is not None and samples_path.exists():
        samples = read_samples(samples_path)
        samples_source = ("From the evaluation stage (continuations of held-out validation "
                          "passages, `samples.jsonl`), unedited.")
    if not samples and report.generation is not None:
        samples = [{"prompt": prompt, "text": report.generation,
                    "settings": "greedy decoding, generated while verifying this upload"}]
        samples_source = "Generated from the staged files while verifying this upload, unedited."
    name = model_name or (repo_id.split("/")[1] if repo_id else
                          f"londonlm-{run_dir.name if run_dir else Path(model_dir).name}")
    ck_name = Path(model_dir).name  # never the local path: the card is public
    card = CardInputs(model_name=name, model_facts=report.facts, repo_id=repo_id,
                      license=license_id, checkpoint=ck_name, run_info=run_info,
                      trainer_state=trainer_state, trainer_state_source=state_src,
                      metrics=metrics, samples=samples, samples_source=samples_source,
                      corpus=corpus, corpus_note=corpus_note, usage_prompt=prompt,
                      dataset_repo_id=dataset_repo_id)
    if report.facts:
        write_text_atomic(stage_dir / "README.md", render_model_card(card))
    write_text_atomic(stage_dir / "LICENSE", license_text(license_id, copyright_holder, corpus))
    if metrics is not None:
        write_json_atomic(stage_dir / "metrics.json", redact_local_paths(metrics))
    check_docs(stage_dir, license_id, report)

    files = list_folder(stage_dir)
    result = PublishResult(stage_dir=stage_dir, files=files, report=report, repo_id=repo_id,
                           dry_run=dry_run, model_dir=Path(model_dir))
    if not report.ok:
        raise PublishError("refusing to publish: verification of the staged folder failed:\n  - "
                           + "\n  - ".join(report.failures)
                           + f"\nfix the model folder {model_dir} (or retrain) and try again")
    log(f"verification passed ({len(report.passed)} checks)")
    if dry_run:
        return result
    result.upload = upload_to_hub(stage_dir, repo_id, token=token, repo_type="model",
                                  private=private, revision=revision,
                                  commit_message=commit_message, endpoint=endpoint, log=log)
    return result


# ---------------------------------------------------------------- dataset publishing
def stage_dataset(processed_dir: Path, stage_dir: Path, repo_id: str,
                  model_repo_id: str | None = None, log: Log = print) -> tuple[dict, list[str]]:
    """Stage manifest.jsonl + texts/ + README.md; returns (corpus summary, problems) where
    problems lists texts that are missing or whose sha256 disagrees with the manifest."""
    from .corpus import read_manifest

    processed_dir = Path(processed_dir)
    if not (processed_dir / "manifest.jsonl").exists():
        raise PublishError(f"no corpus manifest at {processed_dir / 'manifest.jsonl'}; run "
                           f"`python 02_data_collection/historical_data_collector.py` first")
    try:
        rows = read_manifest(processed_dir)
    except Exception as e:
        raise PublishError(f"cannot read the corpus manifest: {e}") from None
    if not rows:
        raise PublishError(f"{processed_dir / 'manifest.jsonl'} lists no documents")
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
        _link_or_copy(src, stage_dir / rel)
    _link_or_copy(processed_dir / "manifest.jsonl", stage_dir / "manifest.jsonl")
    corpus = summarize_manifest(rows)
    write_text_atomic(stage_dir / "README.md", render_dataset_card(corpus, repo_id,
                                                                   model_repo_id=model_repo_id))
    log(f"staged dataset: {len(rows)} documents -> {stage_dir}")
    return corpus, problems


def publish_dataset(*, processed_dir: Path, stage_dir: Path, repo_id: str,
                    model_repo_id: str | None = None, private: bool = False,
                    revision: str | None = None,
                    commit_message: str = "Upload londonlm corpus", dry_run: bool = False,
                    token: str | None = None, endpoint: str | None = None,
                    log: Log = print) -> PublishResult:
    repo_id = validate_repo_id(repo_id, "--dataset_repo_id")
    if not dry_run:
        token = require_token(resolve_token(token))
    corpus, problems = stage_dataset(Path(processed_dir), Path(stage_dir), repo_id,
                                     model_repo_id, log=log)
    report = VerificationReport()
    report.check(not problems, "every manifest text present and matching its sha256",
                 "; ".join(problems[:10]) + (f" (+{len(problems) - 10} more)" if len(problems) > 10 else ""))
    report.facts = {"documents": corpus["documents"]}
    result = PublishResult(stage_dir=Path(stage_dir), files=list_folder(Path(stage_dir)),
                           report=report, repo_id=repo_id, dry_run=dry_run)
    if not report.ok:
        raise PublishError("refusing to publish the dataset:\n  - " + "\n  - ".join(report.failures)
                           + "\nrebuild the corpus with the data collection stage")
    if not dry_run:
        result.upload = upload_to_hub(Path(stage_dir), repo_id, token=token, repo_type="dataset",
                                      private=private, revision=revision,
                                      commit_message=commit_message, endpoint=endpoint, log=log)
    return result


def describe_files(files: list[StagedFile]) -> str:
    total = sum(f.size for f in files)
    width = max((len(f.path) for f in files), default=10)
    lines = [f"  {f.path:<{width}}  {human_size(f.size):>10}" for f in files]
    return "\n".join(lines + [f"  {'total':<{width}}  {human_size(total):>10}  ({len(files)} files)"])
