"""Manifest rows and a front-matter reader shared by the card tests."""
from __future__ import annotations

import re

import yaml

ROWS = [
    {"id": "a", "source": "oldbailey", "source_kind": "web", "year": 1674, "decade": 1670,
     "license": "cc-by-4.0", "words": 100, "chars": 600, "split": "train", "london": True},
    {"id": "b", "source": "gutenberg", "source_kind": "gutenberg", "year": 1722, "decade": 1720,
     "license": "public-domain", "words": 50, "chars": 300, "split": "validation", "london": True},
    {"id": "c", "source": "gutenberg", "source_kind": "gutenberg", "year": None, "decade": None,
     "license": "public-domain", "words": 10, "chars": 60, "split": "train", "london": False},
]


def front_matter(card: str) -> dict:
    """The YAML metadata block of a card (asserting there is one)."""
    m = re.match(r"^---\n(.*?)\n---\n", card, re.S)
    assert m, "no YAML front matter"
    return yaml.safe_load(m.group(1))
