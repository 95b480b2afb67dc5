"""The collection over real data: the filters on the shared test corpus, and the project registry."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from londonlm.corpus.collect import CollectionOptions, run_collection
from londonlm.corpus.manifest import read_jsonl
from londonlm.corpus.sources import KINDS, load_registry

REPO = Path(__file__).resolve().parents[2]
SHARED_CORPUS = REPO.parent / "shared" / "corpus"
REGISTRY = REPO / "02_data_collection" / "data_sources.yaml"
NEGATIVES = {"gutenberg_ontboezemingen_dutch.txt": "not_english",
             "gutenberg_debian_gnu_linux_guide.txt": "modern_text",
             "gutenberg_devils_dictionary.txt": "not_london"}
LONDON = ["oldbailey_ordinarys_account_1678-01-23.txt", "oldbailey_ordinarys_account_1741-05-04.txt",
          "oldbailey_proceedings_1674-07-17.xml", "gutenberg_beggars_opera.txt", "gutenberg_sign_of_the_four.txt"]


@pytest.mark.skipif(not (SHARED_CORPUS / "_negatives").is_dir(),
                    reason="../shared/corpus absent: no real London texts or negatives to filter")
def test_filters_reject_the_negatives_and_keep_real_london_texts(tmp_path):
    entry = {"id": "shared", "kind": "local", "path": str(SHARED_CORPUS), "patterns": LONDON + list(NEGATIVES)}
    logs: list[str] = []
    stats = run_collection([entry], tmp_path / "dl", tmp_path / "p", tmp_path / "m",
                           options=CollectionOptions(offline=True, workers=1, log=logs.append))
    by_name = {r["id"].split("__")[-1]: r["reason"] for r in read_jsonl(tmp_path / "p" / "rejections.jsonl")}
    for name, reason in NEGATIVES.items():
        assert by_name.get(name.removesuffix(".txt")) == reason, (name, by_name)
    kept = {r["relpath"] for r in read_jsonl(tmp_path / "p" / "manifest.jsonl")}
    assert kept == set(LONDON)
    assert stats["counts"]["documents"] == len(LONDON)
    assert stats["counts"]["rejected"] == {"modern_text": 1, "not_english": 1, "not_london": 1}
    rows = {r["relpath"]: r for r in read_jsonl(tmp_path / "p" / "manifest.jsonl")}
    assert rows["gutenberg_beggars_opera.txt"]["year"] == 1728  # from MANIFEST.tsv
    assert rows["oldbailey_ordinarys_account_1678-01-23.txt"]["year"] == 1678  # from the file name
    assert "START OF" not in (tmp_path / "p" / rows["gutenberg_sign_of_the_four.txt"]["path"]).read_text()
    assert any("corpus statistics" in m for m in logs) and any("not_english" in m for m in logs)


def test_project_registry_schema():
    entries = load_registry(REGISTRY)
    ids = [e["id"] for e in entries]
    assert len(ids) == len(set(ids))
    for e in entries:
        assert re.fullmatch(r"[a-z0-9_]+", e["id"]), e["id"]
        assert e["kind"] in KINDS and e.get("title") and e.get("license"), e["id"]
        assert isinstance(e.get("london"), bool), e["id"]
        if e.get("year_range"):
            lo, hi = e["year_range"]
            assert 1500 <= lo <= hi, e["id"]
    pg = [e for e in entries if e["kind"] == "gutenberg"]
    assert len(pg) >= 100
    assert len({e["gutenberg_id"] for e in pg}) == len(pg)
    for e in pg:
        assert isinstance(e["gutenberg_id"], int) and e["gutenberg_id"] > 0, e["id"]
        assert isinstance(e["year"], int) and 1500 <= e["year"] <= 1900, e["id"]
        assert e.get("author") and e["london"] is True and e.get("relation") in ("about", "from"), e["id"]
    assert sum(e.get("relation") == "about" for e in pg) >= 50
    assert {"gutenberg", "archive_org", "old_bailey", "london_lives", "html", "local"} <= {e["kind"] for e in entries}


@pytest.mark.skipif(not (SHARED_CORPUS / "MANIFEST.tsv").exists(), reason="../shared/corpus absent: no ids to cross-check")
def test_registry_gutenberg_ids_agree_with_the_shared_manifest():
    pg = {e["gutenberg_id"]: e for e in load_registry(REGISTRY) if e["kind"] == "gutenberg"}
    with open(SHARED_CORPUS / "MANIFEST.tsv", encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["london_related"] == "yes"]
    checked = 0
    for r in rows:
        m = re.search(r"PG #(\d+)", r["notes"])
        if not m or int(r["year_first_published"]) > 1900:
            continue
        e = pg.get(int(m.group(1)))
        assert e is not None, f"{r['file']}: PG #{m.group(1)} missing from the registry"
        assert e["year"] == int(r["year_first_published"]), e["id"]
        checked += 1
    assert checked >= 30


def test_shards_of_one_folder_run_at_once_but_each_once_and_never_beside_a_whole_run(tmp_path):
    """A Slurm array's shards share the output folder; a second run of one shard, or a whole run
    or merge beside them, is refused naming the process that holds it (here, this one)."""
    import os

    from londonlm.corpus.collect import CollectionBusy, collection_lock

    me = f"by process {os.getpid()};"
    with collection_lock(tmp_path, 0, 2), collection_lock(tmp_path, 1, 2):
        with pytest.raises(CollectionBusy, match=f"shard 0 of 2 is being collected into {tmp_path} {me}"):
            with collection_lock(tmp_path, 0, 2):
                pass
        with pytest.raises(CollectionBusy, match=f"another collection is writing to {tmp_path} {me}"):
            with collection_lock(tmp_path, None, 2):
                pass
    with collection_lock(tmp_path, None, 2):
        with pytest.raises(CollectionBusy, match=me):
            with collection_lock(tmp_path, 1, 2):
                pass
    with collection_lock(tmp_path, None, 1):  # every hold went with its block
        pass
    assert all(not p.read_text() for p in tmp_path.glob(".collection*.lock"))


def test_a_staged_line_that_is_not_text_or_not_an_object_is_passed_over(tmp_path):
    """A byte that is not UTF-8 in one staged line raised UnicodeDecodeError for the whole
    collection; a row that is a list reached code reading it as a dict."""
    path = tmp_path / "staged.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "\xff"}\n[1, 2]\n\n{"id": "b"}\n{"id": "c"')
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b"]
