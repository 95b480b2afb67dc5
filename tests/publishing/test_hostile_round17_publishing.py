"""Hostile round 17, publishing: a Hub whose answer names another host for the next request
(an LFS batch answer's ``verify`` href) had the token sent there; a repo that already held files
of an earlier upload (a single ``model.safetensors`` beside the sharded set that replaced it,
GGUF files of older weights, another project's weights, texts since taken out of the corpus)
kept them beside the new ones, and transformers loaded the old weights."""
from __future__ import annotations

import json

import pytest

from fake_hub import FakeHub, Hostile, Repo
from hub_fixtures import TOKEN, staged_files
from test_publish import REPO_ID, _metrics, _run, _write_evaluation, project  # noqa: F401  (project: a fixture)

pytestmark = pytest.mark.network_local

DATASET_ID = "someone/london-texts"


def _run_dir(project):
    return project / "09_models" / "checkpoints" / "micro"


def last_error(err: str) -> str:
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("error:") and err.count("error:") == 1 and "Traceback" not in err, err
    return last


# --- the token goes to the Hub's own address only ------------------------------------------------
def test_a_hub_answer_naming_another_host_gets_no_token_and_is_named(project, hub, capsys):
    """Was: the LFS batch answer's verify href on another host was called with `Authorization:
    Bearer hf_...` (huggingface_hub adds the token to that request whatever its host), and that
    host's 401 was told as "the token was rejected: check HF_TOKEN"."""
    with FakeHub("another-token") as other:
        def verify_elsewhere(answer):
            for o in answer["objects"]:
                if "actions" in o:
                    o["actions"]["verify"]["href"] = other.url + "/__lfs/verify"
            return answer
        hub.hostile["lfs-batch"] = [Hostile(real=True, reshape=verify_elsewhere)]
        assert _run(project, "--repo_id", REPO_ID) == 2
        line = last_error(capsys.readouterr().err)
        assert [r.path for r in other.requests] == ["/__lfs/verify"]   # the request was made ...
        assert not any(TOKEN in json.dumps(r.headers) or TOKEN.encode() in r.body for r in other.requests)
    assert f"named {other.url}, another host" in line and "the token was not what failed" in line, line
    assert "the token was rejected" not in line and TOKEN not in line
    assert _run(project, "--repo_id", REPO_ID) == 0                  # ... and the Hub's own still get it
    assert hub.files(REPO_ID) == staged_files(_run_dir(project) / "hub_stage")


# --- files an earlier upload left in the repo ---------------------------------------------------
def _reshard(project) -> None:
    """final/ retrained (other weights) and saved in shards, with its evaluation redone."""
    import torch
    from transformers import AutoModelForCausalLM

    final = _run_dir(project) / "final"
    model = AutoModelForCausalLM.from_pretrained(str(final))
    with torch.no_grad():
        model.transformer.wte.weight.add_(0.01)
    (final / "model.safetensors").unlink()
    model.save_pretrained(str(final), max_shard_size="20KB")
    _write_evaluation(_run_dir(project) / "evaluation", _metrics(5.5), final)


def test_a_republished_sharded_model_leaves_no_single_file_beside_it(project, hub, capsys):
    """Was: the repo kept the first upload's model.safetensors beside the new index and shards,
    exit 0, and from_pretrained(repo) loads model.safetensors first: the old weights."""
    assert _run(project, "--repo_id", REPO_ID) == 0
    _reshard(project)
    assert _run(project, "--repo_id", REPO_ID) == 0
    files = hub.files(REPO_ID)
    assert "model.safetensors" not in files and "model.safetensors.index.json" in files
    assert files == staged_files(_run_dir(project) / "hub_stage")
    assert "removing 1 file(s) of an earlier upload that this one replaces: model.safetensors" \
        in capsys.readouterr().out


def test_gguf_files_of_an_earlier_upload_go_and_a_users_own_files_stay(project, hub, capsys):
    """Was: republishing without --gguf left the old weights' GGUF files in the repo beside the
    new safetensors; another project's weights and tokenizer stayed beside ours."""
    pytest.importorskip("gguf")
    assert _run(project, "--repo_id", REPO_ID, "--gguf") == 0
    main = hub.repo(REPO_ID).branches["main"]
    main.update({"pytorch_model.bin": b"another project's weights", "tokenizer.model": b"spm",
                 "images/loss.png": b"PNG", "notes.md": b"mine"})
    assert _run(project, "--repo_id", REPO_ID) == 0
    files = hub.files(REPO_ID)
    staged = staged_files(_run_dir(project) / "hub_stage")
    assert {n: d for n, d in files.items() if n not in ("images/loss.png", "notes.md")} == staged
    assert files["images/loss.png"] == b"PNG" and files["notes.md"] == b"mine"


def test_a_hub_that_keeps_what_the_commit_deletes_is_caught(project, hub, capsys, monkeypatch):
    """The read-back checks the deletions too: a Hub answering the commit as done while it kept
    the old model.safetensors is one line, not "published"."""
    assert _run(project, "--repo_id", REPO_ID) == 0
    _reshard(project)
    commit = hub._commit
    monkeypatch.setattr(hub, "_commit", lambda h, repo, branch, body: commit(
        h, repo, branch, b"\n".join(x for x in body.splitlines() if b'"deletedFile"' not in x)))
    assert _run(project, "--repo_id", REPO_ID) == 2
    line = last_error(capsys.readouterr().err)
    assert "still holds 1 file(s) of an earlier upload" in line and "model.safetensors" in line, line


def test_a_text_taken_out_of_the_corpus_leaves_the_dataset_repo(project, hub, capsys):
    """Was: a document removed from the corpus (its licence, say) stayed published in texts/."""
    args = ("--repo_id", REPO_ID, "--dataset_repo_id", DATASET_ID)
    assert _run(project, *args) == 0
    proc = project / "data" / "london_historical" / "processed"
    rows = [json.loads(x) for x in (proc / "manifest.jsonl").read_text().splitlines()]
    (proc / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r["id"] != "doc1"))
    (proc / "texts" / "doc1.txt").unlink()
    assert _run(project, *args) == 0
    files = hub.files(DATASET_ID, repo_type="dataset")
    assert "texts/doc1.txt" not in files
    assert files == staged_files(project / "data" / "london_historical" / "hub_dataset_stage")


def test_a_new_repo_or_branch_deletes_nothing(project, hub, capsys):
    """A first upload, and a branch made from main, hold only what is staged: nothing to delete."""
    hub.repos[("model", REPO_ID)] = Repo("model", REPO_ID)
    assert _run(project, "--repo_id", REPO_ID, "--revision", "v2") == 0
    assert not [c for c in hub.repo(REPO_ID).commits if "deleted" in json.dumps(c)]
    assert "removing" not in capsys.readouterr().out
    assert hub.files(REPO_ID, branch="v2") == staged_files(_run_dir(project) / "hub_stage")
