"""Hostile round 15 on the one-command pipeline, run comparison and the LR finder
(docs/hostile_inputs.md, Round 15): a stage's stored result edited by hand, the chat step stopped
part-way, one run named twice, a learning-rate ramp past float32. Each test names what used to
happen."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import REPO, write_micro_source
from test_hostile_round_pipeline import _exit
from londonlm.core import Layout


def _script(folder: str, name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / folder / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------- stored results

MODEL = {"weights_sha256": "abc", "step": 4, "run": "micro"}
FIGURES = {"loss": 6.0, "perplexity": 403.4, "bits_per_byte": 4.1, "tokens": 500}


@pytest.mark.parametrize("stored", [None, "x", [1], {"loss": "low", "perplexity": 1.0, "bits_per_byte": 1.0,
                                                     "tokens": 5}, {"perplexity": 1.0}])
def test_a_stored_evaluation_of_another_shape_is_made_again(tmp_path, stored):
    # was: a pipeline_metrics.json whose "result" was deleted, emptied or edited ({"loss": "low"})
    # reused as current: KeyError 'result' / TypeError / "Unknown format code 'f'" tracebacks
    from londonlm.core import current_or_make
    from londonlm.pipeline import _validation_fits

    path = tmp_path / "pipeline_metrics.json"
    record = {"model": MODEL, "settings": {"n": 1}}
    if stored is not None:
        record["result"] = stored
    path.write_text(json.dumps(record))
    made, lines = [], []
    result = current_or_make(path, MODEL, {"n": 1}, lambda: made.append(1) or FIGURES, False, lines.append,
                             "evaluation", fits=_validation_fits)
    assert made and result == FIGURES and json.loads(path.read_text())["result"] == FIGURES
    assert any("making it again" in line for line in lines)


def test_a_stored_result_of_the_right_shape_is_still_reused(tmp_path):
    from londonlm.core import current_or_make
    from londonlm.pipeline import _chat_report_fits, _samples_fit, _validation_fits

    for fits, result in ((_validation_fits, FIGURES), (_samples_fit, [{"prompt": "a", "continuation": "b"}]),
                         (_chat_report_fits, {"answer_loss": {"windows": 0},
                                              "bait": {"all": {"chat": {"anachronism_rate": 0.0},
                                                               "base": {"anachronism_rate": 0.5}}}})):
        path = tmp_path / "stored.json"
        path.write_text(json.dumps({"model": MODEL, "settings": {}, "result": result}))
        assert current_or_make(path, MODEL, {}, lambda: pytest.fail("made again"), False, lambda _m: None, "x",
                               fits=fits) == result


@pytest.mark.slow
def test_the_pipeline_rerun_after_its_figures_were_edited_makes_them_again(tmp_path, capsys):
    # was: the rerun skipped training, then ended in a KeyError / TypeError traceback as it read
    # the hand-edited pipeline_metrics.json and pipeline_samples.json (exit 1)
    pipeline = _script("10_scripts", "run_pipeline")
    src = write_micro_source(tmp_path / "src", n_docs=8)
    argv = ["--preset", "micro", "--root", str(tmp_path), "--source_dir", str(src), "--max_steps", "2",
            "--eval_max_tokens", "300", "--chat", "off", "--report_to", "none"]
    assert _exit(pipeline.main, argv, capsys)[0] == 0
    ev = Layout(tmp_path).run("micro").evaluation_dir
    metrics, samples = ev / "pipeline_metrics.json", ev / "pipeline_samples.json"
    good = json.loads(metrics.read_text())["result"]
    for path, result in ((metrics, None), (samples, "x")):
        record = json.loads(path.read_text())
        record.pop("result") if result is None else record.update(result=result)
        path.write_text(json.dumps(record))
    code, err = _exit(pipeline.main, argv, capsys)
    assert code == 0, err
    assert json.loads(metrics.read_text())["result"] == good
    assert all(isinstance(s["continuation"], str) for s in json.loads(samples.read_text())["result"])


# --------------------------------------------------------------------------- the chat step stopped

def test_a_chat_fine_tuning_stopped_early_stops_the_pipeline_with_how_to_resume(chat_root, tmp_path, monkeypatch):
    # was: Ctrl-C (or SIGTERM) during the chat fine-tuning saved a checkpoint, then the pipeline went
    # on to evaluate the chat model not yet made: "model folder .../micro-chat/final does not exist"
    import londonlm.chat as chat
    from londonlm.chat import ChatDatasetOptions, ChatTrainOptions
    from londonlm.pipeline import ChatStep, _chat_stage
    from londonlm.training import TrainingError

    layout = Layout(chat_root)
    step = ChatStep("on", chat_root / "src", tmp_path / "chat", layout.run("stopped-chat"),
                    ChatTrainOptions(max_steps=2, batch_size=2), dataset_options=ChatDatasetOptions(34.0))
    plan = SimpleNamespace(chat=step, overwrite=False, run=layout.run("base"))

    def stopped(*_a, **_k):
        return {"interrupted": "SIGINT", "global_step": 1}

    monkeypatch.setattr(chat, "finetune_chat", stopped)
    monkeypatch.setattr(chat, "evaluate_chat", lambda *a, **k: pytest.fail("evaluated a chat model not made"))
    with pytest.raises(TrainingError, match=r"chat fine-tuning stopped early \(SIGINT\).*again to resume"):
        _chat_stage(plan, lambda _m: None)


# --------------------------------------------------------------------------- compare_runs.py

def _finished_run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "run_info.json").write_text(json.dumps({"preset": "micro", "global_step": 2,
                                                      "eval_curve": [[1, 6.0], [2, 5.5]]}))
    return folder


def test_one_run_named_twice_is_compared_once(tmp_path, capsys):
    # was: `compare_runs.py a <its folder>` (or `a a`) gave two identical rows and two curves under
    # one label, as if two runs had agreed
    compare = _script("10_scripts", "compare_runs")
    run = _finished_run(Layout(tmp_path).checkpoints_dir / "a")
    other = _finished_run(Layout(tmp_path).checkpoints_dir / "b")
    link = tmp_path / "link-to-a"
    link.symlink_to(run)
    out = tmp_path / "cmp"
    assert _exit(compare.main, ["--root", str(tmp_path), "--out_dir", str(out), "a", str(run), str(link), "a",
                                str(other)], capsys)[0] == 0
    rows = [line for line in (out / "comparison.csv").read_text().splitlines()[1:] if line]
    assert sorted(r.split(",")[0] for r in rows) == ["a", "b"]


# --------------------------------------------------------------------------- find_lr.py

@pytest.mark.parametrize("low,high", [("1e300", "1e308"), ("1e30", "1e39"), ("1e30", "1e38")])
def test_a_ramp_past_float32s_largest_rate_is_one_line_before_the_sweep(tmp_path, capsys, low, high):
    # was: `--min_lr 1e300 --max_lr 1e308` (or a ramp to 1e38: Adam's first step is the rate over
    # 1 - beta1): "RuntimeError: value cannot be converted to type float without overflow" out of
    # torch's Adam, a traceback mid-sweep
    finder = _script("04_training", "find_lr")
    code, err = _exit(finder.main, ["--root", str(tmp_path), "--preset", "micro", "--steps", "10",
                                    "--min_lr", low, "--max_lr", high], capsys)
    assert code == 2 and len(err) == 1 and "largest rate the optimizer can apply" in err[0], err
    assert not any(tmp_path.iterdir())


def test_a_ramp_below_the_largest_rate_is_still_run(micro_root_copy, capsys):
    # the limit refuses only what the optimizer cannot apply: a ramp that ends below it runs
    # (and stops where the loss diverges)
    finder = _script("04_training", "find_lr")
    out = micro_root_copy / "lr"
    code, err = _exit(finder.main, ["--root", str(micro_root_copy), "--preset", "micro", "--steps", "10",
                                    "--min_lr", "1e-4", "--max_lr", "1e-1", "--output_dir", str(out)], capsys)
    assert code == 0, err
    assert json.loads((out / "lr_find.json").read_text())["lr_range"][1] == pytest.approx(0.1)
    shutil.rmtree(out)


# --------------------------------------------------------------------------- run_grid.py

def test_two_rates_that_name_one_run_are_refused_before_any_run(tmp_path, capsys):
    # was: 0.0012345671 and 0.0012345672 both ran as grid-micro-lr0.00123457-bs2: the plan listed the
    # name twice, the second point failed as "a finished run trained with other settings", and its
    # advice (--fresh) moved the grid's own first point aside (exit 1)
    grid = _script("10_scripts", "run_grid")
    code, err = _exit(grid.main, ["--root", str(tmp_path), "--preset", "micro", "--learning_rates",
                                  "0.0012345671,0.0012345672", "--batch_sizes", "2"], capsys)
    assert code == 2 and len(err) == 1 and "grid-micro-lr0.00123457-bs2" in err[0], err
    assert not any(tmp_path.iterdir())


def test_rates_that_name_distinct_runs_still_make_a_grid():
    from londonlm.training.tools.grid import GridOptions

    points = GridOptions("g", [1e-3, 1.5e-3, 0.00123457], [2, 4]).points()
    assert len({p.name for p in points}) == len(points) == 6
