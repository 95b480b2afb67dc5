"""What an atomic write does with a target that is there and is no regular file: a pipe nothing
reads, a socket, a link to a folder; and that regular files and links to them are written as
before. Each refusal is one LondonLMError, which every script's ``run_main`` prints as one
``error:`` line with exit code 2."""
from __future__ import annotations

import json
import os
import socket
import stat
import sys
import threading
import time

import pytest

from londonlm.core import run_main, write_json_atomic, write_text_atomic
from londonlm.core.artifacts import NotARegularFile


def test_a_pipe_nothing_reads_is_refused_within_the_wait(tmp_path, monkeypatch, capsys):
    """A report path naming a FIFO nobody reads held the writer in open() for ever (the
    finished stage never ended). Now it waits PIPE_READER_WAIT_S for a reader, then one line."""
    monkeypatch.setattr("londonlm.core.artifacts.PIPE_READER_WAIT_S", 0.3)
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    link = tmp_path / "report.json"
    link.symlink_to(fifo)
    outcome: list = []

    def write():
        try:
            run_main(lambda argv: write_json_atomic(link, {"a": 1}) and 0, [])
        except SystemExit as e:
            outcome.append(e.code)

    writer = threading.Thread(target=write, daemon=True)
    started = time.monotonic()
    writer.start()
    writer.join(10)
    if writer.is_alive():  # blocked in open(): give it a reader so the thread can end
        with open(fifo, "rb") as f:
            f.read()
        writer.join(10)
        pytest.fail("the write waited for a reader with no limit")
    assert outcome == [2] and time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "pipe that nothing opened to read" in err
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and link.is_symlink()


def test_a_pipe_whose_reader_comes_late_is_written(tmp_path):
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []

    def read_later():
        time.sleep(0.5)
        with open(fifo, "rb") as f:
            got.append(f.read())

    reader = threading.Thread(target=read_later, daemon=True)
    reader.start()
    write_json_atomic(fifo, {"a": 1})
    reader.join(10)
    assert json.loads(got[0]) == {"a": 1} and stat.S_ISFIFO(fifo.lstat().st_mode)


def test_a_socket_or_a_link_to_a_folder_is_refused_and_kept(tmp_path):
    """The rename replaced a live socket (a server's address) and a link to a folder with the
    report: now one error naming the path, and both are left as they were."""
    sock_path = tmp_path / "s"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock_path))
    folder = tmp_path / "folder"
    folder.mkdir()
    link = tmp_path / "to_folder"
    link.symlink_to(folder)
    try:
        for target, what in ((sock_path, "a socket"), (link, "a link to a folder")):
            with pytest.raises(NotARegularFile, match=f"{target} is {what}: name a regular file"):
                write_json_atomic(target, {"a": 1})
        assert stat.S_ISSOCK(sock_path.lstat().st_mode) and link.is_symlink() and not any(folder.iterdir())
        assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "s", "to_folder"]  # no temp left
    finally:
        listener.close()


def test_regular_files_and_links_to_them_are_written_as_before(tmp_path):
    """A regular file is replaced whole; a link to one is replaced by the new file (the rename's
    way, as before), its old target untouched; /dev/null and a link to it are written as streams."""
    plain = tmp_path / "plain.json"
    plain.write_text("old")
    write_json_atomic(plain, {"a": 1})
    assert json.loads(plain.read_text()) == {"a": 1}
    target = tmp_path / "target.txt"
    target.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    write_text_atomic(link, "new")
    assert not link.is_symlink() and link.read_text() == "new" and target.read_text() == "old"
    null_link = tmp_path / "null"
    null_link.symlink_to(os.devnull)
    write_text_atomic(null_link, "gone")
    write_text_atomic(os.devnull, "gone")
    assert null_link.is_symlink() and os.readlink(null_link) == os.devnull


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/self/fd")
def test_a_descriptor_with_a_reader_is_written_at_once(tmp_path):
    r, w = os.pipe()
    try:
        link = tmp_path / "stdout"
        link.symlink_to(f"/proc/self/fd/{w}")
        write_text_atomic(link, "x")
        assert os.read(r, 10) == b"x"
    finally:
        os.close(r)
        os.close(w)
