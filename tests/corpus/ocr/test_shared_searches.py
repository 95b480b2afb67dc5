"""The repair stage's workers share their candidate searches: a search taken from another worker
is the one this worker would make (the rows come out the same), a record still being written is
read later, the log stops at its limit, on a failed write and once closed, a worker that seldom
uses the others' searches stops reading them, and the pool does share (its log is written)."""
from __future__ import annotations

import json
import os
import pickle
from concurrent.futures import Future

import pytest
from ocr_fixtures import OCR, period_lexicon

from londonlm.corpus.ocr import jsonl, shared_searches
from londonlm.corpus.ocr.confusions import load_confusions
from londonlm.corpus.ocr.repair import OcrRepairer, RepairSettings
from londonlm.corpus.ocr.shared_searches import HEADER, SearchLog

LEX = period_lexicon("The Baker came with the Bread on the 27th of May. the Merchants was any body. " * 3)
TEXTS = ["Tbe Bakcr came, aud tbe Court met Bakcr at tbe Hall; fome Villains liad a Defign on tbe Bread.",
         OCR, "tbe Bakcr m the Hall, t, the Court. Tbe Merchauts was auy bodv."]
OTHER = os.getpid() + 1  # (a record another worker made: one's own are skipped)


def repairer() -> OcrRepairer:
    return OcrRepairer(LEX, load_confusions(), RepairSettings())


def outcome(r: OcrRepairer, text: str) -> tuple:
    done = r.repair(text, 1790)
    return done.text, [c.to_dict() for c in done.changes]


def test_searches_taken_from_another_repairer_are_used_and_repair_the_same():
    maker, log = repairer(), SearchLog()
    maker.share_searches()
    expected = [outcome(maker, t) for t in TEXTS]
    blob = log.give(maker)
    log.append(OTHER, blob)
    assert maker.searches_made() == []  # (given once)
    taker = repairer()
    taker.share_searches()
    log.take(taker)
    assert taker.shared_read == len(pickle.loads(blob)) > 10
    assert [outcome(taker, t) for t in TEXTS] == expected
    assert taker.shared_used > 10 and taker.searches_made() == []  # (nothing searched itself)


def test_a_shared_search_is_what_the_taker_reads_for_the_word():
    """The taker answers from the shared search, not a search of its own (a planted answer shows it)."""
    r = repairer()
    r.share_searches()
    key = ("Bakcr", False, None)
    r.add_searches([(key, (("Planted", "planted", -1.0, -5.0),))])
    assert r._candidates("Bakcr", "bakcr", None, False) == (("Planted", "planted", -1.0, -5.0),)
    assert r.shared_used == 1 and r.searches_made() == []


def test_ones_own_records_are_skipped_and_a_record_being_written_is_read_later():
    maker, log = repairer(), SearchLog()
    maker.share_searches()
    outcome(maker, TEXTS[0])
    blob = log.give(maker)
    log.append(os.getpid(), blob)  # this process's own: skipped
    taker = repairer()
    log.take(taker)
    assert taker.shared_read == 0
    record = HEADER.pack(len(blob), OTHER) + blob
    os.write(log._fd, record[:len(record) // 2])  # half written
    log.take(taker)
    assert taker.shared_read == 0
    os.write(log._fd, record[len(record) // 2:])
    log.take(taker)
    assert taker.shared_read == len(pickle.loads(blob)) > 0


def test_the_log_stops_at_its_limit_on_a_failed_write_and_once_closed(monkeypatch):
    log = SearchLog(limit=100)
    log.append(OTHER, b"x" * 50)
    assert log.open and log.written == 50 + HEADER.size
    log.append(OTHER, b"x" * 50)  # past the limit: dropped, and the log closed to more
    assert not log.open and log.written == 50 + HEADER.size
    failing = SearchLog()

    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shared_searches.os, "write", full)
    failing.append(OTHER, b"abc")
    assert not failing.open and failing.written == 0
    monkeypatch.undo()
    closed = SearchLog()
    closed.close()
    closed.append(OTHER, b"abc")  # (a late callback after the run's end: nothing, no error)
    assert closed.written == 0


def test_a_failed_or_cancelled_batch_appends_nothing():
    log = SearchLog()
    failed, cancelled, done = Future(), Future(), Future()
    failed.set_exception(RuntimeError("a worker died"))
    cancelled.cancel()
    done.set_result(([], (OTHER, b"abc")))
    for f in (failed, cancelled, done):
        log.append_from(f)
    assert log.written == HEADER.size + 3


def test_a_worker_that_seldom_uses_the_others_searches_stops_reading_them(monkeypatch):
    monkeypatch.setattr(shared_searches, "MIN_READ", 10)
    log, taker = SearchLog(), repairer()
    taker.share_searches()
    unused = [((f"zz{i}", False, None), ()) for i in range(20)]
    log.append(OTHER, pickle.dumps(unused))
    log.take(taker)
    assert not log._reading and taker._made is None and not taker._shared
    log.append(OTHER, pickle.dumps(unused))
    log.take(taker)
    assert taker.shared_read == 20  # (not read again)
    assert log.give(taker) == b""  # (nor its own sent)


def test_the_pools_workers_share_their_searches_and_the_rows_are_the_same(tmp_path, monkeypatch):
    written = []

    class Recorded(SearchLog):
        def append(self, pid, blob):
            written.append((pid, len(blob)))
            super().append(pid, blob)

    monkeypatch.setattr(jsonl, "search_log", Recorded)
    monkeypatch.setattr(jsonl, "bounded_workers", lambda n: n)
    monkeypatch.setattr(jsonl, "BATCH_BYTES", 64)  # (a batch a row: both workers get some)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS * 4)))
    repair = jsonl.DocumentRepair(LEX, load_confusions())
    jsonl.repair_jsonl(src, tmp_path / "two.jsonl", repair, tmp_path / "r2.jsonl", jsonl.JsonlOptions(workers=2))
    assert any(size for _, size in written) and os.getpid() not in {p for p, _ in written}
    jsonl.repair_jsonl(src, tmp_path / "one.jsonl", repair, tmp_path / "r1.jsonl", jsonl.JsonlOptions(workers=1))
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    strip = [json.loads(x) for x in (tmp_path / "r2.jsonl").read_text().splitlines()[:-1]]
    assert strip == [json.loads(x) for x in (tmp_path / "r1.jsonl").read_text().splitlines()[:-1]]


@pytest.mark.parametrize("workers", [1, 2])
def test_without_a_search_there_is_no_log(tmp_path, monkeypatch, workers):
    made = []
    monkeypatch.setattr(jsonl, "search_log", lambda *a: made.append(1))
    monkeypatch.setattr(jsonl, "bounded_workers", lambda n: n)
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "tbe Court"}) + "\n")
    jsonl.repair_jsonl(src, tmp_path / "o.jsonl", jsonl.DocumentRepair(None), None, jsonl.JsonlOptions(workers=workers))
    assert made == []


def test_without_a_temporary_file_the_workers_search_for_themselves(tmp_path, monkeypatch):
    """A full or read-only temporary folder costs the sharing, not the run."""
    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shared_searches.tempfile, "TemporaryFile", full)
    assert shared_searches.search_log() is None
    monkeypatch.setattr(jsonl, "bounded_workers", lambda n: n)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS * 2)))
    repair = jsonl.DocumentRepair(LEX, load_confusions())
    two = jsonl.repair_jsonl(src, tmp_path / "two.jsonl", repair, None, jsonl.JsonlOptions(workers=2))
    jsonl.repair_jsonl(src, tmp_path / "one.jsonl", repair, None, jsonl.JsonlOptions(workers=1))
    assert two["rows"] == 6 and (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
