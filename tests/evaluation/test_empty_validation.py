"""A validation split with no text to score is one line saying so (and what to do), never
``loss nan`` in the log and nulls in metrics.json with exit 0."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import evaluation_exit_code
from londonlm.evaluation import EvaluationError
from londonlm.evaluation.run import _lm_metrics


def test_an_emptied_validation_text_is_one_line_and_exit_2(micro_root, tiny_model_dir, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(micro_root / "data", root / "data")
    processed = root / "data" / "london_historical" / "processed"
    rows = [json.loads(line) for line in (processed / "manifest.jsonl").read_text().splitlines()]
    validation = [r for r in rows if r["split"] == "validation"]
    assert validation
    for r in validation:
        (processed / r["path"]).write_text("")
    code = evaluation_exit_code(["--root", str(root), "--mode", "quick", "--model", str(tiny_model_dir),
                  "--out_dir", str(tmp_path / "ev")])
    out, err = capsys.readouterr()
    assert code == 2 and err.startswith("error:") and err.count("\n") == 1, err
    assert "validation text is empty" in err and "historical_data_collector.py" in err
    assert "nan" not in out and not (tmp_path / "ev" / "metrics.json").exists()


def test_texts_that_score_no_tokens_are_refused_not_nan(tiny_model_dir):
    """A text too short to score (one token: nothing predicts it) is caught after scoring too."""
    from londonlm.generation import load_model

    lm = load_model(tiny_model_dir, device="cpu")
    with pytest.raises(EvaluationError, match="validation text is too short to score: .* one token"):
        _lm_metrics(lm.model, lm.tokenizer, ["a"], None, [], device="cpu", max_tokens=None, quick=True)
