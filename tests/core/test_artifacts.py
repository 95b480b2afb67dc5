import errno
import json
import os
import stat

import pytest

from londonlm.core.artifacts import (StageInputMissing, atomic_writer, is_stream, require_input, sha256_file,
                                sidecar_current, sidecar_intact, write_json_atomic, write_sidecar)


def test_atomic_json_and_hash(tmp_path):
    p = write_json_atomic(tmp_path / "a" / "x.json", {"k": 1})
    assert json.loads(p.read_text()) == {"k": 1}
    assert not list(p.parent.glob(".*tmp"))  # no temp file left behind
    assert len(sha256_file(p)) == 64


def test_sidecar_current_and_changes(tmp_path):
    sc = tmp_path / "sidecar.json"
    assert sidecar_current(sc, {"a": "1"}, {"v": 2}) == (False, "no previous output")
    write_sidecar(sc, "stage", {"a": "1"}, {"v": 2, "t": (1, 2)}, {"n": 3})
    assert sidecar_current(sc, {"a": "1"}, {"v": 2, "t": (1, 2)})[0]
    ok, why = sidecar_current(sc, {"a": "2"}, {"v": 2, "t": (1, 2)})
    assert not ok and "inputs changed: a" in why
    ok, why = sidecar_current(sc, {"a": "1"}, {"v": 3, "t": (1, 2)})
    assert not ok and "settings changed: v" in why
    sc.write_text("{broken")
    assert not sidecar_current(sc, {"a": "1"}, {"v": 2})[0]
    # valid JSON that is no sidecar (a list, null, inputs that are no object): not current, no crash
    for text in ("[]", "null", '"x"', '{"format_version": 1, "inputs": "x", "settings": []}'):
        sc.write_text(text)
        ok, why = sidecar_current(sc, {"a": "1"}, {"v": 2})
        assert not ok and why


def test_sidecar_vouches_only_for_outputs_still_as_written(tmp_path):
    """A stage's outputs deleted, emptied or cut short after its sidecar was written are rebuilt,
    not skipped as current (a rerun would otherwise skip forever while the next stage fails)."""
    (tmp_path / "manifest.jsonl").write_text('{"id": "a"}\n')
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("some text")
    sc = tmp_path / "sidecar.json"
    write_sidecar(sc, "stage", {"a": "1"}, {}, outputs=["manifest.jsonl", "texts"])
    assert sidecar_current(sc, {"a": "1"}, {}) == (True, "outputs are current")
    for damage, name in ((lambda: (tmp_path / "texts" / "a.txt").write_text("some"), "texts"),
                         (lambda: (tmp_path / "texts" / "a.txt").unlink(), "texts"),
                         (lambda: (tmp_path / "manifest.jsonl").write_text(""), "manifest.jsonl"),
                         (lambda: (tmp_path / "manifest.jsonl").unlink(), "manifest.jsonl")):
        damage()
        ok, why = sidecar_current(sc, {"a": "1"}, {})
        assert not ok and why == f"{name} was deleted or changed since it was written"
        (tmp_path / "texts" / "a.txt").write_text("some text")
        (tmp_path / "manifest.jsonl").write_text('{"id": "a"}\n')
        assert sidecar_current(sc, {"a": "1"}, {})[0]
    # a sidecar written before outputs were recorded stays current
    write_sidecar(sc, "stage", {"a": "1"}, {})
    (tmp_path / "manifest.jsonl").unlink()
    assert sidecar_current(sc, {"a": "1"}, {})[0]


def test_a_vouched_file_edited_to_the_same_size_is_changed_and_an_old_size_record_still_holds(tmp_path):
    """A small output's content is recorded, not its size alone: a tokenizer.json merge edited by
    hand to the same size was "current". A sidecar written before contents were recorded (its
    footprint a size) still vouches by the size, so an upgrade rebuilds nothing."""
    (tmp_path / "tokenizer.json").write_text('{"merges": ["a b"]}')
    sc = tmp_path / "sidecar.json"
    write_sidecar(sc, "stage", {"a": "1"}, {}, outputs=["tokenizer.json"])
    assert sidecar_current(sc, {"a": "1"}, {})[0] and sidecar_intact(sc)[0]
    (tmp_path / "tokenizer.json").write_text('{"merges": ["a c"]}')  # same size, other content
    assert sidecar_current(sc, {"a": "1"}, {}) == (False, "tokenizer.json was deleted or changed since it was written")
    assert not sidecar_intact(sc)[0]
    record = json.loads(sc.read_text())
    record["outputs"]["tokenizer.json"] = {"bytes": (tmp_path / "tokenizer.json").stat().st_size}
    sc.write_text(json.dumps(record))
    assert sidecar_current(sc, {"a": "1"}, {})[0]


def test_a_sidecar_is_intact_while_its_outputs_are_as_written_whatever_it_names(tmp_path):
    """What a later stage asks of an earlier one's folder (did it finish, and is it untouched
    since?) without knowing the inputs and settings it was made with."""
    (tmp_path / "manifest.jsonl").write_text('{"id": "a"}\n')
    sc = tmp_path / "sidecar.json"
    assert sidecar_intact(sc) == (False, "no previous output")
    write_sidecar(sc, "stage", {"a": "1"}, {"v": 2}, outputs=["manifest.jsonl"])
    assert sidecar_intact(sc) == (True, "outputs are as written")
    (tmp_path / "manifest.jsonl").write_text('{"id": "b"}\n{"id": "c"}\n')
    assert sidecar_intact(sc) == (False, "manifest.jsonl was deleted or changed since it was written")
    for text in ("{broken", "[]", '{"format_version": -1}'):
        sc.write_text(text)
        ok, why = sidecar_intact(sc)
        assert not ok and "sidecar" in why


def test_require_input_names_command(tmp_path):
    try:
        require_input(tmp_path / "nope", "python make_it.py", "thing")
    except StageInputMissing as e:
        assert "python make_it.py" in str(e)
    else:
        raise AssertionError("expected StageInputMissing")


def test_sidecar_can_record_only_libraries_already_loaded(tmp_path, monkeypatch):
    import sys

    from londonlm.core.artifacts import read_json, versions

    (tmp_path / "londonlm_probe_lib.py").write_text("__version__ = '1.2'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "londonlm_probe_lib", raising=False)
    sc = write_sidecar(tmp_path / "a.json", "corpus", {}, {}, libraries=["londonlm_probe_lib", "json"])
    assert set(read_json(sc)["versions"]) <= {"python", "json"}  # not imported just to be listed
    assert "londonlm_probe_lib" not in sys.modules
    assert versions(["londonlm_probe_lib", "not_a_module_xyz"])["londonlm_probe_lib"] == "1.2"
    sc = write_sidecar(tmp_path / "b.json", "corpus", {}, {}, libraries=["londonlm_probe_lib"])
    assert read_json(sc)["versions"]["londonlm_probe_lib"] == "1.2"  # loaded now: recorded


def test_missing_input_is_a_user_error(tmp_path):
    from londonlm.core.errors import LondonLMError

    try:
        require_input(tmp_path / "nope", "python make_it.py")
    except LondonLMError as e:  # scripts print it as one line and exit 2
        assert isinstance(e, FileNotFoundError)
    else:
        raise AssertionError("expected StageInputMissing")


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_take_the_mode_open_would(tmp_path, umask):
    """0666 less the umask, as open() makes a file (mkstemp's 0600 hid every artifact from the
    group and from other users, whatever the umask said)."""
    old = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "a.json", {})
        with open(tmp_path / "plain.json", "w"):
            pass
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.json").stat().st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_a_streamed_atomic_file_is_whole_or_absent_with_the_mode_open_would_give(tmp_path, umask):
    old = os.umask(umask)
    try:
        with atomic_writer(tmp_path / "rows.jsonl") as f:
            f.write("één\n")
            assert not (tmp_path / "rows.jsonl").exists()  # not before the block ends
    finally:
        os.umask(old)
    assert (tmp_path / "rows.jsonl").read_text(encoding="utf-8") == "één\n"
    assert stat.S_IMODE((tmp_path / "rows.jsonl").stat().st_mode) == 0o666 & ~umask
    with pytest.raises(ValueError):
        with atomic_writer(tmp_path / "rows.jsonl") as f:
            f.write("half")
            raise ValueError("a row went wrong")
    assert _listing(tmp_path) == {"rows.jsonl": "één\n".encode()}  # the old file, no temporary left


def _listing(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("where, exc", [
    ("replace", PermissionError(errno.EACCES, "Permission denied")),
    ("fsync", OSError(errno.ENOSPC, "No space left on device")),
    ("open", PermissionError(errno.EACCES, "Permission denied")),
])
def test_a_failed_atomic_write_names_its_file_and_changes_nothing(tmp_path, monkeypatch, where, exc):
    """The error names the file asked for (not the temporary file, not nothing: a full disk's
    write names no file), the old file stays, and no temporary file is left."""
    target = tmp_path / "out.json"
    target.write_text('{"old": 1}')
    before = _listing(tmp_path)
    real = getattr(os, where)

    def failing(*args, **kwargs):
        if where == "open" and not str(args[0]).startswith(str(tmp_path)):
            return real(*args, **kwargs)
        e = type(exc)(exc.errno, exc.strerror, str(tmp_path / ".out.json.1234.tmp")) if where != "fsync" else exc
        raise e

    monkeypatch.setattr(os, where, failing)
    with pytest.raises(OSError) as caught:
        write_json_atomic(target, {"new": 1})
    monkeypatch.undo()
    assert caught.value.filename == str(target) and caught.value.errno == exc.errno
    assert _listing(tmp_path) == before


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_give_open_mode_mends_a_library_that_ignores_the_umask(tmp_path, umask):
    """safetensors 0.8 writes its files 0600 whatever the umask (safetensors issue #782):
    give_open_mode gives them the mode open() would have, as every other file of a model
    folder has."""
    import torch
    from safetensors.torch import save_file

    from londonlm.core import give_open_mode
    from londonlm.core.artifacts import current_umask

    old = os.umask(umask)
    try:
        assert current_umask() == umask
        save_file({"w": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
        give_open_mode([tmp_path / "model.safetensors"])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "model.safetensors").stat().st_mode) == 0o666 & ~umask


def test_a_full_disk_under_scratch_tables_is_an_os_error_naming_the_file(tmp_path):
    """SQLite says "database or disk is full" as its own error; the stages report an OSError
    the user can mend in one line, so the scratch tables turn it into one, and remove the file."""
    import errno

    from londonlm.core import ScratchTables
    from londonlm.core.errors import os_error_message

    class Rows(ScratchTables):
        SCHEMA = "CREATE TABLE t (x BLOB);"

    path = tmp_path / "scratch.sqlite"
    with pytest.raises(OSError) as caught:
        with Rows(path) as rows:
            rows.db.execute("PRAGMA max_page_count = 3")  # a disk with room for three pages
            for _ in range(100):
                rows.db.execute("INSERT INTO t VALUES (?)", (b"x" * 4000,))
    assert caught.value.errno == errno.ENOSPC and str(path) in os_error_message(caught.value)
    assert not path.exists()
    with pytest.raises(ZeroDivisionError):  # anything else passes through as it was
        with Rows(path):
            1 / 0


def test_a_pipe_or_a_descriptor_is_written_as_it_is_never_replaced(tmp_path):
    """Renaming a finished file over a FIFO (or, as root, over /dev/null or the /dev/stdout
    link) replaced the node itself: now a stream is written to, and stays what it was."""
    import threading

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    write_json_atomic(fifo, {"a": 1})
    reader.join(timeout=30)
    assert json.loads(got[0]) == {"a": 1} and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    r, w = os.pipe()
    try:
        link = tmp_path / "stdout"
        link.symlink_to(f"/proc/self/fd/{w}")  # what /dev/stdout is
        assert is_stream(link) and is_stream(os.devnull) and not is_stream(tmp_path / "absent")
        write_json_atomic(link, {"b": 2})
        os.close(w)
        w = None
        assert json.loads(os.read(r, 1000)) == {"b": 2} and link.is_symlink()
    finally:
        os.close(r)
        if w is not None:
            os.close(w)
    assert not is_stream(tmp_path) and not is_stream(tmp_path / "x")


def test_a_record_that_is_not_a_json_object_reads_as_empty(tmp_path):
    from londonlm.core import read_json_object, record_field

    p = tmp_path / "r.json"
    assert read_json_object(p) == {}                   # absent
    for text, expect in [("[1, 2]", {}), ("null", {}), ("{bad", {}), ("[" * 100_000, {}),
                         ('{"a": {"b": 3}}', {"a": {"b": 3}})]:
        p.write_text(text)
        assert read_json_object(p) == expect, text
    p.write_bytes(b"\xff\xfe")
    assert read_json_object(p) == {}
    rec = {"a": {"b": 3, "c": [1]}, "d": "x"}
    assert record_field(rec, "a", "b") == 3 and record_field(rec, "a", "b", kind=int) == 3
    assert record_field(rec, "a", "c", kind=dict) is None and record_field(rec, "d", "e") is None
    assert record_field([1], "a") is None and record_field(rec, "z", "y") is None
