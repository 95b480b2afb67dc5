"""Hostile round 21, GGUF export of a chat model: its end of turn (``<|end|>``) written as
``tokenizer.ggml.eot_token_id``, as llama.cpp's converter names eot for models whose turn does not
end at the eos (Gemma's ``<end_of_turn>``, ChatGLM's); the files are read back with ``gguf.GGUFReader``."""
from __future__ import annotations

import json
import shutil

import pytest

gguf = pytest.importorskip("gguf")

from londonlm.export.gguf import GGUFOptions, export_gguf  # noqa: E402

QUIET = {"log": lambda *_: None}
EOT_KEY = "tokenizer.ggml.eot_token_id"


def _fields(path) -> dict:
    return {k: f.contents() for k, f in gguf.GGUFReader(str(path)).fields.items()}


def _export(model, out) -> dict:
    return _fields(export_gguf(model, out, GGUFOptions(types=("f16",)), **QUIET).files["f16"])


def test_a_chat_models_gguf_names_its_end_of_turn_as_eot(chat_model_dir, tmp_path):
    """Was: no eot key; llama.cpp then picked its eot by text among ``<|end|>`` and
    ``<|endoftext|>`` (both on its list, found in hash order), so a version that stops at eos and
    eot alone could run past the answer's ``<|end|>``. Now eot is ``<|end|>``, the first end id the
    chat model's generation_config.json lists; eos stays ``<|endoftext|>``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(chat_model_dir))
    f = _export(chat_model_dir, tmp_path / "out")
    end = tok.convert_tokens_to_ids("<|end|>")
    assert f[EOT_KEY] == end and f["tokenizer.ggml.tokens"][end] == "<|end|>"
    assert f["tokenizer.ggml.token_type"][end] == gguf.TokenType.CONTROL
    assert f["tokenizer.ggml.eos_token_id"] == tok.eos_token_id == tok.convert_tokens_to_ids("<|endoftext|>")


def test_a_text_model_or_a_config_naming_no_turn_end_gets_no_eot(tiny_model_dir, chat_model_dir, tmp_path):
    """A text model has no eot; neither has a chat model whose generation_config names only the
    eos, or a first end id that is no control token of its template. Editing generation_config.json
    rebuilds the export (it is an input now), not skipped as current."""
    assert EOT_KEY not in _export(tiny_model_dir, tmp_path / "plain")
    model = tmp_path / "chat"
    shutil.copytree(chat_model_dir, model)
    gen = json.loads((model / "generation_config.json").read_text())
    for ends in (0, [0], [5, 0], "x", [True]):  # 5: a plain BPE token, not the template's
        (model / "generation_config.json").write_text(json.dumps({**gen, "eos_token_id": ends}))
        assert EOT_KEY not in _export(model, tmp_path / "out"), ends
    (model / "generation_config.json").write_text(json.dumps(gen))
    assert _export(model, tmp_path / "out")[EOT_KEY] == gen["eos_token_id"][0]
