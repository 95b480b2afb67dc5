"""Hostile inputs to the one-command pipeline, the time-locked family, the run comparison and
the launch scripts (docs/hostile_inputs.md, Round 5, "Pipeline, time-locked families ..."): each
test names what used to happen."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, write_micro_source
from londonlm.core import Layout, RunLayout, run_main
from londonlm.training.tools.compare import load_run


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "10_scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _exit(main, argv, capsys) -> tuple[int, list[str]]:
    """The exit code run_main gives ``main(argv)`` and the lines it wrote on stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_main(main, argv)
    return stop.value.code, capsys.readouterr().err.splitlines()


# --------------------------------------------------------------------------- run_pipeline.py

def test_pipeline_eval_max_tokens_zero_means_all_as_its_help_says():
    # was: `--eval_max_tokens 0` ("0 = all" in its help) refused: must be at least 1
    a, _ = _script("run_pipeline").parse(["--eval_max_tokens", "0"])
    assert a.eval_max_tokens == 0


def _parse_exit(argv, capsys) -> tuple[int, list[str]]:
    """run_pipeline.py's command line alone (without its fix, a refusal tested here would run
    the whole pipeline)."""
    return _exit(lambda a: _script("run_pipeline").parse(a) and 0, argv, capsys)


@pytest.mark.parametrize("name", ["", "../escape", "a/b"])
def test_pipeline_run_name_that_is_no_folder_name_is_one_line_naming_the_flag(name, capsys):
    # was: '' silently trained the preset's run; '../escape' refused as "run name '../escape-chat'"
    code, err = _parse_exit(["--run_name", name], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: --run_name {name!r}"), err
    assert "-chat" not in err[0]


def test_pipeline_sample_limit_with_a_source_folder_is_refused_not_ignored(capsys, tmp_path):
    # was: the limit (of the embedded sample) silently ignored, the whole folder used
    src = write_micro_source(tmp_path / "src", n_docs=2, chars=500)
    code, err = _parse_exit(["--source_dir", str(src), "--sample_limit_chars", "1000"], capsys)
    assert code == 2 and len(err) == 1 and "--sample_limit_chars" in err[0], err


def test_a_run_started_over_takes_its_pipeline_summary_aside(tmp_path):
    # was: pipeline_summary.json stayed in the new run's folder, describing a model moved away
    from londonlm.pipeline import SUMMARY
    from londonlm.training.resume import move_run_aside

    run = RunLayout(tmp_path / "micro")
    (run.final).mkdir(parents=True)
    (run.final / "config.json").write_text("{}")
    run.run_info.write_text('{"global_step": 2}')
    (run.dir / SUMMARY).write_text('{"validation": {"loss": 6.1}}')
    dest = move_run_aside(run)
    assert not (run.dir / SUMMARY).exists()
    assert json.loads((dest / SUMMARY).read_text()) == {"validation": {"loss": 6.1}}


# --------------------------------------------------------------------------- run_grid.py --cutoffs

def test_a_family_without_a_collected_corpus_is_one_line(capsys, tmp_path):
    # was: one error line per cutoff, then "no run finished", exit 1
    code, err = _exit(_script("run_grid").main,
                      ["--preset", "micro", "--root", str(tmp_path), "--cutoffs", "1700,1750,1800"], capsys)
    assert code == 2 and len(err) == 1, err
    assert "manifest" in err[0] and "historical_data_collector.py" in err[0]
    assert not (tmp_path / "09_models").exists()


def test_a_family_over_an_unreadable_collected_manifest_is_one_line(capsys, tmp_path):
    # was: one error line per cutoff (each view read the same bad line), then exit 1
    manifest = Layout(tmp_path).processed_dir / "manifest.jsonl"
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"id": "a", "split": "train", "year": 1650}\n{"id": "b", "spl')
    code, err = _exit(_script("run_grid").main,
                      ["--preset", "micro", "--root", str(tmp_path), "--cutoffs", "1700,1750"], capsys)
    assert code == 2 and len(err) == 1 and "manifest.jsonl" in err[0], err
    assert not (tmp_path / "09_models" / "checkpoints").exists()


def test_a_member_that_fails_now_is_not_counted_by_what_an_earlier_call_left(tmp_path, monkeypatch):
    # was: a finished member whose final/ weights cannot be loaded: "error: ... cannot be
    # loaded" in the log, yet counted done by its old leakage.json: its old figures in the
    # table, exit 0
    from londonlm import family
    from londonlm.core import write_json_atomic

    layout = Layout(tmp_path)
    layout.processed_dir.mkdir(parents=True)
    (layout.processed_dir / "manifest.jsonl").write_text("")
    plan = family.FamilyPlan("fam", [1700], layout, layout.processed_dir, "bpe", 512)
    run = plan.run(1700)
    run.final.mkdir(parents=True)
    (run.final / "config.json").write_text('{"model_type": "gpt2"}')
    # weights that read (a finished model's, as the run check sees them) but are no GPT-2's
    from safetensors.torch import save_file
    import torch

    save_file({"w": torch.zeros(4)}, str(run.final / "model.safetensors"))
    write_json_atomic(run.run_info, {"global_step": 2, "max_steps": 2})
    write_json_atomic(run.leakage, {"result": {"facts": {}}})  # from the earlier call
    lines = []
    member = family.Member(1700, run, layout.cutoff_dir(1700), layout.tokenizer_dir("bpe", 1700))
    # the corpus view, tokenizer and training are not the point: the member is finished
    monkeypatch.setattr(family, "prepare_member", lambda *a, **k: member)
    monkeypatch.setattr(family, "train_member", lambda *a, **k: None)
    done, failed = family.run_family(plan, None, None, log=lines.append)
    assert (done, failed) == ([], ["fam-to1700"]), lines
    assert any("cannot be loaded" in line for line in lines)


# --------------------------------------------------------------------------- compare_runs.py

def _run_with_checkpoints(tmp_path, states: dict[int, str]) -> RunLayout:
    """A run whose run_info.json holds no eval_curve (older runs), so its curve comes from the
    checkpoints' trainer_state.json: ``states`` step -> that file's text."""
    run = RunLayout(tmp_path / "old-run")
    run.dir.mkdir()
    run.run_info.write_text(json.dumps({"preset": "micro", "global_step": max(states)}))
    for step, text in states.items():
        run.checkpoint(step).mkdir()
        (run.checkpoint(step) / "trainer_state.json").write_text(text)
    return run


@pytest.mark.parametrize("damaged", ['{"log_history": 5}', "[1, 2]", '{"log_history": [{"eval_loss": 1}]}',
                                     '{"log_history": [{"step": 2, "eval_loss": "x"}]}', '{"torn'])
def test_a_damaged_checkpoint_record_is_passed_over_not_blamed_on_run_info(tmp_path, damaged):
    # was: "run old-run: .../run_info.json is malformed (TypeError ...)" and the run refused
    # (left out of a comparison of every run) for a checkpoint's trainer_state.json
    good = json.dumps({"log_history": [{"step": 1, "eval_loss": 5.0}]})
    row = load_run(_run_with_checkpoints(tmp_path, {1: good, 2: damaged}).dir)
    assert row["best_val_loss"] == 5.0 and row["best_step"] == 1


@pytest.mark.parametrize("damaged", ["[1]", '{"result": [1]}', '{"result": {"facts": {"before": 5}}}',
                                     '{"result": {"facts": {"before": {"n": 3, "per_byte": {}}}}}'])
def test_a_leakage_file_of_another_shape_is_not_shown(tmp_path, damaged):
    # was: "run_info.json is malformed (AttributeError ...)": the run refused for its leakage.json
    run = RunLayout(tmp_path / "fam-to1700")
    run.evaluation_dir.mkdir(parents=True)
    run.run_info.write_text(json.dumps({"preset": "micro", "global_step": 2,
                                        "corpus_time": {"cutoff_year": 1700, "years": [1650, 1680]}}))
    run.leakage.write_text(damaged)
    row = load_run(run.dir)
    assert row["cutoff"] == 1700 and row["leak"] is None and row["facts_before"] is None


# --------------------------------------------------------------------------- launch_training.sh, resume_training.sh

STUB = '#!/bin/sh\nfor a in "$@"; do printf "[%s]" "$a"; done; echo\n'  # prints each argument whole


@pytest.fixture
def scripts(tmp_path):
    """The two launch scripts in a folder with spaces, a stub .venv interpreter that prints its
    arguments, and no GPU."""
    repo = tmp_path / "my repo"
    (repo / ".venv" / "bin").mkdir(parents=True)
    for name in ("launch_training.sh", "resume_training.sh"):
        shutil.copy2(REPO / name, repo / name)
    (repo / ".venv" / "bin" / "python").write_text(STUB)
    (repo / ".venv" / "bin" / "python").chmod(0o755)
    return repo


def _sh(repo: Path, *args, env_extra=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHON", "LONDONLM_ROOT") and not k.startswith("SLURM_")}
    env.update({"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin", **(env_extra or {})})
    return subprocess.run(["bash", str(repo / args[0]), *args[1:]], env=env, text=True,
                          capture_output=True, timeout=60, cwd=repo.parent)


def test_the_launcher_looks_for_checkpoints_under_the_root_it_is_given(scripts, tmp_path):
    # was: the run folder taken under the repository whatever --root said: the "will RESUME"
    # notice missing, and after a preemption under torchrun "no valid checkpoint in
    # <repo>/09_models/checkpoints/... yet" though the checkpoint was saved under --root
    root = tmp_path / "a root"
    (root / "09_models" / "checkpoints" / "my run" / "checkpoint-3").mkdir(parents=True)
    out = _sh(scripts, "launch_training.sh", "micro", "--root", str(root), "--run_name", "my run",
              env_extra={"NPROC_PER_NODE": "1"})
    assert out.returncode == 0, out.stderr
    assert f"Checkpoints exist in {root}/09_models/checkpoints/my run" in out.stdout
    assert f"[--run_dir][{root}/09_models/checkpoints/my run]" in out.stdout
    # the resume command quoted, so that it pastes back whole
    assert f"--root {str(root).replace(' ', chr(92) + ' ')} --run_name my\\ run]" in out.stdout
    out = _sh(scripts, "launch_training.sh", "micro", f"--root={root}", "--output_dir", "/elsewhere/run",
              env_extra={"NPROC_PER_NODE": "1"})
    assert "[--run_dir][/elsewhere/run]" in out.stdout and "Checkpoints exist" not in out.stdout


def test_resume_takes_a_flags_value_for_that_flags_not_for_the_checkpoint(scripts, tmp_path):
    # was: `resume_training.sh --preset micro --root DIR` took DIR for the checkpoint and started
    # training ("No GPU found: training on CPU") with `--root` left without its value
    out = _sh(scripts, "resume_training.sh", "--preset", "micro", "--root", str(tmp_path), "--run_name", "r")
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith(f"[--preset][micro][--list-checkpoints][--root][{tmp_path}][--run_name][r]\n")
    out = _sh(scripts, "resume_training.sh", "--root", str(tmp_path), "--use_cpu", "checkpoint-7", "--preset", "micro")
    assert out.stdout.rstrip().endswith(f"[--preset][micro][--resume_from_checkpoint][checkpoint-7]"
                                        f"[--root][{tmp_path}][--use_cpu]"), out.stdout


def test_resume_with_a_preset_flag_and_no_preset_is_one_line(scripts):
    # was: "resume_training.sh: line 17: $2: unbound variable", exit 1
    out = _sh(scripts, "resume_training.sh", "--preset")
    assert out.returncode == 2 and out.stderr == "error: --preset: expected one argument\n"
