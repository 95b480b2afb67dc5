"""10_scripts/publish_to_huggingface.py against a loopback Hub double (tests/fake_hub.py):
dry runs send nothing, a publish sends exactly the staged files with the token only in the
Authorization header, re-publishing updates the same repo, broken models are refused before
any request, user errors exit non-zero without a traceback."""
from __future__ import annotations

import contextlib
import hashlib
import io
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import SAMPLE_TEXTS
from hub_fixtures import TOKEN, staged_files  # the `hub` fixture comes from there too (conftest.py)
from londonlm.core.errors import run_main

pytestmark = pytest.mark.network_local

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "10_scripts" / "publish_to_huggingface.py"
REPO_ID = "someone/londonlm-test"
STAGED = {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
          "tokenizer_config.json", "README.md", "LICENSE", "metrics.json"}


def _load_script():
    spec = importlib.util.spec_from_file_location("publish_to_huggingface", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


publish = _load_script()


def _metrics(loss: float) -> dict:
    return {"format_version": 1, "mode": "quick",
            "model": {"name": "micro/final", "path": "/home/alice/private/micro/final"},
            "lm": {"validation": {"loss": loss, "perplexity": 2.718 ** loss,
                                  "bits_per_byte": loss / 3, "tokens": 900, "truncated": True}},
            "probes": {"london": {"n": 10, "chance": 0.3,
                                  "accuracy": {"sum": 0.4, "per_token": 0.5, "per_byte": 0.6}}}}


def _write_evaluation(ev: Path, metrics: dict, model_dir: Path) -> None:
    """metrics.json as the evaluation stage writes it: tied to the weights it scored and to
    the samples.jsonl written beside it."""
    from londonlm.evaluation.model import model_identity, outputs_record

    m = json.loads(json.dumps(metrics))
    m["model"]["weights_sha256"] = model_identity(model_dir)["weights_sha256"]
    m["outputs"] = outputs_record(ev, ["samples.jsonl"])
    (ev / "metrics.json").write_text(json.dumps(m))


def _write_corpus(proc: Path) -> None:
    (proc / "texts").mkdir(parents=True)
    rows = []
    for i, (src, lic, year) in enumerate([("oldbailey", "cc-by-4.0", 1674), ("gutenberg", "pd", 1722),
                                          ("gutenberg", "pd", 1850)]):
        text = SAMPLE_TEXTS[i] * 4
        (proc / "texts" / f"doc{i}.txt").write_text(text, encoding="utf-8")
        rows.append({"id": f"doc{i}", "source": src, "source_kind": "web", "title": f"Doc {i}",
                     "author": "", "year": year, "decade": year // 10 * 10, "license": lic,
                     "url": "", "sha256": hashlib.sha256(text.encode()).hexdigest(),
                     "chars": len(text), "words": len(text.split()),
                     "split": "validation" if i == 2 else "train", "path": f"texts/doc{i}.txt",
                     "london": True})
    (proc / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def project(tmp_path, tiny_model_dir):
    """A project root with run 'micro': final/, checkpoint-4/, run_info, evaluation, corpus."""
    root = tmp_path / "root"
    run = root / "09_models" / "checkpoints" / "micro"
    shutil.copytree(tiny_model_dir, run / "final")
    shutil.copytree(tiny_model_dir, run / "checkpoint-4")
    state = {"global_step": 4, "max_steps": 4,
             "log_history": [{"step": 2, "loss": 6.2}, {"step": 4, "loss": 5.9},
                             {"step": 4, "eval_loss": 6.0}]}
    (run / "checkpoint-4" / "trainer_state.json").write_text(json.dumps(state))
    (run / "run_info.json").write_text(json.dumps({
        "preset": "micro", "parameters": 43904, "global_step": 4, "max_steps": 4,
        "tokens_seen": 2048, "tokens_per_step": 512, "train_wall_seconds": 3.5,
        "final_train_loss": 5.9, "final_eval_loss": 6.0, "hardware": {"cpu_cores_physical": 2,
                                                                       "platform": "Linux"},
        "cache": {"tokens_train": 5000, "tokens_validation": 900}}))
    ev = run / "evaluation"
    ev.mkdir()
    (ev / "samples.jsonl").write_text(json.dumps(
        {"kind": "continuation", "mode": "greedy", "prompt": "Up betimes", "reference": "x",
         "generated": "Up betimes, and to the office"}) + "\n")
    _write_evaluation(ev, _metrics(6.0), run / "final")
    (ev / "checkpoint-4").mkdir()
    _write_evaluation(ev / "checkpoint-4", _metrics(6.5), run / "checkpoint-4")
    _write_corpus(root / "data" / "london_historical" / "processed")
    return root


def _run(project, *args) -> int:
    """The script's main as ``python publish_to_huggingface.py`` runs it; returns the exit code."""
    with pytest.raises(SystemExit) as done:
        run_main(publish.main, ["--root", str(project), "--preset", "micro", *args])
    return done.value.code


def _stage(project) -> Path:
    return project / "09_models" / "checkpoints" / "micro" / "hub_stage"


def test_dry_run_stages_verifies_and_sends_nothing(project, hub, capsys):
    assert _run(project, "--repo_id", REPO_ID, "--dry_run", "--checkpoint", "checkpoint-4") == 0
    out = capsys.readouterr().out
    assert hub.requests == []
    staged = staged_files(_stage(project))
    assert set(staged) == STAGED
    assert "dry run: nothing uploaded" in out and all(f in out for f in STAGED)
    # the checkpoint's own evaluation, not final's
    assert json.loads(staged["metrics.json"])["lm"]["validation"]["loss"] == 6.5
    assert "`checkpoint-4`" in staged["README.md"].decode()
    assert json.loads(staged["metrics.json"])["model"]["path"] == "micro/final"  # no local paths
    assert not any(b"/home/alice" in data or str(project).encode() in data
                   for name, data in staged.items() if name != "model.safetensors")
    src = project / "09_models" / "checkpoints" / "micro" / "checkpoint-4"
    assert staged["model.safetensors"] == (src / "model.safetensors").read_bytes()


def test_gguf_files_are_exported_staged_and_uploaded(project, hub, capsys):
    pytest.importorskip("gguf")
    assert _run(project, "--repo_id", REPO_ID, "--gguf") == 0
    ggufs = {"micro-f16.gguf", "micro-q8_0.gguf"}
    staged = staged_files(_stage(project))
    assert set(staged) == STAGED | ggufs
    assert hub.files(REPO_ID) == staged
    run = project / "09_models" / "checkpoints" / "micro"
    assert {p.name for p in (run / "gguf").glob("*.gguf")} == ggufs   # kept for reuse
    assert all(staged[f][:4] == b"GGUF" for f in ggufs)


def test_publish_sends_exactly_the_staged_files_and_never_leaks_the_token(project, hub, capsys,
                                                                          caplog):
    caplog.set_level(logging.DEBUG)
    assert _run(project, "--repo_id", REPO_ID, "--commit_message", "first upload") == 0
    out, err = capsys.readouterr()
    staged = staged_files(_stage(project))
    assert set(staged) == STAGED
    assert hub.files(REPO_ID) == staged                      # byte for byte, nothing else
    repo = hub.repo(REPO_ID)
    assert repo.lfs_paths == {"model.safetensors"}          # weights went through LFS
    assert [c["summary"] for c in repo.commits] == ["first upload"]
    assert not repo.private
    api = hub.api_requests()
    assert {r.path for r in api} >= {"/api/repos/create", f"/api/models/{REPO_ID}/preupload/main",
                                     f"/api/models/{REPO_ID}/commit/main"}
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in api)
    storage = [r for r in hub.requests if r.path.startswith("/__lfs/") and r.method == "PUT"]
    assert storage and all("authorization" not in r.headers for r in storage)
    for r in hub.requests:  # the token travels in the Authorization header only
        assert TOKEN not in r.path and TOKEN.encode() not in r.body
        assert TOKEN not in json.dumps({k: v for k, v in r.headers.items() if k != "authorization"})
    logs = "\n".join(rec.getMessage() for rec in caplog.records)
    for text in (out, err, logs, *(p.read_text(errors="ignore") for p in _stage(project).iterdir())):
        assert TOKEN not in text
    assert f"published {hub.url}/{REPO_ID}" in out


def test_republish_updates_the_same_repo(project, hub, capsys):
    assert _run(project, "--repo_id", REPO_ID) == 0
    run = project / "09_models" / "checkpoints" / "micro"
    _write_evaluation(run / "evaluation", _metrics(5.25), run / "final")
    assert _run(project, "--repo_id", REPO_ID, "--private", "--commit_message", "update") == 0
    assert len([k for k in hub.repos]) == 1
    repo = hub.repo(REPO_ID)
    assert repo.private                                  # --private also applies to an existing repo
    assert [c["summary"] for c in repo.commits] == ["Upload londonlm model", "update"]
    assert set(repo.commits[1]["paths"]) == {"README.md", "metrics.json"}  # only what changed
    files = hub.files(REPO_ID)
    assert json.loads(files["metrics.json"])["lm"]["validation"]["loss"] == 5.25
    assert "5.25" in files["README.md"].decode()
    assert files == staged_files(_stage(project))
    # a branch: created on demand, main untouched
    assert _run(project, "--repo_id", REPO_ID, "--revision", "v2") == 0
    assert hub.files(REPO_ID, branch="v2") == files and len(repo.commits) == 2
    assert sum(r.path == "/api/repos/create" for r in hub.requests) == 3


def _break_ids(final: Path) -> str:
    cfg = json.loads((final / "config.json").read_text())
    cfg["eos_token_id"] = cfg["eos_token_id"] + 5
    (final / "config.json").write_text(json.dumps(cfg))
    return "config.json eos_token_id matches the tokenizer"


def _corrupt_weights(final: Path) -> str:
    data = (final / "model.safetensors").read_bytes()
    (final / "model.safetensors").unlink()  # hard links elsewhere keep their bytes
    (final / "model.safetensors").write_bytes(data[: len(data) // 2])
    return "AutoModelForCausalLM loads"


def _drop_tensor(final: Path) -> str:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(final / "model.safetensors"))
    tensors.pop(next(k for k in tensors if k.endswith("ln_f.weight")))
    (final / "model.safetensors").unlink()
    save_file(tensors, str(final / "model.safetensors"), metadata={"format": "pt"})
    return "transformer.ln_f.weight missing"  # the model interface's check, before any build


@pytest.mark.parametrize("breaker", [_break_ids, _corrupt_weights, _drop_tensor])
def test_broken_model_is_refused_before_any_request(project, hub, capsys, breaker):
    run = project / "09_models" / "checkpoints" / "micro"
    why = breaker(run / "final")
    _write_evaluation(run / "evaluation", _metrics(6.0), run / "final")  # evaluated as broken
    assert _run(project, "--repo_id", REPO_ID) == 2
    err = capsys.readouterr().err
    # unreadable weights are refused where every stage resolves a model; the rest by publishing's checks
    assert ("refusing to publish" in err and why in err) or ("cannot be loaded" in err and "weights unreadable" in err)
    line, = [x for x in err.splitlines() if "refusing to publish" in x or "cannot be loaded" in x]
    assert line.startswith("error:") and line.endswith("try again" if "refusing" in line else line[-1:]), err
    assert "Traceback" not in err and hub.requests == [] and hub.repos == {}


def _retrain(final: Path) -> None:
    """New weights in final/ (a --fresh or resumed run), the old evaluation left beside them."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(final / "model.safetensors"))
    name = next(k for k in tensors if k.endswith("ln_f.bias"))
    tensors[name] = tensors[name] + 0.01
    (final / "model.safetensors").unlink()
    save_file(tensors, str(final / "model.safetensors"), metadata={"format": "pt"})


def test_an_evaluation_of_other_weights_is_refused(project, hub, capsys):
    """Metrics and "unedited" samples of a previous model never reach the new model's card:
    publishing compares the weights the evaluation scored with the ones it stages."""
    run = project / "09_models" / "checkpoints" / "micro"
    _retrain(run / "final")
    assert _run(project, "--repo_id", REPO_ID, "--dry_run") == 2
    err = capsys.readouterr().err
    assert "refusing to publish" in err and "scored other weights" in err and "Traceback" not in err
    assert f"python 05_evaluation/run_evaluation.py --model {run / 'final'} --mode quick --root {project}" in err
    assert not (_stage(project) / "README.md").exists() and hub.requests == []
    # an evaluation that does not say what it scored (written before this check) is refused too
    (run / "evaluation" / "metrics.json").write_text(json.dumps(_metrics(6.0)))
    assert _run(project, "--repo_id", REPO_ID, "--dry_run") == 2
    assert "does not record which weights it scored" in capsys.readouterr().err
    # evaluated again: published, with the hash on the card
    _write_evaluation(run / "evaluation", _metrics(6.0), run / "final")
    assert _run(project, "--repo_id", REPO_ID, "--dry_run") == 0
    sha = hashlib.sha256((run / "final" / "model.safetensors").read_bytes()).hexdigest()
    assert sha in (_stage(project) / "README.md").read_text()
    # samples from a later evaluation that stopped before its metrics.json: refused
    (run / "evaluation" / "samples.jsonl").write_text(json.dumps(
        {"mode": "greedy", "prompt": "Up betimes", "generated": "another model's words"}) + "\n")
    assert _run(project, "--repo_id", REPO_ID, "--dry_run") == 2
    assert "samples.jsonl is not the file" in capsys.readouterr().err


@pytest.mark.parametrize("repo_id", ["no-namespace", "a/b/c", "me/has space", "me/bad--name",
                                     "me/name.git", "me/" + "x" * 97])
def test_bad_repo_ids_fail_fast(project, hub, capsys, repo_id):
    assert _run(project, "--repo_id", repo_id) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--repo_id" in err and "your-username/model-name" in err
    assert hub.requests == [] and not _stage(project).exists()


def _tree_hash(folder: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("revision,why", [
    ("refs/../../x y", "holds a space"), ("a..b", "'..'"), ("/main", "starts or ends with '/'"),
    ("main/", "starts or ends with '/'"), ("a//b", "'//'"), ("tab\tbranch", "control character"),
    ("x~1", "one of ~ ^ :"), ("v1.lock", "'.lock'"), (".hidden", "starts with '.'"), ("-x", "starts with '-'"),
    ("a@{1}", "'@{'"), ("v1.", "ends with '.'"), ("", "empty"), ("br\udcffanch", "not valid UTF-8 (byte 0xff"),
])
@pytest.mark.parametrize("dataset", [False, True], ids=["model", "with-dataset"])
def test_bad_revisions_fail_fast_even_in_a_dry_run(project, hub, capsys, revision, why, dataset):
    before = _tree_hash(project)
    extra = ["--dataset_repo_id", REPO_ID + "-corpus"] if dataset else []
    assert _run(project, "--dry_run", f"--revision={revision}", *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid --revision ") and why in err and err.count("\n") == 1, err
    assert hub.requests == [] and _tree_hash(project) == before


@pytest.mark.parametrize("revision", ["main", "v1-tiny", "feature/cutoff-1750", "refs/pr/3", "ünï"])
def test_good_revisions_pass(revision):
    from londonlm.publishing.access import validate_revision

    assert validate_revision(revision) == revision


def test_upload_errors_are_clear_and_masked(project, hub, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert _run(project, "--repo_id", REPO_ID) == 2
    assert "offline mode" in capsys.readouterr().err and hub.requests == []
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub.token = "hf_SomeOtherToken000000000000"   # the Hub rejects our token
    assert _run(project, "--repo_id", REPO_ID) == 2
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "HF_TOKEN" in err and TOKEN not in err and "Traceback" not in err


def test_dataset_publish(project, hub, capsys, tmp_path):
    assert _run(project, "--repo_id", REPO_ID, "--dataset_repo_id", "someone/london-texts") == 0
    files = hub.files("someone/london-texts", repo_type="dataset")
    assert set(files) == {"README.md", "manifest.jsonl", "texts/doc0.txt", "texts/doc1.txt",
                          "texts/doc2.txt", "data/train.parquet", "data/validation.parquet"}
    # what the card's configs name loads with datasets: both splits, with their texts
    import datasets

    stage = project / "data" / "london_historical" / "hub_dataset_stage"
    assert files == staged_files(stage)
    corpus = datasets.load_dataset(str(stage), cache_dir=str(tmp_path / "cache"))
    assert {k: v.num_rows for k, v in corpus.items()} == {"train": 2, "validation": 1}
    proc = project / "data" / "london_historical" / "processed"
    doc2 = corpus["validation"][0]
    assert doc2["id"] == "doc2" and doc2["year"] == 1850 and doc2["london"] is True
    assert doc2["text"] == (proc / "texts" / "doc2.txt").read_text(encoding="utf-8")
    card = files["README.md"].decode()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["license"] == "other" and "text-generation" in meta["task_categories"]
    assert "oldbailey" in card and "cc-by-4.0" in card and "1670s" in card and "1850s" in card
    model_card = hub.files(REPO_ID)["README.md"].decode()
    assert yaml.safe_load(model_card.split("---\n")[1])["datasets"] == ["someone/london-texts"]
    # a text that no longer matches the manifest is refused
    (proc / "texts" / "doc1.txt").write_text("changed", encoding="utf-8")
    before = len(hub.requests)
    assert _run(project, "--repo_id", REPO_ID, "--dataset_repo_id", "someone/london-texts") == 2
    err = capsys.readouterr().err
    assert "refusing to publish the dataset" in err and "doc1" in err
    assert len(hub.requests) == before  # refused before the model went up too


def test_card_snippet_runs_against_the_staged_folder(project, hub):
    assert _run(project, "--repo_id", REPO_ID, "--dry_run") == 0
    stage = _stage(project)
    card = (stage / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    results = meta["model-index"][0]["results"][0]["metrics"]
    assert {"type": "loss", "value": 6.0, "name": "Validation loss (nats/token) [londonlm evaluation]"}.items() <= results[0].items()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert f"model_id = {REPO_ID!r}" in code
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):  # the card's code, pointed at the staged folder
        exec(compile(code.replace(repr(REPO_ID), repr(str(stage))), "<card>", "exec"), {})
    assert "It was a cold morning in Cheapside, and" in buf.getvalue()


def _script(tmp_path, *args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_HOME=str(tmp_path / "hf_home"), **(env_extra or {}))
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=120, cwd=str(tmp_path), env=env)


def test_script_help_and_user_errors_from_any_cwd(project, tmp_path):
    r = _script(tmp_path, "--help")
    assert r.returncode == 0 and "--repo_id" in r.stdout and "--dry_run" in r.stdout
    r = _script(tmp_path, "--root", str(project), "--preset", "micro", "--repo_id", REPO_ID)
    assert r.returncode == 2 and "no Hugging Face token" in r.stderr and "HF_TOKEN" in r.stderr
    assert "Traceback" not in r.stderr
    r = _script(tmp_path, "--root", str(project), "--preset", "micro")
    assert r.returncode == 2 and "--repo_id is required" in r.stderr and "Traceback" not in r.stderr
    r = _script(tmp_path, "--root", str(tmp_path / "nowhere"), "--repo_id", REPO_ID, "--dry_run")
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr


def test_token_from_env_else_saved_login(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from londonlm.publishing import mask_secret, resolve_token

    saved = tmp_path / "token"
    saved.write_text("hf_SavedLoginToken0000000000\n")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(saved))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert resolve_token() == TOKEN
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    assert resolve_token() == "hf_SavedLoginToken0000000000"
    saved.unlink()
    assert resolve_token() is None
    assert mask_secret(f"401 for {TOKEN} and hf_abcdefghijkl", TOKEN) == "401 for hf_*** and hf_***"
