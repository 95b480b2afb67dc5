"""OCR repair, part of the corpus stage: scanned text repaired with the period's own evidence,
and its quality measured before and after.

- :mod:`.step`: the collection's OCR step (which documents are OCR, the period lexicon a
  collection repairs with, one document's repair with its quality).
- :mod:`.jsonl`: the JSONL repair stage (``02_data_collection/repair_ocr.py``).
- :mod:`.files`: that stage's files: no two of them one, outputs written through links and
  into devices and pipes as they are, no temporary file left by a killed run.
- :mod:`.forms`: a text as the repair searches it (composed, invisible characters left out) and
  the way back: the same repairs whatever the Unicode form of the input.
- :mod:`.processes`: that stage's processes: workers bounded by the CPUs, dying with their
  parent, stopped at once; SIGTERM an error like any other.
- :mod:`.shared_searches`: that stage's workers' candidate searches, shared between them.
- :mod:`.repair`: the noisy-channel corrector (``OcrRepairer``) and its settings.
- :mod:`.judge`: a trained model's judgement of the repairer's close decisions (``--lm``).
- :mod:`.confusions`: the confusion model (how print is misread) and its candidate search;
  :mod:`._walk` (``_walk.c``) is that search compiled, optional (built where install finds a C
  compiler; the log says once per process which walk is in use).
- :mod:`.lexicon`: the period lexicon, the words and word pairs of the period's transcribed text.
- :mod:`.sums`: sums of money whose digits the OCR read as letters.
- :mod:`.quality`: one OCR quality score per document and the report's summary of them.
- :mod:`.adapt`: the confusion model adapted to a collection's OCR from its own confident repairs.
- :mod:`.pairs`: paired OCR data (ICDAR 2017, overProof) and the CER of a repair against it.
- ``data/confusions.json``: the shipped confusion model; ``data/period_lexicon.json.gz``: the
  shipped period lexicon (public domain text), used where a collection has too little of its own.

Exported here is what the rest of the project uses; tests and benchmarks reach the parts. They
load on first use: the corpus report reads only the quality summary, and readers of the manifest
(through :mod:`..cutoff` and the report) need not import the repairer, its sources and rapidfuzz.
"""
from importlib import import_module

_WHERE = {
    "ConfusionError": "confusions", "ConfusionModel": "confusions", "load_confusions": "confusions",
    "JsonlOptions": "jsonl", "repair_jsonl": "jsonl",
    "bounded_workers": "processes", "Terminated": "processes", "usable_cpus": "processes", "WorkerDied": "processes",
    "check_output": "files", "FileClash": "files", "refuse_same_files": "files", "regular_target": "files",
    "same_as_stdout": "files", "output_locks": "files",
    "build_lexicon": "lexicon", "LexiconBuilder": "lexicon", "LexiconError": "lexicon", "PeriodLexicon": "lexicon",
    "OCR_SUMMARY_KEYS": "quality", "ocr_quality": "quality", "ocr_summary": "quality",
    "OcrRepairer": "repair", "RepairSettings": "repair",
    "collection_lexicon": "step", "DocumentRepair": "step", "load_period_lexicon": "step", "OCR_DIR": "step",
    "default_period_lexicon": "step", "shipped_lexicon": "step", "period_corpus_id": "step",
    "OcrOptions": "step",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
