"""The JSONL repair stage (``02_data_collection/repair_ocr.py``): rows ``{"id", "text", ...}`` in,
the same rows out in the same order with ``text`` repaired and every other key kept.

Nothing is lost: a row that cannot be repaired comes out as it came in, with an
``ocr_repair_error`` naming why (``bad_json``, ``not_an_object``, ``no_text``, ``too_large``,
``lone_surrogate``: a ``"\\ud800"`` in its text, written back escaped as it came); a line that is
not JSON at all comes out as ``{"line": N, "ocr_repair_error": "bad_json", "raw": ...}``. The
bytes of a line that are not UTF-8 are read one by one as cp1252 (its UTF-8 stays UTF-8) and the
report says where (``cp1252_bytes``); a UTF-8 byte-order mark starting the file is skipped. A
year (``--year_key``) is a whole number or one written as text (``"1750"``); any other value
(``true``) is none: the row is repaired without it and the report says ``year_ignored``. An
input that is not a text file (binary, UTF-16) or holds no rows is refused in one line before
anything is written; one written to while it is read, an error before the output is put in place. The
output is written whole or not at all (a temporary file renamed at the end; through a link, to
its target; a device or a pipe streamed: :mod:`.files`), and the report,
one line per row (what changed, where, the evidence's margin and the misreading's probability,
the quality before and after) and a summary line last, just after it (an earlier report is
removed before the output is put in place: a kill between the two never leaves a report
beside an output it does not describe).
"""
from __future__ import annotations

import codecs
import json
import os
import re
import stat
from collections import deque
from contextlib import ExitStack, closing
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..cleaning import strip_page_furniture, strip_scan_stamps
from ..manifest import CorpusError
from .confusions import announce_walk
from .files import check_output, output_file, refuse_same_files, remove_earlier, remove_stale_temps
from .large_rows import CHUNK, LargeRow, copy_row, scan_line
from .processes import batches, bounded_workers, result_of, sigterm_as_error, start_worker, stop_pool, submit
from .shared_searches import SearchLog, search_log
from .step import DocumentRepair

MAX_ROW_BYTES = 64 * 1024 * 1024
MAX_CHANGES_REPORTED = 500   # per row: the report says how many more there were
ERROR_KEY = "ocr_repair_error"  # a row out unrepaired: why


class RepairInputError(CorpusError):
    """The input cannot be read as JSONL rows at all; the message says why."""


@dataclass
class JsonlOptions:
    text_key: str = "text"
    year_key: str = "year"
    furniture: bool = True          # remove stamps, page numbers, running heads, catchwords first
    max_row_bytes: int = MAX_ROW_BYTES
    workers: int = 1
    progress: bool = False


# ---------------------------------------------------------------- reading
def check_input(path: Path) -> None:
    """Refuse, in one line, an input that is no text file of rows."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError as e:
        raise RepairInputError(f"{path}: cannot read ({e.strerror or e})") from e
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise RepairInputError(f"{path}: UTF-16 text (its byte-order mark says so), not UTF-8 JSONL rows; "
                               f"convert it to UTF-8 (iconv -f UTF-16 -t UTF-8)")
    head = head.removeprefix(BOM)
    if not head.strip():
        raise RepairInputError(f"{path}: {'empty' if not size else 'only blank lines'}: no rows to repair")
    if b"\x00" in head:
        raise RepairInputError(f"{path}: binary data (NUL bytes), not JSONL rows")


def _lines(path: Path, max_row_bytes: int | None = None) -> Iterator[tuple[int, bytes | LargeRow]]:
    """The input's lines, numbered; one over ``max_row_bytes`` in a file as a :class:`LargeRow`,
    never held whole (:mod:`.large_rows`). A file written to while it is read (a producer still
    writing it, ``> in.jsonl`` run again) gave an output of its first rows and the rows of what
    replaced them, exit 0: its size and time of change are compared when the last line is read,
    and a change is an error, so the output is not written."""
    with open(path, "rb") as f:
        before = _version(os.fstat(f.fileno()))
        limit = -1 if max_row_bytes is None or before is None else max_row_bytes + 1  # (a stream: read whole)
        n = offset = 0  # (the line's first byte: counted, not asked of the file, a line at a time)
        while raw := f.readline(limit):
            n, start = n + 1, offset
            offset += len(raw)
            if n == 1 and raw.startswith(BOM):  # (editors on Windows write one)
                raw, start = raw[len(BOM):], start + len(BOM)
            if len(raw) > max_row_bytes if limit > 0 else False:
                scanned = scan_line(raw, lambda: f.readline(CHUNK), ERROR_KEY)
                offset = f.tell()  # (past the rest of the line, read in pieces)
                if scanned is not None:  # (None: white space only, a blank line)
                    yield n, LargeRow(str(path), n, start, *scanned, version=before)
            elif raw.strip():
                yield n, raw
        if before is not None and _version(os.fstat(f.fileno())) != before:
            raise RepairInputError(f"{path} changed while it was read (another program wrote to it): its rows "
                                   f"out would mix two versions of it; run again once it is written (an output "
                                   f"file and the report were left as they were)")


def _version(st: os.stat_result) -> tuple[int, int] | None:
    """(size, time of change) of a regular file; None for a stream, which has neither."""
    return (st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None


def _byte_by_byte(e: UnicodeDecodeError) -> tuple[str, int]:
    """Bytes that are not UTF-8 read one by one as cp1252 (latin-1 where cp1252 has no
    character): nothing replaced, and where they were is kept (``_BAD``)."""
    bad = e.object[e.start:e.end]
    _BAD.extend(range(e.start, e.end))
    return "".join(_CP1252[b] for b in bad), e.end


BOM = b"\xef\xbb\xbf"
_CP1252 = [bytes([b]).decode("cp1252", errors="ignore") or chr(b) for b in range(256)]
_BAD: list[int] = []
codecs.register_error("londonlm_cp1252_bytes", _byte_by_byte)
MAX_BAD_LISTED = 100


def _decode(raw: bytes) -> tuple[str, str | None, list[int]]:
    """(text, note, offsets of the bytes read as cp1252). A line's valid UTF-8 stays UTF-8: one
    stray Latin-1 byte does not turn the line's other accents into mojibake."""
    try:
        return raw.decode("utf-8"), None, []
    except UnicodeDecodeError:
        _BAD.clear()
        text = raw.decode("utf-8", errors="londonlm_cp1252_bytes")
        return text, "decoded_cp1252", _BAD[:MAX_BAD_LISTED]


def _finite(text: str) -> float:
    value = float(text)
    if value - value != 0:  # inf or nan
        raise ValueError(f"{text} is no number JSON can hold")
    return value


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads(line: str) -> Any:
    """A row as standard JSON: ``NaN``, ``Infinity`` and numbers past a float's range (1e999)
    are refused as the row's error, since Python would read them and write them back as
    ``NaN``/``Infinity``, which no other JSON reader takes (the row passes through as text)."""
    return json.loads(line, parse_float=_finite, parse_constant=_not_json)


def parse_row(n: int, raw: bytes, o: JsonlOptions) -> tuple[dict[str, Any], str | None, dict[str, Any] | None]:
    """(row, error, encoding note for the report) of one input line; the row is what goes out if
    it cannot be repaired."""
    line, how, bad = _decode(raw.rstrip(b"\r\n"))
    note = {"encoding": how, "cp1252_bytes": bad} if how else None
    if len(raw) > o.max_row_bytes:
        try:
            row = _loads(line)
        except (ValueError, RecursionError):
            row = None
        return (row if isinstance(row, dict) else {"line": n, "raw": line}), "too_large", note
    try:
        row = _loads(line)
    except (ValueError, RecursionError):  # (nested past the parser's depth: not a row it can read)
        return {"line": n, "raw": line}, "bad_json", note
    if not isinstance(row, dict):
        return {"line": n, "raw": row}, "not_an_object", note
    if not isinstance(row.get(o.text_key), str):
        return row, "no_text", note
    if _SURROGATE.search(row[o.text_key]):  # "\\ud800" in JSON: no character, nothing UTF-8 can write
        return row, "lone_surrogate", note
    return row, None, note


def row_year(value: Any) -> tuple[int | None, str | None]:
    """(year, why it is not one) of a row's year field: a whole number, or one written as text
    ("1750"); anything else (``true``, ``1750.5``, ``"c. 1750"``) is no year, and the row is
    repaired as one without."""
    if value is None:
        return None, None
    if isinstance(value, int) and not isinstance(value, bool):
        return value, None
    if isinstance(value, str) and _YEAR_TEXT.fullmatch(value):
        return int(value), None
    return None, "not_a_year"


_SURROGATE = re.compile("[\ud800-\udfff]")
_YEAR_TEXT = re.compile(r"\s*[0-9]{1,6}\s*")


def dumps(obj: Any) -> str:
    """One JSON line; a lone surrogate anywhere is written escaped, as it came (UTF-8 has none)."""
    line = json.dumps(obj, ensure_ascii=False)
    return json.dumps(obj) if _SURROGATE.search(line) else line


# ---------------------------------------------------------------- one row
_REPAIR: DocumentRepair | None = None
_LOG: SearchLog | None = None  # (a worker's, where the workers share their searches)


def _init(repair: DocumentRepair, parent: int | None = None, log: SearchLog | None = None) -> None:
    global _REPAIR, _LOG
    if parent is not None:  # a worker process
        start_worker(parent)
    _REPAIR, _LOG = repair, log
    if log is not None:
        repair.word_repairer.share_searches()


def repair_row(n: int, raw: bytes, o: JsonlOptions, reported: bool = True) -> tuple[str, dict[str, Any]]:
    """(output line, report entry) of one input line; ``reported``: for a report, the entry
    lists each change and the quality before and after (without one, a row's list made, sent
    from its worker and read back for nothing took 2-4% of a run, its quality counted twice for
    nothing a tenth of a row's time; the summary counts neither)."""
    if isinstance(raw, LargeRow):  # (written by the parent, from the input: _write_rows)
        return raw, {"line": n, "id": raw.id, "error": "too_large"}
    row, error, note = parse_row(n, raw, o)
    entry: dict[str, Any] = {"line": n, "id": row.get("id")}
    if note:
        entry.update(note)
    if error:
        # an earlier run's reason kept (the first one): its bad_json line, passed through as
        # {"line", "raw", ...}, came out of the next run as no_text, the line's fault lost
        if not isinstance(row.get(ERROR_KEY), str):
            row[ERROR_KEY] = error
        entry["error"] = error
        return dumps(row), entry
    text = row[o.text_key]
    if o.furniture:
        text = strip_page_furniture(strip_scan_stamps(text))
    year, not_a_year = row_year(row.get(o.year_key))
    if not_a_year:
        entry["year_ignored"] = not_a_year
    text, facts = _REPAIR.repair_text(text, year, quality=reported)
    row[o.text_key] = text
    # an earlier run's mark (its output repaired again, a row it passed through as too_large
    # now under a larger --max_row_mb): kept, it said a repaired row was not, exit 0
    row.pop(ERROR_KEY, None)
    changes = facts.pop("changes", [])
    entry.update(facts)
    if reported:
        entry["changes"] = [c.to_dict() for c in changes[:MAX_CHANGES_REPORTED]]
        if len(changes) > MAX_CHANGES_REPORTED:
            entry["changes_not_listed"] = len(changes) - MAX_CHANGES_REPORTED
    return dumps(row), entry


def repair_rows(batch: list[tuple[int, bytes]], o: JsonlOptions,
                reported: bool) -> tuple[list[tuple[str, dict[str, Any]]], tuple[int, bytes] | None]:
    """``repair_row`` of each line of ``batch``: what a worker is sent at a time; with the
    searches it made for them where the workers share theirs (:mod:`.shared_searches`)."""
    if _LOG is not None:
        _LOG.take(_REPAIR.word_repairer)
    rows = [repair_row(n, raw, o, reported) for n, raw in batch]
    return rows, None if _LOG is None else (os.getpid(), _LOG.give(_REPAIR.word_repairer))


# Rows go to a worker in batches of about BATCH_BYTES (one row a batch took a fifth of a core in
# the parent, sending, receiving and waking, on SMH x10's 1,590 rows of 2 kB). Batches in flight
# per worker: the output is written in input order, so the oldest batch holds the rest back; with
# two a worker, a worker that finished a short one waited on a long one (10% of the time). Two a
# worker go whatever their size (a row up to --max_row_mb, as before); more only while the
# batches in flight hold under BYTES_IN_FLIGHT a worker, so memory stays bounded as it was
BATCH_BYTES = 32 * 1024
BATCHES_IN_FLIGHT = 16
BYTES_IN_FLIGHT = 8 * 1024 * 1024
MIN_BATCHES_IN_FLIGHT = 2


def _ordered(items: Iterator[tuple[int, bytes]], o: JsonlOptions, repair: DocumentRepair,
             reported: bool = True) -> Iterator[tuple[str, dict]]:
    """``repair_row`` of every line (``reported``: for a report), in input order; ``workers`` processes (one per CPU at most),
    sent batches of lines (``BATCH_BYTES``) with up to ``BATCHES_IN_FLIGHT`` a worker in flight
    (``MIN_BATCHES_IN_FLIGHT`` whatever their size, more while they hold under
    ``BYTES_IN_FLIGHT`` a worker), killed at once if the run ends early."""
    workers = bounded_workers(o.workers)
    if workers <= 1:
        _init(repair)
        for n, raw in items:
            yield repair_row(n, raw, o, reported)
        return
    if repair.searches:  # (which walk the search runs: said before the fork, once)
        announce_walk()
    log = search_log() if repair.searches else None
    pool = ProcessPoolExecutor(workers, initializer=_init, initargs=(repair, os.getpid(), log))

    def send(batch: list[tuple[int, bytes]]) -> Future:
        # the searches logged as each batch is done, not when its turn to be written comes: that
        # waits on the batches before it, ~30 of them in flight, and the others search meanwhile
        return submit(pool, repair_rows, batch, o, reported, when_done=None if log is None else log.append_from)

    def rows_of(future: Future) -> list[tuple[str, dict]]:
        return result_of(future)[0]
    try:
        queue: deque[tuple[Future, int]] = deque()
        held = 0  # input bytes in flight
        for batch in batches(items, BATCH_BYTES, lambda line: len(line[1])):
            size = sum(len(raw) for _, raw in batch)
            while len(queue) >= BATCHES_IN_FLIGHT * workers or len(queue) >= MIN_BATCHES_IN_FLIGHT * workers \
                    and held + size > BYTES_IN_FLIGHT * workers:
                future, done = queue.popleft()
                held -= done
                yield from rows_of(future)
            queue.append((send(batch), size))
            held += size
        while queue:
            yield from rows_of(queue.popleft()[0])
    except BaseException:  # (SIGTERM, Ctrl-C, an error writing, the generator closed)
        stop_pool(pool)
        raise
    finally:
        if log is not None:
            log.close()
    pool.shutdown()


def repair_jsonl(input_path: str | Path, output_path: str | Path, repair: DocumentRepair,
                 report_path: str | Path | None = None, options: JsonlOptions | None = None) -> dict[str, Any]:
    """Repair every row of ``input_path`` into ``output_path`` (and the report); returns the summary."""
    o = options or JsonlOptions()
    src, dst = Path(input_path), Path(output_path)
    refuse_same_files({"--input": src, "--output": dst, "--report": report_path})
    outputs = [(flag, path) for flag, path in (("--output", dst), ("--report", report_path)) if path is not None]
    for flag, path in outputs:
        check_output(flag, path)
    check_input(src)
    for _, path in outputs:  # (a killed run's, nobody's now; never the input, whatever its name)
        remove_stale_temps(path, keep=(src,))
    summary: dict[str, Any] = {"rows": 0, "repaired": 0, "errors": {}, "changes": 0, "encoding_notes": 0,
                               "years_ignored": 0, "workers": bounded_workers(o.workers)}
    entries: list[dict[str, Any]] | None = [] if report_path is not None else None
    # The report is written whole before the output is put in place, the earlier run's report
    # removed, then the output renamed, then the report: a run killed between the two renames
    # left the new output beside the earlier run's report (other rows, other changes at other
    # offsets, another summary) as if it were this output's; now at no moment is a report beside
    # an output it does not describe (at worst, one of them without a report)
    with sigterm_as_error(), ExitStack() as files:  # (SIGTERM: an error, so the temporary files go; Ctrl-C too)
        rep = None if report_path is None else files.enter_context(output_file(report_path))
        with output_file(dst) as out, closing(_ordered(_lines(src, o.max_row_bytes), o, repair, reported=report_path is not None)) as rows:
            _write_rows(rows, out, summary, entries, _bar(o.progress))
            if rep is not None:
                for e in entries:
                    rep.write(dumps(e) + "\n")
                rep.write(json.dumps({"summary": summary}, ensure_ascii=False) + "\n")
                remove_earlier(report_path)
    return summary


def _write_rows(rows: Iterator[tuple[str | LargeRow, dict]], out, summary: dict[str, Any], entries: list | None,
                bar) -> None:
    for line, entry in rows:
        if isinstance(line, LargeRow):
            _copy_large(line, out, entry)
        else:
            out.write(line)
        out.write("\n")
        summary["rows"] += 1
        summary["encoding_notes"] += "encoding" in entry
        summary["years_ignored"] += "year_ignored" in entry
        if entry.get("error"):
            summary["errors"][entry["error"]] = summary["errors"].get(entry["error"], 0) + 1
        else:
            summary["repaired"] += 1
            summary["changes"] += entry.get("ocr_repairs", 0)
        if entries is not None:
            entries.append(entry)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()


def _copy_large(row: LargeRow, out, entry: dict[str, Any]) -> None:
    """A too-large row written from the input, read again; the input changed since it was read is
    the error a change while it is read is (its rows out would mix two versions)."""
    try:
        if _version(os.stat(row.path)) != row.version:
            raise OSError
        bad = copy_row(row, out, ERROR_KEY, "londonlm_cp1252_bytes", _BAD)
    except (OSError, EOFError) as e:
        raise RepairInputError(f"{row.path} changed while it was read (its line {row.line} is not what it was): "
                               f"its rows out would mix two versions of it; run again once it is written (an "
                               f"output file and the report were left as they were)") from e
    if bad:
        entry.update(encoding="decoded_cp1252", cp1252_bytes=bad[:MAX_BAD_LISTED])


def _bar(progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(desc="repair", unit="row")
