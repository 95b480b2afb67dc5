"""Candidate searches shared between the repair stage's workers.

Each worker caches the candidates of every word it searches, but a worker meets each word for
the first time itself: on two cores, each of two workers searched the whole vocabulary of a
collection that repeats its words (SMH ten times over: 19,610 searches each, the same 19,610),
and the cold search is most of what a text costs a worker the first time. Here each worker sends
the searches it made with each batch's rows; the parent appends them to a log, an unlinked
temporary file the workers inherited at the fork; before each batch, a worker reads what the
others added since its last and keeps it for when a word asks (:meth:`OcrRepairer.add_searches`).
A search is a function of the word, the lexicon, the model and the settings, which every worker
holds alike, so the rows come out the same whichever process searched. On SMH ten times over, each
of two workers used 8.2 k and 9.5 k of the other's 9.4 k and 10.7 k searches, and searched ~10 k
words itself where it had searched 19.6 k.

Reading the others' searches costs a little each (~1 µs, against ~35 µs a search); where they
are seldom asked for (collections whose workers share few words), a worker stops reading them
once it has read ``MIN_READ`` and used fewer than ``MIN_USED`` of them. The log stops growing at
``LIMIT_BYTES`` (each worker's cache is bounded anyway), when the disk refuses a write, or where
no temporary file can be made: the workers then search for themselves, as without it.
"""
from __future__ import annotations

import os
import pickle
import struct
import tempfile
import threading
from concurrent.futures import Future

from .repair import OcrRepairer

HEADER = struct.Struct("<II")  # a record: its length, the PID of the worker that made its searches
LIMIT_BYTES = 64 * 1024 * 1024  # (~600 k searches: three times what a worker's cache holds; /tmp may be memory)
MIN_READ = 20_000
MIN_USED = 0.05


def search_log() -> "SearchLog | None":
    """A new :class:`SearchLog`; None where no temporary file can be made (a full or read-only
    temporary folder): the workers then search for themselves, as without one."""
    try:
        return SearchLog()
    except OSError:
        return None


class SearchLog:
    """The log the workers' searches go through: :meth:`append` in the parent, :meth:`take` and
    :meth:`give` in a worker (forked after the log was made: it holds the same file)."""

    def __init__(self, limit: int = LIMIT_BYTES):
        self._file = tempfile.TemporaryFile(prefix="londonlm-searches-")
        self._fd = self._file.fileno()
        self.limit = limit
        self.written = 0
        self.open = True  # (the parent's: whether records are still appended)
        self._read = 0    # (a worker's: how far it has read)
        self._reading = True
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:  # (a late callback writes nothing: the descriptor may be another file's by then)
            self.open = False
            self._file.close()

    # ---------------------------------------------------------------- the parent
    def append_from(self, future: Future) -> None:
        """:meth:`append` of a finished batch's searches (a future's done callback: the
        second of ``repair_rows``' results); nothing of one that failed or was cancelled."""
        if not future.cancelled() and future.exception() is None:
            made = future.result()[1]
            if made is not None:
                self.append(*made)

    def append(self, pid: int, blob: bytes) -> None:
        """Add one worker's searches (``give``'s bytes); nothing once closed by the limit or a
        failed write (a full disk: a partial record is never read, as it never completes).
        Callbacks of the pool's thread and the caller's own may append at once: one at a time."""
        if not blob or not self.open:
            return
        record = HEADER.pack(len(blob), pid) + blob
        with self._lock:
            if not self.open or self.written + len(record) > self.limit:
                self.open = False
                return
            try:
                view = memoryview(record)
                while view:
                    view = view[os.write(self._fd, view):]
            except (OSError, ValueError):  # (a full disk; the log closed as the run ended)
                self.open = False
                return
            self.written += len(record)

    # ---------------------------------------------------------------- a worker
    def take(self, repairer: OcrRepairer) -> None:
        """Hand ``repairer`` the other workers' searches added since the last call."""
        if not self._reading:
            return
        data = os.pread(self._fd, max(0, os.fstat(self._fd).st_size - self._read), self._read)
        pos, me = 0, os.getpid()
        while pos + HEADER.size <= len(data):
            size, pid = HEADER.unpack_from(data, pos)
            end = pos + HEADER.size + size
            if end > len(data):  # (being written: read next time)
                break
            if pid != me:
                repairer.add_searches(pickle.loads(data[pos + HEADER.size:end]))
            pos = end
        self._read += pos
        if repairer.shared_read >= MIN_READ and repairer.shared_used < MIN_USED * repairer.shared_read:
            self._reading = False  # (they are seldom asked for here: not worth reading, nor ours sending)
            repairer.share_searches(False)

    def give(self, repairer: OcrRepairer) -> bytes:
        """The searches ``repairer`` made since the last call, for :meth:`append` (empty: none)."""
        made = repairer.searches_made()
        return pickle.dumps(made, protocol=pickle.HIGHEST_PROTOCOL) if made else b""
