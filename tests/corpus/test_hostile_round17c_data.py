"""Hostile round 17c, two gaps in the data stages: a corpus text edited by hand to its own size
(the corpus sidecar vouched for texts/ by file count and bytes only), and a gzipped source file
unpacked whole in memory (a gzip bomb)."""
from __future__ import annotations

import gzip
import json
import os
import time
import tracemalloc
import zipfile

import pytest

from londonlm.core import SIDECAR
from londonlm.corpus import CollectionOptions, CorpusError, build_corpus, read_manifest
from londonlm.corpus.manifest import TEXTS_CHECKED, TEXTS_FINGERPRINT, texts_not_as_made
from londonlm.corpus.sources import Document, SourceError, materialise, read_text_file
from londonlm.corpus.sources import old_bailey
from londonlm.tokens.stage import train_tokenizer_stage

quiet = lambda *_: None
LIMIT = 1 << 20  # a small limit stands for MAX_RAW_BYTES: the bomb stays a few KB


def _bomb(unpacked: int = 32 * LIMIT) -> bytes:
    return gzip.compress(b"\0" * unpacked, compresslevel=9)


@pytest.mark.parametrize("fmt", ["text", "tei"])
def test_a_gzip_bomb_is_too_large_without_unpacking_it_whole(tmp_path, fmt):
    """Was: ``gzip.decompress`` unpacked it whole (a few hundred KB unpack to gigabytes): the limit
    held the packed bytes only."""
    path = tmp_path / ("bomb.txt.gz" if fmt == "text" else "bomb.xml")
    path.write_bytes(_bomb())
    doc = Document(id="b", source="s", source_kind="local", extra={"raw_path": str(path), "raw_format": fmt})
    tracemalloc.start()
    try:
        materialise(doc, max_bytes=LIMIT)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert doc.error == "too_large" and f"limit of {LIMIT} bytes" in doc.extra["error_detail"], doc.extra
    assert peak < LIMIT + (4 << 20)  # the limit and a few MiB of buffers, never the 32 MiB it unpacks to
    with pytest.raises(SourceError, match="too_large|limit"):  # the evaluation's texts are read alike
        read_text_file(path, max_bytes=LIMIT)
    ok = tmp_path / "ok.txt.gz"  # under the limit: read as before, every member
    ok.write_bytes(gzip.compress(b"The Plague Year. ") + gzip.compress(b"London, 1665."))
    assert read_text_file(ok, max_bytes=LIMIT) == ("The Plague Year. London, 1665.", ["gunzipped"])


def test_a_gzip_whose_deflate_data_is_damaged_is_a_rejection_not_a_traceback(tmp_path):
    """Was: a ``zlib.error`` (no OSError) escaped ``materialise`` and ended the collection."""
    good = gzip.compress(b"It was about the beginning of September 1664. " * 200)
    path = tmp_path / "damaged.txt.gz"
    path.write_bytes(good[:20] + bytes(b ^ 0x55 for b in good[20:40]) + good[40:])
    doc = materialise(Document(id="d", source="s", source_kind="local",
                               extra={"raw_path": str(path), "raw_format": "text"}))
    assert doc.error == "bad_gzip" and doc.text is None


def test_zip_members_are_bounded_by_their_declared_size(tmp_path, monkeypatch):
    """Held: an Old Bailey zip's member over the limit is ``too_large`` before it is read, and one
    whose header claims fewer bytes than it unpacks to is read only to its claim (then its CRC fails)."""
    monkeypatch.setattr(old_bailey, "MAX_RAW_BYTES", LIMIT)
    path = tmp_path / "sessions.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.xml", b"<TEI>" + b" " * (2 * LIMIT) + b"</TEI>")
        zf.writestr("liar.xml", b"<TEI>" + b" " * (8 * LIMIT) + b"</TEI>")
    raw = bytearray(path.read_bytes())
    true_size = (8 * LIMIT + 11).to_bytes(4, "little")
    for at in [i for i in range(len(raw)) if raw[i:i + 4] == true_size]:  # local and central headers
        raw[at:at + 4] = (100).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    docs = {d.extra["member"]: d for d in old_bailey.documents_from_file(path, {"source": "ob", "source_kind": "old_bailey"})}
    assert docs["big.xml"].error == "too_large"
    assert docs["liar.xml"].error == "bad_zip" and "CRC" in docs["liar.xml"].extra["error_detail"]


# ---------------------------------------------------------------- a text edited to its own size
@pytest.fixture
def corpus(micro_root, micro_root_copy):
    processed = micro_root_copy / "data" / "london_historical" / "processed"
    return micro_root, processed, micro_root_copy / "09_models" / "tokenizers" / "london_historical_bpe"


def _tokenizer(processed, tok, logs=None):
    return train_tokenizer_stage(processed, tok, vocab_size=512, min_frequency=2, era_tokens=True,
                                 model_max_length=64, log=(logs.append if logs is not None else quiet))


def _edit_one_letter(path) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    at = data.index(b"e")
    data[at:at + 1] = b"a"
    path.write_bytes(bytes(data))
    assert path.stat().st_size == st.st_size


def _copied_without_times(processed) -> None:
    """What ``cp -r`` (no ``-p``) leaves: every text with a new mtime."""
    for path in (processed / "texts").rglob("*"):
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_a_copied_corpus_is_current_and_checked_once(corpus):
    """``cp -r`` (every mtime new) does not force a rebuild: the texts are hashed against the
    manifest once, found as made, and the next check is fast again."""
    _root, processed, tok = corpus
    _copied_without_times(processed)
    assert not (processed / TEXTS_CHECKED).exists()
    logs = []
    _tokenizer(processed, tok, logs)
    assert any("outputs are current" in m for m in logs), logs
    assert (processed / TEXTS_CHECKED).is_file()
    assert texts_not_as_made(processed) is None


def test_a_text_edited_to_its_own_size_is_not_current(corpus):
    """Was: the tokenizer stage said "outputs are current; skipping" over a corpus whose text was
    edited by hand to its own size (the sidecar vouched by count and bytes); a cache build read it."""
    original, processed, tok = corpus
    _copied_without_times(processed)
    _tokenizer(processed, tok)  # the copy checked once (as above)
    row = read_manifest(processed)[0]
    _edit_one_letter(processed / row["path"])
    with pytest.raises(CorpusError, match=rf"{row['path']} is not the text it was made as.*"
                                          r"historical_data_collector.py --overwrite"):
        _tokenizer(processed, tok)
    from londonlm.tokens import ensure_cache
    with pytest.raises(CorpusError, match=row["path"]):
        ensure_cache(processed.parent / "cache", tok, processed, 32, True, mode="rebuild", progress=False, log=quiet)
    # the collection's own rerun rebuilds it (it was "current" too)
    logs = []
    build_corpus(processed, processed.parent / "metadata", source_dir=original / "src",  # (the source it was collected from)
                 options=CollectionOptions(validation_percent=20, log=logs.append))
    assert any("rebuilding" in m and row["path"] in m for m in logs), logs
    assert texts_not_as_made(processed) is None
    _tokenizer(processed, tok)


def test_a_sidecar_from_before_fingerprints_vouches_as_it_did(corpus):
    """A sidecar without a fingerprint is compared on the facts it recorded: no text is hashed."""
    _root, processed, tok = corpus
    record = json.loads((processed / SIDECAR).read_text())
    del record[TEXTS_FINGERPRINT]
    (processed / SIDECAR).write_text(json.dumps(record))
    _edit_one_letter(processed / read_manifest(processed)[0]["path"])
    assert texts_not_as_made(processed) is None
    assert not (processed / TEXTS_CHECKED).exists()


def test_the_no_change_check_is_fast_on_ten_thousand_texts(corpus):
    """The fingerprint walk over 10,000 small texts, timed (the hashing fallback is not run)."""
    _root, processed, _tok = corpus
    texts = processed / "texts"
    rows = []
    for i in range(10_000):
        (texts / f"extra_{i}.txt").write_text(f"text {i}\n")
        rows.append({"path": f"texts/extra_{i}.txt"})
    from londonlm.corpus.manifest import texts_fingerprint
    record = json.loads((processed / SIDECAR).read_text())
    record[TEXTS_FINGERPRINT] = texts_fingerprint(processed)
    t0 = time.perf_counter()
    assert texts_not_as_made(processed, record) is None
    seconds = time.perf_counter() - t0
    print(f"no-change check over {len(list(texts.iterdir()))} texts: {seconds * 1000:.0f} ms")
    assert seconds < 2.0
