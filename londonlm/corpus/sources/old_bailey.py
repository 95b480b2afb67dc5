"""Old Bailey Proceedings (TEI XML sessions papers) and the Ordinary of Newgate's Accounts.

A sessions paper becomes one document: front matter, then each trial as its own section
headed with its id and the session date ("Trial t17820410-1. Session of 10 April 1782."),
the speech and narrative kept, the markup (``<interp>``, ``<persName>``, ``<xptr>``...)
dropped. Truncated or malformed XML is parsed in recovery mode and flagged as repaired;
XML with no recoverable text is rejected. Ordinary's Accounts are plain text (one file each).
Raw files may also be zip archives of XML (as distributed), read member by member.
"""
from __future__ import annotations

import codecs
import datetime as dt
import hashlib
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterator

from ..dating import FILE_NAME, TEI_SESSION
from .base import MAX_RAW_BYTES, Document, Source, SourceError, not_downloaded, safe_id, source_dir, wanted

_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]
TEI_SKIP_TAGS = {"interp", "xptr", "note", "join", "rs_interp"}
_BLOCK_TAGS = {"p", "div1", "div2", "head", "list", "item", "table", "row"}
# ``<lb/>`` (a printed line's end) is no paragraph: the Proceedings set it inside the words a line
# broke ("Com<lb/>missioners", 642 of them in 3 of the 9 real files, every one between two letters),
# and as a block it cut each such word in two paragraphs. It adds nothing: white space beside it in
# the XML still parts two words, and ``break="yes"`` says outright that it does.


def format_date(yyyymmdd: str) -> str | None:
    """'17820410' -> '10 April 1782' (None when not a date)."""
    try:
        d = dt.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))
    except (ValueError, TypeError):
        return None
    return f"{d.day} {_MONTHS[d.month - 1]} {d.year}"


_CHAR_REF = re.compile(rb"&#([xX][0-9a-fA-F]{1,16}|[0-9]{1,20});")


def _surrogate_ref_replaced(m: re.Match) -> bytes:
    digits = m.group(1)
    value = int(digits[1:], 16) if digits[:1] in b"xX" else int(digits)
    return b"&#xFFFD;" if 0xD800 <= value <= 0xDFFF else m.group(0)


_XML_DECL = re.compile(
    rb"^(?:\xef\xbb\xbf)?[ \t\r\n]*<\?xml[^>]*?encoding[ \t\r\n]*=[ \t\r\n]*[\"']([A-Za-z0-9._-]{1,40})")


def _stray_byte_as_cp1252(e: UnicodeDecodeError) -> tuple[str, int]:
    """A byte that is no UTF-8, read as cp1252 (as ``decode_bytes`` reads a file that is no UTF-8;
    Latin-1 for the five bytes cp1252 leaves out)."""
    b = e.object[e.start:e.start + 1]
    try:
        return b.decode("cp1252"), e.start + 1
    except UnicodeDecodeError:
        return b.decode("latin-1"), e.start + 1


codecs.register_error("londonlm_cp1252", _stray_byte_as_cp1252)


def xml_as_utf8(data: bytes) -> tuple[bytes, list[str]]:
    """XML bytes that claim UTF-8 (by declaration, or by declaring nothing) but are not: each
    byte that is no UTF-8 read as cp1252, and the whole written back as UTF-8. lxml's recovery
    made each such byte U+FFFD, so a Latin-1 file lost every "£" and "é". Valid UTF-8, a file
    that declares another encoding (lxml reads that), or UTF-16/32 come back unchanged."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or data[:1] == b"\x00" or data[1:2] == b"\x00":
        return data, []
    m = _XML_DECL.match(data[:1024])
    if m and m.group(1).lower().replace(b"_", b"-") not in (b"utf-8", b"utf8"):
        return data, []
    try:
        data.decode("utf-8")
        return data, []
    except UnicodeDecodeError:
        return data.decode("utf-8", "londonlm_cp1252").encode("utf-8"), ["decoded_latin1"]


def parse_tei(data: bytes):
    """lxml in recovery mode; returns (root, repairs): ``xml_recovered`` when recovery was
    needed, ``decoded_latin1`` when bytes that are no UTF-8 in a file that claims it were read as
    cp1252 first (``xml_as_utf8``). The entities the file declares in its own DTD subset are
    expanded (``expand_internal_entities``), never an external one."""
    from lxml import etree

    data, repairs = xml_as_utf8(data)
    try:
        root = etree.fromstring(data, parser=etree.XMLParser(resolve_entities=False, huge_tree=True))
        return expand_internal_entities(root), repairs
    except etree.XMLSyntaxError:
        parser = etree.XMLParser(recover=True, resolve_entities=False, huge_tree=True)
        # recovery keeps a reference to a surrogate (&#xD800;) as bytes that are no UTF-8, and
        # reading that element's text raised UnicodeDecodeError, ending the whole collection:
        # such a reference reads as U+FFFD, as a stray byte does
        data = _CHAR_REF.sub(_surrogate_ref_replaced, data)
        try:  # recovery fails too on some bytes (NULs only, no element at all): a rejection, not a crash
            root = etree.fromstring(data, parser=parser)
        except etree.XMLSyntaxError as e:
            raise SourceError("xml_invalid", f"no element could be recovered ({e})") from None
        if root is None:
            raise SourceError("xml_invalid", "no element could be recovered")
        return expand_internal_entities(root), repairs + ["xml_recovered"]


# what a document's own entities may add to its text, in characters: more is an expansion bomb
# (``<!ENTITY b "&a;&a;...">`` nested: a few lines that would make gigabytes), refused
MAX_ENTITY_CHARS = 1_000_000
_ENTITY_REF = re.compile(r"&(#[xX][0-9a-fA-F]{1,6}|#[0-9]{1,7}|[A-Za-z_:][\w.:-]{0,100});")
_PREDEFINED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}


def expand_internal_entities(root):
    """``root`` with each reference to an entity its own DTD subset declares as text
    (``<!ENTITY pound "&#163;">`` then ``&pound;5``) replaced by that text, markup dropped. They
    stayed in the text as the literal ``&pound;``. lxml is never asked to expand (it would read
    external entities too, and how far it lets an expansion grow depends on the libxml2 it was
    built with): the sizes are added up first, and over ``MAX_ENTITY_CHARS`` the file is refused.
    External and undeclared entities stay as they were (``&x;``)."""
    from lxml import etree

    dtd = root.getroottree().docinfo.internalDTD
    refs = list(root.iter(etree.Entity)) if dtd is not None else []
    defs = {e.name: e.content for e in dtd.iterentities()
            if e.content is not None and not e.system_url} if refs else {}
    refs = [r for r in refs if r.name in defs]
    if not refs:
        return root
    sizes: dict[str, int] = {}
    total = sum(_expanded_size(r.name, defs, sizes, set()) for r in refs)
    if total > MAX_ENTITY_CHARS:
        raise SourceError("xml_entity_bomb", f"the file's own entities would add {total} characters "
                                             f"(over {MAX_ENTITY_CHARS}): an entity expansion bomb")
    texts: dict[str, str] = {}
    for r in refs:
        _replace_by_text(r, _expanded(r.name, defs, texts, set()))
    return root


def _expanded_size(name: str, defs: dict[str, str], sizes: dict[str, int], open_: set[str]) -> int:
    """Characters ``&name;`` expands to, at most (markup counted): arithmetic only, no text made."""
    if name not in sizes:
        if name in open_:  # an entity that names itself: its reference stays as it is
            return len(name) + 2
        open_.add(name)
        body = defs[name]
        size = len(_ENTITY_REF.sub("", body))
        for m in _ENTITY_REF.finditer(body):
            ref = m.group(1)
            size += _expanded_size(ref, defs, sizes, open_) if ref in defs else len(m.group(0))
        open_.discard(name)
        sizes[name] = size
    return sizes[name]


def _expanded(name: str, defs: dict[str, str], texts: dict[str, str], open_: set[str]) -> str:
    if name not in texts:
        if name in open_:
            return f"&{name};"
        open_.add(name)

        def one(m: re.Match) -> str:
            ref = m.group(1)
            if ref.startswith("#"):
                code = int(ref[2:], 16) if ref[1:2] in "xX" else int(ref[1:])
                return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"
            if ref in defs:
                return _expanded(ref, defs, texts, open_)
            return _PREDEFINED.get(ref, m.group(0))
        texts[name] = _ENTITY_REF.sub(one, re.sub(r"<[^<>]*>", "", defs[name]))
        open_.discard(name)
    return texts[name]


def _replace_by_text(node, text: str) -> None:
    """The reference ``node`` replaced by ``text`` in its parent's text (or its elder sibling's tail)."""
    parent, before = node.getparent(), node.getprevious()
    text += node.tail or ""
    if before is not None:
        before.tail = (before.tail or "") + text
    else:
        parent.text = (parent.text or "") + text
    parent.remove(node)


_BREAK = "\x00"  # paragraph sentinel: XML whitespace is insignificant, block elements are not


def _text_of(el) -> str:
    """Readable text of an element: markup dropped, paragraph breaks kept.

    Whitespace inside the XML (pretty-printing) is collapsed to single spaces, and the space
    that stripped tags leave before punctuation ("BLANCHARD ,") is closed up."""
    out: list[str] = []
    # depth first with a stack of its own, not the call stack: markup nested a few thousand deep
    # (a damaged or hostile file) raised RecursionError, and that ended the whole collection
    stack: list[tuple[Any, bool]] = [(el, False)]
    while stack:
        node, leaving = stack.pop()
        tag = node.tag if isinstance(node.tag, str) else ""
        block = tag in _BLOCK_TAGS
        if leaving:
            if block:
                out.append(_BREAK)
            if node.tail and node is not el:
                out.append(node.tail)
            continue
        if tag in TEI_SKIP_TAGS:
            # what is dropped parts the words beside it: the Proceedings set a page break
            # (``<xptr type="pageFacsimile"/>``) between two words with no space ("got<xptr/>through",
            # 42 of them in the 9 real files), and dropped it joined them ("gotthrough")
            out.append(" ")
            if node.tail:
                out.append(node.tail)
            continue
        if block:
            out.append(_BREAK)
        elif tag == "lb" and node.get("break") == "yes":
            out.append(" ")
        if node.text:
            out.append(node.text)
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(node))
    text = re.sub(r"\s+", " ", "".join(out))
    text = re.sub(r"(?<=[\w)\]]) +(?=[,.;:!?](?:\s|$|\x00))", "", text)
    paras = [p.strip() for p in text.split(_BREAK)]
    return "\n\n".join(p for p in paras if p)


def tei_interp(el, name: str) -> str | None:
    for it in el.iter("interp"):
        if it.get("type") == name:
            return it.get("value")
    return None


def tei_to_text(data: bytes) -> tuple[str, dict[str, Any], list[str]]:
    """One sessions paper (bytes of TEI XML) -> (text, metadata, repairs). A file of several
    sessions (papers joined under one root) is read whole and dated by its latest session: only
    the first was read, the others' text dropped without a word."""
    root, repairs = parse_tei(data)
    sessions = list(root.iter("div0")) or [root]
    parts: list[str] = []
    trials: list[dict[str, str]] = []
    dates = [re.sub(r"\D", "", s.get("id") or tei_interp(s, "date") or "")[:8] for s in sessions]
    for session, date in zip(sessions, dates):
        parts.extend(_session_parts(session, date, trials))
    text = "\n\n".join(parts)
    if not text.strip():
        raise SourceError("xml_no_text", "no readable text in the XML")
    years = [int(d[:4]) for d in dates if len(d) >= 4]
    meta = {"session_date": format_date(dates[0]), "session_id": dates[0], "trials": trials}
    return text, {"year": max(years, default=None), **meta}, repairs


def _session_parts(session, date: str, trials: list[dict[str, str]]) -> list[str]:
    """The text of one session (``div0``) in parts, front matter and each trial headed with its
    id and date; its trials appended to ``trials``."""
    pretty = format_date(date)
    parts: list[str] = []
    divs = list(session.iter("div1")) or [session]
    for div in divs:
        kind = div.get("type", "")
        body = _text_of(div)
        if not body:
            continue
        if kind == "trialAccount":
            tid = div.get("id", "")
            tdate = format_date(re.sub(r"\D", "", tei_interp(div, "date") or date)[:8]) or pretty
            heading = f"Trial {tid}. Session of {tdate}." if tdate else f"Trial {tid}."
            trials.append({"id": tid, "date": tdate or ""})
            parts.append(heading + "\n\n" + body)
        else:
            parts.append(body)
    return parts


def _url_named(name: str, url: str) -> str:
    """``name`` with a hash of ``url`` before its extension (``data-kbmcndoe.xml``), in letters
    only: digits in a file name can date its document."""
    stem, dot, ext = name.rpartition(".") if "." in name else (name, "", "")
    mark = hashlib.sha256(url.encode()).hexdigest()[:8].translate(_LETTERS)
    return f"{stem}-{mark}{dot}{ext}"


_LETTERS = str.maketrans("0123456789", "ghijklmnop")


class OldBaileySource(Source):
    """Registry fields: ``urls`` (XML, zip of XML, or Ordinary's Account .txt files)."""

    kind = "old_bailey"
    default_base_url = ""

    def _files(self, downloads_dir: Path) -> list[tuple[str, Path]]:
        d = source_dir(downloads_dir, self.kind, self.id)
        urls = [str(u) for u in self.spec.get("urls") or []]
        names = [safe_id(url.rstrip("/").rsplit("/", 1)[-1])[0] for url in urls]
        # two URLs ending alike (.../1750/data.xml, .../1751/data.xml) were one file: the second
        # never fetched (the first found complete), both documents read the first's text; such a
        # name carries a hash of its URL (one alone keeps its name, and its download)
        return [(url, d / (_url_named(name, url) if names.count(name) > 1 else name))
                for url, name in zip(urls, names)]

    def fetch(self, downloader, downloads_dir: Path, keep=None) -> list:
        from ..download import DownloadTask

        tasks = [DownloadTask([self._resolve(u)], p, key=f"{self.id}/{p.name}", refuse_html=True)  # (XML or zips)
                 for u, p in self._files(Path(downloads_dir)) if wanted(keep, f"{self.id}/{p.name}")]
        return [downloader.fetch(t) for t in tasks]

    def _resolve(self, url: str) -> str:
        if self.base_url and not re.match(r"^https?://", url):
            return f"{self.base_url}/{url.lstrip('/')}"
        return url

    def documents(self, downloads_dir: Path, keep=None) -> Iterator[Document]:
        for url, path in self._files(Path(downloads_dir)):
            if not wanted(keep, f"{self.id}/{path.name}"):
                continue
            yield from documents_from_file(path, self.meta(), url=self._resolve(url))


def documents_from_file(path: Path, meta: dict[str, Any], url: str = "") -> Iterator[Document]:
    """Documents of one raw Old Bailey file (XML, zip of XML, or Ordinary's Account text)."""
    stem = path.name.rsplit(".", 1)[0]
    base_id = f"{meta['source']}-{stem}" if meta.get("source") and not stem.startswith(meta["source"]) else stem
    if path.suffix.lower() == ".zip" and path.exists():
        try:
            zf = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            doc = Document(id=safe_id(base_id)[0], url=url, **meta)
            doc.error = "bad_zip"
            yield doc
            return

        with zf:
            for info in sorted((i for i in zf.infolist() if i.filename.lower().endswith(".xml")),
                               key=lambda i: i.filename):
                name = info.filename
                mstem = name.rsplit("/", 1)[-1][:-4]
                doc = Document(id=safe_id(f"{meta['source']}-{mstem}")[0], url=f"{url}!{name}", **meta)
                doc.extra.update(raw_format="tei", member=name)
                doc.text = None
                # one damaged or oversized member is that member's rejection: the archive's other
                # sessions are still read (a raise here ended the whole source)
                if info.file_size > MAX_RAW_BYTES:
                    doc.error = "too_large"
                    doc.extra["error_detail"] = f"{info.file_size} bytes unpacked > limit {MAX_RAW_BYTES}"
                    yield doc
                    continue
                try:
                    doc.extra["raw_bytes"] = zf.read(name)
                except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError) as e:
                    doc.error = "bad_zip"
                    doc.extra["error_detail"] = f"member {name}: {type(e).__name__}: {e}"
                yield doc
        return
    doc = Document(id=safe_id(base_id)[0], url=url, **meta)
    doc.extra["raw_path"] = str(path)
    doc.extra["raw_format"] = "tei" if path.suffix.lower() == ".xml" else "text"
    m = re.search(r"(1[5-9]\d\d)-?(\d\d)-?(\d\d)", stem)
    if m:
        doc.add_date(FILE_NAME, int(m.group(1)))
    if not path.exists():
        not_downloaded(doc, path)
    yield doc


def materialise_tei(doc: Document, data: bytes) -> None:
    text, meta, repairs = tei_to_text(data)
    doc.text = text
    doc.repairs.extend(repairs)
    doc.add_date(TEI_SESSION, meta.pop("year", None))
    doc.extra.update(meta)
    if meta.get("session_date") and not doc.title:
        doc.title = f"Old Bailey Proceedings, {meta['session_date']}"
