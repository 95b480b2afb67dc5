#!/usr/bin/env python3
"""Collect the corpus: registry sources (Project Gutenberg, archive.org, Old Bailey, ...), a local
folder and/or the embedded offline sample; clean, filter, dedup and write texts + manifest.jsonl
+ rejections + statistics.

    python 02_data_collection/historical_data_collector.py                      # offline sample
    python 02_data_collection/historical_data_collector.py --source_dir my_scans/
    python 02_data_collection/historical_data_collector.py --sources pg_oliver_twist,pg_bleak_house
    python 02_data_collection/historical_data_collector.py --all_sources --workers 8
    python 02_data_collection/historical_data_collector.py --all_sources --shard 0 --num_shards 4
    python 02_data_collection/historical_data_collector.py --all_sources --merge --num_shards 4
    python 02_data_collection/historical_data_collector.py --source_dir my_scans/ --cutoff_year 1750
    python 02_data_collection/historical_data_collector.py --sources bl_books --progress        # streams from the Hub
    python 02_data_collection/historical_data_collector.py --sources bl_books --hf_dataset_dir blbooks-parquet/
    python 02_data_collection/historical_data_collector.py --source_dir my_scans/ --ocr --period_corpus period_lexicon.json.gz
    python 02_data_collection/historical_data_collector.py --list
"""
import argparse
import sys
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, where config.py checks this Python
import config
from londonlm.core.cli import (StageParser, existing_dir, existing_file, fraction, non_negative_float,
                               non_negative_int, percent, positive_int, year)
from londonlm.corpus.collect import CollectionOptions, build_corpus
from londonlm.corpus.report import CORPUS_STATS
from londonlm.core.errors import run_main
from londonlm.corpus.manifest import MANIFEST
from londonlm.corpus.ocr import OcrOptions
from londonlm.corpus.sources import KINDS, load_registry, select_sources
from londonlm.corpus.sources.hub import hub_entries


def parse_base_urls(values, p) -> dict:
    out = {}
    for v in values or []:
        kind, sep, url = v.partition("=")
        if not sep or kind not in KINDS or not url:
            p.error(f"--base_url wants KIND=URL with KIND one of {', '.join(sorted(KINDS))}; got {v!r}")
        try:
            parts = urlsplit(url)
        except ValueError:
            parts = None
        if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            # only http(s) is fetched: another scheme failed every download of the kind, one by one
            p.error(f"--base_url {kind}: {url!r} is not an http(s) URL such as https://mirror.example")
        out[kind] = url
    return out


def build_parser() -> argparse.ArgumentParser:
    p = StageParser(description=__doc__.splitlines()[0],
                    formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog="\n".join(__doc__.splitlines()[4:]))
    g = p.add_argument_group("what to collect (default: the embedded offline sample)")
    g.add_argument("--sources", help="comma-separated registry ids or kinds (e.g. pg_oliver_twist,old_bailey)")
    g.add_argument("--all_sources", action="store_true", help="every enabled entry of the registry")
    g.add_argument("--max_sources", type=positive_int, help="only the first N selected registry entries")
    g.add_argument("--registry", type=existing_file,
                   help="registry file (default 02_data_collection/data_sources.yaml)")
    g.add_argument("--list", action="store_true", help="list the registry's sources and exit")
    g.add_argument("--source_dir", type=existing_dir, help="folder of .txt/.xml/.html files to add (recursively)")
    g.add_argument("--default_year", type=year,
                   help="year for --source_dir files whose name has no date (and no MANIFEST.tsv)")
    g.add_argument("--ocr", action="store_true",
                   help="the --source_dir files are OCR: repair them with the period's evidence and filter the "
                        "too damaged (archive.org and other scanning sources are OCR already)")
    g.add_argument("--sample", action="store_true",
                   help="include the embedded sample even when other sources are given")
    g.add_argument("--sample_limit_chars", type=positive_int,
                   help="take only the first N characters' worth of sample documents")
    h = p.add_argument_group("Hub datasets (bl_books: the British Library's books)")
    h.add_argument("--hf_dataset_dir", type=existing_dir,
                   help="read a local copy of the dataset (its parquet files, laid out as on the Hub) "
                        "instead of streaming it from the Hub")
    h.add_argument("--all_britain", action="store_true",
                   help="keep books printed anywhere in England, Scotland or Wales, not only in London")
    h.add_argument("--min_ocr_confidence", type=fraction,
                   help="reject books whose mean OCR word confidence is below this (0-1; default: the registry's)")
    r = p.add_argument_group("how")
    r.add_argument("--offline", action="store_true", help="download nothing; use files already downloaded")
    r.add_argument("--workers", type=positive_int, default=config.CORPUS.workers,
                   help="download threads and cleaning processes (1 = in this process)")
    r.add_argument("--shard", type=non_negative_int, help="run only shard K of --num_shards (merge later with --merge)")
    r.add_argument("--num_shards", type=positive_int, default=1)
    r.add_argument("--merge", action="store_true", help="merge finished shards into the corpus")
    r.add_argument("--base_url", action="append", metavar="KIND=URL",
                   help="override a source kind's host, e.g. gutenberg=https://mirror.example (repeatable)")
    r.add_argument("--download_interval", type=non_negative_float, default=config.CORPUS.download_interval_s,
                   help="seconds between requests to one host (be gentle with public servers)")
    r.add_argument("--validation_percent", type=percent, default=config.CORPUS.validation_percent)
    r.add_argument("--min_chars", type=non_negative_int, default=config.CORPUS.min_chars)
    r.add_argument("--cutoff_year", type=year,
                   help="keep only documents dated up to this year; later and undated ones go to "
                        "rejections.jsonl (after_cutoff, undated_under_cutoff)")
    o = p.add_argument_group("OCR documents (londonlm/corpus/ocr/)")
    o.add_argument("--period_corpus", help="the corpus the period lexicon is learned from: a saved lexicon "
                   "(.json.gz), a collected corpus or a folder of texts (default: the collection's transcribed texts)")
    o.add_argument("--no_ocr_repair", action="store_true", help="measure OCR quality, change no word")
    o.add_argument("--ocr_min_quality", type=fraction, default=0.5,
                   help="reject OCR documents whose quality after repair is below this (0 keeps all)")
    r.add_argument("--root", help="project root (default $LONDONLM_ROOT or the repo)")
    r.add_argument("--overwrite", action="store_true", help="rebuild even when current")
    r.add_argument("--progress", action="store_true", help="show progress bars")
    return p


def print_registry(entries) -> None:
    for e in entries:
        flag = "" if e.get("enabled", True) else "  (disabled)"
        year = e.get("year") or e.get("year_range") or ""
        print(f"{e['id']:<40} {e['kind']:<12} {year!s:<12} {str(e.get('title', ''))[:60]}{flag}")


def main(argv=None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    if not 0 <= a.validation_percent < 100:
        p.error("--validation_percent must be in [0, 100)")
    if a.num_shards < 1 or (a.shard is not None and not 0 <= a.shard < a.num_shards):
        p.error(f"--shard must be in [0, {a.num_shards - 1}] for --num_shards {a.num_shards}")
    if a.shard is not None and a.merge:
        p.error("--merge combines every shard; leave out --shard")
    if a.workers < 1:
        p.error("--workers must be >= 1")
    if a.ocr and not a.source_dir:
        p.error("--ocr marks the --source_dir files as OCR; give --source_dir")
    layout = config.get_layout(a.root)
    entries = []
    if a.sources is not None or a.all_sources or a.max_sources or a.registry or a.list:
        all_entries = load_registry(a.registry or layout.registry_file)
        if a.list:
            print_registry(all_entries)
            return 0
        wanted = [s.strip() for s in (a.sources or "").split(",") if s.strip()]
        if a.sources is not None and not wanted:  # not every source: that is --all_sources
            p.error(f"--sources: no source id in {a.sources!r}; --list shows them")
        entries = select_sources(all_entries, wanted or None, a.max_sources)
    entries = hub_entries(entries, a.hf_dataset_dir, a.all_britain, a.min_ocr_confidence, a.offline)
    options = CollectionOptions(
        offline=a.offline, workers=a.workers, year_range=(config.CORPUS.year_min, config.CORPUS.year_max),
        min_chars=a.min_chars, validation_percent=a.validation_percent, shard=a.shard, num_shards=a.num_shards,
        merge_only=a.merge, overwrite=a.overwrite, progress=a.progress, cutoff_year=a.cutoff_year,
        base_urls=parse_base_urls(a.base_url, p),
        ocr=OcrOptions(repair=not a.no_ocr_repair, period_corpus=a.period_corpus, min_quality=a.ocr_min_quality),
        download_options={"per_host_interval": a.download_interval, "max_retries": config.CORPUS.download_retries})
    counts = build_corpus(
        layout.processed_dir, layout.metadata_dir, options, source_dir=a.source_dir,
        use_sample=True if a.sample else None, sample_limit_chars=a.sample_limit_chars,
        default_year=a.default_year, source_dir_ocr=a.ocr, entries=entries, downloads_dir=layout.downloads_dir)
    if a.shard is None:
        print(f"corpus: {layout.processed_dir / MANIFEST} ({counts.get('documents')} documents); "
              f"statistics in {layout.metadata_dir / CORPUS_STATS}")
    return 0


if __name__ == "__main__":
    run_main(main)
