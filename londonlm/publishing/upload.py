"""The upload: ``huggingface_hub`` sends a verified staging folder to a repo (created when
missing, made private on request, on a branch created on demand). Nothing here reads the
token from the environment (``access`` does) and no error message carries it."""
from __future__ import annotations

import fnmatch
import glob
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from ..core import sha256_file
from .access import HubTarget, PublishError, hub_endpoint, mask_secret, masked_logs
from .hub_http import HubLostFiles, bounded_client, end_progress_bars, failure_text
from .staging import STAGE_MARKER, Log, list_folder


# What a publish owns in a repo: the files that make up a model (weights in any framework's
# form, configs, tokenizer files, GGUF exports) or a corpus, and the records a publish writes
# beside them. Such a file in the repo that the staged folder lacks is left from an earlier
# upload, and upload_folder only adds: a single model.safetensors, which transformers loads
# before the sharded set that replaced it; GGUF files of older weights; another project's
# pytorch_model.bin; texts since taken out of the corpus. The commit deletes them. A pattern
# without '/' matches at the top of the repo only; anything else (a user's images) stays.
OWNED_FILES = {
    "model": ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json", "*.gguf",
              "*.h5", "*.msgpack", "*.pt", "*.pth", "*.ckpt", "*.onnx", "config.json",
              "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
              "tokenizer.model", "chat_template.jinja", "chat_template.json", "chat_info.json",
              "metrics.json", "chat_eval.json"),
    "dataset": ("manifest.jsonl", "texts/*", "data/*"),
}


def owned(path: str, repo_type: str) -> bool:
    """Whether ``path`` in a repo of ``repo_type`` is a file a publish owns (:data:`OWNED_FILES`)."""
    return any(fnmatch.fnmatchcase(path, p) and ("/" in p or "/" not in path)
               for p in OWNED_FILES.get(repo_type, ()))


@dataclass
class UploadResult:
    repo_url: str
    commit_url: str | None
    revision: str


def upload_to_hub(folder: Path, target: HubTarget, repo_type: str = "model", log: Log = print) -> UploadResult:
    """create_repo(exist_ok) + create_branch(exist_ok) + upload_folder to ``target`` (checked:
    repo id and token set), then the commit read back; errors masked, one line each."""
    from huggingface_hub import HfApi, constants

    if constants.is_offline_mode():
        raise PublishError("Hugging Face offline mode is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE "
                           "is set); unset it to publish, or use --dry_run")
    url, token, branch = hub_endpoint(target.endpoint), target.token, target.revision or "main"
    api = HfApi(endpoint=url, token=token)
    try:
        with bounded_client(url), masked_logs(token):
            repo_url, info = _send(api, Path(folder), target, repo_type, branch, log)
    except PublishError:  # the repo holds another project's model: said as it is
        end_progress_bars()
        raise
    except Exception as e:  # the Hub's refusal, a failed connection, an answer of another shape
        end_progress_bars()
        raise PublishError(mask_secret(f"upload to {url}/{target.repo_id} failed{failure_text(e, token)}",
                                       token)) from None
    log(mask_secret(f"uploaded to {repo_url} (branch {branch})", token))
    return UploadResult(repo_url=str(repo_url), commit_url=getattr(info, "commit_url", None), revision=branch)


def _send(api, folder: Path, target: HubTarget, repo_type: str, branch: str, log: Log):
    """The repo (created, made private), the branch, the commit (deleting what an earlier upload
    left that this one replaces), and the commit read back: (repo url, commit info)."""
    repo_id = target.repo_id
    repo_url = api.create_repo(repo_id, repo_type=repo_type, private=True if target.private else None,
                               exist_ok=True)
    if not target.replace_other:  # before the repo's settings, branches or files are touched
        _refuse_another_projects(api, repo_id, repo_type, branch)
    if target.private:  # create_repo leaves an existing public repo public: make it private too
        api.update_repo_settings(repo_id, repo_type=repo_type, private=True)
    if branch != "main":
        api.create_branch(repo_id, branch=branch, repo_type=repo_type, exist_ok=True)
    stale = _left_over(api.list_repo_files(repo_id, revision=branch, repo_type=repo_type), folder, repo_type)
    if stale:
        log(f"removing {len(stale)} file(s) of an earlier upload that this one replaces: "
            f"{', '.join(stale[:5])}{', ...' if len(stale) > 5 else ''}")
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type,
                             revision=branch, commit_message=target.commit_message,
                             ignore_patterns=[STAGE_MARKER],
                             delete_patterns=[glob.escape(p) for p in stale] or None)
    oid = str(getattr(info, "oid", None) or "")  # the new commit when the Hub names one
    check_received(api, folder, repo_id, repo_type, oid if re.fullmatch(r"[0-9a-f]{40}", oid) else branch)
    return repo_url, info


# The tag every card a publish writes carries (model, chat and dataset cards): a repo whose card
# lacks it was not made by this project.
PROJECT_TAG = "londonlm"


def _refuse_another_projects(api, repo_id: str, repo_type: str, branch: str) -> None:
    """PublishError when the repo (at ``branch``, or main that a new branch starts from) holds
    files a publish owns (:data:`OWNED_FILES`: weights, configs, a corpus) under a card without
    the project's tag: another project's model, which the commit would replace (its weights
    and tokenizer deleted as "left over"). A new repo, one holding only a user's own files, and
    an earlier publish of this project (its card tagged) go on."""
    from huggingface_hub.errors import RevisionNotFoundError

    try:
        files, rev = api.list_repo_files(repo_id, revision=branch, repo_type=repo_type), branch
    except RevisionNotFoundError:  # a new branch: made from main
        files, rev = api.list_repo_files(repo_id, revision="main", repo_type=repo_type), "main"
    theirs = sorted(p for p in files if owned(p, repo_type))
    if not theirs:
        return
    card = getattr(api.repo_info(repo_id, repo_type=repo_type, revision=rev), "card_data", None)
    tags = card.get("tags") if card is not None else None
    if PROJECT_TAG in (tags if isinstance(tags, list) else [tags]):
        return
    kind = "corpus" if repo_type == "dataset" else "model"
    raise PublishError(
        f"refusing to publish: {repo_id} ({rev}) already holds a {kind} that this project did not "
        f"publish (its card has no {PROJECT_TAG!r} tag; it holds {', '.join(theirs[:4])}"
        f"{', ...' if len(theirs) > 4 else ''}), which this upload would replace; pick another "
        f"repo id, or pass --replace_other_repo to replace it (the Hub's history keeps the old files)")


def refuse_another_projects_repo(target: HubTarget, repo_type: str) -> None:
    """The check :func:`upload_to_hub` makes of a repo before it touches it, made alone and read
    only, for a repo a later upload of the same command goes to: with ``--dataset_repo_id`` the
    model went up first, and only then was the dataset repo found to hold another corpus. A repo
    not there yet, a dry run and ``replace_other`` pass; a failed read is one line."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import RepositoryNotFoundError

    target = target.checked("--dataset_repo_id" if repo_type == "dataset" else "--repo_id", require_repo=True)
    if target.dry_run or target.replace_other or constants.is_offline_mode():  # (the upload says why)
        return
    url, token = hub_endpoint(target.endpoint), target.token
    try:
        with bounded_client(url), masked_logs(token):
            _refuse_another_projects(HfApi(endpoint=url, token=token), target.repo_id, repo_type,
                                     target.revision or "main")
    except PublishError:
        raise
    except RepositoryNotFoundError:  # not there yet: the upload makes it
        return
    except Exception as e:  # a refusal, a failed connection, an answer of another shape
        raise PublishError(mask_secret(f"reading {url}/{target.repo_id} failed{failure_text(e, token)}",
                                       token)) from None


def _left_over(remote: list[str], folder: Path, repo_type: str) -> list[str]:
    """The repo's files a publish owns that the staged folder lacks (:data:`OWNED_FILES`)."""
    staged = {f.path for f in list_folder(folder)}
    return sorted(p for p in remote if owned(p, repo_type) and p not in staged)


def check_received(api, folder: Path, repo_id: str, repo_type: str, revision: str) -> None:
    """Read back what the Hub holds at ``revision`` (the new commit) and compare it with the
    staged files, by size and hash: a Hub can answer success and keep other content (a preupload
    answer telling the client to skip files, or that they are there already)."""
    from huggingface_hub.hf_api import RepoFile

    remote = {f.path: f for f in api.list_repo_tree(repo_id, recursive=True, revision=revision,
                                                    repo_type=repo_type) if isinstance(f, RepoFile)}
    staged = list_folder(folder)
    wrong = [f.path for f in staged if not _same_file(folder / f.path, remote.get(f.path))]
    if wrong:
        raise HubLostFiles(f"the Hub answered the commit as done, but at {revision} it lacks or holds "
                           f"other content for {len(wrong)} of the {len(staged)} staged files "
                           f"({', '.join(wrong[:5])}{', ...' if len(wrong) > 5 else ''})")
    left = _left_over(list(remote), folder, repo_type)  # a deletion the Hub did not make
    if left:
        raise HubLostFiles(f"the Hub answered the commit as done, but at {revision} it still holds "
                           f"{len(left)} file(s) of an earlier upload that the commit deletes "
                           f"({', '.join(left[:5])}{', ...' if len(left) > 5 else ''})")


def _same_file(path: Path, entry) -> bool:
    """``entry`` (a RepoFile, or None) is ``path``'s content: its LFS sha256 when the Hub stores
    it in LFS, else its git blob id."""
    if entry is None or entry.size != path.stat().st_size:
        return False
    lfs = entry.lfs
    sha256 = (lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)) if lfs else None
    return sha256 == sha256_file(path) if sha256 else entry.blob_id == _git_blob_id(path)


def _git_blob_id(path: Path) -> str:
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
