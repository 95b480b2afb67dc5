"""Hostile round 17, GGUF export: a weight past float16's range (65504) was written as infinity
into the f16 file and as NaN blocks into the q8_0 file (a Q8_0 block's scale is a float16), with
only numpy's overflow warning; the files are read back with ``gguf.GGUFReader``."""
from __future__ import annotations

import json

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from londonlm.export.gguf import GGUFOptions, export_gguf  # noqa: E402

QUIET = {"log": lambda *_: None}


def _resave(tiny_model_dir, tmp_path, edit=None, dtype=None):
    """The tiny model, ``edit(model)`` applied, saved again (as ``dtype``) with its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    if edit:
        edit(model)
    out = tmp_path / "model"
    (model.to(dtype) if dtype else model).save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(str(out))
    return out


def _tensors(path) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (GGML type, values as float32) of every tensor in a GGUF file."""
    out = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type)
        out[t.name] = (t.tensor_type.name, np.asarray(values, dtype=np.float32))
    return out


@pytest.mark.parametrize("value", [1e6, -3e8])
def test_a_weight_past_float16_is_kept_in_f32_not_written_as_infinity(tiny_model_dir, tmp_path, value):
    """Was: ffn_up stored F16 with inf (1e6), or Q8_0 with a NaN block (3e8: the block's scale
    past float16 too), exit 0: llama.cpp then computed with inf/NaN."""
    import torch

    def edit(model):
        with torch.no_grad():
            model.transformer.h[0].mlp.c_fc.weight[0, 0] = value
    model = _resave(tiny_model_dir, tmp_path, edit)
    out = export_gguf(model, tmp_path / "out", GGUFOptions(), **QUIET)
    for qtype, path in out.files.items():
        tensors = _tensors(path)
        assert all(np.isfinite(v).all() for _, v in tensors.values()), qtype
        kind, up = tensors["blk.0.ffn_up.weight"]
        # Q8_0 holds 1e6 (its scale, 1e6 / 127, is a float16); F16 does not
        assert kind == ("Q8_0" if qtype == "q8_0" and abs(value) < 127 * 65504 else "F32"), (qtype, kind)
        assert abs(up[0, 0] - value) <= abs(value) / 127   # (transposed: row 0, column 0)
        assert tensors["blk.0.ffn_down.weight"][0] == {"f16": "F16", "q8_0": "Q8_0"}[qtype]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_weights_export_as_their_float32_values(tiny_model_dir, tmp_path, dtype):
    """(held) A model saved in bf16 or fp16: the same shapes, vocabulary and values."""
    import torch
    from safetensors.torch import load_file

    model = _resave(tiny_model_dir, tmp_path, dtype=getattr(torch, dtype))
    out = export_gguf(model, tmp_path / "out", GGUFOptions(types=("f16",)), **QUIET)
    tensors = _tensors(out.files["f16"])
    wte = load_file(str(model / "model.safetensors"))["transformer.wte.weight"].float().numpy()
    kind, embd = tensors["token_embd.weight"]
    assert kind == "F16" and embd.shape == wte.shape and np.array_equal(embd, wte.astype(np.float16))


def test_added_tokens_keep_their_ids_and_kinds(tiny_model_dir, tmp_path):
    """(held) Tokens added to the tokenizer after training, inside the padded embedding: each at
    its id, plain ones USER_DEFINED (raw text, as llama.cpp reads them), special ones CONTROL."""
    from transformers import AutoTokenizer

    model = _resave(tiny_model_dir, tmp_path)
    tok = AutoTokenizer.from_pretrained(str(model))
    tok.add_tokens(["Pepys", " betimes", "café"])
    tok.add_tokens(["<|mine|>"], special_tokens=True)
    tok.save_pretrained(str(model))
    out = export_gguf(model, tmp_path / "out", GGUFOptions(types=("f16",)), **QUIET)
    fields = {k: f.contents() for k, f in gguf.GGUFReader(str(out.files["f16"])).fields.items()}
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    rows = json.loads((model / "config.json").read_text())["vocab_size"]
    assert len(tokens) == len(types) == rows
    T = gguf.TokenType
    for text in ("Pepys", " betimes", "café", "<|mine|>"):
        i = tok.convert_tokens_to_ids(text)
        assert tokens[i] == text and types[i] == (T.CONTROL if text == "<|mine|>" else T.USER_DEFINED)
    assert all(types[i] == T.UNUSED for i in range(len(tok), rows))
