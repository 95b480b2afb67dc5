"""Reading a pseudo-terminal's output up to a marker: tests that drive a REPL on a real terminal."""
from __future__ import annotations

import os
import select
import time


def pty_read(fd: int, until: bytes, timeout: float = 60.0) -> bytes:
    """What ``fd`` gives until ``until`` is in it, its end, or ``timeout`` seconds."""
    got, end = b"", time.monotonic() + timeout
    while until not in got and time.monotonic() < end:
        if select.select([fd], [], [], 0.05)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            got += chunk
    return got
