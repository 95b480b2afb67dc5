"""Shared parts of the nets that run a stage script end to end over damaged inputs
(the GGUF export's, the token counts', the grid's and the family's): the script run
in this process, in a throwaway working folder, under a drawn file-size limit; the invariant
every run keeps (exit 0, or exit 2 with one ``error:`` line ending stderr; never a traceback,
another code or a hang); earlier final weights kept; and damages to the files of a folder,
drawn as plain data (a failing example prints what was done to which file)."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import resource
import runpy
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import strategies as st

# odd JSON values for a field: zero, negative, huge, fractional, NaN, text, another kind
ODD = [0, -1, 1, 2, 3, 5, 33, 64, 511, 512, 2**31, 2**63, 10**30, 1.5, -0.0, 1e308, float("nan"),
       "2", "", None, True, False, [], {}, [0, 2], "gpt2", "llama", "gelu", "relu", "<|endoftext|>"]
TOKENIZER_KEYS = ("model", "model.type", "model.vocab", "model.merges", "model.dropout",
                  "model.continuing_subword_prefix", "model.end_of_word_suffix", "model.byte_fallback",
                  "model.unk_token", "pre_tokenizer", "pre_tokenizer.add_prefix_space",
                  "pre_tokenizer.use_regex", "normalizer", "added_tokens", "decoder", "post_processor")
TOKENIZER_CONFIG_KEYS = ("eos_token", "bos_token", "pad_token", "unk_token", "model_max_length",
                         "tokenizer_class", "added_tokens_decoder", "additional_special_tokens",
                         "era_width", "clean_up_tokenization_spaces")
TOKENIZER_FIELDS = (("tokenizer.json", TOKENIZER_KEYS), ("tokenizer_config.json", TOKENIZER_CONFIG_KEYS))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(ODD) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


# ---------------------------------------------------------------- damages, drawn as plain data

def file_damages(files: tuple[str, ...]):
    """A damage any file can take: gone, cut at a fraction of its bytes, replaced by bytes or
    by a JSON value of another shape."""
    return st.one_of(
        st.tuples(st.just("delete"), st.sampled_from(files)),
        st.tuples(st.just("truncate"), st.sampled_from(files), st.floats(0, 1)),
        st.tuples(st.just("bytes"), st.sampled_from(files), st.binary(max_size=40)),
        st.tuples(st.just("json"), st.sampled_from(files), json_values))


def field_damages(fields: tuple[tuple[str, tuple[str, ...]], ...]):
    """A field (``a.b``: b inside a) of one of ``fields`` (file, its keys) set to an odd value,
    or dropped."""
    keyed = st.one_of(*(st.tuples(st.just(name), st.sampled_from(keys)) for name, keys in fields))
    value = st.one_of(st.sampled_from(ODD), json_values)
    return st.one_of(keyed.flatmap(lambda fk: st.tuples(st.just("set"), st.just(fk[0]), st.just(fk[1]), value)),
                     keyed.map(lambda fk: ("drop", *fk)))


def tokenizer_damages():
    """A tokenizer.json or tokenizer_config.json field changed, a token's id changed (two
    tokens may then share one, or one lies past the embedding), or a tokenizer of another kind."""
    return st.one_of(
        field_damages(TOKENIZER_FIELDS),
        st.tuples(st.just("token_id"), st.sampled_from(["vocab", "added"]), st.integers(0, 40),
                  st.sampled_from([-1, 0, 458, 459, 511, 512, 10**6, 2**40])),
        st.tuples(st.just("other_tokenizer"), st.sampled_from(["WordLevel", "WordPiece", "Unigram"])))


def _set(obj: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for k in path:
        obj = obj.setdefault(k, {}) if isinstance(obj.get(k), dict) or k not in obj else {}
    obj[last] = value


def _drop(obj: dict, dotted: str) -> None:
    *path, last = dotted.split(".")
    for k in path:
        obj = obj.get(k) if isinstance(obj.get(k), dict) else {}
    obj.pop(last, None)


def edit_json(path: Path, change) -> None:
    """Apply ``change`` to the JSON object in ``path``; a file an earlier damage left no object
    is left as it is."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(obj, dict):
        change(obj)
        path.write_text(json.dumps(obj))


def _other_tokenizer(kind: str) -> str:
    """A whole tokenizer.json of another kind than byte-level BPE."""
    from tokenizers import Tokenizer, models

    vocab = {"<|endoftext|>": 0, "a": 1, "[UNK]": 2}
    model = {"WordLevel": lambda: models.WordLevel(vocab, unk_token="[UNK]"),
             "WordPiece": lambda: models.WordPiece(vocab, unk_token="[UNK]"),
             "Unigram": lambda: models.Unigram([(t, -float(i)) for t, i in vocab.items()], unk_id=2)}[kind]()
    return Tokenizer(model).to_str()


def _token_id(tok: dict, where: str, index: int, new_id: int) -> None:
    if where == "vocab" and isinstance(tok.get("model"), dict) and isinstance(tok["model"].get("vocab"), dict):
        vocab = tok["model"]["vocab"]
        if vocab:
            vocab[sorted(vocab)[index % len(vocab)]] = new_id
    elif where == "added" and isinstance(tok.get("added_tokens"), list) and tok["added_tokens"]:
        entry = tok["added_tokens"][index % len(tok["added_tokens"])]
        if isinstance(entry, dict):
            entry["id"] = new_id


def damage_folder(folder: Path, damage: tuple) -> None:
    """Apply one file, field or tokenizer damage to the file it names in ``folder``."""
    kind = damage[0]
    path = folder / damage[1] if kind in ("delete", "truncate", "bytes", "json", "set", "drop") else None
    if kind == "delete":
        path.unlink(missing_ok=True)
    elif kind == "truncate":
        if path.is_file():  # (an earlier damage may have deleted it)
            data = path.read_bytes()
            path.write_bytes(data[:int(len(data) * damage[2])])
    elif kind == "bytes":
        path.write_bytes(damage[2])
    elif kind == "json":
        path.write_text(json.dumps(damage[2]))
    elif kind == "set":
        edit_json(path, lambda d: _set(d, damage[2], damage[3]))
    elif kind == "drop":
        edit_json(path, lambda d: _drop(d, damage[2]))
    elif kind == "token_id":
        edit_json(folder / "tokenizer.json", lambda d: _token_id(d, *damage[1:]))
    elif kind == "other_tokenizer":
        (folder / "tokenizer.json").write_text(_other_tokenizer(damage[1]))
    else:
        raise ValueError(f"unknown damage {damage!r}")


# ---------------------------------------------------------------- what must survive a run

def final_weights(checkpoints: Path) -> dict[str, str]:
    """Each run's final/model.safetensors sha256, by run name (the runs folder ``checkpoints``)."""
    return {run.name: hashlib.sha256((run / "final" / "model.safetensors").read_bytes()).hexdigest()
            for run in checkpoints.glob("*") if (run / "final" / "model.safetensors").is_file()}


def weights_kept(checkpoints: Path, before: dict[str, str]) -> None:
    """Every earlier final weights file (``before``: :func:`final_weights`) is still somewhere
    under ``checkpoints``: in its run, or in one moved aside (``NAME.previous-*``)."""
    now = {hashlib.sha256(p.read_bytes()).hexdigest() for p in checkpoints.rglob("model.safetensors") if p.is_file()}
    lost = [name for name, h in before.items() if h not in now]
    assert not lost, f"final weights of {lost} are gone"


# ---------------------------------------------------------------- the run and its invariant

class Hang(BaseException):  # not an Exception: a script catching those must not swallow it
    """The command ran past the net's time limit."""


@contextlib.contextmanager
def file_size_limit(limit: int | None):
    """Writes that would make any one file longer than ``limit`` bytes fail, as a full disk
    fails them, at whatever byte the write reaches (RLIMIT_FSIZE; with SIGXFSZ ignored the
    write returns EFBIG, the error a file system's size limit gives, e.g. FAT32's 4 GiB)."""
    if limit is None:
        yield
        return
    old, old_signal = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_signal)


@contextlib.contextmanager
def logging_to(stream):
    """Logging's stream handlers (transformers' and huggingface_hub's hold the stderr of the
    moment they were made: under pytest, its capture file) write to ``stream`` meanwhile, as they
    write to the script's own stderr in a process of its own. (Left on pytest's file, a warning
    under a file-size limit failed there, and logging printed a traceback of that.)"""
    loggers = [logging.getLogger(),
               *(x for x in logging.root.manager.loggerDict.values() if isinstance(x, logging.Logger))]
    # (not a file's, nor one whose stream is a property reading sys.stderr at each write, as
    # logging's last resort does: it follows the redirection already)
    handlers = {h for x in loggers for h in x.handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
                and not isinstance(getattr(type(h), "stream", None), property)}
    moved = [(h, _swap_stream(h, stream)) for h in handlers]
    try:
        yield
    finally:
        for h, old in moved:
            _swap_stream(h, old)


def _swap_stream(handler: logging.StreamHandler, stream):
    """The handler's stream replaced; returns the old one. Not ``setStream``: it flushes the old
    stream first, and a handler made during an earlier test holds that test's capture file,
    closed since ("I/O operation on closed file" in whichever test ran a script next)."""
    handler.acquire()
    try:
        old, handler.stream = handler.stream, stream
    finally:
        handler.release()
    return old


def run_in_process(script: Path, argv: list[str], cwd: Path, env: dict[str, str], limit: int | None = None,
                   timeout: int = 120) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``python script argv`` run in this process (~40 ms where a
    new interpreter takes ~5 s), in ``cwd`` (a drawn relative path lands there, never in the
    repository), with ``env`` added; an exception run_main lets through (a bug) fails the test."""
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_path, saved_cwd = sys.argv, list(sys.path), os.getcwd()
    saved_env = {k: os.environ.get(k) for k in env}

    def hang(*_):
        raise Hang(f"{argv}: still running after {timeout} s")

    old_alarm = signal.signal(signal.SIGALRM, hang)
    sys.argv = [str(script), *argv]
    os.environ.update(env)
    os.chdir(cwd)
    signal.alarm(timeout)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), logging_to(err), file_size_limit(limit):
            runpy.run_path(str(script), run_name="__main__")
        pytest.fail(f"{argv}: the script returned without exiting")
    except SystemExit as e:
        code = e.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_alarm)
        sys.argv, sys.path[:] = saved_argv, saved_path  # (the script puts the repository first)
        os.chdir(saved_cwd)
        for k, v in saved_env.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return code, out.getvalue(), err.getvalue()


def completed_in_process(script: Path, argv: list, cwd: Path, timeout: int = 120,
                         env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """:func:`run_in_process` in ``subprocess.run``'s shape (returncode, stdout, stderr), for
    tests that judge a script's answer to its flags: a new interpreter costs ~10 s of imports
    on 2 cores. What only a process of its own shows (noise C libraries write to fd 2, warnings
    given once per process, what a script imports) stays a real subprocess."""
    code, out, err = run_in_process(Path(script), [str(a) for a in argv], Path(cwd), env or {}, timeout=timeout)
    return subprocess.CompletedProcess([str(script), *map(str, argv)], code, out, err)


def one_error_line(code: int, err: str, argv: list[str]) -> None:
    """Exit 0, or 2 with one ``error:`` line ending stderr; never a traceback."""
    assert "Traceback" not in err, (argv, err[-3000:])
    assert code in (0, 2), (argv, code, err[-3000:])
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert [line for line in lines if line.startswith("error:")] == lines[-1:], (argv, err[-3000:])


def outcome(code: int, err: str, success: str = "written") -> str:
    """A short label of a run for hypothesis' statistics (paths left out, so alike runs count together)."""
    return f"exit {code}: " + (re.sub(r"/\S*", "PATH", err.strip().splitlines()[-1])[:70] if code else success)


def changed_files(before: dict, after: dict) -> list[str]:
    """The files (of two ``tree_digest`` pictures) made, changed or removed between them."""
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
