"""Hostile round 17b, the corpus sources' text fidelity: characters lost or changed between the raw
file and the kept text (Latin-1 bytes in XML that claims UTF-8, gzipped XML, a document's own
entities, TEI line and page breaks inside and between words, Gutenberg files cut short of their
markers), a JSON registry's key given twice, and a file name with a newline."""
from __future__ import annotations

import gzip
import time
import types

import pytest

from londonlm.corpus.cleaning import clean_text
from londonlm.corpus.collect import _log_rejections
from londonlm.corpus.sources import Document, RegistryError, SourceError, load_registry, make_source, materialise, \
    tei_to_text
from londonlm.corpus.sources import old_bailey
from londonlm.corpus.sources.london_lives import london_lives_to_text

TEI = '<TEI><div0 id="17820410"><div1 type="trialAccount" id="t1"><p>{}</p></div1></div0></TEI>'
SPEECH = "Paid £5 to the café keeper at the Crown in Cheapside, and he gave me the change."


@pytest.mark.parametrize("head", ["", '<?xml version="1.0"?>', '<?xml version="1.0" encoding="utf-8"?>'],
                         ids=["no_declaration", "no_encoding", "utf8"])
def test_latin1_bytes_in_xml_that_claims_utf8_keep_their_pounds_and_accents(head):
    """Was: each byte that is no UTF-8 became U+FFFD in lxml's recovery ("caf�", "Paid �5")."""
    data = (head + TEI.format(SPEECH)).encode("cp1252")
    text, _, repairs = tei_to_text(data)
    assert SPEECH in text and "\ufffd" not in text
    assert repairs == ["decoded_latin1"]
    ll_text, _, ll_repairs = london_lives_to_text(data)
    assert SPEECH in ll_text and ll_repairs == ["decoded_latin1"]
    utf8 = (head + TEI.format(SPEECH)).encode("utf-8")  # valid UTF-8 is never touched
    assert old_bailey.xml_as_utf8(utf8) == (utf8, []) and tei_to_text(utf8)[2] == []
    declared = ('<?xml version="1.0" encoding="ISO-8859-1"?>' + TEI.format(SPEECH)).encode("latin-1")
    assert old_bailey.xml_as_utf8(declared) == (declared, []) and SPEECH in tei_to_text(declared)[0]


@pytest.mark.parametrize("encoding, declared", [("utf-16", "UTF-16"), ("latin-1", "ISO-8859-1")])
def test_a_gzipped_xml_is_read_by_its_own_declaration(tmp_path, encoding, declared):
    """Was: a gzipped XML was decoded as plain text and written back as UTF-8 under its own
    declaration: UTF-16 was ``xml_invalid`` (the document lost), ISO-8859-1 came out "Â£5", "cafÃ©"."""
    path = tmp_path / "s.xml"
    path.write_bytes(gzip.compress((f'<?xml version="1.0" encoding="{declared}"?>' + TEI.format(SPEECH))
                                   .encode(encoding)))
    doc = Document(id="s", source="s", source_kind="old_bailey", extra={"raw_path": str(path), "raw_format": "tei"})
    materialise(doc)
    assert doc.error is None and SPEECH in doc.text and doc.repairs == ["gunzipped"]


def test_a_documents_own_entities_are_expanded_and_never_an_external_one(tmp_path):
    """Was: ``<!ENTITY pound "&#163;">`` then ``&pound;5`` kept the literal "&pound;5" in the text."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRETVALUE")
    xml = ('<?xml version="1.0"?><!DOCTYPE TEI [<!ENTITY pound "&#163;"><!ENTITY ct "the &pound; &amp; the '
           f'<hi>Crown</hi>"><!ENTITY x SYSTEM "{secret.as_uri()}">]>' + TEI.format("Paid &pound;5 for &ct;, &x; ok"))
    text, _, repairs = tei_to_text(xml.encode())
    assert "Paid £5 for the £ & the Crown, &x; ok" in text and repairs == []
    text, _, repairs = tei_to_text(xml.encode()[:-20])  # recovered alike
    assert "Paid £5 for the £ & the Crown" in text and "TOPSECRET" not in text and repairs == ["xml_recovered"]


def test_an_entity_bomb_is_refused_before_any_text_is_made(monkeypatch):
    """The expansion is bounded by the library itself, whatever libxml2 allows: sizes are added up
    as numbers first, so 10**40 characters cost nothing, and over the bound the file is refused."""
    defs = {"e0": "ha"} | {f"e{i}": f"&e{i - 1};" * 10 for i in range(1, 41)}
    t0 = time.perf_counter()
    assert old_bailey._expanded_size("e40", defs, {}, set()) == 2 * 10 ** 40
    assert time.perf_counter() - t0 < 0.5
    laughs = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    bomb = f'<?xml version="1.0"?><!DOCTYPE TEI [<!ENTITY l0 "lol">{laughs}]>' + TEI.format("&l9;")
    t0 = time.perf_counter()
    with pytest.raises(SourceError):  # libxml2 or the library's bound: never a billion characters
        tei_to_text(bomb.encode())
    assert time.perf_counter() - t0 < 1.0
    monkeypatch.setattr(old_bailey, "MAX_ENTITY_CHARS", 50)
    small = '<?xml version="1.0"?><!DOCTYPE TEI [<!ENTITY a "0123456789"><!ENTITY b "&a;&a;&a;">]>'
    with pytest.raises(SourceError) as e:
        tei_to_text((small + TEI.format("&b; &b;")).encode())
    assert e.value.reason == "xml_entity_bomb" and "would add 60 characters" in e.value.detail
    assert "012345678901234567890123456789" in tei_to_text((small + TEI.format("&b;")).encode())[0]


def test_tei_line_breaks_keep_words_whole_and_page_breaks_part_them():
    """Were: ``<lb/>`` was a paragraph, and the Proceedings set it inside the words a line broke
    ("the Com<lb/>missioners" came out "the Com\\n\\nmissioners", 642 words in 3 of the 9 real
    files); a page break dropped between two words joined them ("got<xptr/>through": "gotthrough",
    42 in the real files)."""
    text, _, _ = tei_to_text(TEI.format(
        'the Com<lb/>missioners and the Alder<lb/>men. He got<xptr type="pageFacsimile" doc="1"/>through '
        'the <hi rend="italic">cab<lb/>man</hi>, said<note>[x]</note>so, end<lb break="yes"/>line.').encode())
    assert text.endswith("the Commissioners and the Aldermen. He got through the cabman, said so, end line.")


GUTENBERG_HEAD = ("The Project Gutenberg EBook of Diary, by Samuel Pepys\n\nThis eBook is for the use of anyone "
                  "anywhere at no cost.\n\n\nTitle: Diary\n       1660\n\nAuthor: Samuel Pepys\n\nRelease Date: "
                  "October 7, 2006 [EBook #4125]\nLast Updated: January 26,\n2013\n\nLanguage: English\n\n"
                  "Character set encoding: ASCII\n\n")
GUTENBERG_START = "*** START OF THIS PROJECT GUTENBERG EBOOK DIARY ***\n\n"
BODY = "".join(f"Up early, and to the office, where I sat all the morning; day {i}.\n\n" for i in range(20))
GUTENBERG_END = "End of the Project Gutenberg EBook of Diary\n\n*** END OF THIS PROJECT GUTENBERG EBOOK DIARY ***\n\n"
GUTENBERG_TAIL = ("Produced by David Widger\n\nUpdated editions will replace the previous one--the old editions\n"
                  "will be renamed.\n\n*** START: FULL LICENSE ***\n\nTHE FULL PROJECT GUTENBERG LICENSE\n\n"
                  "1.F.3.  LIMITED RIGHT OF REPLACEMENT OR REFUND - If you discover a\ndefect in this electronic "
                  "work within 90 days of receiving it, you can\nreceive a refund of the money.\n")


@pytest.mark.parametrize("cut", ["end", "start", "both"])
def test_a_gutenberg_file_cut_short_of_its_markers_loses_header_and_licence(cut):
    """Were: with no END marker the licence paragraphs that do not name Project Gutenberg were kept
    (4 KB of Oliver Twist's, "1.F.3. LIMITED RIGHT OF REPLACEMENT OR REFUND"); with no START the
    header's fields ("Release Date: ... [EBook #4125]"); with neither, header and licence whole
    (19 KB a book). Each of the 50 real texts cut so gives the text it gives whole."""
    whole = clean_text(GUTENBERG_HEAD + GUTENBERG_START + BODY + GUTENBERG_END + GUTENBERG_TAIL)
    assert whole == clean_text(BODY)
    start = "" if cut in ("start", "both") else GUTENBERG_START
    end = "" if cut in ("end", "both") else GUTENBERG_END
    assert clean_text(GUTENBERG_HEAD + start + BODY + end + GUTENBERG_TAIL) == whole


def test_a_json_registry_that_gives_a_key_twice_is_refused(tmp_path):
    """Was: a ``.json`` registry kept the last of two ``"year"`` keys without a word (YAML refused)."""
    reg = tmp_path / "reg.json"
    reg.write_text('{"sources": [{"id": "a", "kind": "html", "year": 1700, "year": 1850}]}')
    with pytest.raises(RegistryError, match="the key 'year' is given twice in one object; keep one"):
        load_registry(reg)
    reg.write_text('{"sources": [{"id": "a", "kind": "html", "year": 1700}, {"id": "b", "kind": "html"}]}')
    assert [e["id"] for e in load_registry(reg)] == ["a", "b"]  # the same key in two objects is fine


def test_a_file_name_with_a_newline_gives_a_title_and_a_log_line_of_one_line(tmp_path):
    """Were: ``diary\\nof 1660.txt`` gave the title "diary\\nof 1660", and a rejection naming such a
    file was logged as two lines."""
    (tmp_path / "diary\nof\t1660.txt").write_text("In the year of the great frost the Thames froze over.\n" * 9)
    (tmp_path / "b.txt").write_text("x\n")
    (tmp_path / "gone\nhere.txt").symlink_to(tmp_path / "missing.txt")
    docs = {d.id: d for d in make_source({"id": "s", "kind": "local", "path": str(tmp_path)}).documents(None)}
    titles = sorted(d.title for d in docs.values() if not d.error)
    assert titles == ["b", "diary of 1660"]
    lines: list[str] = []
    rows = [{"id": d.id, "reason": d.error, "relpath": d.extra["relpath"], "detail": d.extra["error_detail"]}
            for d in docs.values() if d.error]
    _log_rejections(rows, None, "rejections.jsonl", types.SimpleNamespace(log=lines.append))
    assert len(lines) == 1 and "\n" not in lines[0] and "gone\\nhere.txt" in lines[0]
