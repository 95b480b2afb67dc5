"""GGUF export, round 6: what llama.cpp would misread, read back with ``gguf.GGUFReader`` and
compared with what the model folder's tokenizer says; and outputs a failed or refused export
must leave as they were."""
from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from conftest import REPO

gguf = pytest.importorskip("gguf")

from londonlm.core import LondonLMError  # noqa: E402
from londonlm.core.errors import run_main  # noqa: E402
from londonlm.export.gguf import GGUFExportError, GGUFOptions, export_gguf  # noqa: E402

QUIET = {"log": lambda *_: None}


def _model(tiny_model_dir, tmp_path, **edits):
    """A copy of the tiny model with ``file name -> change(dict)`` applied to its JSON files."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    for name, change in edits.items():
        path = model / f"{name}.json"
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
    return model


def _fields(path):
    return {k: f.contents() for k, f in gguf.GGUFReader(str(path)).fields.items()}


def _drop(*keys):
    return lambda d: [d.pop(k, None) for k in keys]


@pytest.mark.parametrize("change", [
    _drop("bos_token_id", "eos_token_id"),                        # llama.cpp: token 11 then
    lambda d: d.update(bos_token_id=50256, eos_token_id=50256),   # GPT2Config's defaults
    lambda d: d.update(eos_token_id=[0, 2]),                      # a list: was left out
    lambda d: d.update(bos_token_id=5, eos_token_id=5),           # an ordinary token
], ids=["absent", "past_the_vocabulary", "a_list", "another_token"])
def test_special_token_ids_are_the_tokenizers_whatever_config_json_says(tiny_model_dir, tmp_path, change):
    """Was: bos/eos copied from config.json: absent or a list, none written (llama.cpp then
    takes token 11 for both), 50256 written into a 512-token file. Our generation starts every
    prompt with <|endoftext|> and stops at the tokenizer's eos: the file says the same."""
    from transformers import AutoTokenizer

    model = _model(tiny_model_dir, tmp_path, config=change)
    out = export_gguf(model, tmp_path / "out", GGUFOptions(types=("f16",)), **QUIET)
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    f = _fields(out.files["f16"])
    assert f["tokenizer.ggml.bos_token_id"] == tok.convert_tokens_to_ids("<|endoftext|>")
    assert f["tokenizer.ggml.eos_token_id"] == tok.eos_token_id
    assert f["tokenizer.ggml.padding_token_id"] == tok.pad_token_id
    assert f["tokenizer.ggml.add_bos_token"] is True


def test_a_tokenizer_naming_no_eos_ends_text_at_endoftext(tiny_model_dir, tmp_path):
    """tokenizer_config.json without bos/eos (and config.json without them): the file's eos is
    <|endoftext|>, which ends every training document, not llama.cpp's default token 11."""
    model = _model(tiny_model_dir, tmp_path, tokenizer_config=_drop("bos_token", "eos_token"),
                   config=_drop("bos_token_id", "eos_token_id"))
    out = export_gguf(model, tmp_path / "out", GGUFOptions(types=("f16",)), **QUIET)
    f = _fields(out.files["f16"])
    vocab = json.loads((model / "tokenizer.json").read_text())["added_tokens"]
    eot = next(a["id"] for a in vocab if a["content"] == "<|endoftext|>")
    assert f["tokenizer.ggml.bos_token_id"] == f["tokenizer.ggml.eos_token_id"] == eot


def test_an_untied_head_is_written_as_its_own_output_tensor(tiny_model_dir, tmp_path):
    """A model trained with an untied head: ``output.weight`` is lm_head, not the embedding."""
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file

    model = _model(tiny_model_dir, tmp_path, config=lambda d: d.update(tie_word_embeddings=False))
    state = load_file(str(model / "model.safetensors"))
    head = torch.randn_like(state["transformer.wte.weight"])
    save_file({**state, "lm_head.weight": head}, str(model / "model.safetensors"), metadata={"format": "pt"})
    out = export_gguf(model, tmp_path / "out", GGUFOptions(types=("f16",)), **QUIET)
    tensors = {t.name: t for t in gguf.GGUFReader(str(out.files["f16"])).tensors}
    written = np.asarray(tensors["output.weight"].data, dtype=np.float32)
    assert written.shape == tuple(head.shape)
    assert np.allclose(written, head.numpy(), atol=2e-3)
    assert not np.allclose(written, np.asarray(tensors["token_embd.weight"].data, dtype=np.float32))


@pytest.mark.parametrize("option,value", [
    ("end_of_word_suffix", "</w>"), ("continuing_subword_prefix", "##"), ("dropout", 0.1)])
def test_bpe_options_llama_cpp_does_not_apply_are_refused(tiny_model_dir, tmp_path, option, value):
    """Was: written as a plain 'gpt-2' BPE, which llama.cpp splits into other tokens than
    transformers does (an end-of-word suffix: 3,687 tokens against 4,298 for a Defoe chapter)."""
    model = _model(tiny_model_dir, tmp_path, tokenizer=lambda d: d["model"].update({option: value}))
    with pytest.raises(GGUFExportError, match=f"{option}=.*does not apply"):
        export_gguf(model, tmp_path / "out", GGUFOptions(types=("f16",)), **QUIET)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_an_out_dir_holding_another_stages_outputs_keeps_them(tiny_model_dir, tmp_path):
    """Was: `--out_dir <the tokenizer folder>` replaced its sidecar.json (which the tokenizer
    stage's skip and the time lock read) with the export's, exit 0."""
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    side = folder / "sidecar.json"
    side.write_text(json.dumps({"stage": "tokenizer", "inputs": {}, "settings": {}}))
    before = side.read_bytes()
    with pytest.raises(LondonLMError, match="holds the outputs of the 'tokenizer' stage"):
        export_gguf(tiny_model_dir, folder, GGUFOptions(types=("f16",)), **QUIET)
    assert side.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["sidecar.json"]


def test_an_out_dir_that_is_the_models_own_folder_is_refused(tiny_model_dir, tmp_path):
    """Was: the GGUF files and the export's sidecar.json written among the model's own files,
    which a publish of that folder then carried. A folder inside it is still a place for them."""
    model = tmp_path / "final"
    shutil.copytree(tiny_model_dir, model)
    before = sorted(p.name for p in model.iterdir())
    with pytest.raises(LondonLMError, match="is a model's folder"):
        export_gguf(model, model, GGUFOptions(types=("f16",)), **QUIET)
    assert sorted(p.name for p in model.iterdir()) == before
    export_gguf(model, model / "gguf", GGUFOptions(types=("f16",)), **QUIET)
    assert len(list((model / "gguf").glob("*-f16.gguf"))) == 1


def test_an_out_dir_that_is_a_runs_folder_is_refused(tiny_model_dir, tmp_path):
    """Was: the export's sidecar.json written into the run's folder, whose next training was then
    refused as writing into the 'export_gguf' stage's folder."""
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "final")
    (run / "run_info.json").write_text('{"status": "finished"}')
    with pytest.raises(LondonLMError, match="is a training run's folder"):
        export_gguf(run / "final", run, GGUFOptions(types=("f16",)), **QUIET)
    assert sorted(p.name for p in run.iterdir()) == ["final", "run_info.json"]


def test_verify_without_llama_cpp_is_refused_before_any_file_is_written(tiny_model_dir, tmp_path,
                                                                        monkeypatch, capsys):
    """Was: both files exported (minutes for a large model), then the error."""
    import londonlm.export.gguf_check as check

    monkeypatch.setattr(check, "llama_cpp_available", lambda: False)
    spec = importlib.util.spec_from_file_location("export_gguf_r6", REPO / "10_scripts" / "export_gguf.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        run_main(script.main, ["--model", str(tiny_model_dir), "--out_dir", str(out), "--verify"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "llama-cpp-python" in err[0]
    assert not out.exists()


def test_a_tokenizer_with_no_end_of_text_token_is_one_line_naming_it(tiny_model_dir, tmp_path):
    """No <|endoftext|>, bos or eos: was `the tokenizer has no <|endoftext|> token`, which
    named no folder."""
    def rename(d):
        for a in d["added_tokens"]:
            if a["content"] == "<|endoftext|>":
                a["content"] = "<|eot|>"
        d["model"]["vocab"]["<|eot|>"] = d["model"]["vocab"].pop("<|endoftext|>")

    model = _model(tiny_model_dir, tmp_path, tokenizer=rename,
                   tokenizer_config=_drop("bos_token", "eos_token", "unk_token"))
    with pytest.raises(GGUFExportError, match=f"{model}: the tokenizer has no <\\|endoftext\\|> token, nor"):
        export_gguf(model, tmp_path / "out", GGUFOptions(types=("f16",)), **QUIET)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
