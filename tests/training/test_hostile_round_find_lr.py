"""The LR finder and the checkpoint tester on hostile input, round 6: one `error:` line and
exit 2 before the sweep's work, a previous sweep's files kept whole, no traceback for a record
that is damaged."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_lr_finder_cache import REPO, find_lr

import londonlm.training.tools.lr_finder as lr_finder
from londonlm.core import Layout
from londonlm.training.tools.lr_finder import LR_FIND_FILES, LRFindResult, suggest_lr, write_lr_find


def _one_error_line(capsys, *words) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    assert all(w in err[0] for w in words), err[0]
    return err[0]


def _old_sweep(out: Path) -> dict[str, bytes]:
    """A previous sweep's three files, as a rerun must leave them when it fails."""
    out.mkdir(parents=True)
    for name in LR_FIND_FILES:
        (out / name).write_bytes(f"old {name}".encode())
    return {p.name: p.read_bytes() for p in out.iterdir()}


def test_a_folder_where_a_sweep_file_goes_is_refused_before_the_sweep(micro_root, tmp_path, capsys):
    """Was: the sweep ran, wrote the new lr_find.csv, then failed on lr_find.png: the table of
    one sweep beside the summary of another, exit 2."""
    out = tmp_path / "lr"
    before = _old_sweep(out)
    (out / "lr_find.png").unlink()
    (out / "lr_find.png").mkdir()
    assert find_lr(micro_root, "--steps", "10", "--output_dir", str(out)) == 2
    _one_error_line(capsys, "lr_find.png", "is a folder", "nothing was written")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == \
        {k: v for k, v in before.items() if k != "lr_find.png"}
    assert not (out / "lr_find_tokens").exists()  # refused before the token cache too


def test_a_models_folder_as_the_output_is_refused_before_the_sweep(micro_root, tiny_model_dir, tmp_path, capsys):
    """Was: lr_find.csv, .png and .json (and, when needed, the sweep's token cache) written among
    a run's final/ model files, which a publish of that folder then carried."""
    model = tmp_path / "final"
    shutil.copytree(tiny_model_dir, model)
    before = sorted(p.name for p in model.iterdir())
    assert find_lr(micro_root, "--steps", "10", "--output_dir", str(model)) == 2
    _one_error_line(capsys, str(model), "is a model's folder", "nothing was written")
    assert sorted(p.name for p in model.iterdir()) == before


def test_a_plot_that_fails_leaves_the_previous_sweep_whole(tmp_path, monkeypatch):
    """The three files are made in memory first: a plot that cannot be drawn changes none."""
    out = tmp_path / "lr"
    before = _old_sweep(out)
    lrs = [1e-5 * 10 ** (i / 2) for i in range(10)]
    losses = [6.0 - 0.1 * i for i in range(10)]
    res = LRFindResult(lrs, losses, losses, suggestion=suggest_lr(lrs, losses))

    def broken(*_a, **_k):
        raise RuntimeError("the renderer failed")

    monkeypatch.setattr(lr_finder, "_plot", broken)
    with pytest.raises(RuntimeError):
        write_lr_find(res, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    monkeypatch.undo()
    summary = write_lr_find(res, out)
    assert json.loads((out / "lr_find.json").read_text())["suggested_lr"] == summary["suggested_lr"]
    assert (out / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "lr_find.csv").read_text().splitlines()[0] == "step,learning_rate,loss,smoothed_loss"


def test_matplotlib_missing_is_one_line_before_the_sweep(micro_root, tmp_path, monkeypatch, capsys):
    """Was: the whole sweep ran, then a ModuleNotFoundError traceback (exit 1), no results."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "lr"
    assert find_lr(micro_root, "--steps", "10", "--output_dir", str(out)) == 2
    _one_error_line(capsys, "matplotlib", "pip install")
    assert not out.exists()


def test_an_unknown_mplbackend_is_one_line(micro_root, tmp_path):
    """Was: matplotlib's ValueError traceback (it checks $MPLBACKEND on import), after the sweep.
    A process of its own: matplotlib reads the variable once, when first imported."""
    out = tmp_path / "lr"
    env = {**os.environ, "MPLBACKEND": "bogus", "LONDONLM_AUTOTUNE": "off"}
    r = subprocess.run([sys.executable, str(REPO / "04_training" / "find_lr.py"), "--preset", "micro",
                        "--root", str(micro_root), "--steps", "10", "--output_dir", str(out)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "MPLBACKEND" in err[0]
    assert not out.exists()


@pytest.mark.parametrize("argv", [["--batch_size", "20000"], ["--n_layer", "400", "--n_embd", "1024"]],
                         ids=["batch", "model"])
def test_a_sweep_larger_than_free_memory_is_refused_before_any_work(micro_root, tmp_path, monkeypatch,
                                                                    capsys, argv):
    """Was: `--batch_size 100000` (85 GB by the training estimate) or a 200,000M-parameter model
    on a 24 GB machine built the token cache, then the kernel's OOM killer ended it: exit 137,
    not a word. Free memory is pinned here so the check does not depend on the machine."""
    monkeypatch.setattr(lr_finder, "free_memory_bytes", lambda device: 2 * 10 ** 9)
    out = tmp_path / "lr"
    assert find_lr(micro_root, "--steps", "10", "--output_dir", str(out), *argv) == 2
    _one_error_line(capsys, "needs at least", "2.0 GB free", "--batch_size")
    assert not out.exists()


def test_a_manifest_line_that_is_not_utf8_is_one_line(micro_root_copy, tmp_path, capsys):
    """Was: a UnicodeDecodeError traceback from the corpus manifest's reader (the finder's and
    the training stage's token cache build)."""
    manifest = micro_root_copy / "data" / "london_historical" / "processed" / "manifest.jsonl"
    rows = manifest.read_bytes().splitlines(keepends=True)
    manifest.write_bytes(rows[0] + b'{"id": "caf\xe9"}\n' + b"".join(rows[1:]))
    assert find_lr(micro_root_copy, "--steps", "10", "--output_dir", str(tmp_path / "lr")) == 2
    _one_error_line(capsys, "manifest.jsonl:2", "not UTF-8")


def test_a_tokenizer_the_rust_library_panics_on_is_one_line(micro_root, tmp_path, capsys):
    """A BPE subword prefix its merges do not carry: tokenizers panics (pyo3's PanicException is
    no Exception), which every check of a tokenizer file let through as a traceback."""
    tok = tmp_path / "tok"
    shutil.copytree(micro_root / "09_models" / "tokenizers" / "london_historical_bpe", tok)
    data = json.loads((tok / "tokenizer.json").read_text())
    data["model"]["continuing_subword_prefix"] = "##"
    (tok / "tokenizer.json").write_text(json.dumps(data))
    assert find_lr(micro_root, "--steps", "10", "--tokenizer_dir", str(tok),
                   "--output_dir", str(tmp_path / "lr")) == 2
    _one_error_line(capsys, "tokenizer.json", "cannot build it")


# --- 04_training/test_checkpoint*.py ----------------------------------------------------------

def _checkpoint_run(tiny_model_dir, root: Path) -> Path:
    run = root / "09_models" / "checkpoints" / "slm"
    shutil.copytree(tiny_model_dir, run / "checkpoint-2")
    return run


@pytest.mark.parametrize("state", ["{bad", "[]", '{"log_history": 5}', '{"log_history": [1, 2]}',
                                   '{"log_history": [{"eval_loss": "x"}]}'])
def test_the_checkpoint_tester_reads_a_damaged_trainer_state_as_no_loss(tiny_model_dir, tmp_path,
                                                                        capsys, state):
    """Was: a JSONDecodeError / AttributeError / TypeError / ValueError traceback before the
    checkpoint's weights, which are fine, were even loaded."""
    from londonlm.serving.checkpoint_cli import main

    run = _checkpoint_run(tiny_model_dir, tmp_path)
    (run / "checkpoint-2" / "trainer_state.json").write_text(state)
    assert main(["--root", str(tmp_path), "--checkpoint", "checkpoint-2", "--max_new_tokens", "2",
                 "--prompt", "Up"], Layout(tmp_path), "slm", ["slm"], "x", 2) == 0
    out = capsys.readouterr().out
    assert "step: 2\nvalidation loss: n/a" in out and "> Up" in out


def test_the_checkpoint_tester_names_a_folder_that_is_no_model_before_any_facts(tmp_path, capsys):
    """Was: `--checkpoint /` printed `checkpoint: /`, `step: None`, `validation loss: n/a`
    and only then the error."""
    from londonlm.core.errors import run_main
    from londonlm.serving.checkpoint_cli import main

    (tmp_path / "09_models" / "checkpoints" / "slm").mkdir(parents=True)
    with pytest.raises(SystemExit) as stop:
        run_main(lambda a: main(a, Layout(tmp_path), "slm", ["slm"], "x", 2),
                 ["--root", str(tmp_path), "--checkpoint", str(tmp_path)])
    assert stop.value.code == 2
    assert capsys.readouterr().out == ""
