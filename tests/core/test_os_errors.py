"""The machine's refusals (permission, a file where a folder should be, a read-only or full
disk) are one ``error:`` line naming the path in every script (run_main); other exceptions
keep their traceback."""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

from londonlm.core.errors import USER_ERROR_EXIT, os_error_message, run_main
from unprivileged import make_readable, reachable_dir, run_unprivileged


def _exit(main, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as stop:
        run_main(main, [])
    return stop.value.code, capsys.readouterr().err


def _raiser(exc):
    def main(argv):
        raise exc
    return main


@pytest.mark.parametrize("exc, words", [
    (PermissionError(errno.EACCES, "Permission denied", "{p}/out/x.json"), "cannot create {p}/out/x.json"),
    (PermissionError(errno.EPERM, "Operation not permitted", "{p}/a.txt"), "{p}/a.txt"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "{p}"), "cannot use {p}: it is a folder"),
    (OSError(errno.EROFS, "Read-only file system", "{p}/a.txt"), "cannot write {p}/a.txt: the file system is read-only"),
    (OSError(errno.ENOSPC, "No space left on device", "{p}/a.txt"), "cannot write {p}/a.txt: no space left on device"),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "{p}/a.txt"), "cannot write {p}/a.txt: disk quota exceeded"),
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on device (errno ENOSPC)"),
])
def test_each_kind_is_one_line_naming_the_path(tmp_path, capsys, exc, words):
    (tmp_path / "a.txt").write_text("x")
    if exc.filename:
        exc.filename = exc.filename.format(p=tmp_path)
    code, err = _exit(_raiser(exc), capsys)
    assert code == USER_ERROR_EXIT
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert words.format(p=tmp_path) in err


def test_a_file_where_a_folder_should_be_names_that_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    target = tmp_path / "afile" / "data" / "out.json"
    code, err = _exit(lambda a: target.parent.mkdir(parents=True), capsys)
    assert code == USER_ERROR_EXIT
    assert f"{tmp_path / 'afile'} is a file, not a folder" in err and err.count("\n") == 1


def test_a_file_where_the_folder_itself_should_be_is_one_line(tmp_path, capsys):
    """mkdir(exist_ok=True) on a file's path raises FileExistsError (EEXIST), which was a
    traceback in every script (e.g. a file named like the corpus's metadata folder)."""
    (tmp_path / "metadata").write_text("x")
    code, err = _exit(lambda a: (tmp_path / "metadata").mkdir(parents=True, exist_ok=True), capsys)
    assert code == USER_ERROR_EXIT and err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot make {tmp_path / 'metadata'}: a file where a folder is expected" in err


def test_bugs_and_other_os_errors_keep_their_traceback():
    for exc in (ValueError("a bug"), OSError(errno.EBADF, "Bad file descriptor"),
                FileNotFoundError(errno.ENOENT, "No such file", "/x"), RuntimeError("Permission denied")):
        assert os_error_message(exc) is None
        with pytest.raises(type(exc)):
            run_main(_raiser(exc), [])


def test_a_descriptor_number_is_no_path():
    e = PermissionError(errno.EACCES, "Permission denied")
    e.filename = 3  # os.fchmod and friends name the descriptor
    assert os_error_message(e).startswith("permission denied (errno EACCES)")


_WRITER = """
import sys
from londonlm.core.artifacts import read_json, write_json_atomic
from londonlm.core.errors import run_main
run_main(lambda a: write_json_atomic(a[0], {"k": 1}) if a[1] == "write" else read_json(a[0]))
"""


def test_an_unprivileged_user_gets_one_line(tmp_path):
    """Really unprivileged (nobody, when the suite runs as root): a folder it may not write
    in, a file it may not read, and a folder it may not enter."""
    base = reachable_dir()
    ro = base / "project"
    try:
        script = base / "writer.py"
        script.write_text(_WRITER)
        (ro / "run").mkdir(parents=True)
        (ro / "run" / "old.json").write_text('{"old": 1}')
        (ro / "secret.json").write_text("{}")
        (ro / "closed").mkdir()
        (ro / "closed" / "inner.json").write_text("{}")
        make_readable(base)
        (ro / "run").chmod(0o555)
        (ro / "secret.json").chmod(0o000)
        (ro / "closed").chmod(0o000)
        cases = [(ro / "run" / "new.json", "write", f"cannot create {ro / 'run' / 'new.json'}"),
                 (ro / "run" / "old.json", "write", f"cannot write {ro / 'run' / 'old.json'}"),
                 (ro / "secret.json", "read", f"cannot read {ro / 'secret.json'}"),
                 (ro / "closed" / "inner.json", "read", f"cannot reach {ro / 'closed' / 'inner.json'}")]
        for path, mode, words in cases:
            r = run_unprivileged([str(script), str(path), mode], base / "home")
            assert r.returncode == USER_ERROR_EXIT, r.stderr
            assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
            assert words in r.stderr and "permission denied" in r.stderr
        assert (ro / "run" / "old.json").read_text() == '{"old": 1}'
        assert sorted(p.name for p in (ro / "run").iterdir()) == ["old.json"]  # no temp file left
    finally:
        for p in (ro / "run", ro / "secret.json", ro / "closed"):
            if p.exists():
                p.chmod(0o755)
        shutil.rmtree(base)


def test_a_reader_that_goes_away_ends_the_script_quietly():
    """`historical_data_collector.py --list | head` ended in a BrokenPipeError traceback: a script
    whose standard output is closed by its reader stops quietly, with the code a shell tool ended
    by SIGPIPE has (141)."""
    import signal
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, %r)\n"
            "from londonlm.core.errors import run_main\n"
            "def main(argv):\n"
            "    for i in range(10 ** 6):\n"
            "        print('row', i)\n"
            "run_main(main)\n") % str(Path(__file__).resolve().parents[2])
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline() == b"row 0\n"
    p.stdout.close()  # as `head -1` does
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 128 + signal.SIGPIPE and "Traceback" not in err and err == "", err
