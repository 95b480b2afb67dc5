"""compare_runs.py on bad input: a run whose run_info.json cannot be read is left out with a
warning when runs are discovered, one `error:` line when named; --name is a plain file name."""
import importlib.util
import json
from pathlib import Path

import pytest

from londonlm.core.errors import run_main

REPO = Path(__file__).resolve().parents[2]
GOOD = {"preset": "micro", "parameters": 137000, "global_step": 4, "tokens_per_step": 512,
        "eval_curve": [[2, 5.5], [4, 5.2]], "learning_rate": 0.003}


def compare(*argv) -> int:
    spec = importlib.util.spec_from_file_location("compare_runs", REPO / "10_scripts" / "compare_runs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(SystemExit) as stop:
        run_main(mod.main, list(argv))
    return stop.value.code


@pytest.fixture
def root(tmp_path):
    """Two runs, ``good`` and ``bad`` (a torn run_info.json), with no checkpoints."""
    runs = tmp_path / "root" / "09_models" / "checkpoints"
    for name in ("good", "bad"):
        (runs / name).mkdir(parents=True)
    (runs / "good" / "run_info.json").write_text(json.dumps(GOOD))
    (runs / "bad" / "run_info.json").write_text("{bad")
    return tmp_path / "root"


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


@pytest.mark.parametrize("content", ["{bad", "[1]", '{"parameters": "many"}', '{"eval_curve": [1]}'])
def test_an_unreadable_run_is_left_out_of_discovery_with_a_warning(root, tmp_path, capsys, content):
    (root / "09_models" / "checkpoints" / "bad" / "run_info.json").write_text(content)
    out = tmp_path / "out"
    assert compare("--root", str(root), "--out_dir", str(out)) == 0
    captured = capsys.readouterr()
    assert "warning: run bad:" in captured.err and "left out" in captured.err
    assert "| good" in captured.out and "| bad" not in captured.out
    assert (out / "comparison.csv").read_text().count("\n") == 2  # header + good


@pytest.mark.parametrize("content", ["{bad", "[1]", '{"parameters": "many"}'])
def test_an_unreadable_run_named_is_one_error_line(root, tmp_path, capsys, content):
    (root / "09_models" / "checkpoints" / "bad" / "run_info.json").write_text(content)
    out = tmp_path / "out"
    assert compare("good", "bad", "--root", str(root), "--out_dir", str(out)) == 2
    assert "run bad:" in one_error_line(capsys)
    assert not out.exists()


def test_only_unreadable_runs_is_one_error_line(root, tmp_path, capsys):
    (root / "09_models" / "checkpoints" / "good" / "run_info.json").write_text("[]")
    assert compare("--root", str(root), "--out_dir", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip().splitlines()  # each run left out, then why nothing is left
    assert [ln.split(":")[0] for ln in err] == ["warning", "warning", "error"] and "no finished runs" in err[-1]


@pytest.mark.parametrize("name", ["../../escape", "", ".", "..", "sub/x", "/abs"])
def test_name_must_be_a_plain_file_name(root, tmp_path, capsys, name):
    """--name ../../escape wrote escape.{csv,md,png} two folders above --out_dir; '' wrote .csv."""
    out = tmp_path / "a" / "b" / "out"
    assert compare("--root", str(root), "--out_dir", str(out), "--name", name) == 2
    assert "plain file name" in one_error_line(capsys)
    assert not list(tmp_path.rglob("*.csv")) and not list(tmp_path.rglob("*.png"))


def test_the_library_refuses_a_name_with_a_folder(root, tmp_path):
    from londonlm.training.tools.compare import CompareError, compare_runs

    with pytest.raises(CompareError, match="plain file name"):
        compare_runs([root / "09_models" / "checkpoints" / "good"], tmp_path / "out", name="../x")
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.csv").exists()


def test_a_comparison_that_fails_keeps_the_old_table_whole(root, tmp_path, capsys):
    """The table, the CSV and the plot are each written whole, the table last: a plot that
    cannot be written (here a folder in its place) leaves the previous comparison's table."""
    out = tmp_path / "out"
    assert compare("--root", str(root), "--out_dir", str(out)) == 0
    table = (out / "comparison.md").read_text()
    (out / "comparison.png").unlink()
    (out / "comparison.png" / "x").mkdir(parents=True)
    (root / "09_models" / "checkpoints" / "good" / "run_info.json").write_text(json.dumps({**GOOD, "global_step": 9}))
    capsys.readouterr()
    assert compare("--root", str(root), "--out_dir", str(out)) == 2
    err = capsys.readouterr().err.strip().splitlines()  # the torn run's warning, then the error
    assert [e for e in err if e.startswith("error:")] == err[-1:] and "comparison.png" in err[-1], err
    assert (out / "comparison.md").read_text() == table
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.parametrize("blank", ["", " ", "\t"])
def test_a_blank_run_is_refused_naming_it(root, tmp_path, capsys, monkeypatch, blank):
    """Was: '' resolved to the current folder: from inside a run it compared that run (exit 0),
    elsewhere the error said `no run_info.json in .` of a name the user never typed."""
    monkeypatch.chdir(root / "09_models" / "checkpoints" / "good")
    out = tmp_path / "out"
    assert compare(blank, "--root", str(root), "--out_dir", str(out)) == 2
    assert f"{blank!r} names no run" in one_error_line(capsys)
    assert not out.exists()
