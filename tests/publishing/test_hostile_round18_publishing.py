"""Hostile round 18, publishing: a Hub repo that already held another project's model had its
weights, configs and tokenizer replaced (deleted as "left over" by the commit) without a word;
a model saved as pickled shards (``pytorch_model.bin.index.json``, transformers 4's
``safe_serialization=False``) was refused as "model weights missing", and one whose pickle holds
more than tensors was a traceback that ended by advising ``weights_only=False``."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fake_hub import Repo
from hub_fixtures import staged_files
from pickled_weights import save_pickled_shards
from test_publish import REPO_ID, _metrics, _run, _write_evaluation, project  # noqa: F401  (project: a fixture)

pytestmark = pytest.mark.network_local

DATASET_ID = "someone/london-texts"
OTHER_CARD = b"---\nlicense: apache-2.0\ntags:\n- llama\n- text-generation\n---\n# Someone's 7B model\n"
OTHERS = {"README.md": OTHER_CARD, "config.json": b'{"model_type": "llama"}',
          "model.safetensors": b"their weights", "tokenizer.model": b"spm"}


def _run_dir(project) -> Path:
    return project / "09_models" / "checkpoints" / "micro"


def last_error(err: str) -> str:
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("error:") and err.count("error:") == 1 and "Traceback" not in err, err
    return last


def _others_repo(hub, repo_id=REPO_ID, repo_type="model", files=OTHERS) -> Repo:
    repo = Repo(repo_type, repo_id)
    repo.branches["main"] = dict(files)
    hub.repos[(repo_type, repo_id)] = repo
    return repo


# --- another project's model in the repo ----------------------------------------------------------
def test_a_repo_holding_another_projects_model_is_refused_before_anything_is_sent(project, hub, capsys):
    """Was: exit 0; the commit deleted their model.safetensors, tokenizer.model and replaced
    their config.json and README.md with ours."""
    repo = _others_repo(hub)
    assert _run(project, "--repo_id", REPO_ID, "--private", "--revision", "v2") == 2
    line = last_error(capsys.readouterr().err)
    assert "already holds a model that this project did not publish" in line, line
    assert "--replace_other_repo" in line and "model.safetensors" in line, line
    assert repo.branches == {"main": OTHERS} and not repo.commits and not repo.private
    assert not [r for r in hub.requests if r.method in ("PUT", "POST") and "/api/repos/create" not in r.path]


def test_replace_other_repo_replaces_it(project, hub, capsys):
    _others_repo(hub)
    assert _run(project, "--repo_id", REPO_ID, "--replace_other_repo") == 0
    assert hub.files(REPO_ID) == staged_files(_run_dir(project) / "hub_stage")
    assert "--replace_other_repo" in publish_help()


def publish_help() -> str:
    from test_publish import publish

    return publish.build_parser().format_help()


def test_our_own_repo_and_a_users_own_files_are_published_over(project, hub, capsys):
    """Our earlier upload (its card tagged londonlm) is republished; a repo holding a README
    with no front matter and a user's notes (nothing a publish owns) is published into."""
    assert _run(project, "--repo_id", REPO_ID) == 0
    assert _run(project, "--repo_id", REPO_ID) == 0
    _others_repo(hub, "someone/notes", files={"README.md": b"# my notes\n", "notes.md": b"mine"})
    assert _run(project, "--repo_id", "someone/notes") == 0
    assert hub.files("someone/notes")["notes.md"] == b"mine"


def test_a_dataset_repo_holding_another_corpus_is_refused(project, hub, capsys):
    _others_repo(hub, DATASET_ID, "dataset", {"README.md": b"---\ntags: [wikipedia]\n---\n",
                                              "data/train-0.parquet": b"PAR1"})
    assert _run(project, "--repo_id", REPO_ID, "--dataset_repo_id", DATASET_ID) == 2
    line = last_error(capsys.readouterr().err)
    assert "already holds a corpus that this project did not publish" in line, line
    assert hub.files(DATASET_ID, repo_type="dataset")["data/train-0.parquet"] == b"PAR1"
    # before the model goes up (it was published first, then the dataset repo refused)
    assert ("model", REPO_ID) not in hub.repos or not hub.files(REPO_ID)


# --- pickled shards ----------------------------------------------------------------------------------


def test_a_model_in_pickled_shards_is_published_as_safetensors(project, hub, capsys):
    """Was: "the model at …/final cannot be published: model weights missing"."""
    from safetensors.torch import load_file

    final = _run_dir(project) / "final"
    before = load_file(str(final / "model.safetensors"))
    save_pickled_shards(final)
    _write_evaluation(_run_dir(project) / "evaluation", _metrics(5.5), final)
    assert _run(project, "--repo_id", REPO_ID) == 0
    files = hub.files(REPO_ID)
    assert not [f for f in files if f.endswith((".bin", ".bin.index.json"))]
    staged = _run_dir(project) / "hub_stage"
    after = load_file(str(staged / "model.safetensors"))
    assert after.keys() == before.keys() and all((after[k] == before[k]).all() for k in before)
    assert files == staged_files(staged)


class Payload:
    def __reduce__(self):
        return (shutil.rmtree, ("/nonexistent-londonlm-test",))


def test_a_pickle_holding_more_than_tensors_is_one_line(project, hub, capsys):
    """Was: transformers' weights-only refusal as a traceback ("Re-running `torch.load` with
    `weights_only` set to `False` will likely succeed")."""
    final = _run_dir(project) / "final"
    save_pickled_shards(final, extra=Payload())
    _write_evaluation(_run_dir(project) / "evaluation", _metrics(5.5), final)
    assert _run(project, "--repo_id", REPO_ID) == 2
    line = last_error(capsys.readouterr().err)
    assert "hold objects that are not tensors" in line and "shutil.rmtree" in line, line
    assert "weights_only` set to `False`" not in line and ("model", REPO_ID) not in hub.repos
