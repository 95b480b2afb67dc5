"""Running a command as a user who may not read or write what it meets.

The suite runs as root here, and root may read and write any file whatever its mode, so a
chmod alone proves nothing. As root, a command runs as ``nobody`` (``setpriv``); as anyone
else it runs as that user, for whom a chmod already bites. Tests skip, saying why, where
neither is possible.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

NOBODY_UID = 65534


def unprivileged_prefix() -> list[str]:
    """The words that run a command without root's power over file modes."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root, and setpriv (util-linux) is missing: cannot drop to nobody")
    prefix = [setpriv, f"--reuid={NOBODY_UID}", f"--regid={NOBODY_UID}", "--clear-groups"]
    probe = subprocess.run(prefix + ["true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot drop to nobody here (setpriv: {probe.stderr.decode().strip()})")
    return prefix


def reachable_dir() -> Path:
    """A fresh folder the unprivileged user can reach: pytest's tmp_path lies under root's
    0700 folder. The caller removes it (``shutil.rmtree``)."""
    d = Path(tempfile.mkdtemp(prefix="londonlm-unprivileged-"))
    d.chmod(0o755)
    return d


def run_unprivileged(argv: list[str], home: Path, **env: str) -> subprocess.CompletedProcess:
    """``argv`` (a python script and its arguments) under this repository's Python, as an
    unprivileged user, with ``home`` (made writable for it) as HOME."""
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o777)
    environ = {**os.environ, "HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **env}
    return subprocess.run(unprivileged_prefix() + [sys.executable, *argv], capture_output=True,
                          text=True, env=environ, cwd=str(home), timeout=300)


def make_readable(folder: Path) -> None:
    """Every folder under ``folder`` 0755 and every file 0644: readable to the unprivileged
    user, writable only to the owner."""
    for p in [folder, *folder.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
