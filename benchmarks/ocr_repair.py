#!/usr/bin/env python3
"""OCR repair measured on real OCR with human gold (../shared/ocr, ICDAR 2017 periodicals) and
on clean period prose (../shared/corpus): CER before and after per file and per part, the
characters it changes in clean text, its speed on this machine, its most frequent corrections.

    python benchmarks/ocr_repair.py learn      # londonlm/corpus/ocr/data/confusions.json from the training part
    python benchmarks/ocr_repair.py lexicon    # londonlm/corpus/ocr/data/period_lexicon.json.gz (public domain text)
    python benchmarks/ocr_repair.py measure --work /work/scratch46/ocr_bench
    python benchmarks/ocr_repair.py tables --work /work/scratch46/ocr_bench   # BENCHMARKS.md's tables
    python benchmarks/ocr_repair.py cross --work /work/scratch46/ocr_bench    # across archives (overProof)
    python benchmarks/ocr_repair.py judge_tune --lm RUN/final --work /tmp/j   # the judge's weight and margin
    python benchmarks/ocr_repair.py cross --quick --lm RUN/final --lm_weight W --lm_margin M   # with the judge
    python benchmarks/ocr_repair.py command --against ../base --rounds 7   # the whole command's speed, alternated

The held-out part is fixed by rule and never tuned on: within each decade of metadata.csv, the
third of the files (rounded) with the smallest sha256 of their file name (19 of 58 files).
The confusion model is learned from the training part only; so is the newspaper text the
period lexicon adds to ../shared/corpus. The Gutenberg books the clean-text figure is measured
on (sha256 of the file name = 0 mod 3) are left out of the lexicon. CER is scored as
../shared/ocr/README.md says ("raw": the gold's own characters, ligatures and all) and again with
the gold's typography folded to letters ("letters": ﬁ as fi, ſ as s, U+2010 as -), since the
repair restores letters, never ligature glyphs. Writes WORK/results.json.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
ICDAR = SHARED / "ocr" / "icdar2017_eng_periodical"
OVERPROOF = SHARED / "ocr" / "overproof"
OVERPROOF_SETS = {"smh": "smh_1842-1954_dataset2.txt", "ca": "chronicling_america_dataset3.txt"}

from londonlm.corpus.cleaning import clean_text  # noqa: E402
from londonlm.corpus.ocr import LexiconBuilder, OcrRepairer, PeriodLexicon, RepairSettings, load_confusions  # noqa: E402
from londonlm.corpus.ocr.adapt import adapt  # noqa: E402
from londonlm.corpus.ocr.judge import JudgedRepairer, JudgeSettings, overrule  # noqa: E402
from londonlm.corpus.ocr.confusions import CONFUSIONS_FILE, ConfusionModel, learn  # noqa: E402
from londonlm.corpus.ocr.step import SHIPPED_LEXICON, shipped_lexicon  # noqa: E402
from londonlm.corpus.ocr.pairs import (aligned_words, char_errors, fold_glyphs, gold_pieces,  # noqa: E402
                                       line_word_pairs, read_aligned_pair, read_overproof, repaired_pieces)
from londonlm.corpus.sources import LocalSource, materialise  # noqa: E402
from londonlm.generation import ContinuationScorer  # noqa: E402

MODES = {"default": RepairSettings(),
         "thorough": RepairSettings.thorough()}


# ---------------------------------------------------------------- the fixed split
def icdar_years() -> dict[str, int]:
    with open(ICDAR / "metadata.csv", encoding="utf-8") as f:
        return {r["file"]: int(r["date"]) for r in csv.DictReader(f, delimiter=";")}


def held_out(years: dict[str, int]) -> set[str]:
    """Within each decade, the third of the files (rounded) with the smallest sha256 of the name."""
    by_decade: dict[int, list[str]] = defaultdict(list)
    for name, year in years.items():
        by_decade[year // 10 * 10].append(name)
    out: set[str] = set()
    for names in by_decade.values():
        names.sort(key=lambda n: hashlib.sha256(n.encode()).hexdigest())
        out.update(names[:round(len(names) / 3)])
    return out


def clean_held_out(name: str) -> bool:
    """The Gutenberg books the clean-text figure is measured on (and the lexicon leaves out)."""
    return name.startswith("gutenberg_") and int(hashlib.sha256(name.encode()).hexdigest(), 16) % 3 == 0


def by_number(names) -> list[str]:
    return sorted(names, key=lambda n: int(n.split(".")[0]))


# ---------------------------------------------------------------- learn
def channel_of(pairs: dict[str, list[tuple[str, str]]], min_count: int = 2,
               made_by: dict | None = None) -> ConfusionModel:
    """The channel learned from several archives' paired OCR (``pairs``: source -> (OCR word,
    printed word) pairs): its letters' rules, debris and space rates from every source; its
    whole-word rules from ICDAR 2017's only (the overProof ground truth is published for
    measurement and tuning, not to be shipped: what goes out of it is rates of letters, no word
    of its text; and the whole words it adds were worth 0.1 point of CER, measured on SMH and CA
    each learned from the others)."""
    model = learn([p for got in pairs.values() for p in got], min_count=min_count, made_by=made_by)
    words = learn(pairs["icdar"], min_count=min_count).words if "icdar" in pairs else {}
    info = dict(model.made_by, word_rules=sum(map(len, words.values())), word_rules_from="icdar" if words else None)
    return ConfusionModel(model.learned_rules, model.split, model.join, model.hyphen, info, words, model.debris)


def cmd_learn(a) -> int:
    """The shipped confusion model: from ICDAR 2017's tuning part and both overProof sets (three
    archives, two OCR engines: each overProof set repairs better with a channel learned from
    ICDAR and the other set than from ICDAR alone; BENCHMARKS.md), or ICDAR's alone."""
    years = icdar_years()
    train = by_number(set(years) - held_out(years))
    pairs = {"icdar": icdar_pairs(train)}
    data = ["ICDAR 2017 post-OCR, English periodicals (../shared/ocr/icdar2017_eng_periodical), training part: "
            + " ".join(train)]
    if not a.icdar_only:
        for k, f in OVERPROOF_SETS.items():
            articles = read_overproof(OVERPROOF / f)
            pairs[k] = overproof_pairs(articles)
            data.append(f"overProof {f} (../shared/ocr/overproof), all {len(articles)} articles: letters' rules, "
                        "debris and space rates only")
    model = channel_of(pairs, a.min_count, made_by={
        "data": data,
        "held_out_rule": "within each decade, the third of the files (rounded) with the smallest sha256 of the name",
        "command": f"python benchmarks/ocr_repair.py learn --min_count {a.min_count}"
                   + (" --icdar_only" if a.icdar_only else "")})
    out = REPO / "londonlm" / "corpus" / "ocr" / CONFUSIONS_FILE
    model.save(out)
    print(f"{model.made_by['rules']} rules from {model.made_by['words']} word pairs of {', '.join(pairs)} -> {out} "
          f"({out.stat().st_size / 1024:.0f} KiB)")
    return 0


# ---------------------------------------------------------------- the shipped lexicon
def public_domain_books() -> list:
    """The Gutenberg books of ../shared/corpus (public domain, MANIFEST.tsv), less the clean-prose
    ones, read as the collection reads them: the Old Bailey files are CC BY-NC / CC BY-SA
    transcriptions, so nothing shipped is learned from them, and the books the clean-text figure
    is measured on stay unseen."""
    src = LocalSource({"id": "shared", "path": str(SHARED / "corpus"), "exclude": ["_negatives/*"]})
    return sorted((d for d in src.documents() if d.extra["relpath"].startswith("gutenberg_")
                   and not clean_held_out(d.extra["relpath"])), key=lambda d: d.extra["relpath"])


def cmd_lexicon(a) -> int:
    """The period lexicon shipped with the package, used where a user names none: the public
    domain books of ../shared/corpus and the gold of ICDAR 2017's tuning part (public domain)."""
    years = icdar_years()
    train = by_number(set(years) - held_out(years))
    books = public_domain_books()
    b = LexiconBuilder()
    for doc in books:
        materialise(doc)
        b.add(clean_text(doc.text))
    for name in train:
        _, ocr_aligned, gold_aligned = read_aligned_pair(ICDAR / name)
        for piece in gold_pieces(ocr_aligned, gold_aligned)[1]:
            b.add(fold_glyphs(piece))
    lexicon = b.build(min_count=a.min_count, min_pair_count=a.min_pair_count, made_from={
        "period_corpus": "the shipped period lexicon: " + ", ".join(d.extra["relpath"] for d in books)
                         + " (Project Gutenberg, ../shared/corpus, MANIFEST.tsv) and the human transcription of "
                         "ICDAR 2017 English periodicals, tuning part: " + " ".join(train),
        "licence": "public domain sources only: Project Gutenberg texts of works in the public domain, and the "
                   "ICDAR 2017 post-OCR gold of British Library newspapers 1744-1894 (public domain); the Old "
                   "Bailey transcriptions (CC BY-NC / CC BY-SA) and the clean-prose benchmark books are left out",
        "command": f"python benchmarks/ocr_repair.py lexicon --min_count {a.min_count} "
                   f"--min_pair_count {a.min_pair_count}"})
    out = REPO / "londonlm" / "corpus" / "ocr" / SHIPPED_LEXICON
    lexicon.save(out)
    print(f"{len(lexicon):,} words, {len(lexicon.bigrams):,} pairs from {lexicon.made_from['words_read']:,} words read "
          f"({len(books)} books, {len(train)} ICDAR files) -> {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


# ---------------------------------------------------------------- measure
def build_lexicon(train: list[str], path: Path) -> PeriodLexicon:
    if path.is_file():
        return PeriodLexicon.load(path)
    b = LexiconBuilder()
    src = LocalSource({"id": "shared", "path": str(SHARED / "corpus"), "exclude": ["_negatives/*"]})
    for doc in src.documents():
        if clean_held_out(doc.extra["relpath"]):
            continue
        materialise(doc)
        if doc.text:
            b.add(clean_text(doc.text))
    for name in train:
        _, ocr_aligned, gold_aligned = read_aligned_pair(ICDAR / name)
        for piece in gold_pieces(ocr_aligned, gold_aligned)[1]:
            b.add(fold_glyphs(piece))
    lexicon = b.build(made_from={"period_corpus": "../shared/corpus less the clean-text books, + the gold of the "
                                                  "ICDAR training part"})
    lexicon.save(path)
    return lexicon


def score_files(repairer: OcrRepairer, names: list[str], years: dict[str, int]) -> tuple[dict, list]:
    """Per file: CER before/after (raw and letters), changes; and every change with its verdict."""
    rows, verdicts = {}, []
    for name in names:
        ocr, ocr_aligned, gold_aligned = read_aligned_pair(ICDAR / name)
        owner, gold = gold_pieces(ocr_aligned, gold_aligned)
        done = repairer.repair(ocr, years[name])
        spans = [(c.start, c.start + len(c.before), c.after) for c in done.changes]
        before, after = repaired_pieces(ocr, owner, len(gold)), repaired_pieces(ocr, owner, len(gold), spans)
        eb, n = char_errors(before, gold)
        ea, _ = char_errors(after, gold)
        lb, _ = char_errors(before, gold, fold=True)
        la, _ = char_errors(after, gold, fold=True)
        rows[name] = {"year": years[name], "gold_chars": n, "raw_before": eb, "raw_after": ea, "letters_before": lb,
                      "letters_after": la, "changes": len(done.changes), "long_s": done.long_s}
        for c, span in zip(done.changes, spans):
            k = owner[c.start] if c.start < len(owner) else -1
            if k < 0:
                continue
            one = repaired_pieces(ocr, owner, len(gold), [span])
            d = char_errors([one[k]], [gold[k]], fold=True)[0] - char_errors([before[k]], [gold[k]], fold=True)[0]
            verdicts.append((c.before, c.after, c.kind, d))
    return rows, verdicts


def summary(rows: dict) -> dict:
    n = sum(r["gold_chars"] for r in rows.values())
    out = {"files": len(rows), "gold_chars": n}
    for kind in ("raw", "letters"):
        b, a = sum(r[f"{kind}_before"] for r in rows.values()), sum(r[f"{kind}_after"] for r in rows.values())
        out[kind] = {"cer_before": round(b / n, 5), "cer_after": round(a / n, 5),
                     "lower_by_percent": round(100 * (b - a) / b, 2)}
    return out


def top_corrections(verdicts: list, k: int = 10) -> list[dict]:
    by = defaultdict(lambda: [0, 0, 0])
    for before, after, kind, d in verdicts:
        by[(before, after)][0 if d < 0 else 1 if d > 0 else 2] += 1
    top = sorted(by.items(), key=lambda kv: -sum(kv[1]))[:k]
    return [{"from": b, "to": a, "count": sum(v), "right": v[0], "wrong": v[1], "neutral": v[2]} for (b, a), v in top]


def clean_prose(repairer: OcrRepairer, adapted: bool = False) -> dict:
    """Characters changed in the clean-prose books; ``adapted``: with the confusion model adapted
    on them first (their first 500 k characters, as repair_ocr.py adapts on its input)."""
    src = LocalSource({"id": "shared", "path": str(SHARED / "corpus"), "exclude": ["_negatives/*"]})
    texts = []
    for doc in src.documents():
        if clean_held_out(doc.extra["relpath"]):
            materialise(doc)
            texts.append((doc.extra["relpath"], clean_text(doc.text), doc.year))
    if adapted:
        judge = repairer if isinstance(repairer, JudgedRepairer) else None  # (its repairer adapted, judged the same)
        base = judge.repairer if judge else repairer
        base = OcrRepairer(base.lex, adapt(base.conf, base.lex, [(t, y) for _, t, y in texts], base.s), base.s)
        repairer = JudgedRepairer(base, judge.score, judge.s) if judge else base
    books, changed, chars, examples = {}, 0, 0, Counter()
    for relpath, text, year in texts:
        done = repairer.repair(text, year)
        n = sum(max(len(c.before), len(c.after)) for c in done.changes)
        books[relpath] = {"chars": len(text), "changes": len(done.changes),
                          "percent_changed": round(100 * n / len(text), 4)}
        changed, chars = changed + n, chars + len(text)
        examples.update((c.before, c.after) for c in done.changes)
    return {"books": books, "chars": chars, "percent_changed": round(100 * changed / chars, 4),
            "most_frequent": [[b, a, n] for (b, a), n in examples.most_common(15)]}


_WORKER = None


def _init(lexicon_path: str, mode: str, warm: list | None = None, judge: tuple | None = None) -> None:
    global _WORKER
    _WORKER = OcrRepairer(PeriodLexicon.load(lexicon_path), load_confusions(), MODES[mode])
    if judge is not None:  # (model folder, settings, threads): loaded now, before the clock
        scorer = ContinuationScorer(judge[0], threads=judge[2])
        scorer.load()
        _WORKER = JudgedRepairer(_WORKER, scorer, judge[1])
    for text, year in warm or ():  # the steady state of a long-lived worker: every word type seen
        _WORKER.repair(text, year)


def _ready(_: int) -> int:
    time.sleep(0.2)
    return os.getpid()


def _repair(item: tuple[str, int]) -> int:
    _WORKER.repair(*item)
    return len(item[0].encode("utf-8"))


def speed(lexicon_path: Path, mode: str, texts: list[tuple[str, int]], workers: int, runs: int,
          warm: bool = False, judge: tuple | None = None) -> dict:
    """MB/s of repairing ``texts`` with ``workers`` processes, each with its own repairer started
    cold (its lexicon loaded before the clock starts), or ``warm`` (it has repaired them all
    once: only what no cache can save is timed), median of ``runs``."""
    size = sum(len(t.encode("utf-8")) for t, _ in texts)
    walls = []
    for _ in range(runs):
        with ProcessPoolExecutor(workers, initializer=_init,
                                 initargs=(str(lexicon_path), mode, texts if warm else None,
                                           None if judge is None else (*judge, 1 if workers > 1 else None))) as pool:
            while len(set(pool.map(_ready, range(2 * workers)))) < workers:
                pass  # until every worker has answered: started, lexicon loaded (and warmed)
            t0 = time.perf_counter()
            list(pool.map(_repair, texts, chunksize=1))
            walls.append(time.perf_counter() - t0)
    return {"workers": workers, "warm": warm, "mb": round(size / 1e6, 3), "runs_s": [round(w, 2) for w in walls],
            "mb_per_s": round(size / 1e6 / statistics.median(walls), 3)}


def cmd_measure(a) -> int:
    if not ICDAR.is_dir():
        raise SystemExit(f"{ICDAR} not found: this benchmark needs ../shared/ocr")
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    years = icdar_years()
    held = by_number(held_out(years))
    train = by_number(set(years) - set(held))
    if a.built_lexicon:  # (the figures before the shipped lexicon: ../shared/corpus whole, Old Bailey too)
        lexicon_path = work / "period_lexicon.json.gz"
        lexicon = build_lexicon(train, lexicon_path)
    else:  # what a user gets with no --period_corpus
        lexicon_path = REPO / "londonlm" / "corpus" / "ocr" / SHIPPED_LEXICON
        lexicon = shipped_lexicon()
    results = {"meta": {"command": " ".join(["benchmarks/ocr_repair.py", *sys.argv[1:]]), "date": time.strftime("%Y-%m-%d"),
                        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                                   f"python {platform.python_version()}",
                        "held_out": held, "lexicon": lexicon.made_from}}
    results["meta"]["judge"] = judge_meta(a)
    for mode in a.modes:
        repairer = judged(OcrRepairer(lexicon, load_confusions(), MODES[mode]), a)
        res = {}
        if not a.speed_only and not a.clean_only:
            t_rows, t_verdicts = score_files(repairer, train, years)
            h_rows, h_verdicts = score_files(repairer, held, years)
            res = {"train": summary(t_rows), "held_out": summary(h_rows), "files": {**t_rows, **h_rows},
                   "top_corrections": top_corrections(t_verdicts + h_verdicts),
                   "top_corrections_held_out": top_corrections(h_verdicts)}
            print(mode, json.dumps({"train": res["train"], "held_out": res["held_out"]}), flush=True)
        if not a.skip_clean and not a.speed_only:
            res["clean_prose"] = clean_prose(repairer)
            print(mode, "clean prose", res["clean_prose"]["percent_changed"], "% changed", flush=True)
            res["clean_prose_adapted"] = clean_prose(repairer, adapted=True)
            print(mode, "clean prose, adapted on it", res["clean_prose_adapted"]["percent_changed"], "% changed",
                  flush=True)
        if a.clean_only:
            results[mode] = res
            continue
        texts = [(read_aligned_pair(ICDAR / n)[0], years[n]) for n in by_number(years)][:a.speed_files or None]
        judge = (a.lm, judge_settings(a)) if a.lm else None
        res["speed"] = [speed(lexicon_path, mode, texts, w, a.runs, warm, judge) for warm in (False, True)
                        for w in (1, 2)]
        print(mode, "speed", json.dumps(res["speed"]), flush=True)
        results[mode] = res
    (work / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(f"written {work / 'results.json'}")
    return 0


# ---------------------------------------------------------------- across archives
def overproof_fold(article_id: str) -> int:
    """Which half of an overProof set an article is in (the 2-fold split within a set): the
    parity of the sha256 of its id, fixed before any tuning."""
    return int(hashlib.sha256(article_id.encode()).hexdigest(), 16) % 2


def icdar_pairs(names: list[str]) -> list[tuple[str, str]]:
    return [p for name in names for p in aligned_words(*read_aligned_pair(ICDAR / name)[1:])]


def overproof_pairs(articles: list[dict]) -> list[tuple[str, str]]:
    return [p for a in articles for p in line_word_pairs(a["ocr"], a["gold"])]


def score_overproof(repairer: OcrRepairer, articles: list[dict]) -> dict:
    """CER before and after over whole articles (lines joined), and overProof's own correction's."""
    from rapidfuzz.distance import Levenshtein

    n = before = after = theirs = changes = 0
    for a in articles:
        done = repairer.repair(a["ocr"], a["year"])
        n += len(a["gold"])
        before += Levenshtein.distance(a["ocr"], a["gold"])
        after += Levenshtein.distance(done.text, a["gold"])
        theirs += Levenshtein.distance(a["theirs"], a["gold"])
        changes += len(done.changes)
    return {"articles": len(articles), "gold_chars": n, "cer_before": round(before / n, 5),
            "cer_after": round(after / n, 5), "lower_by_percent": round(100 * (before - after) / before, 2),
            "overproof_lower_by_percent": round(100 * (before - theirs) / before, 2), "changes": changes}


def score_icdar(repairer: OcrRepairer, names: list[str], years: dict[str, int]) -> dict:
    rows, _ = score_files(repairer, names, years)
    s = summary(rows)
    return {"files": s["files"], "gold_chars": s["gold_chars"], "cer_before": s["raw"]["cer_before"],
            "cer_after": s["raw"]["cer_after"], "lower_by_percent": s["raw"]["lower_by_percent"],
            "letters_lower_by_percent": s["letters"]["lower_by_percent"],
            "changes": sum(r["changes"] for r in rows.values())}


def _sum_folds(parts: list[dict]) -> dict:
    n = sum(p["gold_chars"] for p in parts)
    before = sum(p["cer_before"] * p["gold_chars"] for p in parts)
    after = sum(p["cer_after"] * p["gold_chars"] for p in parts)
    return {"articles": sum(p["articles"] for p in parts), "gold_chars": n, "cer_before": round(before / n, 5),
            "cer_after": round(after / n, 5), "lower_by_percent": round(100 * (before - after) / before, 2),
            "changes": sum(p["changes"] for p in parts)}


def cmd_cross(a) -> int:
    """Generalisation across archives: the channel learned from one archive's paired OCR (or
    several), the shipped period lexicon (no overProof text in it), measured on another archive;
    beside them the in-split figure (ICDAR's held-out part) and 2-fold figures within each
    overProof set (learned from ICDAR's tuning part and one half, measured on the other half)."""
    for need in (ICDAR, *(OVERPROOF / f for f in OVERPROOF_SETS.values())):
        if not need.exists():
            raise SystemExit(f"{need} not found: this benchmark needs ../shared/ocr")
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    cross = _Cross(a)
    results = {"meta": {"command": " ".join(["benchmarks/ocr_repair.py", *sys.argv[1:]]),
                        "date": time.strftime("%Y-%m-%d"), "lexicon": cross.lexicon.made_from.get("command"),
                        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                        "judge": judge_meta(a)}}
    for mode in a.modes:
        results[mode] = cross.rows(mode)
    out = work / ("cross_judged.json" if a.lm else "cross.json")
    out.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    for mode in a.modes:
        print(f"\n{mode} mode:\n", *cross_table(results[mode]), sep="\n")
    print(f"written {out}")
    return 0


class _Cross:
    """The data of ``cmd_cross`` (ICDAR's parts, both overProof sets, their word pairs), the
    channels learned from them (each once), and one mode's rows."""

    def __init__(self, a):
        self.a = a
        self.years = icdar_years()
        self.held = by_number(held_out(self.years))
        train = by_number(set(self.years) - set(self.held))
        self.sets = {k: read_overproof(OVERPROOF / f) for k, f in OVERPROOF_SETS.items()}
        self.lexicon = shipped_lexicon()
        self.pairs = {"icdar": icdar_pairs(train), **{k: overproof_pairs(v) for k, v in self.sets.items()}}
        self.texts = {"icdar": [(read_aligned_pair(ICDAR / n)[0], self.years[n]) for n in self.held],
                      **{k: [(x["ocr"], x["year"]) for x in v] for k, v in self.sets.items()}} if a.adapt else {}
        self._channels: dict[str, object] = {}

    def channel(self, *sources: str, extra: list | None = None):
        """The shipped model's recipe (``channel_of``) on ``sources``' pairs (and ``extra``, an
        overProof set's half, taught as that set is)."""
        name = "+".join(sources)
        if extra is None and name in self._channels:
            return self._channels[name]
        got = channel_of({**{s: self.pairs[s] for s in sources}, **({"extra": extra} if extra else {})})
        if extra is None:
            self._channels[name] = got
        return got

    def rows(self, mode: str) -> dict[str, dict]:
        """One mode's figures: the ICDAR channel on every archive (adapted on each target's OCR
        with ``--adapt``); unless ``--quick``, each archive measured by channels learned from the
        others, the shipped one in-split, and the 2-fold figures within each overProof set."""
        rows: dict[str, dict] = {}
        self._run(rows, mode, "icdar -> icdar held-out (in-split)", self.channel("icdar"), "icdar")
        for k in self.sets:
            self._run(rows, mode, f"icdar -> {k}", self.channel("icdar"), k)
        if self.a.adapt:  # adapted on the target's own OCR (its confident repairs; no gold read)
            for k in ("icdar", *self.sets):
                self._adapted(rows, mode, ("icdar",), k)
        if self.a.quick:
            return rows
        for sources, k in ((("smh", "ca"), "icdar"), (("smh",), "ca"), (("ca",), "smh"),
                           (("icdar", "smh"), "ca"), (("icdar", "ca"), "smh")):
            self._run(rows, mode, f"{'+'.join(sources)} -> {k}{_HELD if k == 'icdar' else ''}",
                      self.channel(*sources), k)
        # the shipped model's data (ICDAR's tuning part and both overProof sets): in-split on
        # ICDAR's held-out third; on each overProof set, as learned without it (the others)
        self._run(rows, mode, f"icdar+smh+ca (shipped) -> icdar{_HELD}", self.channel("icdar", "smh", "ca"), "icdar")
        if self.a.adapt:
            for sources, k in ((("icdar", "smh", "ca"), "icdar"), (("icdar", "ca"), "smh"), (("icdar", "smh"), "ca")):
                self._adapted(rows, mode, sources, k)
        for k in self.sets:
            label = f"icdar+{k} half -> {k} other half (2-fold)"
            rows[label] = self._two_fold(mode, k)
            print(mode, f"{k} 2-fold", json.dumps(rows[label]), flush=True)
        return rows

    def _run(self, rows: dict, mode: str, label: str, conf, target: str) -> None:
        repairer = judged(OcrRepairer(self.lexicon, conf, MODES[mode]), self.a)
        t0 = time.perf_counter()
        got = (score_icdar(repairer, self.held, self.years) if target == "icdar"
               else score_overproof(repairer, self.sets[target]))
        got["seconds"] = round(time.perf_counter() - t0, 1)
        if isinstance(repairer, JudgedRepairer):
            got.update(doubts=repairer.judged, overruled=repairer.overruled)
        rows[label] = got
        print(mode, label, json.dumps(got), flush=True)

    def _adapted(self, rows: dict, mode: str, sources: tuple[str, ...], k: str) -> None:
        conf = adapt(self.channel(*sources), self.lexicon, self.texts[k], MODES[mode])
        self._run(rows, mode, f"{'+'.join(sources)}, adapted on {k}'s OCR -> {k}{_HELD if k == 'icdar' else ''}",
                  conf, k)

    def _two_fold(self, mode: str, k: str) -> dict:
        """Within set ``k``: learn from one half, measure the other, both ways, summed."""
        parts = []
        for fold in (0, 1):
            learn_from = [x for x in self.sets[k] if overproof_fold(x["id"]) != fold]
            measure_on = [x for x in self.sets[k] if overproof_fold(x["id"]) == fold]
            conf = self.channel("icdar", extra=overproof_pairs(learn_from))
            parts.append(score_overproof(OcrRepairer(self.lexicon, conf, MODES[mode]), measure_on))
        return _sum_folds(parts)


_HELD = " held-out"  # (ICDAR is measured on its held-out third: the channel learned from the rest)


# ---------------------------------------------------------------- the model as judge
_SCORERS: dict[str, ContinuationScorer] = {}


def judge_settings(a) -> JudgeSettings:
    return JudgeSettings(lm_weight=a.lm_weight, lm_margin=a.lm_margin, doubt=a.lm_doubt)


def judged(repairer: OcrRepairer, a):
    """``repairer``, judged by ``--lm`` where one is named (one scorer per model: loaded once)."""
    if not getattr(a, "lm", None):
        return repairer
    return JudgedRepairer(repairer, _scorer(a.lm), judge_settings(a))


def _scorer(lm: str) -> ContinuationScorer:
    return _SCORERS.setdefault(lm, ContinuationScorer(lm))


def judge_meta(a) -> dict | None:
    if not getattr(a, "lm", None):
        return None
    lm = _scorer(a.lm).load()
    return {**_scorer(a.lm).identity(), "params": lm.n_params, "context": lm.context_length,
            **{k: getattr(judge_settings(a), k) for k in ("lm_weight", "lm_margin", "doubt")}}


def file_errors(name: str, ocr: str, changes) -> tuple[int, int]:
    """(raw character errors, gold characters) of ICDAR file ``name`` repaired by ``changes``."""
    _, ocr_aligned, gold_aligned = read_aligned_pair(ICDAR / name)
    owner, gold = gold_pieces(ocr_aligned, gold_aligned)
    spans = [(c.start, c.start + len(c.before), c.after) for c in changes]
    return char_errors(repaired_pieces(ocr, owner, len(gold), spans), gold)


def cmd_judge_tune(a) -> int:
    """The judge's ``lm_weight`` and ``lm_margin`` chosen on ICDAR's tuning part only: each
    file's doubts scored by the model once, every pair of the grid applied to those scores."""
    years = icdar_years()
    train = by_number(set(years) - set(held_out(years)))
    judge = judged(OcrRepairer(shipped_lexicon(), load_confusions(), MODES["default"]), a)
    cases, t0 = [], time.perf_counter()
    for name in train:
        ocr = read_aligned_pair(ICDAR / name)[0]
        done = judge.repairer.repair(ocr, years[name])
        items = judge.items(done)
        cases.append((name, ocr, done, list(judge.score(items)) if items else []))
    seconds = time.perf_counter() - t0
    grid, seen = {}, {}  # (file, the picks) -> its errors: most grid points pick alike on most files
    for w in a.weights:
        for m in a.margins:
            errors = n = overruled = 0
            for name, ocr, done, scores in cases:
                picks = judge.picks(done, scores, w, m)
                changed = [(d, k) for d, k in zip(done.doubts, picks) if k != d.chosen]
                key = (name, tuple(picks))
                if key not in seen:
                    got = overrule(ocr, done, changed).changes if changed else done.changes
                    seen[key] = file_errors(name, ocr, got)
                e, g = seen[key]
                errors, n, overruled = errors + e, n + g, overruled + len(changed)
            grid[f"{w}/{m}"] = {"lm_weight": w, "lm_margin": m, "cer": round(errors / n, 5), "overruled": overruled}
            print(json.dumps(grid[f"{w}/{m}"]), flush=True)
    plain = [seen.get((name, tuple(d.chosen for d in done.doubts))) or file_errors(name, ocr, done.changes)
             for name, ocr, done, _ in cases]
    base = sum(e for e, _ in plain) / sum(n for _, n in plain)
    best = min(grid.values(), key=lambda r: (r["cer"], r["lm_margin"], -r["lm_weight"]))
    out = {"judge": judge_meta(a), "files": len(train), "doubts": sum(len(c[2].doubts) for c in cases),
           "seconds_repair_and_score": round(seconds, 1), "cer_without": round(base, 5), "best": best, "grid": grid}
    a.work.mkdir(parents=True, exist_ok=True)
    (a.work / "judge_tune.json").write_text(json.dumps(out, indent=1))
    print(f"without the judge {base:.5f}; best {json.dumps(best)}; written {a.work / 'judge_tune.json'}")
    return 0


def cross_table(rows: dict) -> list[str]:
    out = ["| channel learned from -> measured on | gold chars | CER before -> after | lower by | overProof's own |",
           "|---|---|---|---|---|"]
    for label, r in rows.items():
        theirs = f"{r['overproof_lower_by_percent']:.1f}%" if "overproof_lower_by_percent" in r else ""
        out.append(f"| {label} | {r['gold_chars']:,} | {100 * r['cer_before']:.2f}% -> {100 * r['cer_after']:.2f}% | "
                   f"**{r['lower_by_percent']:.1f}%** | {theirs} |")
    return out


# ---------------------------------------------------------------- BENCHMARKS.md's tables
def _cer(errors: int, n: int) -> str:
    return f"{100 * errors / n:.2f}%"


def decade_table(files: dict, held: set[str]) -> list[str]:
    """CER before -> after by decade and part (held-out first), both scores, from results.json's files."""
    groups: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for name, r in files.items():
        groups[(r["year"] // 10 * 10, "held-out" if name in held else "tuning")].append(r)
    out = ["| decade | part | files | raw CER before → after | letters before → after |", "|---|---|---|---|---|"]
    for (decade, part), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "held-out")):
        n = sum(r["gold_chars"] for r in rows)
        cells = []
        for kind in ("raw", "letters"):
            b, a = sum(r[f"{kind}_before"] for r in rows), sum(r[f"{kind}_after"] for r in rows)
            cells.append(f"{_cer(b, n)} → {_cer(a, n)} ({100 * (b - a) / b:.1f}%)" if b else "0 → 0")
        out.append(f"| {decade}s | {part} | {len(rows)} | {cells[0]} | {cells[1]} |")
    return out


def file_table(files: dict, held: set[str]) -> list[str]:
    out = ["| file | year | part | gold chars | changes | raw CER before → after | letters before → after |",
           "|---|---|---|---|---|---|---|"]
    for name in by_number(files):
        r, n = files[name], files[name]["gold_chars"]
        out.append(f"| {name} | {r['year']} | {'held-out' if name in held else 'tuning'} | {n:,} | {r['changes']} | "
                   f"{100 * r['raw_before'] / n:.2f} → {100 * r['raw_after'] / n:.2f} | "
                   f"{100 * r['letters_before'] / n:.2f} → {100 * r['letters_after'] / n:.2f} |")
    return out


def first_use(word: str, texts: dict[str, str], years: dict[str, int], width: int = 4) -> str:
    """The first place (by file number) ``word`` stands as a whole token, with ``width`` words either side."""
    for name in by_number(texts):
        words = texts[name].split()
        for i, w in enumerate(words):
            if w.strip(".,;:!?\"'()") == word:
                left, right = " ".join(words[max(0, i - width):i]), " ".join(words[i + 1:i + 1 + width])
                return f'"{left} **{w}** {right}" ({name}, {years[name]})'
    return ""


def top_table(top: list[dict], texts: dict[str, str], years: dict[str, int]) -> list[str]:
    out = ["| OCR | repaired | times | right | wrong | neutral | example (OCR, in context) |", "|---|---|---|---|---|---|---|"]
    for t in top:
        out.append(f"| {t['from']} | {t['to']} | {t['count']} | {t['right']} | {t['wrong']} | {t['neutral']} | "
                   f"{first_use(t['from'], texts, years)} |")
    return out


def cmd_tables(a) -> int:
    path = a.work / "results.json"
    if not path.is_file():
        print(f"error: {path} not found: run `python benchmarks/ocr_repair.py measure --work {a.work}` first",
              file=sys.stderr)
        return 2
    try:
        results = json.loads(path.read_text())
        held, res = set(results["meta"]["held_out"]), results[a.mode]
    except (ValueError, KeyError, TypeError) as e:
        print(f"error: {path} holds no {a.mode} mode's measurement ({type(e).__name__}: {e}): run "
              f"`python benchmarks/ocr_repair.py measure --work {a.work} --modes {a.mode}`", file=sys.stderr)
        return 2
    years = {n: r["year"] for n, r in res["files"].items()}
    texts = {n: read_aligned_pair(ICDAR / n)[0] for n in res["files"]} if ICDAR.is_dir() else {}
    print(f"By decade ({a.mode} mode):\n", *decade_table(res["files"], held), sep="\n")
    print(f"\nPer file ({a.mode} mode; CER in %):\n", *file_table(res["files"], held), sep="\n")
    print(f"\nThe ten most frequent corrections (all {len(res['files'])} files, {a.mode} mode):\n",
          *top_table(res["top_corrections"], texts, years), sep="\n")
    return 0


# ---------------------------------------------------------------- the whole command's speed
def command_input(work: Path, times: int) -> Path:
    """The SMH set's articles as repair_ocr.py's JSONL rows, ``times`` over (10: issue 61's
    "10x the set", 3.3 MB), written once in ``work``."""
    out = work / f"smh{times}.jsonl"
    if not out.is_file():
        articles = read_overproof(OVERPROOF / OVERPROOF_SETS["smh"])
        rows = "".join(json.dumps({"id": f"{x['id']}-{n}", "year": x["year"], "text": x["ocr"]}) + "\n"
                       for n in range(times) for x in articles)
        out.write_text(rows, encoding="utf-8")
    return out


def timed_command(tree: Path, src: Path, out: Path, extra: list[str], cache: Path | None = None,
                  first_run: bool = False) -> tuple[float, float]:
    """(wall s, CPU s of the process and its workers) of one ``repair_ocr.py`` run from ``tree``;
    ``cache``: the user cache it keeps the lexicon's tables in (two checkouts whose lexicon code
    differs would each find the other's copy stale in one, and build theirs on every run), emptied
    first with ``first_run`` (a run as on a new machine: the tables built and written)."""
    env = dict(os.environ)
    if cache is not None:
        if first_run:
            shutil.rmtree(cache, ignore_errors=True)
        env.update(XDG_CACHE_HOME=str(cache), LONDONLM_LEXICON_CACHE="on")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, str(tree / "02_data_collection" / "repair_ocr.py"), "--input", str(src),
                          "--output", str(out), "--root", str(out.parent / "root"), *extra],
                         capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if res.returncode:  # (its own one-line error, said as this benchmark's)
        raise SystemExit(f"{tree}: repair_ocr.py exited {res.returncode}: "
                         f"{(res.stderr.strip().splitlines() or ['(no message)'])[-1]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def cmd_command(a) -> int:
    """repair_ocr.py as a user runs it (a fresh process: imports, lexicon, adaptation, workers)
    on ``--input`` (default: the SMH set ten times over), ``--rounds`` times; alternated with the
    same command from another checkout (``--against``: its compiled walk built) where given, so a
    guest whose speed drifts slows both alike. Medians of wall time and CPU, MB/s, the ratio. Each
    checkout keeps the lexicon's tables in a cache of its own in WORK, written by an untimed run
    first (as after any earlier run); ``--first_run`` empties it before each timed run instead.
    Each checkout's modules are compiled first, as install.sh leaves them."""
    need = [a.input] if a.input else [OVERPROOF / OVERPROOF_SETS["smh"]]
    need += [a.against / "02_data_collection" / "repair_ocr.py"] if a.against else []
    for path in need:
        if not path.is_file():
            raise SystemExit(f"{path} not found: the input, and another checkout's repair_ocr.py, must exist")
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    src = a.input.resolve() if a.input else command_input(work, a.times)
    trees = {"this": REPO, **({"against": a.against.resolve()} if a.against else {})}
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in trees}
    caches = {name: work / "cache" / name for name in trees}
    for tree in trees.values():  # (byte code as install.sh leaves it: with PYTHONDONTWRITEBYTECODE set, each
        # run compiled its imports again otherwise, 70 ms)
        subprocess.run([sys.executable, "-m", "compileall", "-q", "londonlm", "config.py", "02_data_collection"],
                       cwd=tree, capture_output=True)
    if not a.first_run:
        for name, tree in trees.items():
            timed_command(tree, src, work / "out.jsonl", a.extra, caches[name])
    for r in range(a.rounds):
        for name, tree in trees.items():
            wall, cpu = timed_command(tree, src, work / "out.jsonl", a.extra, caches[name], a.first_run)
            runs[name].append((wall, cpu))
            print(f"round {r + 1} {name}: {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)
    mb = src.stat().st_size / 1e6
    res = {"input": str(src), "mb": round(mb, 3), "extra": a.extra, "lexicon_cache": "first run" if a.first_run else "warm",
           "machine": platform.processor() or platform.machine(),
           "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M"), "trees": {k: str(v) for k, v in trees.items()}}
    for name, got in runs.items():
        wall, cpu = statistics.median(w for w, _ in got), statistics.median(c for _, c in got)
        res[name] = {"wall_s": [round(w, 2) for w, _ in got], "median_wall_s": round(wall, 2),
                     "median_cpu_s": round(cpu, 2), "mb_per_s": round(mb / wall, 3)}
        print(f"{name}: median {wall:.2f} s ({mb / wall:.2f} MB/s), CPU {cpu:.2f} s")
    if a.against:
        res["ratio"] = round(res["this"]["median_wall_s"] / res["against"]["median_wall_s"], 3)
        print(f"this / against: {res['ratio']:.3f}x the time")
    (work / "command_speed.json").write_text(json.dumps(res, indent=1))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    lp = sub.add_parser("learn", help="learn the shipped confusion model from the training part")
    lp.add_argument("--min_count", type=int, default=2)
    lp.add_argument("--icdar_only", action="store_true", help="from ICDAR 2017's tuning part alone, not the overProof "
                                                              "sets too")
    xp = sub.add_parser("lexicon", help="learn the shipped period lexicon from public domain text")
    xp.add_argument("--min_count", type=int, default=1, help="words seen fewer times are left out (file size)")
    xp.add_argument("--min_pair_count", type=int, default=2, help="word pairs seen fewer times are left out")
    mp = sub.add_parser("measure", help="CER, clean-prose changes, speed")
    mp.add_argument("--work", type=Path, default=Path("/tmp/londonlm_ocr_bench"))
    mp.add_argument("--modes", nargs="+", default=["default"], choices=sorted(MODES))
    mp.add_argument("--runs", type=int, default=3, help="timed runs per speed figure (median)")
    mp.add_argument("--skip_clean", action="store_true", help="leave out the clean-prose figure")
    mp.add_argument("--built_lexicon", action="store_true",
                    help="a lexicon of ../shared/corpus less the clean-prose books (Old Bailey too) and ICDAR's "
                         "tuning gold, built in WORK, in place of the shipped one (the figures before it)")
    mp.add_argument("--speed_only", action="store_true", help="only the speed figures")
    mp.add_argument("--clean_only", action="store_true", help="only the clean-prose figures")
    mp.add_argument("--speed_files", type=int, default=0,
                    help="time only the first N files (0: all 58; the judge repairs about a thousand times slower)")
    cp = sub.add_parser("cross", help="across archives: channel learned on one, CER measured on another")
    cp.add_argument("--work", type=Path, default=Path("/tmp/londonlm_ocr_bench"))
    cp.add_argument("--modes", nargs="+", default=["default"], choices=sorted(MODES))
    cp.add_argument("--quick", action="store_true", help="only the ICDAR channel's figures")
    cp.add_argument("--adapt", action="store_true", help="also the ICDAR channel adapted on each target's OCR")
    jp = sub.add_parser("judge_tune", help="the model judge's --lm_weight and --lm_margin, on ICDAR's tuning part")
    jp.add_argument("--work", type=Path, default=Path("/tmp/londonlm_ocr_bench"))
    jp.add_argument("--weights", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0], help="lm_weight values tried")
    jp.add_argument("--margins", type=float, nargs="+", default=[0.0, 1.0, 2.0, 4.0], help="lm_margin values tried")
    for sp in (mp, cp, jp):
        sp.add_argument("--lm", required=sp is jp, help="a londonlm model folder (final/) judging close decisions")
        sp.add_argument("--lm_weight", type=float, default=JudgeSettings.lm_weight, help="the model's weight")
        sp.add_argument("--lm_margin", type=float, default=JudgeSettings.lm_margin,
                        help="what the model's choice must beat the repairer's by")
        sp.add_argument("--lm_doubt", type=float, default=JudgeSettings.doubt,
                        help="how close a decision must be to be judged")
    wp = sub.add_parser("command", help="the whole repair_ocr.py command's speed, alternated with another checkout's")
    wp.add_argument("--work", type=Path, default=Path("/tmp/londonlm_ocr_bench"))
    wp.add_argument("--input", type=Path, help="JSONL rows (default: the SMH set --times over, written in WORK)")
    wp.add_argument("--times", type=int, default=10, help="copies of the SMH set in the default input")
    wp.add_argument("--rounds", type=int, default=5, help="runs of each checkout (medians)")
    wp.add_argument("--against", type=Path, help="another checkout of the project (a git worktree), its walk built")
    wp.add_argument("--first_run", action="store_true",
                    help="each run as on a new machine: the lexicon's cached tables removed first (built and written)")
    wp.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="repair_ocr.py's own flags, last")
    tp = sub.add_parser("tables", help="BENCHMARKS.md's tables (by decade, per file, top ten) from WORK/results.json")
    tp.add_argument("--work", type=Path, default=Path("/tmp/londonlm_ocr_bench"))
    tp.add_argument("--mode", default="default", choices=sorted(MODES))
    a = p.parse_args()
    return {"learn": cmd_learn, "lexicon": cmd_lexicon, "cross": cmd_cross, "measure": cmd_measure,
            "tables": cmd_tables, "judge_tune": cmd_judge_tune, "command": cmd_command}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
