"""Hostile round 16, the data stages: a web page sent untyped in place of a file, a tokenizer
edited by hand to the same size, a token cache of another --max_length over a corpus its stage
did not finish, and the OCR repair command's damaged inputs and interrupted runs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hostile_http import HostileServer, Reply
from londonlm.core import SIDECAR, RunLayout, sha256_file
from londonlm.corpus.download import Downloader, DownloadTask
from londonlm.corpus.manifest import CorpusError
from londonlm.corpus.sources import make_source

QUIET = dict(log=lambda *_: None)
BOOK = b"It was about the beginning of September 1664 that I, among the rest of my neighbours, heard. " * 200
PORTAL = (b"\xef\xbb\xbf\r\n  <!-- captive portal -->\n<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01//EN\">"
          b"<HTML><HEAD><TITLE>Sign in to the hotel network</TITLE></HEAD><BODY>Sign in</BODY></HTML>")


def dl() -> Downloader:
    return Downloader(max_retries=1, backoff_base=0, backoff_max=0, per_host_interval=0, progress=False,
                      read_timeout=3, sleep=lambda s: None)


def _paths(root: Path) -> tuple[Path, Path]:
    return root / "data" / "london_historical" / "processed", root / "09_models" / "tokenizers" / "london_historical_bpe"


# --- 1. a web page sent with no Content-Type, or as text/plain ------------------------------

@pytest.mark.parametrize("headers", [{}, {"Content-Type": "text/plain; charset=utf-8"}], ids=["untyped", "text-plain"])
def test_a_web_page_sent_untyped_or_as_plain_text_is_not_the_book(tmp_path, headers):
    """Was: a misconfigured mirror's or a captive portal's page, sent as a 200 with no
    Content-Type or as text/plain, was saved as pg370.txt and vouched for by its .sha256: the
    next URL, which had the book, never tried, and every rerun skipped the page as complete."""
    with HostileServer({"/cache/epub/370/pg370.txt": BOOK, "/files/370/370-0.txt": BOOK}) as srv:
        srv.queue["/cache/epub/370/pg370.txt"] = [Reply(200, PORTAL, headers)]
        src = make_source({"id": "defoe", "kind": "gutenberg", "gutenberg_id": 370, "base_url": srv.url})
        [res] = src.fetch(dl(), tmp_path)
        assert res.ok and res.url.endswith("/files/370/370-0.txt"), res
        dest = tmp_path / "gutenberg" / "defoe" / "pg370.txt"
        assert dest.read_bytes() == BOOK and not list(dest.parent.glob("*.part*"))


def test_a_text_that_mentions_html_later_and_the_html_kind_are_still_files(tmp_path):
    """Only a body that begins as a page is one: a text quoting ``<html>`` after its first line
    (or an XML edition with its declaration) is kept, and the html kind takes its untyped pages."""
    quoting = b"A note on the web edition.\n<html><head> was how the page began.\n" + BOOK
    xml = b'<?xml version="1.0"?>\n<!-- OBC -->\n<TEI><text><p>The prisoner was indicted.</p></text></TEI>'
    page = b"<html><body><article><p>" + BOOK + b"</p></article></body></html>"
    with HostileServer({"/q.txt": quoting, "/e.xml": xml, "/a.html": page}) as srv:
        for name, body in (("q.txt", quoting), ("e.xml", xml)):
            res = dl().fetch(DownloadTask([f"{srv.url}/{name}"], tmp_path / name, refuse_html=True))
            assert res.ok and Path(res.dest).read_bytes() == body, res
        src = make_source({"id": "p", "kind": "html", "urls": [srv.url + "/a.html"]})
        assert [r.ok for r in src.fetch(dl(), tmp_path)] == [True]


def test_a_page_whose_download_failed_untyped_is_fetched_once_served(tmp_path):
    """The page is no file: a `.failed` note names it, nothing is left that a rerun would skip,
    and the next run, once the file is served, downloads it."""
    url_path = "/ob/s17820410.xml"
    xml = b'<?xml version="1.0"?><TEI><text><body><p>' + b"The prisoner was indicted. " * 50 + b"</p></body></text></TEI>"
    with HostileServer({url_path: xml}) as srv:
        srv.queue[url_path] = [Reply(200, b"\n\n<html><meta http-equiv=refresh content=0;url=/login></html>", {})]
        src = make_source({"id": "ob", "kind": "old_bailey", "base_url": srv.url, "urls": [url_path[1:]]})
        [res] = src.fetch(dl(), tmp_path)
        dest = tmp_path / "old_bailey" / "ob" / "s17820410.xml"
        assert not res.ok and "web page" in res.error and not dest.exists(), res
        [res] = src.fetch(dl(), tmp_path)
        assert res.ok and res.status == "downloaded" and dest.read_bytes() == xml


# --- 2. a tokenizer.json edited by hand to the same size -------------------------------------

def _same_size_edit(path: Path) -> None:
    """One merge's letter changed for another: the file's size is what it was."""
    text = path.read_text(encoding="utf-8")
    at = text.index('"t"', text.index('"merges"'))
    path.write_text(text[:at] + '"q"' + text[at + 3:], encoding="utf-8")


def test_a_tokenizer_edited_to_the_same_size_is_rebuilt_and_its_cache_is_current_again(micro_root_copy):
    """Was: the sidecar vouched for tokenizer.json by its size (core's output_footprint now also
    records a small file's sha256), so a hand edit of the same size was "current": the stage skipped, and the training after it saw a new tokenizer hash (its run
    moved aside, its cache rebuilt with the edited merges). Now the stage retrains it: the same
    bytes as before, so the token cache built from the original is current again."""
    from londonlm.tokens import ensure_cache
    from londonlm.tokens.stage import train_tokenizer_stage

    proc, tok = _paths(micro_root_copy)
    cache = micro_root_copy / "cache"
    ensure_cache(cache, tok, proc, 32, era_tokens=True, progress=False, **QUIET)
    original = sha256_file(tok / "tokenizer.json")
    size = (tok / "tokenizer.json").stat().st_size
    _same_size_edit(tok / "tokenizer.json")
    assert (tok / "tokenizer.json").stat().st_size == size and sha256_file(tok / "tokenizer.json") != original
    logs: list[str] = []
    train_tokenizer_stage(proc, tok, vocab_size=512, min_frequency=2, era_tokens=True, model_max_length=64,
                          log=logs.append)
    assert any("rebuilding (tokenizer.json was deleted or changed" in m for m in logs), logs
    assert sha256_file(tok / "tokenizer.json") == original
    logs.clear()
    ensure_cache(cache, tok, proc, 32, era_tokens=True, progress=False, log=logs.append)
    assert any("compatible cache found" in m for m in logs), logs


# --- 3. training's block check over a cache of another --max_length -------------------------

def test_a_cache_of_another_context_over_an_unfinished_corpus_is_refused_at_the_block_check(micro_root_copy):
    """Was: the block check took the split counts from the cache current for --max_length 16 and
    passed; the rebuild for 32 over the corpus (its collection stopped before its sidecar) was
    refused only at the cache, after the speed probe and after --fresh had moved the run aside."""
    from londonlm.tokens import ensure_cache
    from londonlm.training.data import check_blocks_fit
    from londonlm.training.job import DataOptions

    proc, tok = _paths(micro_root_copy)
    run = RunLayout(micro_root_copy / "run")
    ensure_cache(run.cache_dir, tok, proc, 16, era_tokens=True, progress=False, **QUIET)
    (proc / SIDECAR).unlink()  # the collection rerun, stopped before its sidecar
    data = DataOptions(tokenizer_dir=tok, processed_dir=proc, era_tokens=True)
    check_blocks_fit(run, data, 16, None)  # the current cache is trained on: it reads no text
    with pytest.raises(CorpusError, match="no sidecar.json"):
        check_blocks_fit(run, data, 32, None)
    with pytest.raises(CorpusError, match="no sidecar.json"):  # --no_pretokenized: a build, refused too
        check_blocks_fit(run, DataOptions(tokenizer_dir=tok, processed_dir=proc, era_tokens=True,
                                          cache_mode="rebuild"), 16, None)
    check_blocks_fit(run, DataOptions(tokenizer_dir=tok, processed_dir=proc, era_tokens=True,
                                      cache_mode="require"), 16, None)


# --- 4-5. the OCR repair command: an input written to while read, an input named as a stale temp --

def _ocr_repair():
    from ocr_fixtures import period_lexicon

    from londonlm.corpus.ocr import jsonl
    from londonlm.corpus.ocr.confusions import load_confusions

    return jsonl, jsonl.DocumentRepair(period_lexicon(), load_confusions())


def _rows(ids, text: str = "tbe Court of Aldermen met at Guildhall") -> str:
    return "".join(json.dumps({"id": i, "text": text}) + "\n" for i in ids)


def test_an_input_rewritten_while_it_is_read_is_an_error_and_the_old_output_stays(tmp_path, monkeypatch):
    """Was: an input rewritten in place while the repair read it (a producer still writing it,
    `> in.jsonl` run again) gave an output of its first rows followed by the rows of what replaced
    them, exit 0. Now one error line; the old output and report stay as they were, no temp left."""
    jsonl, repair = _ocr_repair()
    src, out, rep = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "rep.jsonl"
    src.write_text(_rows([f"old{i}" for i in range(300)]))
    out.write_text("the last run's rows\n")
    rep.write_text("the last run's report\n")
    real = jsonl.repair_row

    def rewrite_at_the_second_row(n, raw, o, reported=True):
        if n == 2:
            with open(src, "r+", encoding="utf-8") as f:
                f.truncate(0)
                f.write(_rows([f"new{i}" for i in range(300)], "the Court"))
        return real(n, raw, o, reported)
    monkeypatch.setattr(jsonl, "repair_row", rewrite_at_the_second_row)
    with pytest.raises(jsonl.RepairInputError, match="changed while it was read"):
        jsonl.repair_jsonl(src, out, repair, rep)
    assert out.read_text() == "the last run's rows\n" and rep.read_text() == "the last run's report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl", "rep.jsonl"]
    monkeypatch.setattr(jsonl, "repair_row", real)  # the input written: the rerun repairs it whole
    assert jsonl.repair_jsonl(src, out, repair, rep)["rows"] == 300


def test_an_input_named_like_a_killed_runs_temporary_output_is_read_not_deleted(tmp_path):
    """Was: the rows a kill -9 left in `.out.jsonl.<hex>.tmp`, given as --input to salvage them,
    were deleted as the killed run's stale temporary file before they were read: a traceback
    (FileNotFoundError), the rows gone. Now the input is read; another stale temp still goes."""
    jsonl, repair = _ocr_repair()
    src, stale, out = tmp_path / ".out.jsonl.0123abcd.tmp", tmp_path / ".out.jsonl.89abcdef.tmp", tmp_path / "out.jsonl"
    src.write_text(_rows(["a", "b"]))
    stale.write_text("half a row")
    assert jsonl.repair_jsonl(src, out, repair)["rows"] == 2
    assert src.read_text() == _rows(["a", "b"]) and not stale.exists()
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["a", "b"]


# --- 6. the collection's kept period lexicon ---------------------------------------------------

def test_a_kept_period_lexicon_damaged_since_or_its_key_file_is_learned_again(tmp_path):
    """Was: a key file that is no JSON object (`{`, `[1]`, empty) was a traceback on every
    collection; a period lexicon damaged under its key file was "current", then refused as it
    was read ("rebuild it"), and every rerun found it current again. Both are learned again."""
    from ocr_fixtures import period_lexicon

    from londonlm.corpus.ocr import OcrOptions, collection_lexicon
    from londonlm.corpus.ocr.lexicon import PeriodLexicon
    from londonlm.corpus.ocr.step import KEY_FILE

    mine = period_lexicon().save(tmp_path / "mine.json.gz")
    options, out, logs = OcrOptions(period_corpus=str(mine)), tmp_path / "ocr", []
    lexicon = collection_lexicon(lambda: iter(()), out, "k", options, logs.append, has_ocr=True)
    good = lexicon.read_bytes()
    assert collection_lexicon(lambda: iter(()), out, "k", options, logs.append, has_ocr=True) == lexicon
    assert "is current" in logs[-1]
    for damage in ("{", "[1]", ""):
        (out / KEY_FILE).write_text(damage)
        assert collection_lexicon(lambda: iter(()), out, "k", options, logs.append, has_ocr=True) == lexicon
        assert "period lexicon of" in logs[-1] and lexicon.read_bytes() == good
    lexicon.write_bytes(good[: len(good) // 2])
    collection_lexicon(lambda: iter(()), out, "k", options, logs.append, has_ocr=True)
    assert "period lexicon of" in logs[-1] and lexicon.read_bytes() == good
    assert len(PeriodLexicon.load(lexicon)) == len(period_lexicon())


def test_a_page_an_earlier_version_kept_as_the_book_is_fetched_again(tmp_path):
    """Was (round 15's "Not changed"): a page an earlier version kept as pg370.txt, vouched for by
    its .sha256, was skipped as complete on every run and read as the book. Now a kept download of
    a source that is never a web page is sniffed too: the page goes and the book is fetched."""
    from londonlm.core import write_json_atomic
    from londonlm.corpus.download import _sidecar

    dest = tmp_path / "gutenberg" / "defoe" / "pg370.txt"
    with HostileServer({"/cache/epub/370/pg370.txt": BOOK}) as srv:
        dest.parent.mkdir(parents=True)
        dest.write_bytes(PORTAL)
        write_json_atomic(_sidecar(dest), {"url": f"{srv.url}/cache/epub/370/pg370.txt", "sha256": sha256_file(dest),
                                           "bytes": len(PORTAL), "fetched_at": "2026-11-01T00:00:00Z"})
        src = make_source({"id": "defoe", "kind": "gutenberg", "gutenberg_id": 370, "base_url": srv.url})
        [res] = src.fetch(dl(), tmp_path)
        assert res.ok and res.status == "downloaded" and dest.read_bytes() == BOOK, res
        [res] = src.fetch(dl(), tmp_path)  # the book itself: skipped as complete
        assert res.status == "skipped"
