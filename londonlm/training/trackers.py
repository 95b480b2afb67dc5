"""Where a training run's metrics go besides its own files: the ``--report_to`` trackers
(TensorBoard, W&B, ...). Which ones a run uses by default, and the check of a command line's
list before any work: one ``error:`` line naming the trackers installed here, instead of the
Trainer's traceback after the token cache was built. Several trackers may be named either way
transformers documents them: ``--report_to wandb tensorboard`` or ``--report_to wandb,tensorboard``.
"""
from __future__ import annotations

import importlib.util
import netrc
import os
from urllib.parse import urlsplit

from ..core import UsageError

ANY = ("all", "none")  # the Trainer's own words: every installed tracker, or none


def default_report_to() -> list[str]:
    """TensorBoard when installed; W&B only when installed and configured to run
    (:func:`wandb_can_log`), so a fresh machine never blocks on a login."""
    out = []
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        out.append("tensorboard")
    if importlib.util.find_spec("wandb") and os.environ.get("WANDB_MODE") != "disabled" and wandb_can_log():
        out.append("wandb")
    return out or ["none"]


def wandb_can_log() -> bool:
    """W&B can start without asking for a login: a mode that needs none (offline, disabled), an
    API key in the environment, or one `wandb login` saved in ~/.netrc for its server. Without
    any, wandb.init raised its own traceback at the first step, after the token cache was built."""
    if os.environ.get("WANDB_MODE") in ("offline", "dryrun", "disabled") or any(
            os.environ.get(k) for k in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE")):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or ""
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check_report_to(names: list[str]) -> list[str]:
    """``names`` (each possibly ``a,b``) as one list of trackers, each known to transformers and
    installed here; anything else is one usage error naming what can be used."""
    from transformers.integrations import INTEGRATION_TO_CALLBACK, get_available_reporting_integrations

    wanted = [n.strip() for name in names for n in str(name).split(",") if n.strip()]
    if not wanted:
        raise UsageError("--report_to: give a tracker name, all or none")
    installed = get_available_reporting_integrations()
    choices = ", ".join([*installed, *ANY])
    for name in wanted:
        if name in ANY:
            if len(wanted) > 1:
                raise UsageError(f"--report_to: {name!r} cannot be combined with other trackers")
        elif name not in INTEGRATION_TO_CALLBACK:
            raise UsageError(f"--report_to: unknown tracker {name!r}; installed here: {choices}")
        elif name not in installed:
            raise UsageError(f"--report_to: {name!r} is not installed here (pip install it); "
                             f"installed: {choices}")
    if ("wandb" in wanted or ("all" in wanted and "wandb" in installed)) and not wandb_can_log():
        raise UsageError("--report_to: wandb has no login here: set WANDB_API_KEY, run `wandb login`, "
                         "or set WANDB_MODE=offline")
    return wanted


def take_report_to(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``argv`` without its ``--report_to`` values, and those values checked (None when the
    flag is absent). The Trainer's parser reads one word there, so a list is taken out first."""
    out, given, i = [], None, 0
    while i < len(argv):
        a = argv[i]
        if a == "--report_to" or a.startswith("--report_to="):
            given = given or []
            if "=" in a:
                given.append(a.split("=", 1)[1])
                i += 1
                continue
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                given.append(argv[i])
                i += 1
            continue
        out.append(a)
        i += 1
    return out, (None if given is None else check_report_to(given))
