"""Hostile round 23, Ctrl-C at the interactive prompt on a real terminal: Python's readline waits
for a key in ``select()`` with no timeout and looks at signals only when that wait is cut short.
A SIGINT that came while it was still echoing a key or drawing the prompt, or that the kernel gave
another of the process's threads (OpenBLAS's thread servers: seen under strace), was acted on only
at the next key: on a busy machine Ctrl-C at the prompt did nothing, and after two the REPL never
left."""
from __future__ import annotations

import os
import pty
import signal
import sys
import time

from pty_io import pty_read as _pty_read
from conftest import REPO

# The child: the prompt's reader on a terminal, with readline, as the REPL reads it. At the
# parent's word a thread other than the main one takes a SIGINT, as an OpenBLAS thread took the
# user's Ctrl-C; then a line is typed at a second prompt (editing still works), and what the read
# set up for itself is checked to be gone.
CHILD = r"""
import os, readline, signal, sys, threading
from londonlm.serving.repl import read_line

go = int(sys.argv[1])

def takes_the_sigint():
    os.read(go, 1)
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)

threading.Thread(target=takes_the_sigint, daemon=True).start()
try:
    print("line:", repr(read_line("> ")))
except KeyboardInterrupt:
    print("interrupted")
print("line:", repr(read_line("again> ")))
for t in threading.enumerate():
    if t is not threading.main_thread():
        t.join(5)
print("left:", signal.getsignal(signal.SIGURG) is signal.SIG_DFL, signal.set_wakeup_fd(-1),
      threading.active_count())
"""




def test_a_ctrl_c_another_thread_takes_at_the_prompt_is_acted_on_at_once():
    go_read, go_write = os.pipe()
    os.set_inheritable(go_read, True)
    pid, fd = pty.fork()
    if pid == 0:  # the child: a fresh Python on the terminal
        os.execve(sys.executable, [sys.executable, "-c", CHILD, str(go_read)],
                  {**os.environ, "TERM": "dumb", "PYTHONPATH": str(REPO)})
    os.close(go_read)
    try:
        assert _pty_read(fd, b"> ", 30).endswith(b"> ")
        time.sleep(0.2)  # readline in its wait for a key
        os.write(go_write, b"x")
        got = _pty_read(fd, b"again> ", 5)
        assert b"interrupted\r\n" in got, got  # was: nothing, until the next key
        os.write(fd, b"Up bet\n")
        got = _pty_read(fd, b"left:", 5) + _pty_read(fd, b"\r\n", 5)
        assert b"line: 'Up bet'" in got, got
        assert b"left: True -1 1" in got, got  # the poke's handler, the wakeup fd, the thread: gone
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        pid = None
    finally:
        os.close(go_write)
        os.close(fd)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
