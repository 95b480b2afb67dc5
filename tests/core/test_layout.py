"""londonlm.core.layout: where artifacts live and how a user's model spec resolves."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from londonlm.core.errors import LondonLMError, UsageError
from londonlm.core.checkpoints import BEST_INFO, model_step
from londonlm.core.layout import (Layout, ModelNotFound, RunLayout, checkpoint_problem, enclosing_artifact,
                                  refuse_foreign_run_folder)


def _model(folder, step=None, training_state=True):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    if step is not None and training_state:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        for f in ("optimizer.pt", "scheduler.pt"):
            torch.save({}, folder / f)  # a torch archive: checkpoint_problem reads its start
    return folder


@pytest.fixture
def layout(tmp_path):
    lay = Layout(tmp_path)
    run = lay.run("tiny")
    _model(run.checkpoint(10), 10)
    _model(run.checkpoint(20), 20)
    _model(run.checkpoint(30), 30, training_state=False)  # half-written: skipped
    return lay


def test_project_paths_derive_from_one_root(tmp_path):
    lay = Layout(tmp_path)
    assert lay.processed_dir == tmp_path / "data" / "london_historical" / "processed"
    assert lay.run("tiny").dir == tmp_path / "09_models" / "checkpoints" / "tiny"
    assert lay.tokenizer_dir("bpe") == tmp_path / "09_models" / "tokenizers" / "bpe"


def test_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LONDONLM_ROOT", str(tmp_path / "elsewhere"))
    assert Layout.at(None, default_root=tmp_path).root == (tmp_path / "elsewhere").resolve()
    assert Layout.at(tmp_path / "x", default_root=tmp_path).root == (tmp_path / "x").resolve()


def test_run_and_tokenizer_names_are_folder_names_not_paths(tmp_path):
    """--name ../../x wrote a tokenizer outside the project, --name '' into tokenizers/ itself."""
    lay = Layout(tmp_path)
    for bad in ("", ".", "..", "../../x", "a/b", "/abs"):
        with pytest.raises(UsageError, match="is not a folder name"):
            lay.tokenizer_dir(bad)
        with pytest.raises(UsageError, match="is not a folder name"):
            lay.run(bad)
    assert lay.run("tiny-chat").dir == tmp_path / "09_models" / "checkpoints" / "tiny-chat"
    # a model given as a folder of its own needs no run: the run named beside it is not read
    folder = tmp_path / "elsewhere" / "final"
    folder.mkdir(parents=True)
    assert lay._find_model(str(folder), "") == folder


def test_an_empty_root_is_refused_not_taken_for_the_default(tmp_path):
    """``--root "$UNSET"``: the stages would write into the repository's own folders."""
    for empty in ("", "  "):
        with pytest.raises(UsageError, match="--root is empty"):
            Layout.at(empty, default_root=tmp_path)


def test_a_root_that_is_a_file_is_refused_naming_where_it_came_from(tmp_path, monkeypatch):
    """Not a NotADirectoryError deep in a stage: one user error that names LONDONLM_ROOT or
    --root; a root that does not exist yet is fine (the stages make it)."""
    from londonlm.core.layout import RootNotAFolder

    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setenv("LONDONLM_ROOT", str(afile))
    with pytest.raises(RootNotAFolder, match=rf"^LONDONLM_ROOT={afile} is not a folder: it is a file; "
                                             r"point LONDONLM_ROOT at a project folder"):
        Layout.at(None, default_root=tmp_path)
    with pytest.raises(LondonLMError, match=rf"^--root {afile / 'sub'} is not a folder: it lies under "
                                            rf"{afile}, which is a file"):
        Layout.at(afile / "sub", default_root=tmp_path)
    monkeypatch.delenv("LONDONLM_ROOT")
    with pytest.raises(RootNotAFolder, match="the project root"):
        Layout.at(None, default_root=afile)
    assert Layout.at(tmp_path / "new" / "root", default_root=tmp_path).root == tmp_path / "new" / "root"
    assert afile.read_text() == "x"


def test_specs_resolve_without_final(layout):
    run = layout.run("tiny")
    assert layout.resolve_model(None, "tiny") == run.checkpoint(20)     # latest valid
    assert layout.resolve_model("latest", "tiny") == run.checkpoint(20)
    assert layout.resolve_model("checkpoint-10", "tiny") == run.checkpoint(10)
    assert layout.resolve_model("tiny/checkpoint-10", "other") == run.checkpoint(10)
    assert layout.resolve_model("tiny", "other") == run.checkpoint(20)
    assert layout.resolve_model(str(run.checkpoint(10)), "other") == run.checkpoint(10)


def test_final_and_best_win_when_present(layout):
    run = layout.run("tiny")
    _model(run.final)
    _model(run.best)
    (run.best / BEST_INFO).write_text(json.dumps({"checkpoint": "checkpoint-10", "step": 10}))
    assert layout.resolve_model(None, "tiny") == run.final
    assert layout.resolve_model("best", "tiny") == run.best
    assert run.best_info()["step"] == 10
    assert model_step(run.best) == 10


def test_unknown_specs_name_what_exists(layout):
    with pytest.raises(ModelNotFound, match="available: checkpoint-10, checkpoint-20, checkpoint-30"):
        layout.resolve_model("checkpoint-99", "tiny")
    with pytest.raises(ModelNotFound, match="does not exist"):
        layout.resolve_model(None, "never_trained")
    with pytest.raises(ModelNotFound, match="does not exist"):
        layout.resolve_model("/no/such/folder", "tiny")
    assert issubclass(ModelNotFound, LondonLMError) and issubclass(ModelNotFound, FileNotFoundError)


def test_checkpoint_validation(layout):
    run = layout.run("tiny")
    assert checkpoint_problem(run.checkpoint(20)) is None
    assert checkpoint_problem(run.checkpoint(30)) == "trainer_state.json missing"
    (run.checkpoint(20) / "model.safetensors").write_bytes(b"truncated")
    assert "unreadable" in checkpoint_problem(run.checkpoint(20))
    assert run.latest_valid_checkpoint(warn=lambda *_: None) == run.checkpoint(10)


def test_evaluation_folder_rule(layout, tmp_path):
    run = layout.run("tiny")
    assert run.evaluation_dir_for(run.final) == run.dir / "evaluation"
    assert run.evaluation_dir_for(run.checkpoint(10)) == run.dir / "evaluation" / "checkpoint-10"
    outside = tmp_path / "somewhere" / "model"
    assert run.evaluation_dir_for(outside) == outside / "evaluation"


def test_fresh_moves_everything_the_old_model_made(layout):
    run = layout.run("tiny")
    for d in (run.final, run.evaluation_dir, run.hub_stage, run.cache_dir):
        d.mkdir(parents=True, exist_ok=True)
    run.run_info.write_text("{}")
    (run.dir / "sidecar.json").write_text("{}")  # a chat run's stage record goes with its model
    (run.dir / "gguf").mkdir()
    moved = {p.name for p in run.movable_on_fresh()}
    assert moved == {"checkpoint-10", "checkpoint-20", "checkpoint-30", "final", "evaluation",
                     "hub_stage", "gguf", "run_info.json", "sidecar.json"}
    assert run.previous_dir("20260101-000000").name == "tiny.previous-20260101-000000"


def test_runs_lists_only_trained_runs(layout):
    assert layout.runs() == []
    layout.run("tiny").run_info.write_text("{}")
    assert layout.runs() == [RunLayout(layout.checkpoints_dir / "tiny")]


def test_fsdp_sharded_checkpoints_are_valid(layout):
    ck = layout.run("tiny").checkpoint(40)
    _model(ck, 40, training_state=False)
    (ck / "trainer_state.json").write_text(json.dumps({"global_step": 40}))
    torch.save({}, ck / "scheduler.pt")
    assert checkpoint_problem(ck) == "optimizer.pt missing"
    (ck / "optimizer_0").mkdir()
    (ck / "optimizer_0" / "__0_0.distcp").write_bytes(b"shard")
    assert checkpoint_problem(ck) == "optimizer.pt missing"     # shards without .metadata: cut off
    (ck / "optimizer_0" / ".metadata").write_bytes(b"meta")
    assert checkpoint_problem(ck) is None


def test_no_run_folder_of_any_job_may_lie_inside_another_runs_parts_or_a_model(tmp_path):
    """core's rule for every training job's folder (pre-training and chat fine-tuning alike): a
    folder inside another run's final/, a checkpoint or its evaluation, or inside a model's
    folder, went whole with that run's next save, rotation or --fresh."""
    run = tmp_path / "runs" / "base"
    (run / "final").mkdir(parents=True)
    (run / "run_info.json").write_text("{}")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"")
    (tmp_path / "config_only").mkdir()
    (tmp_path / "config_only" / "config.json").write_text("{}")  # a tool's settings, say: no weights
    # ... and anywhere else inside a run (round 15): its files would join that run's, whose resume
    # or --fresh would then find a run inside it
    for inside in (run / "final" / "chat", run / "checkpoint-4", run / "evaluation" / "x", model / "chat",
                   run / "notes"):
        with pytest.raises(UsageError, match="lies inside .*nothing was written"):
            refuse_foreign_run_folder("--output_dir", inside, "chat_finetune", {})
    assert enclosing_artifact(model / "chat") == f"the model folder {model.resolve()}"
    for beside in (tmp_path / "runs" / "chat", tmp_path / "config_only" / "run"):
        assert enclosing_artifact(beside) is None  # a run beside it, a folder with a config alone
        refuse_foreign_run_folder("--output_dir", beside, "chat_finetune", {})
