"""Hostile-input round for the evaluation stage: what it reads only at the end (a trainer state,
lm-eval task names) is refused before any measuring, and a damaged trainer state found beside
the model costs the curves, not the evaluation."""
from __future__ import annotations

import json

import pytest

from londonlm.core import LondonLMError
from londonlm.evaluation import curves
from londonlm.evaluation import run as evaluation
from londonlm.evaluation.cli import build_parser
from londonlm.evaluation.run import EvaluationError, EvaluationSettings, run_evaluation


@pytest.fixture
def no_measuring(monkeypatch):
    """Loading the model means the measuring has started: a late refusal would lose it."""
    def load(*_a, **_k):
        raise AssertionError("the model was loaded before the request was refused")
    monkeypatch.setattr(evaluation, "load_for_evaluation", load)


@pytest.mark.parametrize("content", [None, "{bad", "[1, 2]", '{"log_history": 5}'])
def test_a_bad_trainer_state_is_refused_before_measuring(tmp_path, no_measuring, content):
    state = tmp_path / "trainer_state.json"
    if content is not None:
        state.write_text(content)
    with pytest.raises(curves.TrainerStateError, match="trainer state"):
        run_evaluation(tmp_path / "model", tmp_path / "out", EvaluationSettings(trainer_state=state),
                       val_texts=["Up betimes, and to the office."])


@pytest.mark.parametrize("tasks, text_dir", [(("london_nope",), None), (("london_text_bpb",), None)])
def test_a_bad_lm_eval_request_is_refused_before_measuring(tmp_path, no_measuring, tasks, text_dir):
    pytest.importorskip("lm_eval")
    with pytest.raises(LondonLMError, match="london_"):
        run_evaluation(tmp_path / "model", tmp_path / "out",
                       EvaluationSettings(lm_eval_tasks=tasks, lm_eval_text_dir=text_dir),
                       val_texts=["Up betimes, and to the office."])


def test_a_damaged_trainer_state_found_beside_the_model_skips_the_curves(tmp_path):
    (tmp_path / "trainer_state.json").write_text("{truncated")
    said = []
    assert evaluation._training_curves(tmp_path, None, tmp_path / "out", {}, "m", said.append) is None
    assert said and "trainer_state.json" in said[0]


def test_log_entries_of_the_wrong_shape_are_left_out(tmp_path):
    state = tmp_path / "trainer_state.json"
    state.write_text(json.dumps({"log_history": [1, "x", None, {"step": "a", "loss": 1.0},
                                                 {"step": 2, "loss": 3.0, "grad_norm": 10 ** 400}]}))
    series = curves.read_curves(state)
    assert series["loss"] == [(2, 3.0)] and series["grad_norm"] == []


@pytest.mark.parametrize("value", ["99999999999999999999999", "4294967296", "-1"])
def test_a_seed_no_generator_takes_is_a_usage_error(value, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser("run_evaluation.py", ["micro"], "micro").parse_args(["--seed", value])
    assert e.value.code == 2 and capsys.readouterr().err.startswith("error: --seed")
    with pytest.raises(EvaluationError, match="seed"):
        EvaluationSettings(seed=int(value))
