"""What the publishing tests share (a pytest plugin of tests/conftest.py, so `hub` is a fixture everywhere): the loopback Hub with the environment a real publish sees,
and the staged folder read back for comparison with what the Hub received."""
from __future__ import annotations

from pathlib import Path

import pytest

from fake_hub import FakeHub

TOKEN = "hf_TestToken0123456789abcdefXYZ"


@pytest.fixture
def hub(monkeypatch):
    """The fake Hub, with the environment a real publish sees: endpoint, token, online."""
    from huggingface_hub import constants

    with FakeHub(TOKEN) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)      # plain LFS uploads
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        yield server


def staged_files(folder: Path) -> dict[str, bytes]:
    """Every file of a staged upload by its repo path (the staging marker left out)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and p.name != ".londonlm_stage"}
