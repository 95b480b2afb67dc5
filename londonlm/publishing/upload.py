"""The upload: ``huggingface_hub`` sends a verified staging folder to a repo (created when
missing, made private on request, on a branch created on demand). Nothing here reads the
token from the environment (``access`` does) and no error message carries it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .access import HubTarget, PublishError, hub_endpoint, mask_secret
from .staging import STAGE_MARKER, Log


@dataclass
class UploadResult:
    repo_url: str
    commit_url: str | None
    revision: str


def upload_to_hub(folder: Path, target: HubTarget, repo_type: str = "model", log: Log = print) -> UploadResult:
    """create_repo(exist_ok) + create_branch(exist_ok) + upload_folder to ``target`` (checked:
    repo id and token set); errors masked."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    if constants.is_offline_mode():
        raise PublishError("Hugging Face offline mode is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE "
                           "is set); unset it to publish, or use --dry_run")
    url, repo_id, token, private = hub_endpoint(target.endpoint), target.repo_id, target.token, target.private
    api = HfApi(endpoint=url, token=token)
    branch = target.revision or "main"
    try:
        repo_url = api.create_repo(repo_id, repo_type=repo_type, private=True if private else None,
                                   exist_ok=True)
        if private:  # create_repo leaves an existing public repo public: make it private too
            api.update_repo_settings(repo_id, repo_type=repo_type, private=True)
        if branch != "main":
            api.create_branch(repo_id, branch=branch, repo_type=repo_type, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type,
                                 revision=branch, commit_message=target.commit_message,
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
