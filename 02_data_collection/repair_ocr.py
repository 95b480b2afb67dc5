#!/usr/bin/env python3
"""Repair OCR text in JSONL rows ({"id", "text", ...}) with the period's own evidence: the same
rows out in the same order, "text" repaired, every other key kept; --report says what changed
and why. Words change only where a lexicon learned from the period and a confusion model
learned from real OCR agree strongly enough (londonlm/corpus/ocr/repair.py).

    python 02_data_collection/repair_ocr.py --input scans.jsonl --output repaired.jsonl
    python 02_data_collection/repair_ocr.py --input scans.jsonl --output repaired.jsonl --report changes.jsonl
    python 02_data_collection/repair_ocr.py --input scans.jsonl --output repaired.jsonl --period_corpus my_period_texts/
    python 02_data_collection/repair_ocr.py --input scans.jsonl --output out.jsonl --period_corpus lexicon.json.gz --workers 1
    python 02_data_collection/repair_ocr.py --input scans.jsonl --output out.jsonl --lm 09_models/checkpoints/tiny/final

The period lexicon comes from --period_corpus (a saved lexicon .json.gz, a collected corpus or a
folder of texts), by default from the corpus collected under --root (its transcribed documents)
with the lexicon shipped with the package (public domain books and newspaper transcriptions)
where that holds too little or nothing; --save_lexicon keeps it for the next run. A row's
"year" (--year_key, a number or "1750") tells the long s's era. The confusion model (shipped, or
--confusions) is first adapted to the input's OCR from its own confident repairs (--no_adapt:
not). --output may be a stream (/dev/stdout, a pipe): the messages then go to stderr. No two of
the files named may be one file; it runs one repair process per CPU this process may use
(--workers: fewer; never more than those CPUs). --lm has a
trained londonlm model judge the choices the period lexicon leaves close, each in its sentence
(londonlm/corpus/ocr/judge.py; its gain and speed: BENCHMARKS.md).
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, where config.py checks this Python
import config
from londonlm.core.cli import StageParser, existing_file, non_negative_float, positive_int
from londonlm.core import refuse_output_over_inputs
from londonlm.core.errors import run_main
from londonlm.corpus.ocr import (DocumentRepair, JsonlOptions, RepairSettings, bounded_workers, check_output,
                                 default_period_lexicon, load_confusions, load_period_lexicon, output_locks,
                                 refuse_same_files, regular_target, repair_jsonl, same_as_stdout, usable_cpus)
from londonlm.corpus.ocr.adapt import adapt, jsonl_texts
from londonlm.corpus.ocr.jsonl import check_input
from londonlm.corpus.ocr.judge import Judge, JudgeSettings


def build_parser() -> argparse.ArgumentParser:
    p = StageParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog="\n".join(__doc__.splitlines()[5:]))
    p.add_argument("--input", type=existing_file, help="JSONL rows with a text field (needed)")
    p.add_argument("--output", help="JSONL out: the same rows, text repaired (needed)")
    p.add_argument("--report", help="JSONL report: per row what changed, where and why; a summary line last")
    p.add_argument("--period_corpus", help="saved lexicon (.json.gz), collected corpus or folder of texts "
                                           "(default: the corpus collected under --root, with the shipped "
                                           "lexicon where it has too little transcribed text)")
    p.add_argument("--save_lexicon", help="save the period lexicon learned from --period_corpus here (.json.gz)")
    p.add_argument("--confusions", type=existing_file,
                   help="a confusion model learned from other paired data (default: the shipped one)")
    p.add_argument("--text_key", default="text", help="the rows' text field")
    p.add_argument("--year_key", default="year", help="the rows' year field (the long s's era)")
    p.add_argument("--long_s", choices=("print", "modern"), default="print",
                   help="write a repaired long s as printed (ſ) or as s")
    p.add_argument("--thorough", action="store_true",
                   help="a deeper candidate search, the near-word search over the period's rarer words too, and "
                        "a letter read as a space between two long pieces: 1-2 points more of CER across "
                        "archives, for 2-4 times the time on words not seen before (BENCHMARKS.md)")
    p.add_argument("--no_adapt", action="store_true",
                   help="repair with the confusion model as it is: by default it is first adapted to this OCR "
                        "from its own confident repairs in the input's first 500 k characters (another engine "
                        "than the shipped model's misreads other letters more often; BENCHMARKS.md)")
    p.add_argument("--keep_sums", action="store_true",
                   help="leave sums of money as the OCR read them (by default a misread one, \"£1 Is.\", is "
                        "repaired where a sum stands beside it)")
    p.add_argument("--join_hyphens", action="store_true",
                   help="join a word broken at a line end (\"al-\\nlotments,\" -> \"allotments,\") where the "
                        "document or the period attests it whole, as the corpus stage does for training text; by "
                        "default the lines stay as printed, so the output lines up with the page and its "
                        "transcription")
    p.add_argument("--no_furniture", action="store_true",
                   help="keep scan stamps, page numbers, running heads and catchwords")
    p.add_argument("--max_row_mb", type=positive_int, default=64, help="rows larger than this pass through unrepaired")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="repair processes (default: one per CPU this process may use; at most that many); the "
                        "adaptation's first pass runs on them too (the repairs are the same as with one)")
    p.add_argument("--lm", metavar="MODEL_DIR",
                   help="a trained londonlm model folder (a run's final/, any save_pretrained folder with its "
                        "tokenizer) that judges, in context, the choices the period lexicon leaves close "
                        "(he/be); CPU, batched; off by default")
    p.add_argument("--lm_weight", type=non_negative_float, default=JudgeSettings.lm_weight,
                   help="the model's log-probability's weight beside the repairer's score (with --lm)")
    p.add_argument("--lm_margin", type=non_negative_float, default=JudgeSettings.lm_margin,
                   help="how much (log-probability) the model's choice must beat the repairer's by to replace "
                        "it (with --lm)")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument("--root", help="project root (default $LONDONLM_ROOT or the repo)")
    return p


def _scorer(model_dir: str, threads: int | None):
    """The judge's model: its package (numpy, the tokenizer's) imported only when --lm asks for
    one, a fifth of a second of every run's start otherwise."""
    from londonlm.generation import ContinuationScorer

    return ContinuationScorer(model_dir, threads=threads)


def _adapted(confusions, lexicon, a, settings, workers, log):
    """The confusion model adapted on the input's own OCR (a first pass over it), said on log."""
    check_input(Path(a.input))  # (what repair_jsonl refuses, refused before the first pass)
    confusions = adapt(confusions, lexicon, jsonl_texts(a.input, a.text_key, a.year_key,
                                                        a.max_row_mb * 1024 * 1024), settings,
                       workers=workers)
    got = confusions.made_by.get("adapted_on")
    print(f"confusion model adapted on {got['word_pairs']:,} words of the input ({got['repairs']:,} confident "
          f"repairs, {got['rules']} rules)" if got else
          "confusion model not adapted: too little of the input to learn its OCR from, or no confident repairs",
          file=log)
    return confusions


def _summary(s, a, judge_id) -> str:
    """The run's one closing line: rows, repairs, what passed through unrepaired, and why."""
    errors = ", ".join(f"{k}={v}" for k, v in sorted(s["errors"].items()))
    return (f"repair_ocr: {s['rows']} rows -> {a.output}: {s['repaired']} repaired ({s['changes']} changes)"
            + (f", {sum(s['errors'].values())} passed through unrepaired ({errors})" if errors else "")
            + (f", {s['encoding_notes']} read as cp1252" if s["encoding_notes"] else "")
            + (f", {s['years_ignored']} with a {a.year_key} that is no year (repaired without)"
               if s["years_ignored"] else "")
            + (f"; judged by {judge_id['model']} (weights sha256 {judge_id['sha256']})" if judge_id else "")
            + (f"; report {a.report}" if a.report else ""))


def main(argv=None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    layout = config.get_layout(a.root)  # first: a root that cannot be one is refused before anything else
    if not a.input or not a.output:
        p.error("--input and --output are both needed")
    # before anything is read or written: a report or a saved lexicon over an input or the output
    # would replace it; a folder or a device where a file is written is refused
    period_file = a.period_corpus if a.period_corpus and Path(a.period_corpus).is_file() else None
    refuse_same_files({"--input": a.input, "--period_corpus": period_file, "--confusions": a.confusions,
                       "--output": a.output, "--report": a.report, "--save_lexicon": a.save_lexicon})
    # an output inside a folder read (a period corpus of texts, the judge's model, the corpus whose
    # words are the default lexicon) replaced one of its texts: the corpus's own check looks only
    # at the folder a file is written in, and texts/ has none
    read = {"the --period_corpus folder": a.period_corpus, "the --lm model folder": a.lm,
            "the corpus folder": layout.processed_dir}
    for flag, path in (("--output", a.output), ("--report", a.report), ("--save_lexicon", a.save_lexicon)):
        if path:
            refuse_output_over_inputs(flag, path, {k: v for k, v in read.items() if v and os.path.isdir(v)})
    for flag, path in (("--output", a.output), ("--report", a.report)):
        if path:
            check_output(flag, path)
    lexicon_to = regular_target("--save_lexicon", a.save_lexicon) if a.save_lexicon else None
    # another run writing one of these outputs: refused now, before the long work, and none
    # taken over while this run writes (its report could end beside the other's rows)
    with output_locks({"--output": a.output, "--report": a.report, "--save_lexicon": lexicon_to}):
        return _repair(a, layout, lexicon_to)


def _repair(a, layout, lexicon_to) -> int:
    # the judge's model loaded first (a folder that holds none is refused before the long work);
    # each worker process loads its own, on one thread, where there are several
    workers = bounded_workers(a.workers or usable_cpus())
    lm = _scorer(a.lm, threads=1 if workers > 1 else None) if a.lm else None
    judge_id = lm.identity() if lm else None
    # the rows on standard output (--output /dev/stdout | jq): the messages go to stderr
    log = sys.stderr if same_as_stdout(a.output) or same_as_stdout(a.report) else sys.stdout
    lexicon = load_period_lexicon(a.period_corpus) if a.period_corpus else default_period_lexicon(layout.processed_dir)
    if lexicon_to:
        lexicon.save(lexicon_to)
        print(f"period lexicon ({len(lexicon):,} words) saved to {a.save_lexicon}", file=log)
    confusions = load_confusions(a.confusions)
    chosen = dict(long_s_output=a.long_s, sums=not a.keep_sums)
    settings = RepairSettings.thorough(**chosen) if a.thorough else RepairSettings(**chosen)
    if not a.no_adapt:
        confusions = _adapted(confusions, lexicon, a, settings, workers, log)
    judge = Judge(lm, JudgeSettings(lm_weight=a.lm_weight, lm_margin=a.lm_margin), judge_id) if lm else None
    repair = DocumentRepair(lexicon, confusions, settings=settings, judge=judge, join_hyphens=a.join_hyphens)
    options = JsonlOptions(text_key=a.text_key, year_key=a.year_key, furniture=not a.no_furniture,
                           max_row_bytes=a.max_row_mb * 1024 * 1024, workers=workers, progress=a.progress)
    if a.workers and workers < a.workers:
        print(f"repair_ocr: --workers {a.workers} is more than the {usable_cpus()} CPUs this process may use: "
              f"{workers} repair processes", file=log)
    s = repair_jsonl(a.input, a.output, repair, a.report, options)
    print(_summary(s, a, judge_id), file=log)
    return 0


if __name__ == "__main__":
    run_main(main)
