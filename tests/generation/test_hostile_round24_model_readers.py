"""Hostile round 24, readers of a model folder while a training replaces it: final/ and best/ are
saved by building a whole folder and renaming it in (``training.record.swap_in``: the old one aside,
the new one in, the old one deleted), and ``--save_total_limit`` rotates checkpoints away. Each
reader (the model interface, the evaluation, the GGUF export) is stepped into at one exact read and
the folder swapped or removed there, as the training does it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from londonlm.core import Layout, weights_sha256
from londonlm.generation import GenerationError, load_model, model_stamp

QUIET = {"log": lambda *_: None}


@pytest.fixture(scope="module")
def saves(tmp_path_factory, tiny_model_dir):
    """Two saves of one shape: ``a`` (the fixture), ``b`` (other weights, and a tokenizer with one
    token more, so which save a loaded tokenizer came from shows)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tmp_path_factory.mktemp("saves")
    a, b = base / "a", base / "b"
    shutil.copytree(tiny_model_dir, a)
    model = AutoModelForCausalLM.from_pretrained(str(a))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    model.save_pretrained(str(b))
    tok = AutoTokenizer.from_pretrained(str(a))
    tok.add_tokens(["<|1700s|>"], special_tokens=True)
    tok.save_pretrained(str(b))
    return a, b


def _run(tmp_path, saves) -> Path:
    run = Layout(tmp_path).run("run").dir
    run.mkdir(parents=True)
    shutil.copytree(saves[0], run / "final")
    return run


def _swap(run: Path, new: Path, name: str = "final") -> None:
    """What ``swap_in`` does to the folder a reader holds by its path."""
    tmp, old = run / f".{name}.tmp", run / f".{name}.old"
    shutil.copytree(new, tmp)
    (run / name).rename(old)
    tmp.rename(run / name)
    shutil.rmtree(old)


def _at_model_read(monkeypatch, act, times: int = 1) -> list:
    """Run ``act`` just before transformers reads a model's config and weights (the first ``times``)."""
    from transformers import AutoModelForCausalLM

    real, fired = AutoModelForCausalLM.from_pretrained, []

    def from_pretrained(cls, *a, **k):
        if len(fired) < times:
            fired.append(a[0])
            act()
        return real(*a, **k)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(from_pretrained))
    return fired


def _checkpoint(run: Path, step: int, save: Path) -> Path:
    """A resumable checkpoint-N (its weights a copy of ``save``)."""
    ck = run / f"checkpoint-{step}"
    shutil.copytree(save, ck)
    (ck / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    torch.save({}, ck / "optimizer.pt")
    torch.save({}, ck / "scheduler.pt")
    return ck


# --- the model interface -----------------------------------------------------------------------------
def test_a_final_swapped_after_its_tokenizer_is_read_loads_one_save(tmp_path, saves, monkeypatch):
    """Was: the tokenizer of the old final/ with the config and weights of the new one, exit 0
    (here the new save's tokenizer has a token more: the loaded one lacked it). Now the load whose
    folder changed under it is done again, and tokenizer and weights are of the save now there."""
    run = _run(tmp_path, saves)
    _at_model_read(monkeypatch, lambda: _swap(run, saves[1]))
    lm = load_model(run / "final", device="cpu")
    assert "<|1700s|>" in lm.tokenizer.get_vocab()
    assert weights_sha256(run / "final") == weights_sha256(saves[1])
    assert lm.stamp == model_stamp(run / "final")


def test_a_final_removed_mid_load_is_one_line_saying_to_run_again(tmp_path, saves, monkeypatch):
    """Was: "cannot load model from …/final: Repo id must be in the form 'repo_name' or
    'namespace/repo_name': …": transformers' words for a Hub id, nothing on what happened or what
    to do. Now one line saying the folder was replaced or removed while it was loaded."""
    run = _run(tmp_path, saves)
    _at_model_read(monkeypatch, lambda: shutil.rmtree(run / "final"))
    with pytest.raises(GenerationError, match=r"was replaced or removed while it was loaded .*run the same "
                                              r"command again") as e:
        load_model(run / "final", device="cpu")
    assert "Repo id" not in str(e.value) and "\n" not in str(e.value)


def test_latest_rotated_away_mid_load_loads_the_newer_checkpoint(tmp_path, saves, monkeypatch):
    """``latest`` resolved to checkpoint-4; the training then saved checkpoint-6 and rotated
    checkpoint-4 away (--save_total_limit 1) before its weights were read. Was: the Repo-id line above.
    Now the spec is resolved again and checkpoint-6 is loaded, with step 6."""
    run = _run(tmp_path, saves)
    _checkpoint(run, 4, saves[0])

    def rotate():
        _checkpoint(run, 6, saves[1])
        shutil.rmtree(run / "checkpoint-4")
    fired = _at_model_read(monkeypatch, rotate)
    lm = load_model("latest", layout=Layout(tmp_path), run="run", device="cpu")
    assert Path(fired[0]).name == "checkpoint-4" and lm.step == 6
    assert "<|1700s|>" in lm.tokenizer.get_vocab()


def test_a_folder_replaced_at_every_read_is_refused_not_mixed(tmp_path, saves, monkeypatch):
    """A folder swapped again during the second load too: one line, never a mixture."""
    run = _run(tmp_path, saves)
    saved = iter([saves[1], saves[0]])
    _at_model_read(monkeypatch, lambda: _swap(run, next(saved)), times=2)
    with pytest.raises(GenerationError, match="was replaced or removed while it was loaded"):
        load_model(run / "final", device="cpu")


def test_a_folder_left_alone_loads_as_before_with_its_stamp(saves):
    """Nothing changed under it: loaded once; a damaged folder is still said as it is."""
    lm = load_model(saves[0], device="cpu")
    assert lm.stamp == model_stamp(saves[0]) and "<|1700s|>" not in lm.tokenizer.get_vocab()


# --- the evaluation ----------------------------------------------------------------------------------
def test_an_evaluation_never_records_the_hash_of_weights_it_did_not_score(tmp_path, saves, monkeypatch):
    """final/ swapped between the evaluation's hash of its weights and their load. Was: exit 0, and
    metrics.json recorded the old weights' sha256 over figures of the new weights. Now one line, and
    no metrics.json."""
    from conftest import SAMPLE_TEXTS
    from londonlm.evaluation import EvaluationSettings, run_evaluation

    run = _run(tmp_path, saves)
    _at_model_read(monkeypatch, lambda: _swap(run, saves[1]))
    with pytest.raises(GenerationError, match="was replaced or removed while it was evaluated"):
        run_evaluation(run / "final", tmp_path / "eval", EvaluationSettings(device="cpu", max_eval_tokens=200),
                       val_texts=SAMPLE_TEXTS[:2], **QUIET)
    assert not (tmp_path / "eval" / "metrics.json").exists()


# --- the GGUF export ---------------------------------------------------------------------------------
def test_a_gguf_export_never_vouches_for_weights_it_did_not_read(tmp_path, saves, monkeypatch):
    """final/ swapped after the export hashed its inputs, before it read the tensors. Was: exit 0, a
    GGUF of the new weights under a sidecar holding the old weights' sha256 (two types could be of
    two saves). Now one line; no GGUF file and no sidecar; the rerun exports the save now there."""
    pytest.importorskip("gguf")
    from londonlm.export import gguf as export

    run = _run(tmp_path, saves)
    real, fired = export._file_tensors, []

    def file_tensors(weights, table):
        if not fired:
            fired.append(1)
            _swap(run, saves[1])
        return real(weights, table)
    monkeypatch.setattr(export, "_file_tensors", file_tensors)
    out = tmp_path / "gguf"
    with pytest.raises(GenerationError, match="was replaced or removed while it was exported"):
        export.export_gguf(run / "final", out, export.GGUFOptions(types=("f16",)), **QUIET)
    assert not list(out.glob("*")) if out.exists() else True
    done = export.export_gguf(run / "final", out, export.GGUFOptions(types=("f16",)), **QUIET)
    sidecar = json.loads((out / "sidecar.json").read_text())
    assert done.files["f16"].is_file()
    assert json.dumps(sidecar).count(weights_sha256(saves[1])) >= 1


def test_a_gguf_export_whose_folder_is_removed_mid_read_is_one_line(tmp_path, saves, monkeypatch):
    """The checkpoint exported was rotated away while its tensors were read. Was a
    ``FileNotFoundError: No such file or directory: …/model.safetensors`` traceback out of
    safetensors. Now one ``error:`` line, exit 2, and nothing written."""
    pytest.importorskip("gguf")
    from londonlm.core.errors import run_main
    from londonlm.export import gguf as export

    run = _run(tmp_path, saves)
    real = export._file_tensors
    monkeypatch.setattr(export, "_file_tensors",
                        lambda *a: (shutil.rmtree(run / "final"), real(*a))[1])
    out = tmp_path / "gguf"
    with pytest.raises(SystemExit) as stop:
        run_main(lambda _: export.export_gguf(run / "final", out, export.GGUFOptions(types=("f16",)), **QUIET), [])
    assert stop.value.code == 2
    assert not out.exists() or not list(out.iterdir())
