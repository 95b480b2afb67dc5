"""Hostile round 18b, GGUF export: a chat model exported without its chat template (llama.cpp,
Ollama and LM Studio then talk to it in their default template, ChatML, whose markers this
vocabulary spells as plain text); the files are read back with ``gguf.GGUFReader``."""
from __future__ import annotations

import json
import shutil

import pytest

gguf = pytest.importorskip("gguf")

from londonlm.export.gguf import GGUFOptions, export_gguf  # noqa: E402

QUIET = {"log": lambda *_: None}


def _fields(path) -> dict:
    return {k: f.contents() for k, f in gguf.GGUFReader(str(path)).fields.items()}


def _chat_model(tiny_model_dir, tmp_path):
    """The tiny model with the chat format's role tokens and template added to its tokenizer,
    as chat fine-tuning saves it (the rows fit in its padded embedding)."""
    from transformers import AutoTokenizer

    from londonlm.chat.template import add_chat_tokens

    model = tmp_path / "chat"
    shutil.copytree(tiny_model_dir, model)
    tok = AutoTokenizer.from_pretrained(str(model))
    add_chat_tokens(tok)
    tok.save_pretrained(str(model))
    return model, AutoTokenizer.from_pretrained(str(model))


def test_a_chat_models_gguf_carries_its_chat_template(tiny_model_dir, tmp_path):
    """Was: no ``tokenizer.chat_template`` in the file (llama.cpp's own converter writes it), so a
    chat model exported or published with --gguf was prompted in ChatML by llama.cpp's tools. Now
    the template is the tokenizer's, byte for byte, and its role tokens are CONTROL tokens."""
    model, tok = _chat_model(tiny_model_dir, tmp_path)
    out = export_gguf(model, tmp_path / "out", GGUFOptions(types=("f16",)), **QUIET)
    f = _fields(out.files["f16"])
    assert f["tokenizer.chat_template"] == tok.chat_template
    for role in ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"):
        i = tok.convert_tokens_to_ids(role)
        assert f["tokenizer.ggml.tokens"][i] == role and f["tokenizer.ggml.token_type"][i] == gguf.TokenType.CONTROL


def test_a_text_model_has_no_chat_template_and_an_edited_template_rebuilds(tiny_model_dir, tmp_path):
    """A text model's file holds no template (llama.cpp then never takes it for a chat model).
    An export made before the template was edited is not current: the template is an input."""
    plain = export_gguf(tiny_model_dir, tmp_path / "plain", GGUFOptions(types=("f16",)), **QUIET)
    assert "tokenizer.chat_template" not in _fields(plain.files["f16"])
    model, _ = _chat_model(tiny_model_dir, tmp_path)
    export_gguf(model, tmp_path / "out", GGUFOptions(types=("f16",)), **QUIET)
    template = next(p for p in (model / "chat_template.jinja", model / "tokenizer_config.json") if p.is_file())
    if template.suffix == ".jinja":
        template.write_text(template.read_text() + "{# edited #}")
    else:
        cfg = json.loads(template.read_text())
        cfg["chat_template"] += "{# edited #}"
        template.write_text(json.dumps(cfg))
    again = export_gguf(model, tmp_path / "out", GGUFOptions(types=("f16",)), **QUIET)
    assert not again.skipped
    assert _fields(again.files["f16"])["tokenizer.chat_template"].endswith("{# edited #}")
