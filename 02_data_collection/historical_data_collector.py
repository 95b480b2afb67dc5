#!/usr/bin/env python3
"""Collect the corpus: the embedded offline sample (1623 First Folio) and/or a local
folder of .txt files; clean, check and write texts + manifest.jsonl + statistics.

    python 02_data_collection/historical_data_collector.py --source_dir my_scans/
"""
import argparse
import sys

import config
from londonlm.corpus import CorpusError, build_corpus


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source_dir", help="folder of .txt files to add (recursively)")
    p.add_argument("--sample", action="store_true",
                   help="include the embedded sample even when --source_dir is given")
    p.add_argument("--sample_limit_chars", type=int,
                   help="take only the first N characters' worth of sample documents")
    p.add_argument("--default_year", type=int,
                   help="year for local files whose name has no 15xx-19xx year")
    p.add_argument("--validation_percent", type=float, default=config.CORPUS.validation_percent)
    p.add_argument("--min_chars", type=int, default=config.CORPUS.min_chars)
    p.add_argument("--root", help="project root (default $LONDONLM_ROOT or the repo)")
    p.add_argument("--overwrite", action="store_true", help="rebuild even when current")
    a = p.parse_args(argv)
    if not 0 <= a.validation_percent < 100:
        p.error("--validation_percent must be in [0, 100)")
    paths = config.get_paths(a.root)
    try:
        build_corpus(paths.processed_dir, paths.metadata_dir, source_dir=a.source_dir,
                     use_sample=True if a.sample else None,
                     sample_limit_chars=a.sample_limit_chars,
                     validation_percent=a.validation_percent, min_chars=a.min_chars,
                     year_range=(config.CORPUS.year_min, config.CORPUS.year_max),
                     default_year=a.default_year, overwrite=a.overwrite)
    except CorpusError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
