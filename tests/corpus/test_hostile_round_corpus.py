"""Hostile inputs to the corpus stage, each once a crash, a silent loss or a file replaced: XML
with no element at all, nested thousands deep or naming a surrogate (&#xD800;), a zip with one
damaged member, a download sent gzip-compressed, archive.org answers that are no records, a
--source_dir inside the corpus folder, outputs under a file or in a pipe, bad flag values, a
mended MANIFEST.tsv, and rebuilds that keep nothing or stop on a full disk."""
from __future__ import annotations

import contextlib
import gzip
import json
import os
import stat
import threading
import zipfile
from pathlib import Path

import pytest

from fakeservers import LoopbackServer
from londonlm.corpus.download import Downloader, DownloadTask
from londonlm.corpus.manifest import CorpusError
from londonlm.corpus.ocr.files import FileClash, check_output
from londonlm.corpus.sources import Document, materialise
from londonlm.corpus.sources.old_bailey import documents_from_file

REPO = Path(__file__).resolve().parents[2]
TEI = (b'<?xml version="1.0"?><TEI><text><body><div0 id="17820410"><div1 type="trialAccount" id="t1"><p>'
       + b"The prisoner was indicted for stealing a silver watch. " * 8 + b"</p></div1></div0></body></text></TEI>")
META = dict(source="ob", source_kind="old_bailey", title="", author="", dates={}, license="", london=True)


@pytest.mark.parametrize("data", [b"\x00\x00\x00", b"\x00" * 100 + b"<TEI/>"])
def test_xml_with_no_element_even_in_recovery_is_a_rejection_not_a_crash(data):
    # lxml's recovering parser itself raised XMLSyntaxError ("Document is empty") and the
    # whole collection ended with a traceback
    doc = Document(id="x", source="s", source_kind="local", extra={"raw_bytes": data, "raw_format": "tei"})
    materialise(doc)
    assert doc.error == "xml_invalid" and doc.text is None


def test_one_damaged_zip_member_rejects_that_member_and_the_others_are_read(tmp_path):
    # a zlib.error from the first member ended the source: every later session paper was lost
    path = tmp_path / "sessions.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a_17820410.xml", TEI * 50)
        z.writestr("b_17820411.xml", TEI)
    data = bytearray(path.read_bytes())
    at = data.find(b"a_17820410.xml") + len("a_17820410.xml") + 20
    data[at:at + 40] = b"\x00" * 40
    path.write_bytes(bytes(data))
    docs = list(documents_from_file(path, META))
    assert [(d.id, d.error) for d in docs] == [("ob-a_17820410", "bad_zip"), ("ob-b_17820411", None)]
    assert "a_17820410.xml" in docs[0].extra["error_detail"]
    assert docs[1].extra["raw_bytes"] == TEI


class _GzipServer(LoopbackServer):
    """Sends every file gzip-compressed (Content-Encoding), Content-Length the compressed size,
    whatever the request's Accept-Encoding: as some servers and proxies do."""

    def __init__(self, body: bytes):
        self.body, self.accept = body, []
        self._listen()

    def _handle(self, h):
        self.accept.append(h.headers.get("Accept-Encoding"))
        z = gzip.compress(self.body)
        h.send_response(200)
        h.send_header("Content-Encoding", "gzip")
        h.send_header("Content-Length", str(len(z)))
        h.end_headers()
        h.wfile.write(z)


def test_a_download_sent_gzip_compressed_is_complete_not_truncated(tmp_path):
    # the decoded bytes were compared with the compressed Content-Length: "truncated body" on
    # every attempt, and the file never downloaded
    body = b"The streets of London were full of carts. " * 500
    with _GzipServer(body) as srv:
        dl = Downloader(max_retries=1, backoff_base=0, per_host_interval=0, progress=False, sleep=lambda s: None)
        r = dl.fetch(DownloadTask([srv.url + "/book.txt"], tmp_path / "book.txt"))
    assert r.ok, r.error
    assert (tmp_path / "book.txt").read_bytes() == body
    assert srv.accept[0] == "identity"  # a file's own bytes asked for: Range and length count those


def test_source_dir_inside_the_corpus_folder_is_refused_and_its_files_kept(tmp_path):
    # the merge keeps in texts/ only what the new manifest lists: the user's files there were deleted
    from londonlm.corpus.collect import build_corpus

    processed = tmp_path / "processed"
    mine = processed / "texts"
    mine.mkdir(parents=True)
    (mine / "scan_1750.txt").write_text("The streets of London were full of carts and people. " * 20)
    with pytest.raises(CorpusError, match="inside the corpus folder"):
        build_corpus(processed, tmp_path / "metadata", source_dir=mine)
    assert (mine / "scan_1750.txt").exists()
    assert not (processed / "manifest.jsonl").exists()


def test_a_registry_folder_inside_the_corpus_folder_is_refused(tmp_path):
    from londonlm.corpus.collect import run_collection

    processed = tmp_path / "processed"
    (processed / "texts").mkdir(parents=True)
    (processed / "texts" / "a_1750.txt").write_text("London " * 100)
    entry = {"id": "mine", "kind": "local", "path": str(processed / "texts")}
    with pytest.raises(CorpusError, match="inside the corpus folder"):
        run_collection([entry], tmp_path / "dl", processed, tmp_path / "metadata")
    assert (processed / "texts" / "a_1750.txt").exists()


@pytest.mark.parametrize("name", ["in.jsonl/out.jsonl", "in.jsonl/sub/out.jsonl", "newdir/"])
def test_an_output_under_a_file_or_naming_a_folder_is_refused_before_the_work(tmp_path, name):
    # under a file: a FileExistsError traceback once the whole repair was done; "newdir/": a
    # file named "newdir" written
    (tmp_path / "in.jsonl").write_text('{"id": "a", "text": "x"}\n')
    with pytest.raises(FileClash):
        check_output("--output", str(tmp_path / name) + ("/" if name.endswith("/") else ""))
    check_output("--output", str(tmp_path / "newdir" / "out.jsonl"))  # a folder still to be made is fine


def _count_tokens_main(monkeypatch, tmp_path, output: str) -> int:
    """count_tokens.py's main, in this process, with the counting (seconds of tokenizer loading)
    replaced: what is under test is where the counts go."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("count_tokens_under_test",
                                                  REPO / "02_data_collection" / "count_tokens.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "count_tokens_with", lambda processed, tok: {"documents": 1, "tokens": 7})
    monkeypatch.setattr(mod, "format_token_counts", lambda counts: "counts")
    return mod.main(["--root", str(tmp_path), "--processed_dir", str(tmp_path / "processed"),
                     "--tokenizer", str(tmp_path / "tok"), "--output", output])


def test_count_tokens_output_under_a_file_is_refused_before_the_counting(tmp_path, monkeypatch):
    # FileExistsError (a traceback) from the write, after the whole counting
    (tmp_path / "f").write_text("keep")
    with pytest.raises(FileClash, match="is a file, not a folder"):
        _count_tokens_main(monkeypatch, tmp_path, str(tmp_path / "f" / "counts.json"))
    assert (tmp_path / "f").read_text() == "keep"


def test_count_tokens_into_a_pipe_writes_the_pipe_and_leaves_it_one(tmp_path, monkeypatch):
    # the counts were renamed over the path: a FIFO (as root, /dev/null itself) became a file
    fifo = tmp_path / "counts.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    try:
        assert _count_tokens_main(monkeypatch, tmp_path, str(fifo)) == 0
    finally:
        reader.join(5)  # the writer closed the pipe: the reader has its end of file
        if reader.is_alive():  # nothing opened the pipe for writing: unblock the reader
            # (checked only after the join: a reader that had just finished closed its end, and a
            # non-blocking open for writing with no reader is ENXIO -- the flake CI met)
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            reader.join(5)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert json.loads(got[0]) == {"documents": 1, "tokens": 7}


def _collector_main(argv):
    import importlib.util

    spec = importlib.util.spec_from_file_location("collector_under_test",
                                                  REPO / "02_data_collection" / "historical_data_collector.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main(argv)


@pytest.mark.parametrize("flags, says", [
    (["--base_url", "gutenberg=ftp://mirror"], "not an http(s) URL"),     # every download failed, one by one
    (["--base_url", "gutenberg=http://"], "not an http(s) URL"),
    (["--sources", ""], "no source id"),                                 # the sample was collected instead
    (["--default_year", "99999"], "at most 2100"),                       # any number was taken as a year
])
def test_collector_bad_flag_values_are_one_error_line(tmp_path, capsys, flags, says):
    with pytest.raises(SystemExit) as e:
        _collector_main(["--root", str(tmp_path), "--offline", *flags])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error:") and says in err, err
    assert not (tmp_path / "data").exists()  # nothing collected


def _scan_folder(tmp_path, year: int, title: str) -> Path:
    src = tmp_path / "scans"
    src.mkdir(exist_ok=True)
    (src / "a.txt").write_text("The watch went down Fleet Street by the church and the tavern. " * 12)
    (src / "MANIFEST.tsv").write_text(f"file\tyear\ttitle\na.txt\t{year}\t{title}\n")
    return src


def _build(tmp_path, src):
    from londonlm.corpus.collect import CollectionOptions, build_corpus

    return build_corpus(tmp_path / "p", tmp_path / "m", CollectionOptions(log=lambda *_: None), source_dir=src)


def test_a_mended_manifest_tsv_makes_the_corpus_stale(tmp_path):
    # the folder's fingerprint hashed its texts only: a title or year mended in MANIFEST.tsv
    # was never collected ("outputs are current")
    from londonlm.corpus.manifest import read_manifest

    src = _scan_folder(tmp_path, 1750, "Old")
    _build(tmp_path, src)
    (src / "MANIFEST.tsv").write_text("file\tyear\ttitle\na.txt\t1760\tNew\n")
    _build(tmp_path, src)
    assert [(r["title"], r["year"]) for r in read_manifest(tmp_path / "p")] == [("New", 1760)]


def test_a_rebuild_that_keeps_nothing_leaves_the_corpus_there_whole(tmp_path):
    # the merge emptied manifest.jsonl and texts/ before finding it had no document to write
    from londonlm.corpus.manifest import read_manifest

    src = _scan_folder(tmp_path, 1750, "Old")
    _build(tmp_path, src)
    before = {p.name: p.read_bytes() for p in (tmp_path / "p").rglob("*") if p.is_file() and "shards" not in p.parts}
    (src / "a.txt").write_bytes(b"")
    with pytest.raises(CorpusError, match="no usable documents"):
        _build(tmp_path, src)
    after = {p.name: p.read_bytes() for p in (tmp_path / "p").rglob("*") if p.is_file() and "shards" not in p.parts}
    assert after == before and len(read_manifest(tmp_path / "p")) == 1


def test_an_archive_org_answer_that_is_no_record_costs_that_item_not_the_source(tmp_path):
    # a hit that was a string, or metadata that was a list, raised AttributeError: the source's
    # fetch stopped there, and its documents ended at that item (every later item lost)
    from fakeservers import FakeServer
    from londonlm.corpus.sources.archive_org import ArchiveOrgSource

    with FakeServer() as srv:
        srv.add_archive_item("good1", "The streets of London. " * 50, "Good", 1750)
        srv.add_archive_item("weird", "Text " * 50, "Weird", 1751)
        srv.json["/metadata/weird"] = {"metadata": ["not", "a", "dict"],
                                       "files": ["x_djvu.txt", {"name": "weird_djvu.txt"}]}
        srv.add_archive_item("good2", "The river Thames. " * 50, "Good2", 1752)
        srv.archive_items.insert(1, "junk")
        src = ArchiveOrgSource({"id": "ia", "kind": "archive_org", "query": "x"}, base_url=srv.url)
        dl = Downloader(max_retries=0, backoff_base=0, per_host_interval=0, progress=False)
        results = src.fetch(dl, tmp_path)
    assert [(r.key, r.ok) for r in results] == [("ia/good1", True), ("ia/weird", True), ("ia/good2", True)]
    docs = list(src.documents(tmp_path))
    assert [(d.id, d.error) for d in docs] == [("ia-good1", None), ("ia-weird", None), ("ia-good2", None)]


def test_markup_nested_thousands_deep_is_read_not_a_recursion_error():
    # the text walk recursed once per level: RecursionError past ~1000, and the collection ended
    from londonlm.corpus.sources.old_bailey import tei_to_text

    depth = 2000
    data = (b'<TEI><div0 id="17500101">' + b"<hi>" * depth + b"The prisoner was indicted for theft. " * 3
            + b"</hi>" * depth + b"</div0></TEI>")
    text, meta, _ = tei_to_text(data)
    assert text.startswith("The prisoner was indicted for theft.") and meta["year"] == 1750


@pytest.mark.parametrize("ref", [b"&#xD800;", b"&#55296;", b"&#x0dfff;"])
def test_a_reference_to_a_surrogate_in_xml_is_read_not_a_unicode_error(ref):
    # the recovering parser kept the reference as bytes that are no UTF-8; reading the text
    # raised UnicodeDecodeError and the whole collection ended with a traceback
    data = TEI.replace(b"a silver watch.", b"a silver " + ref + b" watch.", 1)
    doc = Document(id="x", source="s", source_kind="local", extra={"raw_bytes": data, "raw_format": "tei"})
    materialise(doc)
    assert doc.error is None and "a silver \ufffd watch." in doc.text and "xml_recovered" in doc.repairs


def test_a_reference_to_a_surrogate_in_utf16_xml_is_that_documents_rejection():
    # (the reference is not found in UTF-16's bytes to be mended: the document alone is lost)
    data = TEI.replace(b"a silver watch.", b"a silver &#xD800; watch.", 1).replace(
        b'<?xml version="1.0"?>', b'<?xml version="1.0" encoding="UTF-16"?>').decode().encode("utf-16")
    doc = Document(id="x", source="s", source_kind="local", extra={"raw_bytes": data, "raw_format": "tei"})
    materialise(doc)
    assert doc.error == "xml_invalid" and doc.text is None and "no text" in doc.extra["error_detail"]


@pytest.mark.parametrize("blocked", ["processed", "metadata"])
def test_a_file_where_an_output_folder_goes_is_one_line_before_any_work(tmp_path, blocked):
    # FileExistsError from mkdir: a traceback (for metadata/, after the whole collection)
    from londonlm.corpus.collect import CollectionError, run_collection

    src = _scan_folder(tmp_path, 1750, "Old")
    (tmp_path / blocked).write_text("keep")
    entry = {"id": "mine", "kind": "local", "path": str(src)}
    with pytest.raises(CollectionError, match=f"{blocked} is a file, not a folder"):
        run_collection([entry], tmp_path / "dl", tmp_path / "processed" / "p", tmp_path / "metadata" / "m")
    assert (tmp_path / blocked).read_text() == "keep"


def test_a_merge_stopped_by_a_full_disk_leaves_every_text_of_the_old_manifest(tmp_path, monkeypatch):
    # the texts no longer kept were deleted before the new manifest was written: stopped in
    # between, the old manifest listed texts that were gone
    from londonlm.corpus import shards
    from londonlm.corpus.manifest import read_manifest

    src = _scan_folder(tmp_path, 1750, "Old")
    (src / "b.txt").write_text("The coach went over London Bridge to the Borough market at dawn. " * 12)
    _build(tmp_path, src)
    assert len(read_manifest(tmp_path / "p")) == 2
    (src / "b.txt").unlink()
    real = shards.atomic_writer

    def full_disk(path, *a, **k):
        if Path(path).name == "manifest.jsonl":
            raise OSError(28, "No space left on device", str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(shards, "atomic_writer", full_disk)
    with pytest.raises(OSError):
        _build(tmp_path, src)
    rows = read_manifest(tmp_path / "p")
    assert len(rows) == 2 and all((tmp_path / "p" / r["path"]).is_file() for r in rows)
    monkeypatch.undo()
    _build(tmp_path, src)  # room again: the rebuild prunes what it no longer keeps
    assert [p.name for p in (tmp_path / "p" / "texts").iterdir()] == ["local_a.txt"]


def test_a_file_name_that_is_no_utf8_is_collected_not_a_crash(tmp_path):
    # a Latin-1 name (Python holds it as a lone surrogate) raised UnicodeEncodeError when hashed
    # and when its row was written: the whole collection ended
    from londonlm.corpus.manifest import read_manifest

    src = tmp_path / "scans"
    src.mkdir()
    try:
        (src / os.fsdecode(b"caf\xe9_1750.txt")).write_text("The watch went down Fleet Street to the church. " * 12)
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system takes only UTF-8 names")
    _build(tmp_path, src)
    (row,) = read_manifest(tmp_path / "p")
    assert row["relpath"] == "caf\ufffd_1750.txt" and row["year"] == 1750
    assert (tmp_path / "p" / row["path"]).read_text().startswith("The watch went down Fleet Street")
