"""Stage artifacts: atomic writes, hashes and JSON sidecars.

A stage writes its outputs, then its sidecar last (temp file + rename), so a sidecar
exists only for complete outputs. A stage is *current* when its sidecar exists, its
format version matches, the recorded input hashes and settings equal the new ones, and the
outputs it names are still there as they were written (each file's size; a folder's file
count and bytes: cheap enough for every skip, and what a deleted, emptied or truncated
output changes).
"""
from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import importlib
import json
import os
import platform
import re
import secrets
import shutil
import stat
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping, Sequence

from .errors import USER_OS_ERRNOS, LondonLMError, UsageError

SIDECAR_FORMAT = 1
# the libraries whose versions shape a model artifact (tokens, weights)
ARTIFACT_LIBRARIES = ("londonlm", "torch", "transformers", "tokenizers", "numpy")


class StageInputMissing(LondonLMError, FileNotFoundError):
    """An input of a stage does not exist; the message names the command that makes it."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


@contextmanager
def naming(path: str | os.PathLike) -> Iterator[None]:
    """OS errors raised inside name ``path``, the file being made: not the temporary file it
    is written through (a random name the user never asked for), and not nothing (a full
    disk's ``write()`` names no file), so the one-line message says which output failed.
    Other OSErrors (bugs, with a traceback) keep the name they had."""
    try:
        yield
    except OSError as e:
        if e.errno in USER_OS_ERRNOS:
            e.filename, e.filename2 = str(path), None
        raise


def _new_temp(path: Path) -> tuple[int, Path]:
    """A new, empty temporary file beside ``path``, opened for writing. Created with mode 0666
    and the umask applied by the kernel, exactly as ``open(path, "w")`` makes a file
    (``tempfile.mkstemp`` makes 0600, which left every artifact unreadable to the group and
    to others whatever the umask said)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # another writer's temporary file: draw another name
            continue


def current_umask() -> int:
    """This process's umask, read without changing it where Linux shows it (/proc, kernel 4.7+);
    elsewhere set and restored at once (os.umask is the only other way to read it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def give_open_mode(paths) -> None:
    """Give files a library wrote the mode ``open()`` would have: 0666 less the umask. For
    writers that ignore the umask: safetensors 0.8 writes every ``.safetensors`` file 0600
    through a temporary file (safetensors issue #782), so model weights could be read by their
    writer alone."""
    mode = 0o666 & ~current_umask()
    for p in paths:
        os.chmod(p, mode)


# Opening a FIFO for writing waits until something opens it to read: a report path naming a pipe
# nobody reads (a stale FIFO, a reader that died) held the finished stage in open() for ever.
PIPE_READER_WAIT_S = 10.0


class NotARegularFile(LondonLMError):
    """An output path that is there but can be neither replaced by a file nor written as a
    stream: a socket, a block device, a link to a folder, a pipe that nothing reads."""


def _refuse_special(path: str | os.PathLike) -> None:
    """Refuse a ``path`` that is there and no regular file (links followed) nor a stream: the
    rename would replace it (a server's socket, a disk's device node as root, a link to a
    folder) with the file. A folder itself is left to the rename's own EISDIR (one line)."""
    try:
        mode, is_link = os.stat(path).st_mode, os.path.islink(path)
    except (OSError, ValueError):  # absent, a dangling or looping link: a new file is made
        return
    if stat.S_ISREG(mode) or (stat.S_ISDIR(mode) and not is_link):
        return
    what = ("a link to a folder" if stat.S_ISDIR(mode) else "a socket" if stat.S_ISSOCK(mode) else
            "a block device" if stat.S_ISBLK(mode) else "not a regular file")
    raise NotARegularFile(f"{os.fspath(path)} is {what}: name a regular file to write (nothing was written)")


def _open_stream(path: str | os.PathLike, mode: str) -> IO:
    """``path`` (a device, a FIFO, a descriptor's name) opened to append. A pipe is opened
    without blocking, retried until something reads it, and refused after PIPE_READER_WAIT_S;
    once open, its writes block as any pipe's do (a reader that reads slowly is still reading)."""
    mode, text = mode.replace("w", "a"), ({} if "b" in mode else {"encoding": "utf-8"})
    if not stat.S_ISFIFO(os.stat(path).st_mode):
        return open(path, mode, **text)
    give_up = time.monotonic() + PIPE_READER_WAIT_S
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
            break
        except OSError as e:  # ENXIO: no reader yet
            if e.errno != errno.ENXIO:
                raise
            if time.monotonic() >= give_up:
                raise NotARegularFile(f"{os.fspath(path)} is a pipe that nothing opened to read within "
                                      f"{PIPE_READER_WAIT_S:g} s: start its reader first, or name a file "
                                      f"(nothing was written)") from None
            time.sleep(0.05)
    os.set_blocking(fd, True)
    return os.fdopen(fd, mode, **text)


@contextmanager
def read_unchanged(stamp: Callable[[], Any], changed: Callable[[], Exception]) -> Iterator[Callable[[], None]]:
    """A block that reads files another process may replace meanwhile with no lock to stop it (a
    corpus collected again, a model saved again): yields ``unchanged()``, which raises ``changed()``
    when ``stamp()`` is no longer what it was before the block; the reader calls it before it
    vouches for what it read. An error inside the block is named as that change when there was
    one (a file gone under the read), not as its symptom."""
    before = stamp()

    def unchanged() -> None:
        if stamp() != before:
            raise changed()
    try:
        yield unchanged
    except (LondonLMError, OSError):
        unchanged()
        raise


@contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """A file streamed to ``path`` whole or not at all: written through a temporary file beside
    it (the mode ``open()`` would give), fsynced and renamed when the block ends; on any error
    the temporary file goes, the old file stays, and an OS error names ``path``. A stream
    (:func:`is_stream`: ``/dev/null``, a FIFO, ``/dev/stdout``) is written as it is: renaming a
    file over it would replace the device node or the link itself (as root, for everyone); a
    pipe nothing reads is refused after PIPE_READER_WAIT_S (:func:`_open_stream`). Any other
    path that is there and no regular file (a socket, a block device, a link to a folder) is
    refused (:class:`NotARegularFile`) before anything is written: the rename replaced it."""
    if is_stream(path):
        with naming(path), _open_stream(path, mode) as f:
            yield f  # appended: a descriptor's name may lead to a file the shell opened with >>
        return
    _refuse_special(path)
    path = Path(path)
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _new_temp(path)
        try:
            with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


_FD_LINK = re.compile(r"/(?:proc/(?:self|thread-self|\d+)|dev)/fd/\d+")


def is_fd_link(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an open file descriptor (``/dev/stdout``, ``/dev/fd/1``,
    ``/proc/self/fd/1``): its links lead through ``/proc/*/fd/N``. Such a path resolves to a
    pipe's pseudo-name, or to the file the shell opened, perhaps to append (``>> log``): it is
    written as a stream, never replaced."""
    p = os.path.abspath(path)
    for _ in range(40):  # (the kernel's own limit on links followed)
        if _FD_LINK.fullmatch(p):
            return True
        if not os.path.islink(p):
            return False
        p = os.path.normpath(os.path.join(os.path.dirname(p), os.readlink(p)))
    return False


def is_stream(path: str | os.PathLike) -> bool:
    """Whether ``path`` is written as a stream rather than replaced: a character device or a
    pipe (``/dev/null``, a FIFO), or the name of an open descriptor (:func:`is_fd_link`)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or is_fd_link(path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all (a temporary file, fsync, rename)."""
    with atomic_writer(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Hard-link ``src`` to ``dst`` when the file system allows (weights and token caches can be
    GBs), else copy it. An existing ``dst`` is replaced unless it already is the same file. A
    ``src`` that is a symlink is linked as the file it names: Linux's link() links the symlink
    itself, and a relative one (a Hugging Face cache snapshot's ``../../blobs/<sha>``) then
    named nothing from ``dst``'s folder (a staged upload held no config.json)."""
    src, dst = Path(os.path.realpath(src)), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(dst):
        if dst.exists() and os.path.samefile(src, dst):
            return dst
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_json_object(path: str | os.PathLike) -> dict:
    """A JSON object a stage wrote (a sidecar, a run's record), or ``{}`` when the file is absent,
    unreadable, damaged or not an object: such a record vouches for nothing. (Its readers used
    ``read_json(path).get(...)``, which a sidecar holding ``[1, 2]`` turned into a traceback.)"""
    try:
        obj = read_json(path)
    except (OSError, ValueError, RecursionError):
        return {}
    return obj if isinstance(obj, dict) else {}


def record_field(record: Any, *keys: str, kind: type | tuple[type, ...] = object) -> Any:
    """``record[k1][k2]...`` through JSON objects only; ``None`` where a level is missing or not
    an object, or where the value is not of ``kind``: a hand-edited record reads as one that
    says nothing, never as an AttributeError."""
    for key in keys:
        record = record.get(key) if isinstance(record, dict) else None
    return record if isinstance(record, kind) else None


def versions(libraries: Sequence[str] = ARTIFACT_LIBRARIES, *, import_missing: bool = True) -> dict[str, str]:
    """Versions of the libraries that shape the artifacts. ``import_missing=False`` reports only
    libraries already imported: importing torch and transformers costs seconds that a CPU-only
    stage (the corpus) need not spend."""
    out = {"python": platform.python_version()}
    for name in libraries:
        mod = sys.modules.get(name)
        if mod is None and import_missing:
            try:
                mod = importlib.import_module(name)
            except Exception:
                continue
        version = getattr(mod, "__version__", None)
        if version:
            out[name] = str(version)
    return out


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# A vouched-for file up to this size also has its content recorded: a file edited to the same
# size (a tokenizer.json merge's letter changed by hand, a chat statistic) was "current" by its
# size alone. Tokenizers, cards and statistics are a few MB, hashed in milliseconds at each check;
# larger files (none a stage vouches for today) keep the size alone, checked for free.
HASHED_OUTPUT_BYTES = 64 << 20


def output_footprint(path: Path) -> dict | None:
    """What a written output looks like: a file's size (and its sha256 up to
    :data:`HASHED_OUTPUT_BYTES`), a folder's file count and bytes (recursively); None when it is
    gone."""
    if path.is_file():
        size = path.stat().st_size
        return {"bytes": size, "sha256": sha256_file(path)} if size <= HASHED_OUTPUT_BYTES else {"bytes": size}
    if not path.is_dir():
        return None
    files = total = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:  # a dangling link: counts as a file of no bytes
                pass
            files += 1
    return {"files": files, "bytes": total}


def _footprint_matches(path: Path, recorded) -> bool:
    """Whether ``path`` still has the footprint a sidecar recorded, on the facts it recorded (a
    sidecar written before contents were hashed vouches by size, as it did)."""
    now = output_footprint(path)
    if now is None or not isinstance(recorded, dict):
        return now == recorded
    return set(recorded) <= set(now) and all(now[k] == v for k, v in recorded.items())


def write_sidecar(path: str | os.PathLike, stage: str, inputs: dict[str, str],
                  settings: dict[str, Any], counts: dict[str, Any] | None = None,
                  extra: dict[str, Any] | None = None,
                  libraries: Sequence[str] | None = None, outputs: Sequence[str] = ()) -> Path:
    """Write a stage sidecar: format version, stage, inputs' hashes, settings, counts, time.
    ``libraries``: record only these libraries' versions, and only if already imported.
    ``outputs``: the files and folders (beside the sidecar) it vouches for, recorded as they
    are now, so that a later check finds one deleted or damaged since (:func:`sidecar_current`)."""
    vers = versions() if libraries is None else versions(libraries, import_missing=False)
    folder = Path(path).parent
    obj = {"format_version": SIDECAR_FORMAT, "stage": stage, "created": now_iso(),
           "versions": vers, "inputs": inputs, "settings": settings,
           "counts": counts or {}}
    if outputs:
        obj["outputs"] = {name: output_footprint(folder / name) for name in outputs}
    if extra:
        obj.update(extra)
    return write_json_atomic(path, obj)


def _sidecar_record(path: Path) -> tuple[dict | None, str]:
    """(the sidecar's record, "") or (None, why it is none: absent, unreadable, another format)."""
    if not path.exists():
        return None, "no previous output"
    try:
        old = read_json(path)
    except Exception as e:
        return None, f"sidecar unreadable ({e})"
    if not isinstance(old, dict):
        return None, f"sidecar unreadable (a JSON {type(old).__name__}, not a stage's record)"
    if old.get("format_version") != SIDECAR_FORMAT:
        return None, "sidecar format changed"
    return old, ""


def _outputs_changed(path: Path, record: dict) -> str | None:
    """The first output ``record`` vouches for that is gone or changed since, in words."""
    outputs = record.get("outputs") or {}
    for name, footprint in (outputs.items() if isinstance(outputs, dict) else ()):
        if not _footprint_matches(path.parent / name, footprint):
            return f"{name} was deleted or changed since it was written"
    return None


def sidecar_intact(path: str | os.PathLike) -> tuple[bool, str]:
    """(is_intact, reason): the sidecar is there and readable, and the outputs it recorded are
    still as they were written, whatever inputs and settings it names (a reader's check that
    the stage before it finished: :func:`sidecar_current` is the stage's own)."""
    path = Path(path)
    record, why = _sidecar_record(path)
    changed = None if record is None else _outputs_changed(path, record)
    return (record is not None and changed is None), (why or changed or "outputs are as written")


def sidecar_current(path: str | os.PathLike, inputs: dict[str, str],
                    settings: dict[str, Any]) -> tuple[bool, str]:
    """(is_current, reason). Current when the sidecar exists, inputs/settings agree and the
    outputs it recorded are still as they were written."""
    path = Path(path)
    old, why = _sidecar_record(path)
    if old is None:
        return False, why
    old_inputs, old_settings = (v if isinstance(v, dict) else {} for v in (old.get("inputs"), old.get("settings")))
    if old.get("inputs") != inputs:
        changed = sorted(k for k in set(inputs) | set(old_inputs) if inputs.get(k) != old_inputs.get(k))
        return False, f"inputs changed: {', '.join(changed) or 'inputs'}"
    # compare through JSON so tuples/lists and path objects compare as they were stored
    new = json.loads(json.dumps(settings, default=str))
    if new != old.get("settings"):
        changed = sorted(k for k in set(new) | set(old_settings) if new.get(k) != old_settings.get(k))
        return False, f"settings changed: {', '.join(changed) or 'settings'}"
    changed = _outputs_changed(path, old)
    return (False, changed) if changed else (True, "outputs are current")


# ---------------------------------------------------------------- where a stage may write
# A report (count_tokens.py --output, test_tokenizer.py --json) or a tokenizer (--output_dir)
# written into the corpus folder or the tokenizer folder the command reads would replace a
# manifest, a text or a tokenizer file with exit 0. Paths are compared resolved (symbolic links
# followed, ``..`` folded); a hard link is harmless, since outputs are replaced by a rename,
# which breaks the link instead of writing through it.
def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def refuse_output_over_inputs(flag: str, output: str | os.PathLike,
                              inputs: Mapping[str, str | os.PathLike], inside: bool = True) -> None:
    """One line when ``output`` is, or lies inside, one of ``inputs`` (what it is -> a file or
    folder the command reads); nothing has been written then. ``inside=False``: only when it is
    one of them (a report folder may sit in a model's folder, not be it: its files would mix
    with the model's and change what the model folder holds)."""
    real = os.path.realpath(output)
    for what, path in inputs.items():
        if _within(real, os.path.realpath(path)) if inside else real == os.path.realpath(path):
            where = "is" if real == os.path.realpath(path) else "lies inside"
            raise UsageError(f"{flag} {os.fspath(output)} {where} {what} {os.fspath(path)}, which this "
                             f"command reads: name a path outside it; nothing was written")


def refuse_foreign_folder(side: str | os.PathLike, stage: str, flag: str) -> None:
    """One line when the folder of sidecar ``side`` holds another stage's outputs (the sidecar
    names that stage): writing there would mix files and replace that stage's sidecar with this one's."""
    folder = os.path.dirname(side)
    try:
        owner = read_json(side).get("stage") if os.path.isfile(side) else None
    except (ValueError, AttributeError, RecursionError):  # unreadable, or no object: no stage named
        return
    if isinstance(owner, str) and owner != stage:
        raise UsageError(f"{flag} {os.fspath(folder)} holds the outputs of the '{owner}' stage "
                         f"({side} says so): name another folder for the {stage}; nothing was written")


def require_input(path: str | os.PathLike, command: str, what: str = "input") -> Path:
    """Fail with a message naming the command that produces a missing input."""
    path = Path(path)
    if not path.exists():
        raise StageInputMissing(f"{what} not found: {path}. Run `{command}` first.")
    return path


def current_or_make(path: Path, model: dict, settings: dict, make, overwrite: bool, log,
                    name: str, fits=None):
    """``make()``'s result, stored in ``path`` with the model it describes and the settings
    it was made with, and reused only while both are the same: a figure or sample never
    outlives the weights it came from. A stored result that is missing, or not of the shape
    ``fits`` asks (edited by hand, written by another version), is made again: reused, it was
    a KeyError or TypeError traceback in the caller that read it."""
    try:
        old = read_json(path) if path.is_file() else None
    except ValueError:  # a torn or hand-edited file: made again
        old = None
    if not overwrite and isinstance(old, dict) and old.get("model") == model \
            and old.get("settings") == json.loads(json.dumps(settings)):
        if "result" in old and (fits is None or fits(old["result"])):
            log(f"{name}: outputs are current ({path}); skipping")
            return old["result"]
        log(f"{name}: {path} does not hold a result of the shape this stage writes; making it again")
    result = make()
    write_json_atomic(path, {"model": model, "settings": settings, "result": result})
    return result
