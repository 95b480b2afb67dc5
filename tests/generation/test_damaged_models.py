"""Damaged model folders are refused where the one model interface loads them, in one line that
names the folder and the problem, and every stage that reads a model (evaluation, inference,
the server, chat evaluation, GGUF export) says that line and exits 2: never a traceback, a NaN
metric, a 500 per request, or (the "llama" config beside a small GPT-2's weights) a model built
at the config's size. The llama case is only ever tried on a small synthetic config."""
from __future__ import annotations

import importlib.util
import json
import shutil
import socket
from pathlib import Path

import pytest

from londonlm.core.errors import run_main
from londonlm.generation import DamagedModel, load_model

REPO = Path(__file__).resolve().parents[2]


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, **changes}))


def config_list(folder: Path) -> str:
    (folder / "config.json").write_text("[1, 2]")
    return "not a JSON object"


def vocab_100(folder: Path) -> str:
    _edit_config(folder, vocab_size=100)
    return "transformer.wte.weight is"


def wider(folder: Path) -> str:
    _edit_config(folder, n_embd=64)
    return "config.json and the weights differ"


def layers_as_text(folder: Path) -> str:
    _edit_config(folder, n_layer="2")  # huggingface_hub's strict config check: no TypeError, its own
    return "does not describe a model transformers can build"


def dtype_as_list(folder: Path) -> str:
    _edit_config(folder, dtype=[])  # transformers' repr of the config split it at a dot: IndexError
    return "does not describe a model transformers can build"


def no_positions(folder: Path) -> str:
    _edit_config(folder, n_positions=0)
    return "transformer.wpe.weight is"


def small_llama(folder: Path) -> str:
    """Another architecture's config (kept tiny: never try this with real llama sizes)."""
    _edit_config(folder, model_type="llama", hidden_size=32, intermediate_size=64,
                 num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, vocab_size=576)
    return "describes a 'llama' model"


def bigger_tokenizer(folder: Path) -> str:
    from transformers import AutoTokenizer

    texts = [f"word{i} other{i * 7} thing{i * 13}" for i in range(4000)]
    AutoTokenizer.from_pretrained(str(folder)).train_new_from_iterator(texts, vocab_size=3000) \
        .save_pretrained(str(folder))
    return "but the model's embedding has only"


def no_tokenizer(folder: Path) -> str:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    return "has no tokenizer"


def panicking_tokenizer(folder: Path) -> str:
    """A BPE subword prefix its merges do not carry: the tokenizers library panics building it
    (pyo3's PanicException is no Exception: a traceback from inside transformers)."""
    data = json.loads((folder / "tokenizer.json").read_text())
    data["model"]["continuing_subword_prefix"] = "##"
    (folder / "tokenizer.json").write_text(json.dumps(data))
    return "the tokenizers library cannot build it"


def nan_weights(folder: Path) -> str:
    import torch
    from safetensors.torch import load_file, save_file

    tensors = {k: torch.full_like(v, float("nan")) for k, v in
               load_file(str(folder / "model.safetensors")).items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return "NaN or infinite"


def _write(name: str, text: str):
    """A tokenizer (or generation) file of the right JSON kind or another, the wrong shape inside:
    transformers indexed into them, a TypeError or AttributeError traceback."""
    def damage(folder: Path) -> str:
        (folder / name).write_text(text)
        return f"{name} holds a list" if text.startswith("[") and "generation" not in name else "cannot be loaded"
    damage.__name__ = f"{name}={text}"
    return damage


def _deep(name: str):
    """JSON nested past the parser's depth: a RecursionError, past every ``except ValueError``."""
    def damage(folder: Path) -> str:
        (folder / name).write_text("[" * 100_000)
        return "nested past the parser's depth"
    damage.__name__ = f"{name}=deep"
    return damage


SHAPES = [_write("tokenizer.json", "[1, 2]"), _write("tokenizer.json", '{"added_tokens": 5}'),
          _write("tokenizer_config.json", "[1]"), _write("tokenizer_config.json", '{"tokenizer_class": 5}'),
          _write("tokenizer_config.json", '{"added_tokens_decoder": [1]}'),
          _write("special_tokens_map.json", '{"eos_token": 5}'), _write("special_tokens_map.json", "[1]"),
          _write("generation_config.json", "[1]"), _deep("generation_config.json")]
DAMAGE = [config_list, vocab_100, wider, layers_as_text, dtype_as_list, no_positions, small_llama, bigger_tokenizer, no_tokenizer,
          panicking_tokenizer, nan_weights, *SHAPES]


def damaged(tiny_model_dir: Path, tmp_path: Path, damage) -> tuple[Path, str]:
    folder = tmp_path / damage.__name__
    shutil.copytree(tiny_model_dir, folder)
    return folder, damage(folder)


@pytest.mark.parametrize("damage", DAMAGE)
def test_load_model_refuses_a_damaged_folder_in_one_line(tiny_model_dir, tmp_path, damage):
    folder, words = damaged(tiny_model_dir, tmp_path, damage)
    with pytest.raises(DamagedModel) as e:
        load_model(folder, device="cpu")
    assert words in str(e.value) and str(folder) in str(e.value) and "\n" not in str(e.value)


def test_the_intact_folder_still_loads(tiny_model_dir):
    assert load_model(tiny_model_dir, device="cpu").n_params > 0


def test_a_config_that_disagrees_with_its_weights_never_builds_a_model(tiny_model_dir, tmp_path,
                                                                        monkeypatch):
    """The shapes are compared before from_pretrained runs: a config naming a far larger model
    than its weights is refused without that model being allocated."""
    import transformers

    folder, _ = damaged(tiny_model_dir, tmp_path, small_llama)

    def never(*a, **k):
        raise AssertionError("the model was built before its config was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", never)
    with pytest.raises(DamagedModel):
        load_model(folder, device="cpu")


# --------------------------------------------------------------------------- every stage

def _script(rel: str):
    spec = importlib.util.spec_from_file_location(Path(rel).stem + "_damaged", REPO / rel)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _exit_code(rel: str, argv: list[str]) -> int:
    with pytest.raises(SystemExit) as done:
        run_main(_script(rel).main, argv)
    return done.value.code


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stage_argv(stage: str, folder: Path, root: Path, out: Path) -> tuple[str, list[str]]:
    if stage == "evaluation":
        return "05_evaluation/run_evaluation.py", ["--root", str(root), "--mode", "quick",
                                                   "--model", str(folder), "--out_dir", str(out)]
    if stage == "inference":
        return "06_inference/inference_unified.py", ["--root", str(root), "--model", str(folder),
                                                     "--prompt", "Up betimes", "--max_new_tokens", "4"]
    if stage == "serve":
        return "06_inference/serve.py", ["--root", str(root), "--model", str(folder),
                                         "--port", str(_free_port()), "--device", "cpu"]
    if stage == "export":
        return "10_scripts/export_gguf.py", ["--root", str(root), "--model", str(folder),
                                             "--out_dir", str(out)]
    base = shutil.copytree(folder, folder.parent / "base")  # as damaged (the chat model itself is refused as its base)
    (folder / "chat_info.json").write_text(json.dumps({"base_model": str(base)}))
    return "07_finetuning/evaluate_chat.py", ["--root", str(root), "--model", str(folder),
                                              "--out_dir", str(out)]


@pytest.mark.parametrize("damage", [config_list, vocab_100, bigger_tokenizer, no_tokenizer, panicking_tokenizer,
                                    nan_weights])
@pytest.mark.parametrize("stage", ["evaluation", "inference", "serve", "chat_evaluation", "export"])
def test_every_stage_says_the_damage_in_one_line(tiny_model_dir, micro_root, chat_root, tmp_path,
                                                 capsys, stage, damage):
    folder, words = damaged(tiny_model_dir, tmp_path, damage)
    if stage == "export":  # its own words for what it reads itself (tensors, tokenizer.json)
        words = {nan_weights: "NaN or infinite", no_tokenizer: "tokenizer.json not found",
                 panicking_tokenizer: "continuing_subword_prefix='##', which llama.cpp"}.get(damage, words)
    root = chat_root if stage == "chat_evaluation" else micro_root  # each with its stage's data
    script, argv = _stage_argv(stage, folder, root, tmp_path / "out")
    assert _exit_code(script, argv) == 2
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and words in errors[0], err
    assert "serving" not in out and "Traceback" not in err


@pytest.mark.parametrize("damage", [config_list, vocab_100, bigger_tokenizer, panicking_tokenizer, nan_weights])
def test_a_damaged_chat_base_is_one_line_before_fine_tuning(tiny_model_dir, chat_root, tmp_path, capsys, damage):
    """The chat stage loads its base itself (it adds the chat tokens): the same checks, the same line."""
    folder, words = damaged(tiny_model_dir, tmp_path, damage)
    argv = ["--root", str(chat_root), "--preset", "micro", "--init_from", str(folder), "--output_dir",
            str(tmp_path / "damaged-chat"), "--max_steps", "1"]
    assert _exit_code("07_finetuning/finetune_chat.py", argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and words in errors[0] and "Traceback" not in err, err
    assert not (tmp_path / "damaged-chat" / "final").exists()


@pytest.mark.parametrize("header", [b'{"w": 1}', b'{"w": {"dtype": "F32"}}', b"[1, 2]", b"{not json"])
def test_a_safetensors_header_of_the_wrong_shape_is_one_line(tmp_path, header):
    from londonlm.generation.checks import stored_shapes

    (tmp_path / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(DamagedModel, match="its header is damaged"):
        stored_shapes(tmp_path)


def test_a_folder_in_the_tokenizer_files_place_is_one_line(tiny_model_dir, tmp_path):
    """transformers' message (no backend tokenizer, then its advice to install sentencepiece)
    runs over six lines; the stage printed them under its `error:` line."""
    from londonlm.core import GenerationError

    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.json" / "x").mkdir(parents=True)
    (folder / "vocab.json").write_text('{"a": 0}')  # a slow tokenizer's files, as a run's final/ has
    (folder / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(GenerationError) as e:
        load_model(folder, device="cpu")
    assert str(folder) in str(e.value) and "\n" not in str(e.value)
