"""Evaluation runs on a GPU when there is one: run_evaluation.py's and the pipeline's default
device is ``auto`` (resolved by pick_device) with the weights' dtype ``auto`` (bf16 on a GPU),
and metrics.json records both. CUDA is faked: the load is stopped once it has asked."""
from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from conftest import SAMPLE_TEXTS


class Stop(Exception):
    """Raised by the fake loader once the request is recorded (there is no GPU to go on with)."""


@pytest.fixture
def fake_gpu(monkeypatch) -> list[dict]:
    """A CUDA GPU with bf16 for pick_device/pick_dtype; from_pretrained records its keywords, stops."""
    from transformers import AutoModelForCausalLM

    calls: list[dict] = []

    def from_pretrained(source, **kwargs):
        calls.append(kwargs)
        raise Stop

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    return calls


@pytest.fixture
def project(tmp_path, tiny_model_dir):
    """A project root with a run's final/ and a processed corpus of three validation texts."""
    proc = tmp_path / "data" / "london_historical" / "processed"
    (proc / "texts").mkdir(parents=True)
    rows = []
    for i in range(3):
        (proc / "texts" / f"d{i}.txt").write_text(SAMPLE_TEXTS[i] * 3, encoding="utf-8")
        rows.append({"id": f"d{i}", "year": 1650 + i, "split": "validation", "path": f"texts/d{i}.txt"})
    (proc / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.copytree(tiny_model_dir, tmp_path / "09_models" / "checkpoints" / "micro" / "final")
    return tmp_path


def test_the_evaluation_cli_defaults_to_auto_device_and_dtype(project, fake_gpu, monkeypatch):
    import config
    from londonlm.evaluation import cli, model

    loads, real = [], model._load
    monkeypatch.setattr(model, "_load", lambda path, **kw: (loads.append(kw), real(path, **kw))[1])
    parser = cli.build_parser("run_evaluation.py", list(config.PRESETS), "micro")
    args = parser.parse_args(["--root", str(project), "--preset", "micro"])
    assert args.device == "auto" and args.dtype == "auto"
    with pytest.raises(Stop):
        cli.run(args, config.get_layout(args.root))
    assert loads == [{"device": "cuda", "dtype": "auto"}]
    assert fake_gpu[0]["dtype"] == torch.bfloat16
    help_text = " ".join(parser.format_help().split())
    assert "--device cuda --batch_size 8 (without a GPU: dtype=float32, --device cpu)" in help_text


def test_metrics_record_the_device_and_dtype(tiny_model_dir, tmp_path):
    from londonlm.evaluation import EvaluationSettings, run_evaluation

    asked = EvaluationSettings(device="cpu", dtype="bfloat16", max_eval_tokens=200)
    m = run_evaluation(tiny_model_dir, tmp_path, asked, val_texts=SAMPLE_TEXTS[:2], log=lambda *_: None)
    assert m["settings"]["device"] == "cpu" and m["settings"]["dtype"] == "bfloat16"
    saved = json.loads((tmp_path / "metrics.json").read_text())["settings"]
    assert (saved["device"], saved["dtype"]) == ("cpu", "bfloat16")
    report = (tmp_path / "report.md").read_text()
    assert "device cpu, weights bfloat16" in report and "dtype=bfloat16 " in report


def test_the_pipeline_evaluates_where_load_model_puts_the_model(monkeypatch, tmp_path):
    """Not a hard-coded CPU: load_model's own default (``auto``), and the scoring on its device."""
    import londonlm.corpus
    import londonlm.evaluation
    import londonlm.generation
    from londonlm.pipeline import evaluate_validation

    loads, scored = [], []
    lm = SimpleNamespace(model=object(), tokenizer=object(), device="cuda", dtype="bfloat16")
    monkeypatch.setattr(londonlm.generation, "load_model", lambda *a, **kw: (loads.append(kw), lm)[1])
    monkeypatch.setattr(londonlm.corpus, "read_split_texts", lambda *a: [({}, "text")])
    monkeypatch.setattr(londonlm.evaluation, "evaluate_lm",
                        lambda model, tok, texts, **kw: (scored.append(kw), {"loss": 1.0})[1])
    result = evaluate_validation(tmp_path / "final", tmp_path, 100)
    assert loads[0].get("device", "auto") == "auto" and loads[0].get("dtype", "auto") == "auto"
    assert scored == [{"device": "cuda", "max_eval_tokens": 100}]
    assert result == {"loss": 1.0, "device": "cuda", "dtype": "bfloat16"}


def test_the_pipeline_evaluation_asks_for_the_gpu(monkeypatch, fake_gpu, tiny_model_dir, tmp_path):
    from londonlm.pipeline import evaluate_validation

    with pytest.raises(Stop):
        evaluate_validation(tiny_model_dir, tmp_path, 100)
    assert fake_gpu[0]["dtype"] == torch.bfloat16
