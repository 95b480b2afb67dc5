"""Stage 02, the corpus (``02_data_collection/``): sources -> download -> clean -> filter ->
dedup -> ``manifest.jsonl`` and ``texts/``.

- :mod:`.collect`: the stage (``build_corpus``); :mod:`.processing`: its streaming core;
  :mod:`.shards`: shards and their merge; :mod:`.report`: statistics and the report.
- :mod:`.manifest`: the artifact the later stages read: manifest, split rule, one summary.
- :mod:`.cleaning`, :mod:`.filters`, :mod:`.dedup`: the steps; :mod:`.download` and
  :mod:`.partial_download`: polite, resumable HTTP; :mod:`.sources`: one module per source kind.
- :mod:`.ocr`: OCR repair, a subpackage: scanned documents repaired with the period's own
  evidence (period lexicon, confusion model, its optional compiled search) and their quality
  measured; also the JSONL repair stage (``repair_ocr.py``).

Exported here is what other stages read: the manifest and its summary, the corpus's time
facts and its cutoff view (:mod:`.cutoff`; :mod:`.dating` decides a document's year), a local
folder's ``MANIFEST.tsv``, and the Old Bailey TEI parsing the chat stage shares. The stage's
own entry points load on first use, so readers of the manifest need not import the cleaning
and dedup code (numpy, ~1 s); so do the time facts, the local folder's manifest and the TEI
parsing (every source and the report with them: a quarter of the OCR repair stage's start).
"""
from ..core import lazy_exports
from .manifest import (COLLECT_CMD, MANIFEST, SPLITS, CorpusError, assign_split, collected_sources, decade_key,
                       iter_split_texts, manifest_sha256, read_manifest, read_split_texts, reading_corpus,
                       require_finished_corpus,
                       split_sizes, summarize, text_sizes, texts_not_as_made)

_LAZY, __getattr__, __dir__ = lazy_exports(__name__, {
    "collect": ("CollectionError", "CollectionOptions", "SAMPLE_SOURCE_ID", "build_corpus", "collect_from_registry",
                "run_collection"),
    "cutoff": ("corpus_time_facts", "cutoff_view"),
    "sources.local": ("read_folder_manifest",),
    "sources.old_bailey": ("TEI_SKIP_TAGS", "format_date", "parse_tei", "tei_interp"),
})

__all__ = [
    "assign_split", "collected_sources", "COLLECT_CMD", "CorpusError", "decade_key", "iter_split_texts", "MANIFEST",
    "manifest_sha256", "read_manifest", "read_split_texts", "reading_corpus", "require_finished_corpus", "SPLITS", "split_sizes", "summarize", "text_sizes",
    "texts_not_as_made", *_LAZY,
]
