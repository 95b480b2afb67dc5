"""Who publishes where: the Hub repo id, the token, the endpoint, and :class:`PublishError`.

The token is read from ``HF_TOKEN`` or the saved login and only ever handed to ``HfApi``;
error messages pass through :func:`mask_secret` before being raised, and log records made
while it is in use through :func:`masked_logs`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass, replace

from ..core import LondonLMError

_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
# the first part of a Hub address that names a repo type (huggingface.co/datasets/NS/NAME)
HUB_URL_PREFIXES = ("models", "datasets", "spaces")


class PublishError(LondonLMError, RuntimeError):
    """A problem the user can fix; the message says how (and never contains the token)."""


@dataclass(frozen=True)
class HubTarget:
    """Where an upload goes and how; ``dry_run`` stages and verifies but sends nothing."""

    repo_id: str | None
    private: bool = False
    revision: str | None = None          # branch, created when missing (default main)
    commit_message: str = "Upload londonlm model"
    dry_run: bool = False
    token: str | None = None             # default: HF_TOKEN, else the saved login
    endpoint: str | None = None          # default: HF_ENDPOINT, else the public Hub
    replace_other: bool = False          # replace a repo's model (or corpus) that is not londonlm's

    def checked(self, flag: str = "--repo_id", require_repo: bool = False) -> "HubTarget":
        """Cheap failures first (before any slow work): a valid repo id (optional for a dry
        run unless ``require_repo``) and, unless dry, a token."""
        repo_id = self.repo_id
        if repo_id is not None or not self.dry_run or require_repo:
            repo_id = validate_repo_id(repo_id, flag)
        if self.revision is not None:
            validate_revision(self.revision)
        token = self.token if self.dry_run else require_token(resolve_token(self.token))
        return replace(self, repo_id=repo_id, token=token)


def validate_repo_id(repo_id: str | None, flag: str = "--repo_id") -> str:
    """``namespace/name`` with Hub-legal characters, else a PublishError naming the fix."""
    rid = (repo_id or "").strip()
    hint = f"pass {flag} as 'your-username/model-name' (letters, digits, '-', '_', '.')"
    if not rid:
        raise PublishError(f"{flag} is required; {hint}")
    parts = rid.split("/")
    if len(parts) != 2 or not all(_REPO_PART.match(p) for p in parts):
        raise PublishError(f"invalid {flag} {rid!r}; {hint}")
    if parts[0].lower() in HUB_URL_PREFIXES:
        raise PublishError(f"invalid {flag} {rid!r}: '{parts[0]}/' is the Hub's address prefix for a repo "
                           f"type, not a namespace: the repo was asked for under '{parts[0]}', then huggingface_hub could "
                           f"not read its address back; {hint}")
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


def validate_revision(revision: str, flag: str = "--revision") -> str:
    """A branch name the Hub can create and commit to, by git's ref-name rules
    (``git check-ref-format --branch``), else a PublishError naming ``flag``. A dry run checks
    it too: a name the upload would refuse must not pass the rehearsal."""
    from ..core import utf8_problem

    hint = f"pass {flag} as a branch name such as 'main' or 'v1-tiny'"
    problem = utf8_problem(revision)
    if problem is None:
        components = revision.split("/")
        problem = next((why for bad, why in (
            (not revision, "it is empty"),
            (any(ord(c) < 32 or ord(c) == 127 for c in revision), "it holds a control character"),
            (any(c in revision for c in " ~^:?*[\\"), "it holds a space or one of ~ ^ : ? * [ \\"),
            (revision.startswith("/") or revision.endswith("/") or "//" in revision,
             "it starts or ends with '/' or holds '//'"),
            (".." in revision or "@{" in revision, "it holds '..' or '@{'"),
            (revision == "@" or revision.startswith("-"), "it is '@' or starts with '-'"),
            (revision.endswith("."), "it ends with '.'"),
            (any(c.startswith(".") or c.endswith(".lock") for c in components),
             "a part of it starts with '.' or ends with '.lock'"),
        ) if bad), None)
    if problem:
        raise PublishError(f"invalid {flag} {revision!r}: {problem}; {hint}")
    return revision


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
    if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
        # an HTTP header cannot carry it, and the library's error would quote it (the part after
        # a line break escapes masking): refused here, without a character of it shown
        raise PublishError("the Hugging Face token holds a space, line break or non-ASCII character: "
                           "copy the token again into HF_TOKEN (or run `hf auth login`)")
    return token


# the password of a URL's user part (HF_ENDPOINT=https://user:password@hub.example): an
# endpoint is printed in every dry run's, upload's and refusal's line
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*):[^/\s@]*@", re.IGNORECASE)


def mask_secret(text: str, secret: str | None) -> str:
    """Replace every occurrence of ``secret`` (and any hf_ token, and any URL's password) in ``text``."""
    out = _URL_PASSWORD.sub(r"\1:***@", str(text))
    if secret:  # as given, as a repr quotes it, and each line of it (a header error shows them)
        for form in (secret, repr(secret)[1:-1], *secret.splitlines()):
            if len(form.strip()) >= 4:
                out = out.replace(form.strip(), "hf_***")
    return re.sub(r"hf_[A-Za-z0-9]{8,}", "hf_***", out)


@contextlib.contextmanager
def masked_logs(secret: str | None):
    """Every log record made meanwhile, by any library and thread, with ``secret`` masked
    (:func:`mask_secret`) in its message and traceback: at DEBUG, httpcore logs each response's
    headers and huggingface_hub (``HF_DEBUG``) each request, so a Hub echoing the token in a
    header would put it in the user's logs. Masked where records are made, not in a handler,
    so handlers the user or a library added later are covered too."""
    make = logging.getLogRecordFactory()

    def masked(*args, **kwargs) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            text = record.getMessage()
        except Exception:  # arguments that do not fit the message: logging reports it at emit time
            return record
        clean = mask_secret(text, secret)
        if clean != text:
            record.msg, record.args = clean, None
        if record.exc_info:  # formatters print exc_text, when set, in place of formatting exc_info
            record.exc_text = mask_secret(logging.Formatter().formatException(record.exc_info), secret)
        return record

    logging.setLogRecordFactory(masked)
    try:
        yield
    finally:
        logging.setLogRecordFactory(make)


def hub_endpoint(endpoint: str | None = None) -> str:
    """The Hub URL: explicit, else ``HF_ENDPOINT`` read now (not at import), else the default;
    a value that is no http(s) URL is a PublishError (:func:`check_endpoint`)."""
    given = endpoint or os.environ.get("HF_ENDPOINT")
    if given is not None:
        check_endpoint(given, "HF_ENDPOINT" if not endpoint else "the Hub endpoint")
    from huggingface_hub import constants

    return (given or constants.ENDPOINT).rstrip("/")


def check_endpoint(url: str, name: str = "HF_ENDPOINT") -> None:
    """Checked before huggingface_hub is imported: it parses ``HF_ENDPOINT`` at import, so a
    malformed one ('http://[::1') was a traceback there, and one with a port out of range failed
    the staged folder's verification (transformers imports it), blaming the model folder; an
    empty or scheme-less one went through staging and verification to fail at the upload."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port out of range or not a number)
    except ValueError as e:
        problem = str(e)
    else:
        problem = None if parts.scheme in ("http", "https") and parts.hostname else "not an http(s) URL"
    if problem:
        raise PublishError(f"{name} {mask_secret(repr(url[:100]), None)} is no Hub address ({problem}); set it to the Hub's URL, "
                           f"e.g. https://huggingface.co, or unset it for the public Hub")
