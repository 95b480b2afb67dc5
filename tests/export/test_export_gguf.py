"""GGUF export: the file llama.cpp reads (architecture, tensors, tokenizer), the stage contract
(sidecar, skip, --overwrite, clear errors), the script, and a llama.cpp round trip (slow)."""
from __future__ import annotations

import errno
import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch

from conftest import REPO, SAMPLE_TEXTS

gguf = pytest.importorskip("gguf")

from londonlm.core.errors import LondonLMError  # noqa: E402
from londonlm.export.gguf import GGUFExportError, GGUFOptions, export_gguf, write_gguf  # noqa: E402

SCRIPT = REPO / "10_scripts" / "export_gguf.py"


def _state(model_dir):
    from safetensors.torch import load_file

    return {k.removeprefix("transformer."): v for k, v in
            load_file(str(model_dir / "model.safetensors")).items()}


def _read(path):
    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items()}
    tensors = {t.name: t for t in reader.tensors}
    return fields, tensors


def _values(t):
    """A GGUF tensor as float32 in GGUF row order (dequantized when Q8_0)."""
    if t.tensor_type == gguf.GGMLQuantizationType.Q8_0:
        return gguf.quants.dequantize(t.data, t.tensor_type)
    return np.asarray(t.data, dtype=np.float32)


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf")
    return export_gguf(tiny_model_dir, out, GGUFOptions(stem="tiny"), log=lambda *_: None)


def test_architecture_and_hyperparameters(exported, tiny_model_dir):
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    for qtype, path in exported.files.items():
        assert path.name == f"tiny-{qtype}.gguf"
        fields, tensors = _read(path)
        assert fields["general.architecture"] == "gpt2"
        assert fields["gpt2.context_length"] == cfg["n_positions"]
        assert fields["gpt2.embedding_length"] == cfg["n_embd"]
        assert fields["gpt2.feed_forward_length"] == 4 * cfg["n_embd"]
        assert fields["gpt2.block_count"] == cfg["n_layer"]
        assert fields["gpt2.attention.head_count"] == cfg["n_head"]
        per_layer = ["attn_norm", "attn_qkv", "attn_output", "ffn_norm", "ffn_up", "ffn_down"]
        expected = {"token_embd.weight", "position_embd.weight", "output_norm.weight",
                    "output_norm.bias", "output.weight"}
        expected |= {f"blk.{i}.{n}.{s}" for i in range(cfg["n_layer"]) for n in per_layer
                     for s in ("weight", "bias")}
        assert set(tensors) == expected


def test_tensor_values_and_conv1d_transpose(exported, tiny_model_dir):
    sd = _state(tiny_model_dir)
    d = json.loads((tiny_model_dir / "config.json").read_text())["n_embd"]
    pairs = {"token_embd.weight": sd["wte.weight"], "output.weight": sd["wte.weight"],
             "position_embd.weight": sd["wpe.weight"],
             # Conv1D stores (in, out); GGUF rows are outputs, as in nn.Linear
             "blk.0.attn_qkv.weight": sd["h.0.attn.c_attn.weight"].T,
             "blk.1.attn_output.weight": sd["h.1.attn.c_proj.weight"].T,
             "blk.0.ffn_up.weight": sd["h.0.mlp.c_fc.weight"].T,
             "blk.0.ffn_down.weight": sd["h.0.mlp.c_proj.weight"].T,
             "blk.0.attn_qkv.bias": sd["h.0.attn.c_attn.bias"],
             "output_norm.weight": sd["ln_f.weight"]}
    tol = {"f16": 1e-3, "q8_0": 2e-3}   # weights ~N(0, 0.02): f16 and 8-bit blocks both fit
    for qtype, path in exported.files.items():
        _, tensors = _read(path)
        assert tensors["blk.0.attn_qkv.weight"].data.shape[0] == 3 * d
        for name, ref in pairs.items():
            got = _values(tensors[name]).reshape(tuple(ref.shape))
            np.testing.assert_allclose(got, ref.numpy(), atol=tol[qtype], err_msg=f"{qtype} {name}")
        types = {n: t.tensor_type.name for n, t in tensors.items()}
        assert types["output_norm.weight"] == types["blk.0.attn_qkv.bias"] == "F32"
        assert types["position_embd.weight"] == "F32"
        assert types["blk.0.ffn_up.weight"] == {"f16": "F16", "q8_0": "Q8_0"}[qtype]


def test_tokenizer_metadata(exported, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tj = json.loads((tiny_model_dir / "tokenizer.json").read_text())
    fields, tensors = _read(exported.files["f16"])
    n_rows = tensors["token_embd.weight"].data.shape[0]
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    assert len(tokens) == len(types) == n_rows > len(tok)
    assert tokens[:len(tok)] == tok.convert_ids_to_tokens(list(range(len(tok))))
    T = gguf.TokenType
    control = {tok.convert_tokens_to_ids(t) for t in
               ("<|endoftext|>", "<|pad|>", "<|1600s|>", "<|1650s|>", "<|1800s|>")}
    assert {i for i, t in enumerate(types) if t == T.CONTROL} == control
    assert all(types[i] == T.NORMAL for i in range(len(tok)) if i not in control)
    assert all(types[i] == T.UNUSED and tokens[i] == f"[PAD{i}]" for i in range(len(tok), n_rows))
    assert fields["tokenizer.ggml.merges"] == [" ".join(m) for m in tj["model"]["merges"]]
    assert fields["tokenizer.ggml.bos_token_id"] == tok.bos_token_id
    assert fields["tokenizer.ggml.eos_token_id"] == tok.eos_token_id
    assert fields["tokenizer.ggml.padding_token_id"] == tok.pad_token_id
    assert fields["tokenizer.ggml.add_bos_token"] is True


def test_q8_0_is_smaller_and_sidecar_records_inputs(exported, tiny_model_dir):
    from londonlm.core.artifacts import sha256_file

    assert exported.files["q8_0"].stat().st_size < exported.files["f16"].stat().st_size
    side = json.loads((exported.out_dir / "sidecar.json").read_text())
    assert side["stage"] == "export_gguf"
    assert side["inputs"] == {name: sha256_file(tiny_model_dir / name) for name in (
        "model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
        "generation_config.json") if (tiny_model_dir / name).is_file()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= set(side["inputs"])
    assert side["versions"]["gguf"] == "0.19.0"
    assert side["files"]["f16"]["sha256"] == sha256_file(exported.files["f16"])


def test_skip_when_current_rebuild_on_change_or_overwrite(tiny_model_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    out, opts = tmp_path / "out", GGUFOptions(types=("f16",), stem="m")
    first = export_gguf(model, out, opts, log=lambda *_: None)
    stamp = first.files["f16"].stat().st_mtime_ns
    assert export_gguf(model, out, opts, log=lambda *_: None).skipped
    assert first.files["f16"].stat().st_mtime_ns == stamp
    again = export_gguf(model, out, GGUFOptions(types=("f16",), stem="m", overwrite=True),
                        log=lambda *_: None)
    assert not again.skipped and first.files["f16"].stat().st_mtime_ns != stamp
    first.files["f16"].unlink()   # a deleted file is written again, not reported current
    logs = []
    assert not export_gguf(model, out, opts, log=logs.append).skipped
    assert first.files["f16"].is_file() and any("missing" in m for m in logs)
    # new weights: the old file is stale and is rebuilt without --overwrite
    from safetensors.torch import load_file, save_file

    sd = load_file(str(model / "model.safetensors"))
    sd["transformer.ln_f.bias"] += 1.0
    save_file(sd, str(model / "model.safetensors"), metadata={"format": "pt"})
    logs = []
    assert not export_gguf(model, out, opts, log=logs.append).skipped
    assert any("inputs changed" in m for m in logs)
    _, tensors = _read(out / "m-f16.gguf")
    np.testing.assert_allclose(_values(tensors["output_norm.bias"]), sd["transformer.ln_f.bias"])


@pytest.mark.parametrize("edit", ["config", "tokenizer_config"])
def test_an_edited_config_rebuilds_the_export(edit, tiny_model_dir, tmp_path):
    """config.json gives the header (the norm epsilon llama.cpp computes with) and
    tokenizer_config.json the special ids: an export made before an edit of either is stale,
    not current (only the weights and tokenizer.json were hashed)."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    out, opts = tmp_path / "out", GGUFOptions(types=("f16",), stem="m")
    export_gguf(model, out, opts, log=lambda *_: None)
    if edit == "config":
        cfg = json.loads((model / "config.json").read_text())
        cfg["layer_norm_epsilon"] = 1e-3
        (model / "config.json").write_text(json.dumps(cfg))
    else:
        tc = json.loads((model / "tokenizer_config.json").read_text())
        tc["model_max_length"] = 77
        (model / "tokenizer_config.json").write_text(json.dumps(tc))
    logs = []
    assert not export_gguf(model, out, opts, log=logs.append).skipped
    assert any("inputs changed" in m for m in logs), logs
    if edit == "config":
        meta, _ = _read(out / "m-f16.gguf")
        assert meta["gpt2.attention.layer_norm_epsilon"] == pytest.approx(1e-3)
    assert export_gguf(model, out, opts, log=lambda *_: None).skipped  # and current once rebuilt


def test_clear_errors(tiny_model_dir, tmp_path):
    with pytest.raises(LondonLMError, match="config.json missing"):
        export_gguf(tmp_path / "nothing", tmp_path / "out")
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "tokenizer.json").rename(tmp_path / "tokenizer.json")
    with pytest.raises(GGUFExportError, match="tokenizer.json"):
        export_gguf(model, tmp_path / "out")
    shutil.copy(tmp_path / "tokenizer.json", model / "tokenizer.json")
    with pytest.raises(GGUFExportError, match="not supported"):
        export_gguf(model, tmp_path / "out", GGUFOptions(types=("q4_0",)))
    # a tokenizer llama.cpp's gpt-2 pre-tokenizer would split differently
    tj = json.loads((model / "tokenizer.json").read_text())
    tj["pre_tokenizer"]["add_prefix_space"] = True
    (model / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(GGUFExportError, match="prefix space"):
        write_gguf(model, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists() and not list(tmp_path.glob(".x.gguf*"))
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "activation_function": "relu"}))
    with pytest.raises(GGUFExportError, match="activation"):
        write_gguf(model, tmp_path / "x.gguf")


def _script():
    spec = importlib.util.spec_from_file_location("export_gguf_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_script_exports_a_run_and_skips_when_current(tiny_model_dir, tmp_path, capsys):
    from londonlm.core.errors import run_main

    run = tmp_path / "09_models" / "checkpoints" / "micro"
    shutil.copytree(tiny_model_dir, run / "final")
    shutil.copytree(tiny_model_dir, run / "checkpoint-4")
    (run / "run_info.json").write_text(json.dumps({"global_step": 4}))
    script = _script()
    assert script.main(["--root", str(tmp_path), "--preset", "micro"]) == 0
    files = sorted(p.name for p in (run / "gguf").iterdir())
    assert files == ["micro-f16.gguf", "micro-q8_0.gguf", "sidecar.json"]
    assert script.main(["--root", str(tmp_path), "--preset", "micro"]) == 0
    assert "skipping" in capsys.readouterr().out
    # a checkpoint of the run gets its own folder, one type only
    assert script.main(["--root", str(tmp_path), "--run_name", "micro",
                        "--model", "checkpoint-4", "--types", "q8_0"]) == 0
    assert sorted(p.name for p in (run / "gguf" / "checkpoint-4").iterdir()) == \
        ["micro-checkpoint-4-q8_0.gguf", "sidecar.json"]
    with pytest.raises(SystemExit) as e:
        run_main(script.main, ["--root", str(tmp_path), "--run_name", "micro",
                               "--model", "checkpoint-9"])
    assert e.value.code == 2
    assert "checkpoint-9" in capsys.readouterr().err


def _trained_model(tokenizer_dir, out, steps=100):
    """A 2-layer GPT-2 fitted to the sample texts, so its greedy choices are clear-cut (a
    random model's near-flat logits would make any comparison a coin toss)."""
    from transformers import AutoTokenizer

    from londonlm.training.model import ModelShape, build_model, padded_vocab

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    shape = ModelShape(n_layer=2, n_head=2, n_embd=64, n_positions=64,
                       vocab_size=padded_vocab(len(tok)))
    model = build_model(shape, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, seed=0)
    rows = [[tok.bos_token_id] + tok(t, add_special_tokens=False)["input_ids"][:63]
            for t in SAMPLE_TEXTS]
    width = max(map(len, rows))
    ids = torch.tensor([r + [tok.eos_token_id] * (width - len(r)) for r in rows])
    labels = torch.tensor([r + [-100] * (width - len(r)) for r in rows])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                    reason="llama-cpp-python is not installed (it compiles llama.cpp: "
                           "pip install llama-cpp-python==0.3.36, 10-25 min on 2 cores)")
def test_llama_cpp_greedy_round_trip(tiny_tokenizer_dir, tmp_path):
    from londonlm.export.gguf_check import greedy_agreement

    model = _trained_model(tiny_tokenizer_dir, tmp_path / "model")
    result = export_gguf(model, tmp_path / "gguf", log=lambda *_: None)
    # a memorised opening: all 32 greedy steps have a top-2 logit gap > 0.4 (measured)
    prompt = "It was the best of times"
    f16 = greedy_agreement(model, result.files["f16"], prompt, steps=32)
    assert f16.prompt_tokens_agree
    assert f16.identical, f16.to_dict()
    q8 = greedy_agreement(model, result.files["q8_0"], prompt, steps=32)
    print("q8_0 agreement:", q8.to_dict())
    assert q8.prompt_tokens_agree and q8.matching_prefix >= 8, q8.to_dict()


def _tree(folder):
    """Every file under ``folder`` with its bytes: the before/after picture of a failed command."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _micro_project(tiny_model_dir, root):
    run = root / "09_models" / "checkpoints" / "micro"
    shutil.copytree(tiny_model_dir, run / "final")
    (run / "run_info.json").write_text(json.dumps({"global_step": 4}))
    return run


@pytest.mark.parametrize("qtype, exc", [
    ("f16", PermissionError(errno.EACCES, "Permission denied")),
    ("q8_0", OSError(errno.ENOSPC, "No space left on device")),
])
def test_script_that_cannot_write_says_so_in_one_line_and_changes_nothing(
        tiny_model_dir, tmp_path, monkeypatch, capsys, qtype, exc):
    """The script end to end (run_main), --overwrite over a current export: the folder
    refuses the first file, or the disk fills while the second is written (after the first
    is made). One line naming that file; the old files and their sidecar exactly as they
    were, no temporary file left."""
    from londonlm.core.errors import run_main

    run = _micro_project(tiny_model_dir, tmp_path)
    script = _script()
    argv = ["--root", str(tmp_path), "--preset", "micro"]
    assert script.main(argv) == 0
    target = run / "gguf" / f"micro-{qtype}.gguf"
    before = _tree(run)
    real_write = gguf.GGUFWriter.write_header_to_file

    def refuse(self, path=None, *a, **k):
        if path is not None and path.name.startswith(f".{target.name}"):
            # as open() reports it: the temporary file's name, or (a full disk) none
            raise type(exc)(exc.errno, exc.strerror, *([str(path)] if exc.errno == errno.EACCES else []))
        return real_write(self, path, *a, **k)

    monkeypatch.setattr(gguf.GGUFWriter, "write_header_to_file", refuse)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_main(script.main, argv + ["--overwrite"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: cannot ") and f"{target}:" in err, err
    assert _tree(run) == before


def test_an_unprivileged_user_exporting_into_a_root_owned_project(tiny_model_dir):
    """Really unprivileged (nobody, when the suite runs as root), no --out_dir: the run
    folder may not be written in. One line naming the file and the folder's owner."""
    from unprivileged import make_readable, reachable_dir, run_unprivileged

    base = reachable_dir()
    try:
        run = _micro_project(tiny_model_dir, base / "root")
        make_readable(base)
        run.chmod(0o555)
        before = _tree(base / "root")
        r = run_unprivileged([str(SCRIPT), "--root", str(base / "root"), "--preset", "micro"],
                             base / "home")
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
        assert f"error: cannot create {run / 'gguf' / 'micro-f16.gguf'}: permission denied ({run} is owned by" \
            in r.stderr
        assert _tree(base / "root") == before
    finally:
        run.chmod(0o755)
        shutil.rmtree(base)
