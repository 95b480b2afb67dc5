"""The corpus stage's public names, for the stages that build or read the corpus.

Nothing is defined here: the corpus artifact (manifest, split rule, statistics) lives in
:mod:`londonlm.manifest`, the stage that makes it (``build_corpus``) in :mod:`londonlm.collect`.
Neither imports this module, so the corpus code has no import cycle. The stage's names load
on first use: readers of the manifest need not import the cleaning and dedup code (numpy,
~1 s).
"""
from .manifest import (COLLECT_CMD, MANIFEST, CorpusError, assign_split, iter_split_texts,
                       manifest_sha256, read_manifest, summarize)

_STAGE_NAMES = ("CollectionError", "build_corpus", "collect_from_registry", "run_collection")

__all__ = ["COLLECT_CMD", "MANIFEST", "CorpusError", "assign_split", "iter_split_texts",
           "manifest_sha256", "read_manifest", "summarize", *_STAGE_NAMES]


def __getattr__(name: str):
    if name in _STAGE_NAMES:
        from . import collect

        return getattr(collect, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
