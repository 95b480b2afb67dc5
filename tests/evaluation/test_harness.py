"""lm-eval-harness with londonlm's task files: the probes task scores like our own probes, and
the text-folder task's bits per byte equals londonlm.evaluation.metrics.lm's on the same texts."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from conftest import SAMPLE_TEXTS, short_probes

pytest.importorskip("lm_eval")

from londonlm.evaluation.harness import TASKS_DIR, HarnessError, run_harness  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet():
    logging.getLogger("lm_eval").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def model_and_tok(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32),
            AutoTokenizer.from_pretrained(str(tiny_model_dir)))


def test_task_files_ship_in_the_package():
    names = {p.name for p in TASKS_DIR.iterdir()}
    assert {"london_probes.yaml", "london_text_bpb.yaml", "utils.py"} <= names


def test_probes_task_matches_londonlm_probe_scoring(tiny_model_dir, model_and_tok, tmp_path):
    from londonlm.evaluation.metrics.probes import load_mc_jsonl, score_items

    model, tok = model_and_tok
    probes = short_probes(tmp_path / "probes.jsonl", tok)
    got = run_harness(tiny_model_dir, ["london_probes"], probes_path=probes)["london_probes"]
    ours = score_items(model, tok, load_mc_jsonl(probes))["accuracy"]
    assert got["sample_len"] == len(load_mc_jsonl(probes)) >= 6
    assert got["acc"] == pytest.approx(ours["sum"])
    assert got["acc_norm"] == pytest.approx(ours["per_byte"])


def test_probes_task_reads_the_shipped_file(tiny_model_dir):
    got = run_harness(tiny_model_dir, ["london_probes"], limit=4)["london_probes"]
    assert got["sample_len"] == 4 and 0.0 <= got["acc"] <= 1.0


def test_bits_per_byte_agrees_with_ours(tiny_model_dir, model_and_tok, tmp_path):
    from londonlm.evaluation.metrics.lm import evaluate_lm

    model, tok = model_and_tok
    folder = tmp_path / "texts"
    folder.mkdir()
    # documents that fit one 64-token window: both sides score every token once, after
    # <|endoftext|>, with the whole document as context
    texts = [t[:60] for t in SAMPLE_TEXTS]
    assert max(len(tok(t)["input_ids"]) for t in texts) < 64
    for i, t in enumerate(texts):
        (folder / f"doc{i}.txt").write_text(t, encoding="utf-8")
    (folder / "empty.txt").write_text("", encoding="utf-8")   # skipped by both
    got = run_harness(tiny_model_dir, ["london_text_bpb"], text_dir=folder)["london_text_bpb"]
    ours = evaluate_lm(model, tok, texts, prepend_tokens=[[tok.eos_token_id]] * len(texts))
    assert got["sample_len"] == len(texts)
    assert got["bits_per_byte"] == pytest.approx(ours["bits_per_byte"], rel=0.005)
    assert 2 ** got["bits_per_byte"] == pytest.approx(got["byte_perplexity"], rel=1e-6)


def test_clear_errors(tiny_model_dir, tmp_path):
    with pytest.raises(HarnessError, match="text_dir"):
        run_harness(tiny_model_dir, ["london_text_bpb"])
    with pytest.raises(HarnessError, match="unknown lm-eval task"):
        run_harness(tiny_model_dir, ["london_nonsense"])
    with pytest.raises(HarnessError, match="config.json"):
        run_harness(tmp_path, ["london_probes"])


def test_text_loader_reads_folder_from_env(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("lm_eval_task_utils", TASKS_DIR / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    (tmp_path / "b.txt").write_text("second", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first words here", encoding="utf-8")
    (tmp_path / "notes.md").write_text("not a text file", encoding="utf-8")
    monkeypatch.setenv(utils.TEXT_DIR_ENV, str(tmp_path))
    ds = utils.load_text_folder()["test"]
    assert ds["name"] == ["a.txt", "b.txt"]
    res = utils.process_text_results(ds[0], (-3.0,))
    assert res["bits_per_byte"] == (-3.0, 16) and res["word_perplexity"] == (-3.0, 3)
    monkeypatch.delenv(utils.TEXT_DIR_ENV)
    with pytest.raises(ValueError, match=utils.TEXT_DIR_ENV):
        utils.load_text_folder()
    assert json.loads(json.dumps(utils.load_probes()["test"][0]))["continuations"]
