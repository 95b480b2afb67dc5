"""The GGUF export (``10_scripts/export_gguf.py``) past its argument parsing: hypothesis draws
flags from the script's own parser (:mod:`flags_fuzz`) together with a damaged model folder
(config.json, model.safetensors, tokenizer.json or tokenizer_config.json missing, cut at any
byte, not JSON, JSON of another shape, fields of the wrong size or kind; weights of another
dtype, a header that lies, NaN, a vocabulary padded, shrunk or grown), an output folder that
cannot take the files (a file, a device, an input, a folder where a file goes, another stage's
folder) and a file system that refuses writes past a drawn size, then runs the command end to
end. Each run exits 0 with GGUF files the ``gguf`` package reads back whole (the tensors a
GPT-2 of that depth has, one token per embedding row), or exits 2 with one ``error:`` line
ending stderr and every file exactly as it was (a previous good export kept, no half-written
or temporary file); never a traceback, another code or a hang.

The runs are in this process (:func:`script_fuzz.run_in_process`: ~40 ms a run where a new
interpreter takes ~5 s), in a temporary working folder, so a drawn relative path lands there
and never in the repository. An unwritable output folder needs a user without root's power
over file modes: that net runs the script as ``nobody`` (:mod:`unprivileged`) in a new
interpreter, a few examples only. The cases the nets found follow as plain tests."""
from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import REPO, tree_digest
from flags_fuzz import drawn_argv, flag_strategy, script_actions
from script_fuzz import (changed_files, damage_folder, edit_json, field_damages, file_damages, one_error_line, outcome,
                         run_in_process, tokenizer_damages)

gguf = pytest.importorskip("gguf")

# examples per run (~25 ms each); LONDONLM_FUZZ_EXAMPLES=2000 searches longer (~1.5 min)
EXAMPLES = int(os.environ.get("LONDONLM_FUZZ_EXAMPLES", 200))
# the unprivileged net's examples start a new interpreter each (~1.5 s)
UNPRIVILEGED_EXAMPLES = max(3, EXAMPLES // 100)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
SCRIPT = REPO / "10_scripts" / "export_gguf.py"
# the net sets the project root itself, and draws the output folder with the damages below
SKIP = {"root", "out_dir"}
RUN = "micro"
FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
         "generation_config.json")
CONFIG_KEYS = ("n_embd", "n_head", "n_layer", "n_positions", "vocab_size", "n_inner", "n_ctx",
               "layer_norm_epsilon", "model_type", "activation_function", "tie_word_embeddings",
               "bos_token_id", "eos_token_id", "pad_token_id", "architectures", "scale_attn_weights",
               "scale_attn_by_inverse_layer_idx", "add_cross_attention", "torch_dtype", "dtype")
HEADER_FIELDS = ("dtype", "shape", "data_offsets")
DTYPES = ("float16", "bfloat16", "float32", "float64", "int8")
TENSORS = ("transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.attn.c_attn.weight",
           "transformer.h.1.mlp.c_proj.bias", "transformer.ln_f.weight")
WEIGHT_DAMAGES = ("dtype", "nan", "drop_tensor", "extra_tensor", "rows", "header_len", "header", "metadata")


# ---------------------------------------------------------------- damages, drawn as plain data

def _weights_damage():
    """model.safetensors rewritten: another dtype, NaN, a tensor dropped or added, the embedding
    shrunk or grown (config.json's vocab_size following or not), a header that lies."""
    return st.one_of(
        st.tuples(st.just("dtype"), st.sampled_from(DTYPES), st.sampled_from(TENSORS + ("all",))),
        st.tuples(st.just("nan"), st.sampled_from(TENSORS)),
        st.tuples(st.just("drop_tensor"), st.sampled_from(TENSORS)),
        st.tuples(st.just("extra_tensor"), st.sampled_from(["transformer.h.2.ln_1.weight", "lm_head.weight",
                                                            "transformer.h.0.attn.bias", "foo"])),
        st.tuples(st.just("rows"), st.sampled_from([1, 64, 256, 458, 459, 460, 512, 640]), st.booleans()),
        st.tuples(st.just("header_len"), st.sampled_from([0, 1, 7, -8, 8, 2**32, 2**63, 2**64 - 1])),
        st.tuples(st.just("header"), st.sampled_from(TENSORS), st.sampled_from(HEADER_FIELDS),
                  st.sampled_from(["F16", "BF16", "F64", "I8", "Q8", [1], [32, 32], [0, 10**12], [5, 3],
                                   [-1, 4], None, "x"])),
        st.tuples(st.just("metadata"), st.sampled_from([{"format": "tf"}, [1], "x", {"format": 5}, None])))


# half the models whole (the outputs and the disk then decide), half with one or two damages
damages = st.one_of(st.just([]), st.lists(
    st.one_of(file_damages(FILES), field_damages((("config.json", CONFIG_KEYS),)), tokenizer_damages(),
              _weights_damage()), min_size=1, max_size=2))
WRITABLE = ("default", "fresh", "nested", "relative")
OUTPUTS = WRITABLE + ("file", "under_file", "dev_full", "dev_null", "empty", "model", "input_file",
                      "folder_in_place", "foreign")
# half the runs write where a GGUF file can go: the other outputs are mostly refused at parsing
outputs = st.one_of(st.sampled_from(WRITABLE), st.sampled_from(OUTPUTS))


def _rewrite_header(path: Path, change) -> None:
    """model.safetensors with its header JSON changed by ``change`` and the data left as it was."""
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + size])
    change(header)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + size:])


def _damage_weights(model: Path, damage: tuple) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    path, (kind, *args) = model / "model.safetensors", damage
    if kind == "header_len":
        path.write_bytes(struct.pack("<Q", args[0] % 2**64) + path.read_bytes()[8:])
        return
    if kind in ("header", "metadata"):
        key, field, value = args if kind == "header" else ("__metadata__", None, args[0])
        _rewrite_header(path, lambda h: h.__setitem__(key, value) if field is None
                        else isinstance(h.get(key), dict) and h[key].__setitem__(field, value))
        return
    state = load_file(str(path))
    if kind == "dtype":
        state = {k: v.to(getattr(torch, args[0])) if args[1] in ("all", k) else v for k, v in state.items()}
    elif kind == "nan" and args[0] in state:
        state[args[0]].view(-1)[0] = float("nan")
    elif kind == "drop_tensor":
        state.pop(args[0], None)
    elif kind == "extra_tensor":
        state[args[0]] = torch.zeros(32) if "ln_1" in args[0] or args[0] == "foo" else torch.zeros(512, 32)
    elif kind == "rows":
        wte = state["transformer.wte.weight"]
        grown = torch.cat([wte, torch.randn(max(0, args[0] - len(wte)), wte.shape[1]) * 0.02])
        state["transformer.wte.weight"] = grown[:args[0]].contiguous()
        if args[1]:  # config.json says the new size too
            edit_json(model / "config.json", lambda d: d.update(vocab_size=args[0]))
    save_file(state, str(path), metadata={"format": "pt"})


def damage_model(model: Path, damage: tuple) -> None:
    """Apply one drawn damage; one meeting a file an earlier damage already broke past reading
    (a weights file cut in two cannot be re-dtyped) leaves it as it is."""
    try:
        if damage[0] in WEIGHT_DAMAGES:
            _damage_weights(model, damage)
        else:
            damage_folder(model, damage)
    except Exception:  # noqa: BLE001 (safetensors raises its own Exception; the test's step, not the command's)
        pass


# ---------------------------------------------------------------- the project, the output, the run

@pytest.fixture(scope="module")
def previous_export(tiny_model_dir, tmp_path_factory) -> Path:
    """A good export of the undamaged model, named as the run's: the files a failed export must
    leave exactly as they are (and a current one, which an undamaged rerun skips)."""
    from londonlm.export.gguf import GGUFOptions, export_gguf

    out = tmp_path_factory.mktemp("previous_gguf")
    export_gguf(tiny_model_dir, out, GGUFOptions(stem=RUN), log=lambda *_: None)
    return out


def make_project(tmp: Path, tiny_model_dir: Path) -> Path:
    """A project root holding run ``micro`` with the tiny model as its final model; the run folder."""
    run = tmp / "root" / "09_models" / "checkpoints" / RUN
    shutil.copytree(tiny_model_dir, run / "final")
    (run / "run_info.json").write_text(json.dumps({"global_step": 4}))
    return run


def make_output(kind: str, tmp: Path, run: Path, cwd: Path) -> tuple[list[str], Path | None]:
    """The ``--out_dir`` words for ``kind`` and the folder the files would go in (None where no
    folder can take them)."""
    (tmp / "file.txt").write_text("a file the user keeps")
    where = {"default": run / "gguf", "fresh": tmp / "out", "nested": tmp / "a" / "b" / "c", "relative": cwd / "x",
             "model": run / "final", "folder_in_place": tmp / "out", "foreign": tmp / "out"}.get(kind)
    words = {"default": None, "relative": "x", "file": str(tmp / "file.txt"),
             "under_file": str(tmp / "file.txt" / "x"), "dev_full": "/dev/full", "dev_null": "/dev/null", "empty": "",
             "input_file": str(run / "final" / "config.json")}.get(kind, str(where))
    if kind == "folder_in_place":  # a folder where the f16 file goes, holding a file of its own
        (where / f"{RUN}-f16.gguf").mkdir(parents=True)
        (where / f"{RUN}-f16.gguf" / "notes.txt").write_text("kept")
    if kind == "foreign":  # another stage's outputs
        where.mkdir(parents=True)
        (where / "sidecar.json").write_text(json.dumps({"stage": "tokenizer", "inputs": {}, "settings": {}}))
    return ([] if words is None else ["--out_dir", words]), where


# ---------------------------------------------------------------- what a run must leave

def check_gguf(path: Path, n_layer: int | None) -> None:
    """``path`` read back whole by the gguf package: a GPT-2 of the config's depth, every
    tensor it has, one token per embedding row."""
    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items()}
    tensors = {t.name: t for t in reader.tensors}
    assert fields["general.architecture"] == "gpt2", path
    depth = fields["gpt2.block_count"]
    assert n_layer is None or depth == n_layer, (path, depth, n_layer)
    assert len(tensors) == 12 * depth + 5, (path, sorted(tensors))
    rows = int(tensors["token_embd.weight"].shape[-1])
    assert len(fields["tokenizer.ggml.tokens"]) == len(fields["tokenizer.ggml.token_type"]) == rows, path


def check_outputs(before: dict, after: dict, tmp: Path, out: str, folder: Path | None, types: list[str],
                  n_layer: int | None, argv: list[str]) -> None:
    """After exit 0: nothing removed; the files that changed are GGUF files of the types asked
    for and the sidecar, in one folder (``folder`` when the net knows it); every file the run
    says it wrote (``gguf: wrote PATH``, relative to the run's working folder ``tmp/cwd``) is
    whole, one per type. (A rebuild of the same inputs writes the same bytes: then only the
    sidecar changes.)"""
    assert set(before) <= set(after), (argv, sorted(set(before) - set(after)))
    changed = sorted(tmp / p for p in after if before.get(p) != after[p])
    assert len({p.parent for p in changed}) <= 1 and all(folder is None or p.parent == folder for p in changed), \
        (argv, changed)
    assert all(p.name == "sidecar.json" or p.name.endswith(tuple(f"-{t}.gguf" for t in types)) for p in changed), \
        (argv, changed)
    written = [tmp / "cwd" / line.split(" ", 2)[2].rsplit(" (", 1)[0] for line in out.splitlines()
               if line.startswith("gguf: wrote ")]
    if "skipping" in out:
        assert not written and not changed, (argv, out)
        return
    assert sorted(p.name.rsplit("-", 1)[-1] for p in written) == sorted(f"{t}.gguf" for t in set(types)), (argv, out)
    assert all(p.parent.resolve() == written[0].parent.resolve() and (p.parent / "sidecar.json").is_file()
               for p in written), (argv, out)
    for p in written:
        check_gguf(p, n_layer)


def _types(flags: list[tuple[str, list[str]]]) -> list[str]:
    return dict(flags).get("--types", ["f16", "q8_0"])


def _n_layer(model: Path) -> int | None:
    try:
        return json.loads((model / "config.json").read_text())["n_layer"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------- the nets

@given(data=st.data(), model_damages=damages, output=outputs, previous=st.booleans(),
       limit=st.one_of(st.none(), st.none(), st.integers(0, 200_000)))
@FUZZ
def test_any_flags_and_damaged_model_export_whole_files_or_one_line(data, model_damages, output, previous,
                                                                    limit, tiny_model_dir, previous_export):
    flags = data.draw(st.lists(flag_strategy(script_actions(SCRIPT, SKIP)), max_size=3,
                               unique_by=lambda fv: fv[0]), label="flags")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        run, cwd = make_project(tmp, tiny_model_dir), tmp / "cwd"
        cwd.mkdir()
        for damage in model_damages:
            damage_model(run / "final", damage)
        out_words, folder = make_output(output, tmp, run, cwd)
        if previous and output in WRITABLE:
            shutil.copytree(previous_export, folder, dirs_exist_ok=True)
        argv = ["--root", str(run.parents[2]), "--preset", RUN, *out_words, *drawn_argv(flags)]
        before = tree_digest(tmp)
        code, out, err = run_in_process(SCRIPT, argv, cwd, {"LONDONLM_ROOT": str(run.parents[2])}, limit)
        after = tree_digest(tmp)
        one_error_line(code, err, argv)
        event(outcome(code, err, "written" if "gguf: wrote" in out else "current"))
        if code == 2:  # refused or failed: every file as it was, no half-written or temporary one
            assert after == before, (argv, changed_files(before, after))
            return
        named = "--model" in dict(flags) or "--run_name" in dict(flags)
        check_outputs(before, after, tmp, out, None if named else folder, _types(flags),
                      None if named else _n_layer(run / "final"), argv)


@pytest.mark.slow  # a net as an unprivileged user, ~19 s on 2 cores
@given(data=st.data(), model_damages=damages, previous=st.booleans(), into_model=st.booleans())
@settings(max_examples=UNPRIVILEGED_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_an_unwritable_output_folder_is_one_line_and_changes_nothing(data, model_damages, previous, into_model,
                                                                    tiny_model_dir, previous_export):
    """The run's folder (default output) or --out_dir may not be written in by the user: as root
    nothing is refused, so the script runs as nobody (:mod:`unprivileged`), in a new interpreter."""
    from unprivileged import make_readable, reachable_dir, run_unprivileged

    flags = data.draw(st.lists(flag_strategy(script_actions(SCRIPT, SKIP)), max_size=2,
                               unique_by=lambda fv: fv[0]), label="flags")
    base = reachable_dir()
    run = make_project(base, tiny_model_dir)
    try:
        for damage in model_damages:
            damage_model(run / "final", damage)
        if previous:
            shutil.copytree(previous_export, run / "gguf")
        make_readable(base)
        for folder in (run, run / "final", run / "gguf"):
            if folder.is_dir():
                folder.chmod(0o555)
        root = run.parents[2]
        argv = ["--root", str(root), "--preset", RUN, *(["--out_dir", str(run / "final")] if into_model else []),
                *drawn_argv(flags)]
        before = tree_digest(root)
        r = run_unprivileged([str(SCRIPT), *argv], base / "home", LONDONLM_ROOT=str(root))
        one_error_line(r.returncode, r.stderr, argv)
        event(outcome(r.returncode, r.stderr, "current"))
        assert tree_digest(root) == before, argv  # nothing written (a current export is skipped)
    finally:
        for folder in (run, run / "final", run / "gguf"):
            if folder.is_dir():
                folder.chmod(0o755)
        shutil.rmtree(base)


# ---------------------------------------------------------------- what the nets found, as plain cases

def export_once(tmp: Path, tiny_model_dir: Path, model_damages=(), limit: int | None = None):
    """The script over the run's final model (damaged), default output: (code, stderr, the
    project's files before, after)."""
    run, cwd = make_project(tmp, tiny_model_dir), tmp / "cwd"
    cwd.mkdir()
    for damage in model_damages:
        damage_model(run / "final", damage)
    root = run.parents[2]
    before = tree_digest(tmp)
    code, _, err = run_in_process(SCRIPT, ["--root", str(root), "--preset", RUN], cwd,
                                  {"LONDONLM_ROOT": str(root)}, limit)
    return code, err, before, tree_digest(tmp)


def test_a_file_the_file_system_cannot_hold_is_one_line(tiny_model_dir, tmp_path):
    """Was a traceback: EFBIG (a file past FAT32's 4 GiB, or `ulimit -f`) was no user error."""
    code, err, before, after = export_once(tmp_path, tiny_model_dir, limit=0)
    assert code == 2 and err.count("\n") == 1 and "file too large for its file system" in err, err
    assert after == before


def test_a_disk_that_fills_during_the_tensors_is_one_line(tiny_model_dir, tmp_path, previous_export):
    """Was a traceback: numpy's tofile reports the short write as an OSError with no errno
    ('3072 requested and 0 written'). The limit falls inside the first tensor's data."""
    data_start = gguf.GGUFReader(str(previous_export / f"{RUN}-f16.gguf")).data_offset
    code, err, before, after = export_once(tmp_path, tiny_model_dir, limit=data_start + 64)
    assert code == 2 and err.count("\n") == 1 and "the disk took only part of it" in err, err
    assert after == before


def test_a_disk_full_at_the_first_write_leaves_no_temporary_file(tiny_model_dir, tmp_path, monkeypatch):
    """Was: one line, but the hidden .micro-f16.gguf.tmp stayed on the full disk (the cleanup's
    close() flushed again, failed again, and skipped the unlink). The writer's file is made as
    on a full disk; its bytes go to /dev/full, which refuses every write (ENOSPC)."""
    import gguf.gguf_writer

    def full_disk(name, mode="r", *args, **kwargs):
        Path(name).touch()
        return open("/dev/full", mode, *args, **kwargs)

    monkeypatch.setattr(gguf.gguf_writer, "open", full_disk, raising=False)
    code, err, before, after = export_once(tmp_path, tiny_model_dir)
    assert code == 2 and err.count("\n") == 1 and "no space left on device" in err, err
    assert after == before


@pytest.mark.parametrize("key,value", [("added_tokens_decoder", 0), ("tokenizer_class", -1)])
def test_a_tokenizer_config_field_of_another_kind_is_one_line(tiny_model_dir, tmp_path, key, value):
    """Was a traceback: transformers calls .items() / .removesuffix() on the field (AttributeError)."""
    code, err, before, after = export_once(tmp_path, tiny_model_dir, [("set", "tokenizer_config.json", key, value)])
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: cannot read the tokenizer"), err
    assert after == before


def test_two_tokens_sharing_an_id_is_one_line(tiny_model_dir, tmp_path):
    """Was a traceback: the file parses, its re-save (every private copy of the tokenizer) drops
    one of the two and no longer parses ('Token ... out of vocabulary')."""
    code, err, before, after = export_once(tmp_path, tiny_model_dir, [("token_id", "vocab", 0, 458)])
    assert code == 2 and err.count("\n") == 1 and "share id 458" in err, err
    assert after == before
