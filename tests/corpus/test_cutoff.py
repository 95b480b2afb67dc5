"""A cutoff year: date evidence per document (the latest trace decides), the collection's cutoff
filter, the cutoff view of a collected corpus, the corpus's time facts and the collector's flag."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from londonlm.core import SIDECAR, StageInputMissing, UsageError
from londonlm.corpus import (CollectionOptions, CorpusError, build_corpus, corpus_time_facts, cutoff_view, read_manifest,
                             summarize)
from londonlm.corpus import cutoff as cutoff_module
from londonlm.corpus import manifest as manifest_module
from londonlm.corpus.dating import cutoff_verdict, decide_year
from londonlm.corpus.filters import CutoffFilter, DocInfo, default_filters, run_filters
from londonlm.corpus.manifest import read_jsonl
from londonlm.corpus.sources import ArchiveOrgSource, Document, LocalSource, OldBaileySource, materialise
from londonlm.corpus.sources.base import source_dir

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "02_data_collection" / "historical_data_collector.py"
WORDS = ("the of and a to in was his that it with for as watch street by Thames bridge fire market church "
         "house lane prisoner goods shillings morning Cheapside apprentices abroad early").split()
TEI = b"""<TEI.2><text><body><div0 type="sessionsPaper" id="17820410">
 <interp type="date" value="17820410"/>
 <div1 type="trialAccount" id="t17820410-1"><interp type="date" value="17820410"/>
 <p>JOHN ASSTILL was indicted for stealing four linen table cloths.</p></div1>
</div0></body></text></TEI.2>"""


def prose(seed: int, lines: int = 40) -> str:
    rng = random.Random(seed)
    return "\n".join(" ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + "." for _ in range(lines)) + "\n"


def quiet(*_):
    return None


# ---------------------------------------------------------------- the rule
def test_the_latest_trace_decides_and_bounds_only_date_the_undated():
    assert decide_year({"file name": 1660, "MANIFEST.tsv year_first_published": 1825}) == \
        (1825, "MANIFEST.tsv year_first_published")
    assert decide_year({"file name": 1741, "MANIFEST.tsv year": 1700}) == (1741, "file name")
    # a tie is named by the most specific evidence, whatever the order it was seen in
    assert decide_year({"file name": 1782, "TEI session date": 1782}) == (1782, "TEI session date")
    # the registry's range end and the user's default_year date only a text with no trace
    assert decide_year({"registry year_range": 1913, "TEI session date": 1782}) == (1782, "TEI session date")
    assert decide_year({"default_year": 1700, "file name": 1650}) == (1650, "file name")
    assert decide_year({"default_year": 1700, "registry year_range": 1800}) == (1800, "registry year_range")
    assert decide_year({"default_year": 1700}) == (1700, "default_year")
    assert decide_year({}) == (None, None)


def test_document_year_follows_its_evidence():
    doc = Document(id="d", source="s", source_kind="local", dates={"registry year_range": 1900})
    assert (doc.year, doc.year_rule) == (1900, "registry year_range")
    doc.add_date("file name", 1700)
    assert (doc.year, doc.year_rule) == (1700, "file name")
    doc.add_date("TEI session date", None)
    assert doc.dates == {"registry year_range": 1900, "file name": 1700}
    legacy = Document(id="e", source="s", source_kind="local", year=1650)
    assert (legacy.year, legacy.year_rule, legacy.dates) == (1650, "source year", {"source year": 1650})
    shared = {"registry year": 1700}
    a, b = (Document(id=i, source="s", source_kind="x", dates=shared) for i in "ab")
    a.add_date("file name", 1750)
    assert b.dates == {"registry year": 1700} and b.year == 1700  # each document owns its evidence


def test_cutoff_rule_and_filter():
    assert cutoff_verdict(1812, "MANIFEST.tsv year_first_published", 1750) == \
        (False, "after_cutoff", "dated 1812 (MANIFEST.tsv year_first_published) > cutoff 1750")
    assert cutoff_verdict(None, None, 1750) == \
        (False, "undated_under_cutoff", "no date evidence; a cutoff corpus keeps only dated documents")
    assert cutoff_verdict(1750, "file name", 1750)[0]
    text = prose(1)
    assert [f.name for f in default_filters(cutoff_year=1750)][-2:] == ["period", "cutoff"]
    assert "cutoff" not in [f.name for f in default_filters()]
    kept, reason, verdicts = run_filters(text, 1812, default_filters(cutoff_year=1750), year_rule="file name")
    assert not kept and reason == "after_cutoff" and verdicts[-1].detail == "dated 1812 (file name) > cutoff 1750"
    v = CutoffFilter(1750)(DocInfo(text, None))
    assert not v.passed and v.reason == "undated_under_cutoff"
    assert run_filters(text, 1700, default_filters(cutoff_year=1750))[0]


# ---------------------------------------------------------------- evidence, source by source
def test_local_folder_evidence_manifest_file_name_default_year(tmp_path):
    (tmp_path / "MANIFEST.tsv").write_text("file\ttitle\tyear_first_published\tyear\n"
                                           "pepys_1660.txt\tDiary\t1825\t\n"
                                           "ordinary_1741-05-04.txt\tAccount\t\t1700\n")
    for name in ("pepys_1660.txt", "ordinary_1741-05-04.txt", "undated.txt", "dated_1650.txt"):
        (tmp_path / name).write_text("London.")
    src = LocalSource({"id": "l", "kind": "local", "path": str(tmp_path), "default_year": 1700})
    docs = {d.id: d for d in src.documents()}
    pepys = docs["pepys_1660"]
    assert (pepys.year, pepys.year_rule) == (1825, "MANIFEST.tsv year_first_published")
    assert pepys.dates == {"MANIFEST.tsv year_first_published": 1825, "file name": 1660, "default_year": 1700}
    assert (docs["ordinary_1741-05-04"].year, docs["ordinary_1741-05-04"].year_rule) == (1741, "file name")
    assert docs["ordinary_1741-05-04"].dates["MANIFEST.tsv year"] == 1700
    assert (docs["undated"].year, docs["undated"].year_rule) == (1700, "default_year")
    assert (docs["dated_1650"].year, docs["dated_1650"].year_rule) == (1650, "file name")
    nodefault = {d.id: d for d in LocalSource({"id": "l", "kind": "local", "path": str(tmp_path)}).documents()}
    assert nodefault["undated"].year is None and nodefault["undated"].year_rule is None


def test_tei_session_date_and_registry_year_range_end(tmp_path):
    (tmp_path / "session.xml").write_bytes(TEI)             # no date in the name: the TEI dates it
    (tmp_path / "session_1780-01-01.xml").write_bytes(TEI)  # the session date is later: it decides
    (tmp_path / "plain.txt").write_text("London.")           # only the source's range: its end
    src = LocalSource({"id": "l", "kind": "local", "path": str(tmp_path), "year_range": [1600, 1700]})
    docs = {d.id: materialise(d) for d in src.documents()}
    assert (docs["session"].year, docs["session"].year_rule) == (1782, "TEI session date")
    assert docs["session"].dates == {"registry year_range": 1700, "TEI session date": 1782}
    assert docs["session_1780-01-01"].dates["file name"] == 1780 and docs["session_1780-01-01"].year == 1782
    assert (docs["plain"].year, docs["plain"].year_rule) == (1700, "registry year_range")

    spec = {"id": "obo", "kind": "old_bailey", "year_range": [1674, 1913], "urls": ["http://h/x/17820410.xml"]}
    d = source_dir(tmp_path / "dl", "old_bailey", "obo")
    d.mkdir(parents=True)
    (d / "17820410.xml").write_bytes(TEI)
    (doc,) = OldBaileySource(spec).documents(tmp_path / "dl")
    assert (doc.year, doc.year_rule) == (1782, "file name")  # not 1913: a trace beats the range
    materialise(doc)
    assert (doc.year, doc.year_rule) == (1782, "TEI session date")
    assert doc.dates == {"registry year_range": 1913, "file name": 1782, "TEI session date": 1782}


def test_archive_org_and_london_lives_evidence(tmp_path):
    d = source_dir(tmp_path, "archive_org", "ia")
    (d / "dated").mkdir(parents=True)
    (d / "search.json").write_text(json.dumps([{"identifier": "dated"}, {"identifier": "undated"}]))
    (d / "dated" / "metadata.json").write_text(json.dumps({"metadata": {"date": "1785-01-01"}}))
    docs = {x.extra["identifier"]: x for x in
            ArchiveOrgSource({"id": "ia", "kind": "archive_org", "year_range": [1600, 1900]}).documents(tmp_path)}
    assert (docs["dated"].year, docs["dated"].year_rule) == (1785, "archive.org metadata")
    assert (docs["undated"].year, docs["undated"].year_rule) == (1900, "registry year_range")
    ll = Document(id="ll", source="ll", source_kind="london_lives", dates={"registry year_range": 1800},
                  extra={"raw_format": "london_lives",
                         "raw_bytes": b"<doc><interp type='date' value='17250101'/><p>Paid the beadle.</p></doc>"})
    materialise(ll)
    assert (ll.year, ll.year_rule) == (1725, "London Lives date")


def test_summary_counts_documents_by_year_rule():
    rows = [{"id": "a", "year": 1700, "year_rule": "file name"}, {"id": "b", "year": 1701, "year_rule": "file name"},
            {"id": "c", "year": None, "year_rule": None}, {"id": "d", "year": 1650}]
    assert summarize(rows)["by_year_rule"] == {"file name": 2, "undated": 1, "unrecorded": 1}


# ---------------------------------------------------------------- the collection with a cutoff
def dated_folder(tmp_path: Path) -> Path:
    """Three texts up to 1750, one dated 1812 by its MANIFEST.tsv row (its name says 1660), one
    with no date at all."""
    src = tmp_path / "src"
    src.mkdir()
    for i, y in enumerate((1700, 1720, 1740)):
        (src / f"early{i}_{y}.txt").write_text(prose(i), encoding="utf-8")
    (src / "reprint_1660.txt").write_text(prose(10), encoding="utf-8")
    (src / "undated.txt").write_text(prose(11), encoding="utf-8")
    (src / "MANIFEST.tsv").write_text("file\ttitle\tyear_first_published\nreprint_1660.txt\tReprint\t1812\n")
    return src


def test_collection_with_a_cutoff_rejects_later_and_undated_documents(tmp_path):
    src = dated_folder(tmp_path)
    p, m = tmp_path / "p", tmp_path / "m"
    counts = build_corpus(p, m, options=CollectionOptions(cutoff_year=1750, validation_percent=30, log=quiet),
                          source_dir=src)
    rows = read_manifest(p)
    assert {r["id"] for r in rows} == {"local_early0_1700", "local_early1_1720", "local_early2_1740"}
    assert all(r["year_rule"] == "file name" and r["date_evidence"] == {"file name": r["year"]} for r in rows)
    rej = {r["id"]: r for r in read_jsonl(p / "rejections.jsonl")}
    late, undated = rej["local_reprint_1660"], rej["local_undated"]
    assert late["reason"] == "after_cutoff" and late["year"] == 1812
    assert late["year_rule"] == "MANIFEST.tsv year_first_published"
    assert late["date_evidence"] == {"MANIFEST.tsv year_first_published": 1812, "file name": 1660}
    assert "cutoff=1812 dated 1812 (MANIFEST.tsv year_first_published) > cutoff 1750" in late["detail"]
    assert undated["reason"] == "undated_under_cutoff" and undated["year"] is None and undated["year_rule"] is None
    assert "a cutoff corpus keeps only dated documents" in undated["detail"]
    assert counts["rejected"] == {"after_cutoff": 1, "undated_under_cutoff": 1}
    side = json.loads((p / SIDECAR).read_text())
    assert side["settings"]["cutoff_year"] == 1750
    assert side["counts"]["corpus_time"]["years"] == [1700, 1740]
    stats = json.loads((m / "corpus_stats.json").read_text())
    assert stats["cutoff_year"] == 1750 and stats["years"] == [1700, 1740] and stats["by_year_rule"] == {"file name": 3}
    assert "cutoff 1750" in (m / "corpus_report.md").read_text()
    facts = corpus_time_facts(p)
    assert {k: facts[k] for k in ("cutoff_year", "years", "documents_by_decade", "undated_documents")} == {
        "cutoff_year": 1750, "years": [1700, 1740], "documents_by_decade": {"1700": 1, "1720": 1, "1740": 1},
        "undated_documents": 0}
    assert facts["words_by_decade"] == {str(r["year"]): r["words"] for r in rows}


def test_no_cutoff_keeps_the_settings_and_sidecars_of_before(tmp_path):
    src = dated_folder(tmp_path)
    (src / "zz_copy_1700.txt").write_text(prose(0), encoding="utf-8")
    logs: list[str] = []
    build_corpus(tmp_path / "p", tmp_path / "m", options=CollectionOptions(log=logs.append), source_dir=src)
    side = json.loads((tmp_path / "p" / SIDECAR).read_text())
    assert "cutoff_year" not in side["settings"]
    dup = next(r for r in read_jsonl(tmp_path / "p" / "rejections.jsonl") if r["reason"] == "duplicate_exact")
    assert dup["year_rule"] and dup["date_evidence"]  # rejected by the merge, still with its dating
    rows = {r["id"]: r for r in read_manifest(tmp_path / "p")}
    assert rows["local_reprint_1660"]["year"] == 1812 and rows["local_undated"]["year"] is None
    facts = corpus_time_facts(tmp_path / "p")
    assert facts["cutoff_year"] is None and facts["undated_documents"] == 1 and facts["years"] == [1700, 1812]
    logs.clear()
    build_corpus(tmp_path / "p", tmp_path / "m", options=CollectionOptions(log=logs.append), source_dir=src)
    assert any("outputs are current" in x for x in logs)
    logs.clear()
    build_corpus(tmp_path / "p", tmp_path / "m", options=CollectionOptions(cutoff_year=1750, log=logs.append),
                 source_dir=src)
    assert any("settings changed: cutoff_year" in x for x in logs)


def test_a_cutoff_before_the_period_is_refused(tmp_path):
    with pytest.raises(UsageError, match="before the corpus period"):
        build_corpus(tmp_path / "p", tmp_path / "m", options=CollectionOptions(cutoff_year=1400, log=quiet),
                     source_dir=dated_folder(tmp_path))


# ---------------------------------------------------------------- the view
@pytest.fixture
def collected(tmp_path) -> Path:
    src = dated_folder(tmp_path)
    for i, y in enumerate((1760, 1790)):
        (src / f"later{i}_{y}.txt").write_text(prose(20 + i), encoding="utf-8")
    build_corpus(tmp_path / "p", tmp_path / "m", options=CollectionOptions(validation_percent=40, log=quiet),
                 source_dir=src)
    return tmp_path / "p"


def test_view_keeps_dated_documents_their_splits_and_linked_texts(collected, tmp_path):
    view, logs = tmp_path / "v", []
    out = cutoff_view(collected, view, 1750, log=logs.append)
    parent = {r["id"]: r for r in read_manifest(collected)}
    kept = read_manifest(view)
    assert {r["id"] for r in kept} == {"local_early0_1700", "local_early1_1720", "local_early2_1740"}
    for r in kept:
        assert r == parent[r["id"]]  # the same row: split, path, year, evidence
        assert os.path.samefile(view / r["path"], collected / r["path"])
    assert sorted(p.name for p in (view / "texts").iterdir()) == sorted(f"{r['id']}.txt" for r in kept)
    rej = {r["id"]: r for r in read_jsonl(view / "rejections.jsonl")}
    assert {k: r["reason"] for k, r in rej.items()} == {
        "local_reprint_1660": "after_cutoff", "local_later0_1760": "after_cutoff", "local_later1_1790": "after_cutoff",
        "local_undated": "undated_under_cutoff"}
    assert rej["local_reprint_1660"]["detail"] == "dated 1812 (MANIFEST.tsv year_first_published) > cutoff 1750"
    assert rej["local_undated"]["detail"] == "no date evidence; a cutoff corpus keeps only dated documents"
    side = json.loads((view / SIDECAR).read_text())
    assert side["stage"] == "corpus_cutoff" and side["settings"] == {"cutoff_year": 1750}
    assert side["inputs"] == {"manifest": cutoff_module.manifest_sha256(collected)}
    assert out["documents"] == 3 and out["rejected"] == {"after_cutoff": 3, "undated_under_cutoff": 1}
    assert out["corpus_time"]["years"] == [1700, 1740] and out["skipped"] is False
    stats = json.loads((view / "corpus_stats.json").read_text())
    assert stats["cutoff_year"] == 1750 and stats["years"] == [1700, 1740]
    assert corpus_time_facts(view)["cutoff_year"] == 1750 and corpus_time_facts(view)["undated_documents"] == 0


def test_view_and_collection_apply_one_rule(collected, tmp_path):
    cutoff_view(collected, tmp_path / "v", 1750, log=quiet)
    src = tmp_path / "src"
    build_corpus(tmp_path / "p2", tmp_path / "m2", options=CollectionOptions(cutoff_year=1750, log=quiet),
                 source_dir=src)
    assert {r["id"] for r in read_manifest(tmp_path / "v")} == {r["id"] for r in read_manifest(tmp_path / "p2")}
    by_view = {r["id"]: (r["reason"], r["detail"]) for r in read_jsonl(tmp_path / "v" / "rejections.jsonl")}
    by_filter = {r["id"]: (r["reason"], r["detail"].split(" ", 1)[1]) for r in read_jsonl(tmp_path / "p2" / "rejections.jsonl")}
    assert by_view == by_filter


def test_view_skips_when_current_and_rebuilds_when_the_corpus_changes(collected, tmp_path):
    view, logs = tmp_path / "v", []
    cutoff_view(collected, view, 1750, log=quiet)
    again = cutoff_view(collected, view, 1750, log=logs.append)
    assert again["skipped"] and again["documents"] == 3 and any("skipping" in x for x in logs)
    logs.clear()
    assert not cutoff_view(collected, view, 1750, overwrite=True, log=logs.append)["skipped"]
    assert any("--overwrite" in x for x in logs)
    (tmp_path / "src" / "early3_1745.txt").write_text(prose(30), encoding="utf-8")
    build_corpus(collected, tmp_path / "m", options=CollectionOptions(validation_percent=40, log=quiet),
                 source_dir=tmp_path / "src")
    logs.clear()
    out = cutoff_view(collected, view, 1750, log=logs.append)
    assert any("rebuilding (inputs changed: manifest)" in x for x in logs)
    assert out["documents"] == 4 and "local_early3_1745" in {r["id"] for r in read_manifest(view)}
    logs.clear()
    assert cutoff_view(collected, view, 1730, log=logs.append)["documents"] == 2
    assert any("settings changed: cutoff_year" in x for x in logs)
    assert sorted(p.name for p in (view / "texts").iterdir()) == ["local_early0_1700.txt", "local_early1_1720.txt"]


def test_view_writes_its_sidecar_last(collected, tmp_path, monkeypatch):
    view = tmp_path / "v"
    seen = []
    real = cutoff_module.write_sidecar

    def spy(path, *args, **kwargs):
        seen.append(all((view / n).exists() for n in ("manifest.jsonl", "rejections.jsonl", "corpus_stats.json")))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(cutoff_module, "write_sidecar", spy)
    cutoff_view(collected, view, 1750, log=quiet)
    assert seen == [True]

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(manifest_module, "link_or_copy", broken)  # where the view's texts are placed
    with pytest.raises(OSError):
        cutoff_view(collected, view, 1760, log=quiet)
    assert not (view / SIDECAR).exists()  # a half-made view is never vouched for


def test_view_errors_name_the_fix(collected, tmp_path):
    with pytest.raises(StageInputMissing, match="historical_data_collector.py"):
        cutoff_view(tmp_path / "nothing", tmp_path / "v", 1750, log=quiet)
    with pytest.raises(CorpusError, match=r"cutoff 1650 leaves no training documents.*local_early0_1700, is from "
                                          r"1700 \(file name\)"):
        cutoff_view(collected, tmp_path / "v", 1650, log=quiet)
    assert not (tmp_path / "v" / SIDECAR).exists()
    with pytest.raises(CorpusError, match="another folder"):
        cutoff_view(collected, collected, 1750, log=quiet)
    manifest = collected / "manifest.jsonl"
    rows = [{k: v for k, v in r.items() if k not in ("year_rule", "date_evidence")} for r in read_manifest(collected)]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))  # as collected before date evidence
    with pytest.raises(CorpusError, match=r"carry no date evidence.*historical_data_collector.py --overwrite"):
        cutoff_view(collected, tmp_path / "v", 1750, log=quiet)


# ---------------------------------------------------------------- the collector's flag
def collect(args, cwd):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=180)


def test_collector_cutoff_year_end_to_end(tmp_path):
    src, root = dated_folder(tmp_path), tmp_path / "root"
    r = collect(["--root", str(root), "--source_dir", str(src), "--workers", "1", "--cutoff_year", "1750"], tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    processed = root / "data" / "london_historical" / "processed"
    assert {x["year"] for x in read_manifest(processed)} == {1700, 1720, 1740}
    reasons = {x["id"]: x["reason"] for x in read_jsonl(processed / "rejections.jsonl")}
    assert reasons == {"local_reprint_1660": "after_cutoff", "local_undated": "undated_under_cutoff"}
    assert "dated by: file name=3" in r.stdout
    for bad in ("17x0", "99", "2500", ""):
        r = collect(["--root", str(root), "--source_dir", str(src), "--cutoff_year", bad], tmp_path)
        assert r.returncode == 2 and r.stderr.startswith("error: --cutoff_year") and r.stderr.count("\n") == 1, r.stderr
