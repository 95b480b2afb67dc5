"""Hostile round 16, model folders and their weights across every consumer (the checkpoint
checks, loading, evaluation, GGUF export, publishing, chat's base). A model saved in shards
(``save_pretrained(max_shard_size=...)``: ``model-0000N-of-0000M.safetensors`` and
``model.safetensors.index.json``, what transformers writes for a model over 5 GB) was refused
by every consumer as "model weights missing"; a damaged set must still be one line."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import evaluation_exit_code
from evaluation.test_hostile_round15_evaluation import write_corpus

INDEX = "model.safetensors.index.json"


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny model saved as transformers saves a large one: in shards, with their index."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("sharded")
    AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).save_pretrained(str(out), max_shard_size="20KB")
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(str(out))
    assert len(list(out.glob("model-*-of-*.safetensors"))) > 2 and not (out / "model.safetensors").exists()
    return out


@pytest.fixture
def sharded_copy(sharded, tmp_path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(sharded, dst)
    return dst


def shards(folder: Path) -> list[Path]:
    return sorted(folder.glob("model-*-of-*.safetensors"))


def one_error_line(err: str, *words) -> str:
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("error:") and err.count("error:") == 1 and "Traceback" not in err, err
    assert all(w in last for w in words), err
    return last


# --------------------------------------------------------------------------- sharded weights

def test_a_complete_sharded_set_is_a_usable_model_that_loads_as_the_single_file_does(sharded, tiny_model_dir):
    import torch

    from londonlm.core import checkpoint_problem, weight_files
    from londonlm.generation import load_model

    assert checkpoint_problem(sharded, need_training_state=False) is None
    assert [f.name for f in weight_files(sharded)] == [INDEX] + [f.name for f in shards(sharded)]
    one, many = (load_model(d, device="cpu") for d in (tiny_model_dir, sharded))
    ids = torch.tensor([[0, 5, 9, 42]])
    with torch.no_grad():
        assert torch.equal(one.model(ids).logits, many.model(ids).logits)


def _drop_shard(folder: Path) -> str:
    victim = shards(folder)[2]
    victim.unlink()
    return f"{victim.name}, named by {INDEX}, is missing"


def _cut_shard(folder: Path) -> str:
    victim = shards(folder)[3]
    with open(victim, "r+b") as f:
        f.truncate(victim.stat().st_size - 100)
    return f"{victim.name} unreadable"


def _index_not_json(folder: Path) -> str:
    (folder / INDEX).write_text('{"metadata": {}, "weight_map": {', encoding="utf-8")
    return f"{INDEX} unreadable (JSONDecodeError"


def _index_a_list(folder: Path) -> str:
    (folder / INDEX).write_text("[1, 2]", encoding="utf-8")
    return f"{INDEX} is no shard index"


def _index_outside(folder: Path) -> str:
    index = json.loads((folder / INDEX).read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "../elsewhere/model.safetensors"
    (folder / INDEX).write_text(json.dumps(index))
    return "names a shard outside the model folder ('../elsewhere/model.safetensors')"


def _index_wrong_shard(folder: Path) -> str:
    index = json.loads((folder / INDEX).read_text())
    name, shard = next((k, v) for k, v in index["weight_map"].items() if v != shards(folder)[0].name)
    index["weight_map"][name] = shards(folder)[0].name
    (folder / INDEX).write_text(json.dumps(index))
    return f"{shards(folder)[0].name} lacks {name}"


DAMAGE = [_drop_shard, _cut_shard, _index_not_json, _index_a_list, _index_outside, _index_wrong_shard]


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__.strip("_"))
def test_a_damaged_sharded_set_is_one_line_naming_what_is_wrong(sharded_copy, damage):
    from londonlm.core import checkpoint_problem

    why = damage(sharded_copy)
    problem = checkpoint_problem(sharded_copy, need_training_state=False)
    assert problem and why in problem and "\n" not in problem, problem


@pytest.mark.parametrize("damage", [_drop_shard, _cut_shard, _index_not_json], ids=lambda f: f.__name__.strip("_"))
def test_a_damaged_sharded_set_is_refused_by_the_loader_in_one_line(sharded_copy, damage):
    from londonlm.core import LondonLMError
    from londonlm.generation import load_model

    why = damage(sharded_copy)
    with pytest.raises(LondonLMError) as e:
        load_model(sharded_copy, device="cpu")
    assert why in str(e.value) and "cannot be loaded" in str(e.value)


def test_the_weights_hash_covers_every_shard_and_the_index(sharded_copy):
    """A shard changed (a resumed run re-saved one of them) makes the evaluation another model's."""
    from safetensors.torch import load_file, save_file

    from londonlm.evaluation import stale_evaluation
    from londonlm.evaluation.model import model_identity

    metrics = {"model": model_identity(sharded_copy)}
    assert stale_evaluation(metrics, sharded_copy, sharded_copy) is None
    last = shards(sharded_copy)[-1]
    state = load_file(str(last))
    save_file({k: v + 1e-3 for k, v in state.items()}, str(last), metadata={"format": "pt"})
    assert "scored other weights" in stale_evaluation(metrics, sharded_copy, sharded_copy)
    index = json.loads((sharded_copy / INDEX).read_text())
    index["metadata"]["note"] = "edited"
    (sharded_copy / INDEX).write_text(json.dumps(index))
    assert model_identity(sharded_copy)["weights_sha256"] != metrics["model"]["weights_sha256"]


def test_the_shape_checks_read_the_tensors_across_shards(sharded_copy):
    """A config.json that disagrees with weights spread over shards is named, as for one file."""
    from londonlm.generation import DamagedModel, check_model_dir

    check_model_dir(sharded_copy)
    cfg = json.loads((sharded_copy / "config.json").read_text())
    (sharded_copy / "config.json").write_text(json.dumps({**cfg, "n_embd": 64}))
    with pytest.raises(DamagedModel, match=r"differ: .*is \[\d+, 32\] in the weights but \[\d+, 64\]"):
        check_model_dir(sharded_copy)


@pytest.mark.slow  # a whole quick evaluation: ~50 s on a busy 2-core machine
def test_the_evaluation_scores_a_sharded_model(sharded, tmp_path, capsys):
    """run_evaluation.py --model <sharded folder>: scored, its metrics tied to every shard."""
    from londonlm.core import weights_sha256

    write_corpus(tmp_path)
    out = tmp_path / "ev"
    code = evaluation_exit_code(["--root", str(tmp_path), "--model", str(sharded), "--out_dir", str(out),
                                 "--max_eval_tokens", "64"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["weights_sha256"] == weights_sha256(sharded)


def test_the_gguf_export_reads_every_shard(sharded, tiny_model_dir, tmp_path):
    """The same GGUF tensors as from the one-file model; the sidecar vouches for every shard."""
    pytest.importorskip("gguf")
    import gguf
    import numpy as np

    from londonlm.core import sha256_file
    from londonlm.export import GGUFOptions, export_gguf

    made = {name: export_gguf(src, tmp_path / name, GGUFOptions(types=("f16",), stem="m"), log=lambda *_: None)
            for name, src in (("one", tiny_model_dir), ("many", sharded))}
    tensors = {name: {t.name: np.array(t.data) for t in gguf.GGUFReader(str(e.files["f16"])).tensors}
               for name, e in made.items()}
    assert tensors["one"].keys() == tensors["many"].keys()
    assert all(np.array_equal(tensors["one"][k], tensors["many"][k]) for k in tensors["one"])
    inputs = json.loads((tmp_path / "many" / "sidecar.json").read_text())["inputs"]
    assert {f.name: sha256_file(f) for f in [sharded / INDEX, *shards(sharded)]}.items() <= inputs.items()


def test_the_gguf_export_of_a_set_missing_a_shard_is_one_line(sharded_copy, tmp_path):
    pytest.importorskip("gguf")
    from londonlm.export.gguf import GGUFExportError, GGUFOptions, export_gguf

    why = _drop_shard(sharded_copy)
    with pytest.raises(GGUFExportError, match="cannot be exported: sharded weights incomplete") as e:
        export_gguf(sharded_copy, tmp_path / "out", GGUFOptions(types=("f16",)), log=lambda *_: None)
    assert why in str(e.value) and not (tmp_path / "out").exists()


@pytest.fixture
def publish_project(tmp_path, sharded):
    """test_publish's project, its run's final/ a sharded model evaluated as such."""
    from publishing.test_publish import _metrics, _write_corpus, _write_evaluation

    run = tmp_path / "root" / "09_models" / "checkpoints" / "micro"
    shutil.copytree(sharded, run / "final")
    (run / "run_info.json").write_text(json.dumps({"preset": "micro", "parameters": 43904, "global_step": 4,
                                                   "max_steps": 4, "final_eval_loss": 6.0}))
    (run / "evaluation").mkdir()
    (run / "evaluation" / "samples.jsonl").write_text(json.dumps(
        {"kind": "continuation", "mode": "greedy", "prompt": "Up", "reference": "x", "generated": "Up and"}) + "\n")
    _write_evaluation(run / "evaluation", _metrics(6.0), run / "final")
    _write_corpus(tmp_path / "root" / "data" / "london_historical" / "processed")
    return tmp_path / "root"


@pytest.mark.network_local
def test_publishing_uploads_the_index_and_every_shard(publish_project, hub, capsys):
    from hub_fixtures import staged_files
    from publishing.test_publish import REPO_ID, _run

    final = publish_project / "09_models" / "checkpoints" / "micro" / "final"
    assert _run(publish_project, "--repo_id", REPO_ID) == 0, capsys.readouterr().err
    sent = hub.files(REPO_ID)
    for f in [final / INDEX, *shards(final)]:
        assert sent[f.name] == f.read_bytes()
    assert sent == staged_files(publish_project / "09_models" / "checkpoints" / "micro" / "hub_stage")


@pytest.mark.network_local
def test_publishing_a_set_missing_a_shard_is_refused_before_any_request(publish_project, hub, capsys):
    from publishing.test_publish import REPO_ID, _run

    why = _drop_shard(publish_project / "09_models" / "checkpoints" / "micro" / "final")
    assert _run(publish_project, "--repo_id", REPO_ID) == 2
    one_error_line(capsys.readouterr().err, why)
    assert hub.requests == [] and hub.repos == {}


# --------------------------------------------------------------------------- evaluation refusals

@pytest.fixture(scope="module")
def eval_project(tmp_path_factory, tiny_model_dir) -> Path:
    root = tmp_path_factory.mktemp("r16eval")
    write_corpus(root)
    shutil.copytree(tiny_model_dir, root / "09_models" / "checkpoints" / "micro" / "final")
    return root


def test_a_one_token_text_file_refusal_leaves_no_out_dir_behind(eval_project, tmp_path, capsys):
    """The refusal needs the model's tokenizer, so it came after `--out_dir` was made: an empty
    folder (and its parents) was left behind by a command that said nothing was done."""
    f = tmp_path / "short.txt"
    f.write_text("London", encoding="utf-8")
    out = tmp_path / "new" / "eval"
    code = evaluation_exit_code(["--root", str(eval_project), "--text_files", str(f), "--out_dir", str(out)])
    assert code == 2
    one_error_line(capsys.readouterr().err, "one token")
    assert not (tmp_path / "new").exists()


def test_validation_documents_of_one_token_each_are_named_as_such(eval_project, tmp_path, capsys):
    """They were "the validation text is empty ... hold no text to score": the user looked for
    empty files and found text."""
    root = tmp_path / "root"
    shutil.copytree(eval_project, root)
    proc = root / "data" / "london_historical" / "processed"
    for line in (proc / "manifest.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["split"] == "validation":
            (proc / row["path"]).write_text("London", encoding="utf-8")
    code = evaluation_exit_code(["--root", str(root), "--out_dir", str(tmp_path / "ev")])
    assert code == 2
    line = one_error_line(capsys.readouterr().err, "one token", "'London'", "too short to score")
    assert "is empty" not in line and not (tmp_path / "ev").exists()


# --------------------------------------------------------------------------- generation_config.json, dtype

@pytest.fixture
def model_copy(tiny_model_dir, tmp_path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(tiny_model_dir, dst)
    return dst


@pytest.mark.parametrize("content, why", [("[1, 2]", "TypeError: 'list' object is not a mapping"),
                                          ("5", "TypeError: 'int' object is not a mapping"),
                                          ('{"max_new_tokens": -5}', "max_new_tokens` must be greater than 0")])
def test_a_generation_config_transformers_cannot_read_is_one_line_naming_it(model_copy, content, why):
    """transformers' from_pretrained fails on it: the model interface said "cannot be loaded:
    TypeError: 'list' object is not a mapping", naming no file (the inference command, the
    server, evaluation), and chat fine-tuning's base load was that TypeError's traceback."""
    from londonlm.chat.finetune import load_base_for_chat
    from londonlm.generation import DamagedModel, load_model

    (model_copy / "generation_config.json").write_text(content, encoding="utf-8")
    for load in (lambda: load_model(model_copy, device="cpu"), lambda: load_base_for_chat(model_copy)):
        with pytest.raises(DamagedModel) as e:
            load()
        line = str(e.value)
        assert "its generation_config.json is not one transformers can read" in line and why in line, line
        assert "\n" not in line and "or delete it" in line


def test_a_generation_config_that_is_no_json_is_still_passed_over(model_copy):
    """(as transformers passes it over): the library's sampling defaults are used."""
    from londonlm.chat.finetune import load_base_for_chat
    from londonlm.core import GenerationSettings
    from londonlm.generation import load_model

    (model_copy / "generation_config.json").write_text("{", encoding="utf-8")
    assert load_model(model_copy, device="cpu").defaults == GenerationSettings()
    assert load_base_for_chat(model_copy)[0].config.vocab_size > 0


def test_a_base_saved_in_half_precision_is_fine_tuned_in_float32(tiny_model_dir, tmp_path):
    """A base saved in bfloat16 (config.json's "dtype") was loaded so by chat fine-tuning, and
    AdamW stepped bfloat16 weights (updates below their precision lost without a word)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from londonlm.chat.finetune import load_base_for_chat

    base = tmp_path / "base"
    AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).to(torch.bfloat16).save_pretrained(str(base))
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(str(base))
    assert json.loads((base / "config.json").read_text())["dtype"] == "bfloat16"
    model, _ = load_base_for_chat(base)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


# --------------------------------------------------------------------------- a folder of symlinks

def test_a_model_folder_of_relative_symlinks_is_staged_as_its_files(sharded, tmp_path):
    """A Hugging Face cache snapshot (``snapshots/<rev>/x -> ../../blobs/<sha>``) or a folder made
    with ``ln -s``: staging hard-linked the symlinks themselves, which named nothing from the
    staging folder, and verification said "config.json missing from the staged folder"."""
    from londonlm.publishing.staging import prepare_stage_dir, stage_model_files
    from londonlm.publishing.verify import verify_model_folder

    blobs, snap = tmp_path / "blobs", tmp_path / "snapshots" / "rev"
    blobs.mkdir()
    snap.mkdir(parents=True)
    for f in sharded.iterdir():
        shutil.copy(f, blobs / f.name)
        (snap / f.name).symlink_to(Path("..", "..", "blobs", f.name))
    stage = prepare_stage_dir(tmp_path / "stage")
    stage_model_files(snap, stage, log=lambda *_: None)
    for f in sharded.iterdir():
        assert (stage / f.name).read_bytes() == f.read_bytes()
    report = verify_model_folder(stage, run_snippet=False)
    assert report.ok, report.failures


# --------------------------------------------------------------------------- the other readers of a folder's weights

def test_a_run_folder_inside_a_sharded_model_folder_is_refused(sharded):
    """A model folder is config.json and weights: a sharded one was no model folder to the run
    folder guard, so a training run could be made among its shards."""
    from londonlm.core.layout import enclosing_artifact

    assert enclosing_artifact(sharded / "run") == f"the model folder {sharded.resolve()}"


def test_the_chat_cards_weights_time_reads_every_shard(sharded_copy):
    """The chat card's check that its evaluation is newer than the weights: max() of no file
    (ValueError traceback) for a sharded chat model; now the newest shard's time."""
    import os

    from londonlm.publishing.chat import _weights_mtime

    newest = shards(sharded_copy)[1]
    os.utime(newest, (2e9, 2e9))
    assert _weights_mtime(sharded_copy) == 2e9


def test_the_ocr_judges_report_names_a_sharded_model_by_its_weights(sharded):
    """`repair_ocr.py --lm <sharded folder>`: "holds no model: no model.safetensors or
    pytorch_model.bin"; its report now names the weights as the evaluation does."""
    from londonlm.core import weights_sha256
    from londonlm.generation import ContinuationScorer

    assert ContinuationScorer(str(sharded)).identity()["sha256"] == weights_sha256(sharded)[:16]
