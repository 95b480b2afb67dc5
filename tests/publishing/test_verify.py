"""londonlm.publishing.verify and staging: the staged folder is checked through the project's one model
interface (londonlm.generation), and a missing generation_config.json is written with the
project's sampling defaults."""
from __future__ import annotations

import json
import shutil

from londonlm.generation import GenerationSettings, generate, generation_config_dict, load_model
from londonlm.publishing.staging import prepare_stage_dir, stage_model_files
from londonlm.publishing.verify import verify_model_folder

PROMPT = "It was a cold morning"


def test_verification_generates_through_the_model_interface(tiny_model_dir):
    rep = verify_model_folder(tiny_model_dir, prompt=PROMPT, max_new_tokens=8, run_snippet=False)
    assert rep.ok, rep.failures
    assert "every weight loads from model.safetensors" in rep.passed  # lm_head is tied, not saved
    lm = load_model(str(tiny_model_dir), device="cpu")
    greedy = generate(lm, PROMPT, GenerationSettings(max_new_tokens=8, temperature=0.0, seed=0))[0]
    assert rep.generation == PROMPT + greedy.text  # [EOT] + prompt, as every londonlm front end
    assert rep.facts["parameters"] == lm.n_params and rep.facts["era_tokens"] == lm.eras


def test_a_weight_missing_from_the_file_fails_verification(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["transformer.extra.weight"] = tensors["transformer.ln_f.weight"].clone()
    (folder / "model.safetensors").unlink()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    rep = verify_model_folder(folder, prompt=PROMPT, run_snippet=False)
    (failure,) = [f for f in rep.failures if f.startswith("every weight loads")]
    assert "unexpected_keys: transformer.extra.weight" in failure
    # a weight the config needs and the file lacks: the model interface refuses to load it
    tensors.pop("transformer.h.0.mlp.c_fc.bias")
    (folder / "model.safetensors").unlink()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    rep = verify_model_folder(folder, prompt=PROMPT, run_snippet=False)
    (failure,) = [f for f in rep.failures if f.startswith("AutoModelForCausalLM loads")]
    assert "transformer.h.0.mlp.c_fc.bias missing" in failure


def test_missing_generation_config_is_written_with_the_project_defaults(tiny_model_dir, tmp_path):
    src = tmp_path / "model"
    shutil.copytree(tiny_model_dir, src)
    (src / "generation_config.json").unlink()
    stage = prepare_stage_dir(tmp_path / "stage")
    logs = []
    stage_model_files(src, stage, log=logs.append)
    cfg = json.loads((src / "config.json").read_text())
    written = json.loads((stage / "generation_config.json").read_text())
    assert written == generation_config_dict(**{k: cfg.get(k) for k in ("bos_token_id", "eos_token_id",
                                                                          "pad_token_id")})
    assert written["do_sample"] is True and any("generation_config.json missing" in m for m in logs)
