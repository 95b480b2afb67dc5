"""What the machine refuses, met by whole scripts: a project root that is a file (every stage
script), and an unprivileged user re-running a finished pipeline in a project they may only
read. One ``error:`` line, exit code 2, nothing changed."""
from __future__ import annotations

import contextlib
import io
import os
import runpy
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, write_micro_source
from unprivileged import make_readable, reachable_dir, run_unprivileged

SCRIPTS = sorted(p for d in ("02_data_collection", "03_tokenizer", "04_training", "05_evaluation", "06_inference",
                             "07_finetuning", "10_scripts") for p in (REPO / d).glob("*.py"))
PIPELINE = REPO / "10_scripts" / "run_pipeline.py"


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_refuses_a_root_that_is_a_file(script, tmp_path, monkeypatch):
    """LONDONLM_ROOT names a file: one line naming LONDONLM_ROOT, from the one place that
    builds the layout, whatever the script (the training scripts build theirs inside
    run_main, so it is not a traceback at import)."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setenv("LONDONLM_ROOT", str(afile))
    monkeypatch.setattr(sys, "argv", [str(script)])
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
            pytest.raises(SystemExit) as stop:
        runpy.run_path(str(script), run_name="__main__")
    assert stop.value.code == 2, err.getvalue()
    assert err.getvalue() == (f"error: LONDONLM_ROOT={afile} is not a folder: it is a file; point "
                              f"LONDONLM_ROOT at a project folder (or unset it to use the repository)\n")
    assert afile.read_text() == "x"


# a whole pipeline run twice, ~37 s on 2 cores (an unwritable output's one line, stage by stage,
# is in the default suite: tests/core/test_os_errors.py)
@pytest.mark.slow
def test_a_finished_pipeline_rerun_by_a_user_who_may_not_write(tmp_path):
    """Every stage current, the project root owned by someone else: nothing to write, exit 0
    (the summary says the same but for the timings: kept). With the summary gone, the one the
    pipeline writes last cannot be written: one line naming it and the folder's owner; the
    project as it was."""
    base = reachable_dir()
    try:
        root, src = base / "root", write_micro_source(base / "src", n_docs=6)
        args = [str(PIPELINE), "--preset", "micro", "--root", str(root), "--source_dir", str(src),
                "--max_steps", "4", "--chat", "off", "--eval_max_tokens", "2000"]
        env = dict(os.environ, WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false")
        first = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=600)
        assert first.returncode == 0, first.stderr[-3000:]
        make_readable(base)
        if os.geteuid() != 0:  # an ordinary user owns what it made: take its write permission
            for p in [root, *root.rglob("*")]:
                p.chmod(p.stat().st_mode & ~0o222)
        before = _tree(root)
        r = run_unprivileged(args, base / "home", WANDB_MODE="disabled")
        assert r.returncode == 0 and _tree(root) == before, r.stderr[-3000:]
        summary = root / "09_models" / "checkpoints" / "micro" / "pipeline_summary.json"
        summary.parent.chmod(summary.parent.stat().st_mode | 0o200)
        summary.unlink()
        summary.parent.chmod(summary.parent.stat().st_mode & ~0o222)
        before = _tree(root)
        r = run_unprivileged(args, base / "home", WANDB_MODE="disabled")
        assert r.returncode == 2, r.stderr[-3000:]
        last = r.stderr.strip().splitlines()[-1]
        assert "Traceback" not in r.stderr and last.startswith("error: cannot create "), r.stderr[-3000:]
        assert "pipeline_summary.json: permission denied" in last
        assert _tree(root) == before
    finally:
        for p in [base, *base.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
        shutil.rmtree(base)
