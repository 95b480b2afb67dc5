"""Hostile round 18b: the cutoff view made by two processes at once (a pipeline and a family, or
two families, with one cutoff year)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from conftest import tree_digest, vouch_for_corpus
from londonlm.core import SIDECAR, lock_folder
from londonlm.corpus import CorpusError, cutoff_view

quiet = lambda m: None  # noqa: E731


@pytest.fixture
def collected(tmp_path) -> Path:
    """A finished corpus of eight dated documents (1600-1950), one of them held out."""
    parent = tmp_path / "processed"
    (parent / "texts").mkdir(parents=True)
    rows = []
    for i, year in enumerate((1600, 1650, 1700, 1720, 1750, 1800, 1900, 1950)):
        text = f"document {i} of the year {year}. " * 20
        (parent / "texts" / f"d{i}.txt").write_text(text, encoding="utf-8")
        rows.append({"id": f"d{i}", "path": f"texts/d{i}.txt", "split": "validation" if i == 2 else "train",
                     "year": year, "decade": year // 10 * 10, "year_rule": "manifest",
                     "date_evidence": {"manifest": year}, "chars": len(text), "words": 120, "title": f"t{i}",
                     "source": "local", "sha256": hashlib.sha256(text.encode()).hexdigest()})
    (parent / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    vouch_for_corpus(parent)
    return parent


def test_a_second_maker_arriving_mid_build_is_one_line_and_the_first_finishes(collected, tmp_path, monkeypatch):
    """Two makers of one view at once each unlinked the sidecar and linked the texts: the one that
    lost the race between "no such file" and os.link copied onto its own link and stopped with
    `shutil.SameFileError` (a traceback; in a family, every member after it too). Reproduced
    here at that very point: the other maker runs between the first's check and its link."""
    view, real_link, others, calls = tmp_path / "processed-to1800", os.link, [], []

    def link(src, dst, *a, **k):
        calls.append(dst)
        if len(calls) == 1:  # the other process, just now (its own links are real ones)
            try:
                others.append(cutoff_view(collected, view, 1800, overwrite=True, log=quiet))
            except CorpusError as e:
                others.append(str(e))
        return real_link(src, dst, *a, **k)

    monkeypatch.setattr(os, "link", link)
    first = cutoff_view(collected, view, 1800, log=quiet)
    monkeypatch.undo()
    assert not first["skipped"] and first["documents"] == 6
    (why,) = others
    assert isinstance(why, str) and "is making the corpus view" in why and "nothing was written" in why
    assert f"process PID {os.getpid()}" in why
    logs = []
    assert cutoff_view(collected, view, 1800, log=logs.append)["skipped"]  # whole and current
    assert any("current" in x for x in logs)


def test_a_view_another_process_is_making_is_left_to_it(collected, tmp_path):
    """`--overwrite` (or a rebuild) while another process makes the view unlinked its sidecar
    and re-placed its texts under it; now one line, and the view is as the other leaves it."""
    view = tmp_path / "processed-to1750"
    cutoff_view(collected, view, 1750, log=quiet)
    before = tree_digest(view)
    fd = lock_folder(view)  # (an flock: another open file, as another process's, conflicts)
    try:
        with pytest.raises(CorpusError, match=r"process PID \d+ is making the corpus view .*processed-to1750 now; "
                                              r"wait for it to end"):
            cutoff_view(collected, view, 1750, overwrite=True, log=quiet)
    finally:
        os.close(fd)
    assert tree_digest(view) == before and (view / SIDECAR).is_file()


def test_a_refused_view_leaves_no_folder_behind(collected, tmp_path):
    """The lock is taken on the view's folder; a view refused before anything is placed (no
    training document by the cutoff) leaves no empty folder, as before."""
    with pytest.raises(CorpusError, match="leaves no training documents"):
        cutoff_view(collected, tmp_path / "processed-to1500", 1500, log=quiet)
    assert not (tmp_path / "processed-to1500").exists()
