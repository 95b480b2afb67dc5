"""The OCR step of the corpus stage: which documents are OCR, the period lexicon a collection
repairs them with, and one document's repair with its quality before and after.

A document is OCR when its source says so (``doc.extra["ocr"]``: archive.org, a local folder
marked ``ocr: true`` or collected with ``--ocr``, any source that scans); transcribed text is
never repaired. The period lexicon comes from a corpus the user names (``--period_corpus``: a
saved lexicon, a collected corpus, or a folder of texts) or else from the transcribed documents
of the collection itself, cleaned as the collection cleans them; it is saved under
``processed/ocr/`` and reused while its inputs are unchanged. Where the collection has too little
transcribed text of its own (``OWN_MIN_WORDS``), or none, the lexicon shipped with the package
(``data/period_lexicon.json.gz``, learned from public domain text by ``benchmarks/ocr_repair.py
lexicon``; its ``made_from`` says from what) supplies the period's words, the collection's own
counts added to it.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from functools import lru_cache
from importlib import resources
from typing import Any, Callable, Iterable, Iterator

from ...core import UsageError, sha256_file, user_path, write_text_atomic
from ..cleaning import clean_text, join_hyphenation
from .. import manifest
from ..manifest import MANIFEST, CorpusError, read_jsonl, reading_corpus
from ..sources import Document, LocalSource, materialise
from .confusions import ConfusionModel, load_confusions
from .judge import Judge, JudgedRepairer
from .lexicon import LEXICON_FILE, RULES, LexiconBuilder, PeriodLexicon, word_key
from .quality import quality_counts, repaired_counts
from .repair import OcrRepairer, RepairSettings

OCR_DIR = "ocr"                 # under processed/: the collection's period lexicon and its key
KEY_FILE = "lexicon_inputs.json"
DEFAULT_MIN_QUALITY = 0.5
SHIPPED_LEXICON = "data/period_lexicon.json.gz"
# words read from a collection's own transcribed text for it to stand alone as the period lexicon
# (the shipped one read 4.1 M); less is evidence too, so it is added to the shipped lexicon's counts
OWN_MIN_WORDS = 2_000_000


def is_ocr(doc: Document) -> bool:
    """Whether a document's text came from OCR (its source's word; never guessed from the text)."""
    return bool(doc.extra.get("ocr"))


@dataclass(frozen=True)
class OcrOptions:
    """How the collection treats OCR documents, as the user asked. ``period_corpus``: the corpus
    the lexicon is learned from (None: the collection's transcribed documents); ``repair``: False
    measures quality only; ``min_quality``: the ``ocr_quality`` filter's threshold (0: keep all).
    What a collection finds (whether it has OCR documents, the lexicon it built for them) is not
    kept here: :func:`collection_lexicon` returns it."""

    repair: bool = True
    period_corpus: str | None = None
    min_quality: float = DEFAULT_MIN_QUALITY
    long_s_output: str = "print"
    confusions: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.min_quality <= 1:
            raise UsageError(f"--ocr_min_quality must be in [0, 1] (got {self.min_quality})")

    def settings(self) -> dict[str, Any]:
        """What shapes the outputs, for the sidecar: only what differs from the defaults, so
        the sidecars of corpora collected before OCR repair stay current."""
        base = OcrOptions()
        return {k: v for k, v in asdict(self).items() if v != getattr(base, k)}


# ---------------------------------------------------------------- the period lexicon
def transcribed_texts(docs: Iterable[Document], progress: Callable[[int], None] | None = None) -> Iterator[str]:
    """The cleaned text of every transcribed (not OCR) document of ``docs``."""
    for n, doc in enumerate(docs, 1):
        if is_ocr(doc):
            continue
        materialise(doc)
        if doc.text and not doc.error:
            yield clean_text(doc.text)
        doc.text = None
        if progress:
            progress(n)


def corpus_texts(path: str | Path) -> Iterator[str]:
    """The transcribed texts of a corpus the user names: a collected corpus (its manifest's
    rows not marked OCR) or a folder of .txt/.xml/.html files (read as the collection reads them)."""
    folder = user_path(str(path))
    if (folder / MANIFEST).is_file():
        # Held shared while read, as every reader of a corpus holds it: a collection of it is
        # refused meanwhile, and one that took no lock is named before a lexicon of two corpora
        # (the old rows over the new texts, or a text pruned under it) is learnt and kept.
        with reading_corpus(folder) as unchanged:
            for row in read_jsonl(folder / MANIFEST):
                if not row.get("ocr") and row.get("path"):
                    yield manifest.document_text(folder, row)
            unchanged()
        return
    if not folder.is_dir():
        raise CorpusError(f"period corpus {path} is neither a period lexicon file, a collected corpus nor a folder "
                          f"of texts; pass --period_corpus with one of those")
    yield from transcribed_texts(LocalSource({"id": "period_corpus", "path": str(folder)}).documents())


@lru_cache(maxsize=1)
def shipped_lexicon() -> PeriodLexicon:
    """The period lexicon shipped with the package (its ``made_from``: what it was learned from,
    the command, the licence)."""
    with resources.as_file(resources.files(__package__).joinpath(SHIPPED_LEXICON)) as path:
        return PeriodLexicon.load(path)


def shipped_lexicon_id() -> str:
    """What changes when the shipped lexicon does (a collection's kept lexicon built on it is then stale)."""
    return hashlib.sha256(resources.files(__package__).joinpath(SHIPPED_LEXICON).read_bytes()).hexdigest()


def with_shipped(own: PeriodLexicon | None) -> PeriodLexicon:
    """The lexicon to repair with when the user names none: the collection's own (``own``) where
    it read at least ``OWN_MIN_WORDS`` words; else the shipped lexicon, with ``own``'s counts added
    (its names and spellings are the period's too)."""
    if own is not None and own.made_from.get("words_read", 0) >= OWN_MIN_WORDS:
        return own
    base = shipped_lexicon()
    if own is None:
        return base
    merged = [Counter(a) + Counter(b) for a, b in ((base.unigrams, own.unigrams), (base.bigrams, own.bigrams),
                                                   (base.capitals, own.capitals), (base.marks, own.marks))]
    made_from = dict(base.made_from, added=own.made_from)
    return PeriodLexicon(dict(merged[0]), dict(merged[1]), made_from, dict(merged[2]), dict(merged[3]))


def default_period_lexicon(processed_dir: str | Path) -> PeriodLexicon:
    """The lexicon when no ``--period_corpus`` is given: learned from the collected corpus under
    ``processed_dir`` (its transcribed rows) where there is one, with the shipped lexicon where
    that is too little (``with_shipped``); the shipped lexicon alone where nothing was collected."""
    folder = Path(processed_dir)
    own = _learn(corpus_texts(folder), {"period_corpus": str(folder)}) if (folder / MANIFEST).is_file() else None
    return with_shipped(own)


def describe(lexicon: PeriodLexicon) -> str:
    """Where a lexicon's words came from, in a few words (the log's)."""
    if "licence" in lexicon.made_from:
        added = lexicon.made_from.get("added")
        return "the shipped period lexicon" + (f" with {added.get('words_read', 0):,} words read from "
                                               f"{added.get('period_corpus')}" if added else "")
    return str(lexicon.made_from.get("period_corpus"))


def load_period_lexicon(path: str | Path) -> PeriodLexicon:
    """A saved lexicon (``*.json.gz``), or one learned now from a corpus or folder of texts."""
    p = user_path(str(path))
    if p.is_file():
        return PeriodLexicon.load(p)
    lexicon = _learn(corpus_texts(p), {"period_corpus": str(p)})
    if lexicon is None:
        raise CorpusError(f"period corpus {path} holds no transcribed text to learn the period's words from")
    return lexicon


def period_corpus_id(path: str | Path | None) -> str | None:
    """What changes when the period corpus the user names does (None: none named): a lexicon
    file's bytes; a collected corpus's manifest (each text's sha256); a folder of texts, each
    file's name, size and time of change (reading every text at each run to find the corpus
    current would cost what learning from it does). The name alone was the key: a lexicon
    rebuilt in place (or another under the same relative name) left the collection's kept copy
    and its corpus "current", repaired with the old words, ``--overwrite`` too."""
    if path is None:
        return None
    p = user_path(str(path))
    try:
        if p.is_file():
            return sha256_file(p)
        if (p / MANIFEST).is_file():
            return "corpus:" + sha256_file(p / MANIFEST)
        h = hashlib.sha256()
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            st = f.stat()
            name = os.fsencode(f.relative_to(p).as_posix())  # (a name's bytes, UTF-8 or not)
            h.update(name + f"\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        return "folder:" + h.hexdigest()
    except OSError as e:  # (read as it is learned from, where the error is named)
        return f"unreadable: {e.errno}"


def _learn(texts: Iterable[str], made_from: dict[str, Any]) -> PeriodLexicon | None:
    b = LexiconBuilder()
    for t in texts:
        b.add(t)
    return b.build(made_from=made_from) if b.unigrams else None


def collection_lexicon(docs: Callable[[], Iterable[Document]], out_dir: Path, inputs_key: str,
                       options: OcrOptions, log: Callable[[str], None] = print,
                       has_ocr: bool = False) -> Path | None:
    """The period lexicon file for a collection with OCR sources (``has_ocr``: a source's
    entry says so, as its documents do), from the user's period corpus or the transcribed
    documents ``docs()`` yields (with the shipped lexicon where they are too few: ``with_shipped``),
    learned once per ``inputs_key`` and kept in ``out_dir``. None when no source is OCR (the
    collection then has no OCR document to repair or filter)."""
    if not has_ocr:
        return None
    shipped = None if options.period_corpus else shipped_lexicon_id()
    named = [options.period_corpus] + ([period_corpus_id(options.period_corpus)] if options.period_corpus else [])
    key = hashlib.sha256(json.dumps([inputs_key, *named, RULES, shipped]).encode()).hexdigest()
    path, key_file = out_dir / LEXICON_FILE, out_dir / KEY_FILE
    if _kept_lexicon_current(path, key_file, key):
        log(f"corpus: OCR documents found; period lexicon {path} is current")
        return path
    if options.period_corpus:
        lexicon = load_period_lexicon(options.period_corpus)
    else:
        lexicon = with_shipped(_learn(transcribed_texts(docs()),
                                      {"period_corpus": "the collection's transcribed documents"}))
    lexicon.save(path)
    write_text_atomic(key_file, json.dumps({"key": key, "made_from": lexicon.made_from, "sha256": sha256_file(path)}))
    # (a saved lexicon's own made_from need not say where it lies: "from None")
    log(f"corpus: period lexicon of {len(lexicon):,} words from {options.period_corpus or describe(lexicon)} -> {path}")
    return path


def _kept_lexicon_current(path: Path, key_file: Path, key: str) -> bool:
    """Whether the lexicon a collection kept is the one to use again: its key file readable, of
    this collection's inputs, and the lexicon's bytes those it recorded. A key file that is no
    JSON object was a traceback on every rerun; a lexicon damaged since was "current", then
    refused as it was read ("rebuild it"), and every rerun found it current again: both are
    learned again. (A key file written before it recorded the bytes vouches by the key alone.)"""
    if not (path.is_file() and key_file.is_file()):
        return False
    try:
        record = json.loads(key_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("key") != key:
        return False
    return "sha256" not in record or record["sha256"] == sha256_file(path)


# ---------------------------------------------------------------- one document
@dataclass
class DocumentRepair:
    """Repairs one OCR document after cleaning: word repair, line-end hyphens joined with the
    period lexicon as evidence, and the quality before and after (the manifest's ``ocr_*``).
    ``judge``: a model that settles the repairer's close decisions (:mod:`.judge`);
    ``join_hyphens``: False keeps the printed lines (a repair that should line up with the page)."""

    lexicon: PeriodLexicon | None
    confusions: ConfusionModel | None = None
    repair: bool = True
    settings: RepairSettings = field(default_factory=RepairSettings)
    judge: Judge | None = None
    join_hyphens: bool = True

    def __post_init__(self) -> None:
        self._repairer = None
        if self.lexicon is not None and self.repair:
            self._repairer = OcrRepairer(self.lexicon, self.confusions or load_confusions(), self.settings)
            if self.judge is not None:
                self._repairer = JudgedRepairer(self._repairer, self.judge.score, self.judge.settings)
        self._known = self.lexicon.vocabulary(self.settings.known_min_count)[0] if self.lexicon is not None else None

    @property
    def searches(self) -> bool:
        """Whether this repair runs the candidate search (a lexicon, and repair asked for)."""
        return self._repairer is not None

    @property
    def word_repairer(self) -> OcrRepairer | None:
        """The repairer of words (under the judge, where one settles its doubts); None without."""
        r = self._repairer
        return r.repairer if isinstance(r, JudgedRepairer) else r

    @classmethod
    def from_options(cls, options: OcrOptions, lexicon_path: str | None) -> "DocumentRepair":
        """The repair a collection runs: ``lexicon_path`` is the period lexicon it built
        (:func:`collection_lexicon`; None: nothing to repair with)."""
        lexicon = PeriodLexicon.load(lexicon_path) if lexicon_path else None
        confusions = load_confusions(options.confusions) if options.confusions else None
        return cls(lexicon, confusions, options.repair, RepairSettings(long_s_output=options.long_s_output))

    def __call__(self, text: str, year: int | None = None) -> tuple[str, dict[str, Any]]:
        """(repaired text, the manifest's ``ocr_*`` facts)."""
        text, facts = self.repair_text(text, year)
        facts.pop("changes", None)
        return text, facts

    def repair_text(self, text: str, year: int | None = None, quality: bool = True) -> tuple[str, dict[str, Any]]:
        """(repaired text, facts with ``changes``: every ``repair.Change``); ``quality`` False:
        without the quality before and after (``ocr_quality*``: what counting them costs is
        wasted where nothing reads them)."""
        original, done, facts = text, None, {}
        if self._repairer is not None:
            judged = self._judged()
            done = self._repairer.repair(text, year)
            if judged is not None:
                facts["ocr_judge"] = {**self.judge.identity, "doubts": self._repairer.judged - judged[0],
                                      "overruled": self._repairer.overruled - judged[1]}
            text = done.text
            if self.join_hyphens and "-\n" in text:
                known = self._known
                text = join_hyphenation(text, known=lambda w: word_key(w) in known)
            facts.update(ocr_repairs=len(done.changes), ocr_long_s=done.long_s, changes=done.changes)
        if not quality:
            return text, {"ocr": True, **facts}
        before = quality_counts(original, self._known)
        if done is None:
            after = before
        elif text is done.text:  # (no line-end word joined: counted again only where the changes are)
            after = repaired_counts(before, original, done.changes, text, self._known)
        else:
            after = quality_counts(text, self._known)
        return text, {"ocr": True, "ocr_quality_before": round(before.quality().score, 4), **facts,
                      "ocr_quality": round(after.quality().score, 4)}

    def _judged(self) -> tuple[int, int] | None:
        """The judge's counts so far (None: no judge), so a row's own are the difference."""
        r = self._repairer
        return (r.judged, r.overruled) if isinstance(r, JudgedRepairer) else None

