"""The in-process script runner the nets and the flag tests share (tests/script_fuzz.py)."""
import io
import logging

from script_fuzz import logging_to


def test_a_handler_left_on_a_closed_capture_file_is_moved_and_put_back(tmp_path):
    """A logger's handler made during an earlier test holds that test's capture file, closed
    since: the runner moved it with setStream, which flushed the closed file, and the next test
    to run a script failed with "I/O operation on closed file" (seen with the CPU bf16 training
    test before the same-command-twice net on one worker)."""
    dead, live = open(tmp_path / "capture", "w"), io.StringIO()  # (a file, as pytest's capture is)
    logger = logging.getLogger("londonlm.test.closed_capture")
    handler = logging.StreamHandler(dead)
    logger.addHandler(handler)
    dead.close()
    try:
        with logging_to(live):
            logger.warning("said while the script ran")
        assert "said while the script ran" in live.getvalue() and handler.stream is dead
    finally:
        logger.removeHandler(handler)
