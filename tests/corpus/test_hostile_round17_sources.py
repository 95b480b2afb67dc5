"""Hostile round 17, the corpus sources and their metadata: registry settings of the wrong type or
order, MANIFEST.tsv dates as people write them, a user's folder of scans, Gutenberg files of
several books, TEI files of several sessions and hostile XML."""
from __future__ import annotations

import pytest

from londonlm.corpus.cleaning import clean_text
from londonlm.corpus.dating import cutoff_verdict
from londonlm.corpus.sources import RegistryError, load_registry, make_source, materialise, tei_to_text

LINES = "\n".join(f"In the year of the great frost the Thames froze over by the bridge, and booth {i} sold hot "
                  f"pies and gin to the crowd upon the ice near the stairs." for i in range(12)) + "\n"


@pytest.mark.parametrize("entry, message", [
    ("{id: a, kind: html, year: -5}", "year must be a year such as 1782, not -5 (a year from 1000 to 2100)"),
    ("{id: a, kind: html, year: '²'}", "year must be a year such as 1782, not '²'"),
    ("{id: a, kind: local, path: s, default_year: c. 1650}", "default_year must be a year such as 1782, not 'c. 1650'"),
    ("{id: a, kind: local, path: s, default_year: [1650]}", "default_year must be a year such as 1782, not [1650]"),
    ("{id: a, kind: html, year_range: [1913, 1674]}", "year_range must be two years such as [1674, 1913], not [1913, 1674]"),
    ("{id: a, kind: local, path: s, london: 'no'}", "london must be true or false, not 'no'"),
    ("{id: a, kind: local, path: s, enabled: 'false'}", "enabled must be true or false, not 'false'"),
    ("{id: a, kind: local, path: s, patterns: '*.txt'}", "patterns must be a list of file name patterns"),
    ("{id: a, kind: local, path: s, exclude: '*.txt'}", "exclude must be a list of file name patterns"),
    ("{id: a, kind: local, path: s, patterns: [1]}", "patterns must be a list of file name patterns"),
    ("{id: a, kind: local, path: s, id_prefix: [1]}", "id_prefix must be text, not [1]"),
    ("{id: a, kind: gutenberg, gutenberg_id: 370.5}", "gutenberg_id must be a whole number above 0, not 370.5"),
    ("{id: a, kind: gutenberg, gutenberg_id: ../x}", "gutenberg_id must be a whole number above 0, not '../x'"),
    ("{id: a, kind: gutenberg}", "gutenberg_id must be a whole number above 0, not None"),
    ("{id: a, kind: archive_org, rows: many}", "rows must be a whole number above 0, not 'many'"),
    ("{id: a, kind: html, title: !!binary aGVsbG8=}", "title must be text, not b'hello'"),
], ids=["year_negative", "year_superscript", "default_year_circa", "default_year_list", "year_range_backwards",
        "london_text", "enabled_text", "patterns_text", "exclude_text", "patterns_number", "id_prefix_list",
        "gutenberg_id_float", "gutenberg_id_path", "gutenberg_id_missing", "rows_text", "title_bytes"])
def test_registry_settings_of_the_wrong_type_or_order_are_one_line(tmp_path, entry, message):
    """Were: a traceback (``int('²')``, ``int('c. 1650')``, patterns [1]), a source_error that cost
    the whole source at collection time, or silently wrong: "no" as London's flag was true, a
    string pattern read letter by letter ("*" selected every file, or excluded them all), 370.5
    fetched book 370, and a year_range written backwards dated its undated texts by its start,
    so a text of up to 1913 stood under a cutoff of 1700."""
    reg = tmp_path / "reg.yaml"
    reg.write_text(f"sources:\n  - {entry}\n")
    with pytest.raises(RegistryError) as e:
        load_registry(reg)
    assert f"registry {reg}: entry 'a': {message}" in str(e.value)


def test_registry_keys_given_twice_and_ids_that_are_one_file_name_are_refused(tmp_path):
    """Were: the second ``year:`` of an entry kept without a word; two ids that clean to one file
    name (``a b``, ``a/b``) shared one download folder, the second's files found "complete"."""
    reg = tmp_path / "reg.yaml"
    reg.write_text("sources:\n  - {id: a, kind: html, year: 1700,\n     year: 1850}\n")
    with pytest.raises(RegistryError, match="line 3: the key 'year' is given twice in one mapping"):
        load_registry(reg)
    reg.write_text("sources:\n  - {id: a_b, kind: html}\n  - {id: a/b, kind: html}\n")
    with pytest.raises(RegistryError, match="duplicate source id 'a/b' \\(ids are file names: it is 'a_b'"):
        load_registry(reg)
    reg.write_text("sources:\n  - {id: a, kind: html, year: '1700', year_range: ['1650', 1700], london: false,\n"
                   "     patterns: ['*.txt'], gutenberg_id: '370'}\n")
    assert load_registry(reg)[0]["year"] == "1700"  # digits as text and the right types still read


def test_manifest_years_written_as_ranges_or_circa_date_a_text_by_their_latest_year(tmp_path):
    """Only a bare year in MANIFEST.tsv was read: "1650-1700" and "c. 1720" were passed over, and
    the file name's year dated the text (letters_1660.txt as 1660, kept under a cutoff of 1680
    though it runs to 1700); "1710.0" (a spreadsheet's number) or "MDCCXX" left it undated."""
    for name in ("letters_1660.txt", "diary_1650.txt", "plain.txt", "imprint_1650.txt", "blank_1655.txt"):
        (tmp_path / name).write_text(LINES)
    (tmp_path / "MANIFEST.tsv").write_text(
        "file\ttitle\tyear_first_published\tyear\nletters_1660.txt\tLetters\t1650-1700\t\n"
        "diary_1650.txt\tDiary\tc. 1720\t\nplain.txt\tPlain\t1710.0\t\nimprint_1650.txt\tImprint\tMDCCXX\t\n"
        "blank_1655.txt\tBlank\tunknown\t16--\n")
    docs = {d.id: d for d in make_source({"id": "m", "kind": "local", "path": str(tmp_path)}).documents(None)}
    assert {k: d.year for k, d in docs.items()} == {
        "letters_1660": 1700, "diary_1650": 1720, "plain": 1710, "imprint_1650": 1720, "blank_1655": 1699}
    for d in docs.values():
        assert cutoff_verdict(d.year, d.year_rule, 1680)[0] is False, d.id


def test_a_text_named_in_capitals_is_read(tmp_path):
    """A scanner's or an old Windows name (SCAN001.TXT, B.TXT.GZ) matched no pattern: left out
    without a word."""
    import gzip

    (tmp_path / "SCAN001.TXT").write_text(LINES)
    (tmp_path / "B.TXT.GZ").write_bytes(gzip.compress(LINES.encode()))
    (tmp_path / "notes.md").write_text(LINES)  # still no text the source reads
    src = make_source({"id": "s", "kind": "local", "path": str(tmp_path)})
    docs = [materialise(d) for d in src.documents(None)]
    assert sorted((d.id, d.error, d.text == LINES) for d in docs) == [("B", None, True), ("SCAN001", None, True)]


def test_a_linked_folder_is_a_rejection_row_not_left_out(tmp_path):
    """A folder linked into the source folder (vol2 -> /mnt/disk2/vol2) is not walked, and its files
    were left out without a word; a link back up (up -> ..) alike."""
    src_dir, other = tmp_path / "scans", tmp_path / "disk2"
    (src_dir / "vol1").mkdir(parents=True)
    other.mkdir()
    (src_dir / "vol1" / "a.txt").write_text(LINES)
    (other / "b.txt").write_text(LINES)
    (src_dir / "vol2").symlink_to(other)
    (src_dir / "vol1" / "up").symlink_to("..")
    src = make_source({"id": "s", "kind": "local", "path": str(src_dir)})
    docs = {d.id: d for d in src.documents(None)}
    assert sorted(docs) == ["vol1__a", "vol1__up", "vol2"]
    assert docs["vol2"].error == docs["vol1__up"].error == "linked_folder"
    assert docs["vol2"].extra["error_detail"].startswith(f"vol2 -> {other}: a link to a folder")
    assert [p.name for p in src.files()] == ["a.txt"]


def _book(title: str, body: str) -> str:
    return (f"The Project Gutenberg EBook of {title}\r\n\r\nRelease Date: May 2004 [EBook #1]\r\n\r\n"
            f"*** START OF THIS PROJECT GUTENBERG EBOOK {title.upper()} ***\r\n\r\n{body}\r\n"
            f"End of the Project Gutenberg EBook of {title}\r\n\r\n"
            f"*** END OF THIS PROJECT GUTENBERG EBOOK {title.upper()} ***\r\n\r\n"
            "Updated editions will replace the previous one.\r\n\r\nSection 1. General Terms of Use and "
            "Redistributing Project Gutenberg-tm electronic works. You may obtain a refund.\r\n")


def test_a_file_of_two_gutenberg_books_keeps_both(tmp_path):
    """Two volumes joined into one file (``cat vol1.txt vol2.txt``): the text between the first
    START and the first END was kept, the second book dropped without a word."""
    one = "Volume one. " + LINES.replace("frost", "fire")
    two = "Volume two. " + LINES.replace("frost", "plague")
    text = clean_text(_book("Diary One", one) + _book("Diary Two", two))
    assert text == clean_text(_book("Diary One", one)) + "\n" + clean_text(_book("Diary Two", two))
    assert "plague" in text and "fire" in text
    assert not any(w in text for w in ("Gutenberg", "refund", "Release Date", "START", "END OF"))


def test_a_tei_file_of_two_sessions_keeps_both_and_is_dated_by_the_later():
    """Sessions papers joined under one root: only the first ``div0`` was read, the others' text
    dropped, and the file dated by the first session alone."""
    xml = (b'<?xml version="1.0"?><TEI><div0 id="17820410"><div1 type="trialAccount" id="t1"><p>'
           b'JOHN SMITH was indicted for stealing a coat.</p></div1></div0><div0 id="18500101">'
           b'<div1 type="trialAccount" id="t2"><p>MARY JONES was indicted for a watch.</p></div1></div0></TEI>')
    text, meta, _ = tei_to_text(xml)
    assert "JOHN SMITH" in text and "Trial t2. Session of 1 January 1850.\n\nMARY JONES" in text
    assert meta["year"] == 1850 and [t["id"] for t in meta["trials"]] == ["t1", "t2"]


def test_external_entities_dtds_and_xincludes_are_never_read(tmp_path):
    """Held: a TEI file naming a local file through an entity, a parameter entity, an external
    DTD or an XInclude reads none of it (nor fetches anything), recovered or not."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRETVALUE")
    uri = secret.as_uri().encode()
    head = b'<?xml version="1.0"?>'
    body = b'<TEI><div0 id="17820410"><p>Hello &x; world</p></div0></TEI>'
    for xml in (head + b'<!DOCTYPE d [<!ENTITY x SYSTEM "' + uri + b'">]>' + body,
                head + b'<!DOCTYPE d [<!ENTITY x SYSTEM "' + uri + b'">]>' + body[:-6],
                head + b'<!DOCTYPE d [<!ENTITY % p SYSTEM "' + uri + b'"> %p;]>' + body.replace(b"&x;", b""),
                head + b'<!DOCTYPE TEI SYSTEM "' + uri + b'">' + body.replace(b"&x;", b""),
                head + b'<TEI xmlns:xi="http://www.w3.org/2001/XInclude"><div0 id="17820410"><p>Hi <xi:include href="'
                + uri + b'" parse="text"/></p></div0></TEI>'):
        text, meta, _ = tei_to_text(xml)
        assert "TOPSECRET" not in text and meta["year"] == 1782
