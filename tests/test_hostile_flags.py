"""Flags that refuse nonsense in one line, before any work: each command a new user tried that
trained a whole epoch, ignored its budget, printed a traceback or published another model now
ends with one ``error: <flag>: <why>`` line and exit code 2."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO
from script_fuzz import completed_in_process
from londonlm.core import StageParser, number_in, positive_int

TRAIN = REPO / "04_training" / "train_model_slm.py"


def run(script, *args, cwd=None) -> subprocess.CompletedProcess:
    """``python script args`` in this process: what is judged is the script's answer to its
    flags (fd-2 noise of a process of its own is tests/core/test_console.py's)."""
    return completed_in_process(script, list(args), cwd or Path.cwd(), timeout=180)


def one_error_line(r: subprocess.CompletedProcess, *needles: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr and all(n in lines[0] for n in needles), lines[0]
    return lines[0]


@pytest.mark.parametrize("flag, value", [("--max_steps", "-5"), ("--time_budget", "0"),
                                         ("--per_device_train_batch_size", "0"), ("--learning_rate", "-1"),
                                         ("--learning_rate", "0"), ("--stop_after_steps", "0"), ("--n_layer", "0"), ("--dropout", "1.5")])
def test_training_refuses_nonsense_before_any_work(tmp_path, flag, value):
    r = run(TRAIN, "--preset", "micro", "--root", tmp_path, flag, value)
    one_error_line(r, f"error: {flag}: ", value)
    assert not (tmp_path / "09_models").exists()   # nothing was built, downloaded or trained


@pytest.mark.parametrize("value, why", [("10", "at least 300"), ("70000", "at most 65535")])
def test_a_vocabulary_out_of_range_is_refused_in_the_same_words_at_both_ends(tmp_path, value, why):
    r = run(REPO / "03_tokenizer" / "train_historical_tokenizer.py", "--root", tmp_path, "--vocab_size", value)
    one_error_line(r, f"error: --vocab_size: must be {why} (got {value})")


@pytest.mark.parametrize("script, args", [("03_tokenizer/train_historical_tokenizer.py", ["--name", "../../x"]),
                                          ("03_tokenizer/test_tokenizer.py", ["--name", ""]),
                                          ("04_training/train_model.py", ["--preset", "micro", "--run_name_dir", "../x"])])
def test_a_run_or_tokenizer_name_that_is_a_path_is_refused(tmp_path, script, args):
    one_error_line(run(REPO / script, "--root", tmp_path / "root", *args), "is not a folder name")
    assert not (tmp_path / "x").exists() and not (tmp_path / "root").exists()


def test_a_damaged_model_folder_is_one_line_in_export(tmp_path, tiny_model_dir):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])   # truncated
    r = run(REPO / "10_scripts" / "export_gguf.py", "--model", broken, "--out_dir", tmp_path / "gguf")
    one_error_line(r, "model weights unreadable")
    assert not (tmp_path / "gguf").exists()


@pytest.mark.parametrize("script, flags", [
    ("05_evaluation/run_evaluation.py", ["--model"]),
    ("06_inference/serve.py", ["--port", "1", "--model"]),
    ("06_inference/inference_unified.py", ["--prompt", "It was", "--model"]),
    ("07_finetuning/finetune_chat.py", ["--preset", "micro", "--init_from"]),
])
def test_a_damaged_model_folder_is_the_same_line_in_every_stage(tmp_path, tiny_model_dir, script, flags):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes((broken / "model.safetensors").read_bytes()[:100])
    r = run(REPO / script, "--root", tmp_path / "root", *flags, broken)
    one_error_line(r, f"the model at {broken} cannot be loaded: model weights unreadable")


@pytest.mark.parametrize("script, flags", [
    ("05_evaluation/run_evaluation.py", ["--model"]),
    ("06_inference/inference_unified.py", ["--prompt", "It was", "--model"]),
])
def test_a_model_that_is_a_file_is_said_so(tmp_path, script, flags):
    """The evaluation said it could not make <file>/evaluation; the CLI, that config.json was
    unreadable (NotADirectoryError)."""
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"x")
    r = run(REPO / script, "--root", tmp_path / "root", *flags, model)
    one_error_line(r, f"the model at {model} cannot be loaded: it is a file, not a model folder")


@pytest.mark.parametrize("script, flag", [("10_scripts/export_gguf.py", "--out_dir"),
                                          ("05_evaluation/run_evaluation.py", "--out_dir"),
                                          ("03_tokenizer/train_historical_tokenizer.py", "--output_dir")])
def test_an_output_folder_that_is_a_file_is_one_line(tmp_path, script, flag):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    one_error_line(run(REPO / script, flag, blocker / "out"), f"error: {flag}: cannot make a folder under the file")
    one_error_line(run(REPO / script, flag, blocker), f"error: {flag}: ", "is a file, not a folder")


@pytest.mark.parametrize("script, flag", [("02_data_collection/historical_data_collector.py", "--source_dir"),
                                          ("07_finetuning/build_chat_dataset.py", "--source_dir"),
                                          ("05_evaluation/run_evaluation.py", "--probes")])
def test_an_input_a_user_brings_must_exist(tmp_path, script, flag):
    missing = tmp_path / "not_here"
    r = run(REPO / script, "--root", tmp_path / "root", flag, missing)
    one_error_line(r, f"error: {flag}: no ", str(missing))
    assert not (tmp_path / "root").exists()


def test_publish_takes_no_abbreviation_for_another_flag(tmp_path, tiny_model_dir):
    """``--model`` was taken for ``--model_name``, and the dry run staged the default model."""
    r = run(REPO / "10_scripts" / "publish_to_huggingface.py", "--model", tiny_model_dir, "--dry_run",
            "--root", tmp_path)
    one_error_line(r, "unrecognized arguments: --model")


@pytest.mark.parametrize("argv, message", [
    (["--n", "-5"], "error: --n: must be at least 1 (got -5)"),
    (["--n", "x"], "error: --n: 'x' is not an integer"),
    (["--rate", "nan"], "error: --rate: 'nan' is not a finite number"),
    (["--rate", "1"], "error: --rate: must be less than 1 (got 1)"),
    (["--nope"], "error: unrecognized arguments: --nope"),
    (["--n"], "error: --n: expected one argument"),
])
def test_stage_parser_errors_are_one_line(capsys, argv, message):
    p = StageParser(prog="x")
    p.add_argument("--n", type=positive_int)
    p.add_argument("--number", type=positive_int)   # --n is never taken for --number's abbreviation
    p.add_argument("--rate", type=number_in(0, 1, kind=float, below=True))
    with pytest.raises(SystemExit) as e:
        p.parse_args(argv)
    assert e.value.code == 2
    assert capsys.readouterr().err == message + "\n"


def test_no_abbreviations():
    p = StageParser(prog="x")
    p.add_argument("--model_name")
    with pytest.raises(SystemExit):
        p.parse_args(["--model", "m"])
