"""Source kinds behind one interface, against a loopback server and tiny in-process files."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from londonlm.corpus.download import Downloader
from londonlm.corpus.sources import (ArchiveOrgSource, GutenbergSource, HtmlSource, LocalSource, LondonLivesSource,
                              OldBaileySource, RegistryError, SourceError, decode_bytes, gutenberg_urls,
                              load_registry, make_source, materialise, safe_id, tei_to_text)
from tests.fakeservers import FakeServer

PG_TEXT = ("The Project Gutenberg EBook of Things, by Somebody\n\n"
           "*** START OF THIS PROJECT GUTENBERG EBOOK THINGS ***\n\nIt was a foggy day in London town.\n\n"
           "*** END OF THIS PROJECT GUTENBERG EBOOK THINGS ***\nlicence text\n")

TEI = b"""<?xml version="1.0" encoding="UTF-8"?>
<TEI.2><text><body>
 <div0 type="sessionsPaper" id="17820410">
  <interp inst="17820410" type="date" value="17820410"/>
  <div1 type="frontMatter" id="f17820410-1"><p>THE WHOLE PROCEEDINGS at the
     OLD BAILY.</p></div1>
  <div1 type="trialAccount" id="t17820410-1">
   <interp inst="t17820410-1" type="date" value="17820410"/>
   <p>246. <persName id="p1"> JOHN
        ASSTILL <interp inst="p1" type="surname" value="ASSTILL"/></persName> was indicted for
      stealing four linen table cloths, value 8 s.</p>
   <p>ROGER EVANS sworn.</p>
   <p>I saw him bringing the goods back .</p>
  </div1>
 </div0></body></text></TEI.2>"""


def dl() -> Downloader:
    return Downloader(per_host_interval=0, progress=False, backoff_base=0.01, max_retries=2, read_timeout=5)


def test_gutenberg_urls_have_the_real_patterns():
    urls = gutenberg_urls(730)
    assert urls[0] == "https://www.gutenberg.org/cache/epub/730/pg730.txt"
    assert "https://www.gutenberg.org/files/730/730-0.txt" in urls
    assert "https://www.gutenberg.org/files/730/730.txt" in urls


def test_gutenberg_fetch_falls_back_and_documents(tmp_path):
    with FakeServer() as srv:
        srv.files["/files/123/123.txt"] = PG_TEXT.encode()
        src = make_source({"id": "things", "kind": "gutenberg", "gutenberg_id": 123, "title": "Things",
                           "author": "Somebody", "year": 1850}, base_urls={"gutenberg": srv.url})
        res = src.fetch(dl(), tmp_path)
        assert res[0].ok and res[0].url.endswith("/files/123/123.txt")
        (doc,) = list(src.documents(tmp_path))
        materialise(doc)
        assert doc.year == 1850 and doc.source_kind == "gutenberg" and "foggy day" in doc.text


def test_archive_org_search_is_paged_and_metadata_kept(tmp_path):
    with FakeServer() as srv:
        for i in range(5):
            srv.add_archive_item(f"londonbook{i}", f"LONDON STREETS\n\nThe Strand was crowded {i}.\n12\n",
                                 f"Book {i}", 1800 + i)
        src = ArchiveOrgSource({"id": "ia", "kind": "archive_org", "query": "subject:London", "rows": 2,
                                "max_items": 10, "year_range": [1700, 1900]}, base_url=srv.url)
        results = src.fetch(dl(), tmp_path)
        assert sum(r.ok for r in results) == 5
        assert srv.count("/advancedsearch.php") == 3  # 5 hits, 2 per page
        q = [h for p, h in srv.requests if p == "/advancedsearch.php"]
        assert q
        docs = list(src.documents(tmp_path))
        assert [d.year for d in docs] == [1800, 1801, 1802, 1803, 1804]
        assert docs[0].extra["ocr"] and docs[0].license.startswith("http://creativecommons.org")
        assert (tmp_path / "archive_org" / "ia" / "londonbook0" / "metadata.json").exists()
        materialise(docs[0])
        assert "Strand" in docs[0].text


def test_archive_org_query_adds_texts_and_dates():
    from londonlm.corpus.sources.archive_org import build_query

    q = build_query({"query": "subject:London", "year_range": [1600, 1700]})
    assert "mediatype:texts" in q and "date:[1600-01-01 TO 1700-12-31]" in q


def test_old_bailey_tei_gives_readable_trials_with_dates():
    text, meta, repairs = tei_to_text(TEI)
    assert "Trial t17820410-1. Session of 10 April 1782." in text
    assert "246. JOHN ASSTILL was indicted for stealing four linen table cloths, value 8 s." in text
    assert "ROGER EVANS sworn." in text and "goods back." in text
    assert "<" not in text and "surname" not in text
    assert meta["year"] == 1782 and meta["trials"] == [{"id": "t17820410-1", "date": "10 April 1782"}]
    assert repairs == []


def test_truncated_xml_is_recovered_with_a_reason_or_rejected():
    text, meta, repairs = tei_to_text(TEI[: len(TEI) * 3 // 4])
    assert repairs == ["xml_recovered"] and "JOHN ASSTILL" in text
    with pytest.raises(SourceError) as e:
        tei_to_text(b"<TEI.2><text>")
    assert e.value.reason in ("xml_invalid", "xml_no_text")


def test_old_bailey_and_london_lives_sources_from_urls(tmp_path):
    with FakeServer() as srv:
        srv.files["/obo/17820410.xml"] = TEI
        srv.files["/ll/LMSMPS50001.xml"] = b"<doc><interp type='date' value='17250101'/><p>Paid the beadle.</p></doc>"
        ob = OldBaileySource({"id": "obo", "kind": "old_bailey", "urls": [srv.url + "/obo/17820410.xml"]})
        ll = LondonLivesSource({"id": "ll", "kind": "london_lives", "urls": [srv.url + "/ll/LMSMPS50001.xml"]})
        assert all(r.ok for r in ob.fetch(dl(), tmp_path) + ll.fetch(dl(), tmp_path))
        (d1,) = list(ob.documents(tmp_path))
        (d2,) = list(ll.documents(tmp_path))
        materialise(d1)
        materialise(d2)
        assert d1.year == 1782 and "Session of 10 April 1782" in d1.text
        assert d2.year == 1725 and d2.text == "Paid the beadle."


def test_html_source_extracts_main_text(tmp_path):
    para = "<p>The watermen of the Thames plied their boats between the stairs at Westminster and the Bridge, " \
           "calling for fares in voices that carried over the water on every tide of the day.</p>"
    html = f"<html><head><title>x</title></head><body><nav>Home | About | Login</nav><article>{para * 4}</article>" \
           f"<footer>Copyright 2024 Cookie policy</footer></body></html>"
    with FakeServer() as srv:
        srv.files["/page.html"] = html.encode()
        src = HtmlSource({"id": "pg", "kind": "html", "urls": [srv.url + "/page.html"], "year": 1800})
        assert src.fetch(dl(), tmp_path)[0].ok
        (doc,) = list(src.documents(tmp_path))
        materialise(doc)
        assert "watermen of the Thames" in doc.text and "Cookie" not in doc.text


def test_local_folder_with_manifest_and_bad_inputs(tmp_path):
    (tmp_path / "MANIFEST.tsv").write_text("file\ttitle\tauthor\tyear_first_published\tlondon_related\n"
                                           "a.txt\tA Tale\tAnon\t1700\tyes\n")
    (tmp_path / "a.txt").write_text("Hello London.", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "oldbailey_1782-04-10.xml").write_bytes(TEI)
    (tmp_path / "latin.txt").write_bytes("Caf\xe9 in Cheapside".encode("latin-1"))
    (tmp_path / "utf16.txt").write_bytes("Fleet Street".encode("utf-16"))
    (tmp_path / "packed.txt.gz").write_bytes(gzip.compress(b"Gzipped London text"))
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 10)
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "notes.md").write_text("ignored")
    docs = {d.id: d for d in LocalSource({"id": "mine", "kind": "local", "path": str(tmp_path)}).documents()}
    assert set(docs) == {"a", "sub__oldbailey_1782-04-10", "latin", "utf16", "packed.txt", "binary", "empty"} or \
        set(docs) == {"a", "sub__oldbailey_1782-04-10", "latin", "utf16", "packed", "binary", "empty"}
    for d in docs.values():
        materialise(d)
    assert docs["a"].title == "A Tale" and docs["a"].year == 1700 and docs["a"].london
    assert docs["sub__oldbailey_1782-04-10"].year == 1782
    assert docs["latin"].text == "Café in Cheapside" and "decoded_latin1" in docs["latin"].repairs
    assert docs["utf16"].text == "Fleet Street" and "decoded_utf16" in docs["utf16"].repairs
    packed = [d for k, d in docs.items() if k.startswith("packed")][0]
    assert packed.text == "Gzipped London text" and "gunzipped" in packed.repairs
    assert docs["binary"].error == "binary" and docs["empty"].error == "empty"


def test_links_that_lead_to_no_file_are_rejected_not_lost(tmp_path):
    (tmp_path / "real_1700.txt").write_text("Hello London.", encoding="utf-8")
    (tmp_path / "dangling.txt").symlink_to(tmp_path / "gone.txt")
    (tmp_path / "loop_a.txt").symlink_to("loop_b.txt")
    (tmp_path / "loop_b.txt").symlink_to("loop_a.txt")
    (tmp_path / "alias_1700.txt").symlink_to("real_1700.txt")       # a link to a file is read as that file
    (tmp_path / "dangling.md").symlink_to("gone.md")                 # not a pattern the source reads
    src = LocalSource({"id": "mine", "kind": "local", "path": str(tmp_path), "title": "Mine"})
    assert [p.name for p in src.files()] == ["alias_1700.txt", "real_1700.txt"]  # what the fingerprint reads
    docs = {d.id: d for d in src.documents()}
    assert set(docs) == {"real_1700", "alias_1700", "dangling", "loop_a", "loop_b"}
    assert docs["dangling"].error == "broken_link" and "dangling.txt -> " in docs["dangling"].extra["error_detail"]
    assert docs["loop_a"].error == docs["loop_b"].error == "link_loop"
    assert docs["loop_a"].extra["error_detail"] == "loop_a.txt -> loop_b.txt: the links lead back to themselves"
    assert materialise(docs["alias_1700"]).text == "Hello London." and docs["alias_1700"].error is None


def test_a_pipe_named_like_a_text_is_rejected_not_lost_nor_read(tmp_path):
    """A FIFO or socket named ``*.txt`` vanished unreported (``is_file()`` is False); it is never
    opened (reading a pipe waits for a writer) and a folder named like a text is walked as before."""
    import socket

    (tmp_path / "real_1700.txt").write_text("Hello London.", encoding="utf-8")
    os.mkfifo(tmp_path / "pipe.txt")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock.txt"))
    (tmp_path / "volume.txt").mkdir()
    (tmp_path / "volume.txt" / "inner_1700.txt").write_text("Within.", encoding="utf-8")
    try:
        src = LocalSource({"id": "mine", "kind": "local", "path": str(tmp_path), "title": "Mine"})
        assert [p.name for p in src.files()] == ["real_1700.txt", "inner_1700.txt"]
        docs = {d.id: d for d in src.documents()}
    finally:
        sock.close()
    assert set(docs) == {"real_1700", "volume.txt__inner_1700", "pipe", "sock"}
    assert docs["pipe"].error == "not_a_file" and docs["pipe"].extra["error_detail"] == "pipe.txt is a pipe, not a file"
    assert docs["sock"].extra["error_detail"] == "sock.txt is a socket, not a file"


def test_decode_bytes_rules():
    assert decode_bytes("ſ and æ".encode())[0] == "ſ and æ"
    with pytest.raises(SourceError) as e:
        decode_bytes(b"\x00\x01\x02\x03" * 100)
    assert e.value.reason == "binary"
    with pytest.raises(SourceError):
        decode_bytes(b"\x1f\x8bnot really gzip")


@pytest.mark.parametrize("raw", ["../../etc/passwd", "a/b\\c", "..", "x/../../y", ".hidden", "ok id*?"])
def test_safe_id_never_escapes(raw):
    sid, changed = safe_id(raw)
    assert changed and "/" not in sid and "\\" not in sid and ".." not in sid and not sid.startswith(".")
    assert sid and all(c.isalnum() or c in "._-" for c in sid)


def test_source_id_with_path_separators_stays_inside_downloads(tmp_path):
    with FakeServer() as srv:
        srv.files["/files/5/5-0.txt"] = PG_TEXT.encode()
        src = GutenbergSource({"id": "../../evil/x", "kind": "gutenberg", "gutenberg_id": 5}, base_url=srv.url)
        (res,) = src.fetch(dl(), tmp_path / "dl")
        assert res.ok and Path(res.dest).resolve().is_relative_to((tmp_path / "dl").resolve())
        (doc,) = list(src.documents(tmp_path / "dl"))
        assert ".." not in doc.id and "/" not in doc.id and "id_sanitised" in doc.repairs


def test_registry_errors_name_the_fix(tmp_path):
    with pytest.raises(RegistryError, match="not found"):
        load_registry(tmp_path / "none.yaml")
    bad = tmp_path / "r.yaml"
    bad.write_text("sources:\n  - id: x\n    kind: telegraph\n")
    with pytest.raises(RegistryError, match="unknown kind"):
        load_registry(bad)
    bad.write_text("sources:\n  - id: x\n    kind: html\n  - id: x\n    kind: html\n")
    with pytest.raises(RegistryError, match="duplicate"):
        load_registry(bad)


def test_project_registry_is_valid_and_large_enough():
    reg = Path(__file__).resolve().parents[2] / "02_data_collection" / "data_sources.yaml"
    entries = load_registry(reg)
    pg = [e for e in entries if e["kind"] == "gutenberg"]
    assert len(pg) >= 100
    assert len({e["gutenberg_id"] for e in pg}) == len(pg)
    for e in pg:
        assert 1500 <= int(e["year"]) <= 1900 and e.get("title") and e.get("author")
    kinds = {e["kind"] for e in entries}
    assert {"gutenberg", "archive_org", "old_bailey", "london_lives", "html", "local"} <= kinds


@pytest.mark.parametrize("entry, message", [
    ("{id: [1, 2], kind: html}", "entry 0: id must be text, not [1, 2]"),
    ("{id: {a: 1}, kind: html}", "entry 0: id must be text, not {'a': 1}"),
    ("{id: null, kind: html}", "entry 0: id must be text, not None"),
    ("{id: x, kind: [html]}", "entry 0: kind must be text, not ['html']"),
    ("{id: x, kind: html, title: [a, b]}", "entry 'x': title must be text"),
    ("{id: x, kind: html, urls: [http://a.example/a, 'file:///etc/passwd']}",
     "entry 'x': urls 'file:///etc/passwd' is not an http(s) URL"),
    ("{id: x, kind: html, urls: [a/b.html]}", "entry 'x': urls 'a/b.html' is not an http(s) URL"),
    ("{id: x, kind: html, urls: http://a.example/a}", "entry 'x': urls must be a list"),
    ("{id: x, kind: gutenberg, gutenberg_id: 1, base_url: 'ftp://mirror'}", "entry 'x': base_url 'ftp://mirror'"),
])
def test_a_registry_entry_of_the_wrong_shape_is_refused_naming_it(tmp_path, entry, message):
    reg = tmp_path / "r.yaml"
    reg.write_text(f"sources:\n  - {entry}\n")
    with pytest.raises(RegistryError) as caught:
        load_registry(reg)
    assert str(caught.value).startswith(f"registry {reg}: {message}")


def test_relative_urls_are_paths_on_an_old_bailey_base_url(tmp_path):
    reg = tmp_path / "r.yaml"
    reg.write_text("sources:\n  - {id: obo, kind: old_bailey, base_url: 'https://www.oldbaileyonline.org', "
                   "urls: [obo/17820410.xml]}\n")
    assert load_registry(reg)[0]["urls"] == ["obo/17820410.xml"]


def alias_bomb(levels: int) -> str:
    """A registry whose title is `levels` nested lists of nine aliases each: 9**levels strings."""
    lines = ["  a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"  a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 9) + "]" for n in range(1, levels)]
    return "bomb:\n" + "\n".join(lines) + f"\nsources:\n  - {{id: x, kind: local, path: ., title: *a{levels - 1}}}\n"


def test_a_yaml_alias_is_refused_before_it_is_expanded(tmp_path):
    """A 9-level alias bomb as a title took 50 s and 3.1 GB to list, and an 8-level one wrote a
    624 MB manifest for one 12 KB document: no alias is read."""
    reg = tmp_path / "r.yaml"
    reg.write_text(alias_bomb(9))
    with pytest.raises(RegistryError, match=r"line 3: the YAML alias \*a0 is not read"):
        load_registry(reg)
    reg.write_text("base: &b {kind: local, path: .}\nsources:\n  - {id: x, <<: *b}\n")
    with pytest.raises(RegistryError, match=r"alias \*b is not read"):
        load_registry(reg)


def test_a_failed_url_does_not_stop_the_rest_of_its_source(tmp_path):
    """b answers 500 every time and d is a file: URL (given past the registry's check): c is
    still fetched and kept; b and d are rejection rows saying why."""
    from londonlm.corpus.collect import CollectionOptions, run_collection
    from londonlm.corpus.manifest import read_jsonl

    import random

    words = ("the watermen of Thames plied their boats between stairs at Westminster and Bridge calling for "
             "fares in voices that carried over water on every tide day").split()
    with FakeServer() as srv:
        for name in "abc":  # three different pages (near-duplicates would be merged)
            rng = random.Random(name)
            paras = "".join(f"<p>{' '.join(rng.choice(words) for _ in range(30)).capitalize()}.</p>" for _ in range(6))
            srv.files[f"/{name}.html"] = f"<html><body><article>{paras}</article></body></html>".encode()
        srv.faults["/b.html"] = ["500"] * 10
        entry = {"id": "pages", "kind": "html", "year": 1800, "title": "Pages", "license": "PD",
                 "urls": [srv.url + "/a.html", srv.url + "/b.html", "file:///etc/passwd", srv.url + "/c.html"]}
        run_collection([entry], tmp_path / "dl", tmp_path / "p", tmp_path / "m",
                       CollectionOptions(workers=1, min_chars=50, log=lambda *_: None,
                                         download_options={"per_host_interval": 0, "max_retries": 1,
                                                           "backoff_base": 0.01}))
        assert srv.count("/c.html") == 1 and srv.count("/b.html") == 2
    kept = {r["id"]: r for r in read_jsonl(tmp_path / "p" / "manifest.jsonl")}
    rejected = {r["id"]: r for r in read_jsonl(tmp_path / "p" / "rejections.jsonl")}
    assert set(kept) == {"pages-page-000", "pages-page-003"}
    assert rejected["pages-page-001"]["reason"] == "not_downloaded"
    assert "/b.html: gave up after 2 attempts: HTTP 500" in rejected["pages-page-001"]["detail"]
    assert rejected["pages-page-002"]["reason"] == "not_downloaded"
    assert "file:///etc/passwd: InvalidSchema" in rejected["pages-page-002"]["detail"]
