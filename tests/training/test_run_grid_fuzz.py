"""run_grid.py past its parser: hypothesis draws the grid's own flags (learning-rate and batch
lists, cutoffs, prefixes, step counts, presets) and training flags passed through to every run,
and finds each grid point's folder in a state an earlier call left: finished, finished with
another preset or rate, its record damaged, a file in its place, interrupted with a checkpoint
to resume, that checkpoint's weights or trainer_state.json damaged, the latest of two
checkpoints damaged, interrupted with a model of another shape.

Every call ends with exit 0, with one ``error:`` line and exit 2, or (some run failed: the
grid's documented code) with exit 1 and the closing ``error:`` line naming them: never a
traceback. A dry run writes nothing; a finished run is never retrained, changed or deleted
(``--fresh`` moves it aside); an interrupted run is resumed from its checkpoint or refused in
one line, never started over from scratch; nothing is written outside the project root.

Three parts: plans (``--dry_run``); grids whose points need no training (each finished, or
refused before any work in a root without a corpus) and the comparison step; grids that train
micro runs of two steps in this process (~0.5 s each) over real earlier runs."""
from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from safetensors.torch import save_file
from hypothesis import strategies as st

from conftest import REPO, tree_digest
from script_fuzz import final_weights, run_in_process, weights_kept
from flags_fuzz import _values, script_actions

# examples per run of each part; LONDONLM_FUZZ_EXAMPLES=400 searches longer (~4 min)
EXAMPLES = int(os.environ.get("LONDONLM_FUZZ_EXAMPLES", 30))
TRAIN_EXAMPLES = int(os.environ.get("LONDONLM_FUZZ_EXAMPLES", 12))
SCRIPT = REPO / "10_scripts" / "run_grid.py"
TRAIN_SCRIPT = REPO / "04_training" / "train_model_slm.py"
FAST = ["--report_to", "none", "--disable_tqdm", "true", "--logging_steps", "1"]

# the grid's own flags and values of their kind (comma lists, repeated values, every refusal)
GRID_VALUES = {
    "--learning_rates": ["1e-3", "1e-3,3e-3", "1e-3,1e-3", "0", "-1e-3", "nan", "inf", "1e400", ",", "", "x",
                         "1e-3,,3e-3", " 1e-3 "],
    "--batch_sizes": ["2", "2,4", "2,2", "0", "-1", "1.5", "1000000000", ",", "", "x"],
    "--cutoffs": ["1700", "1700,1750", "1750,1700,1750", "1499", "1901", "0", "-1", "x", "", ","],
    "--prefix": ["g", "grid", "", " ", ".", "..", "a/b", "/abs", "ü", "-x", "x" * 240, "x" * 300, "a\u2028b", "a b"],
    "--max_steps": ["1", "2", "0", "-1", "x", "1000000000"],
    "--leakage_limit": ["1", "0", "x"],
    "--preset": ["micro", "tiny", "bogus", ""],
    "--fresh": [[]],
}
# training flags that reach every run (and those a grid sets for each run itself)
PASS_THROUGH = ["learning_rate", "batch_size", "per_device_train_batch_size", "per_device_eval_batch_size",
                "run_name", "run_name_dir", "output_dir", "resume_from_checkpoint", "init_from", "eval_steps",
                "save_steps", "seed", "warmup_steps", "save_total_limit", "save_best", "stop_after_steps",
                "processed_dir", "tokenizer_dir", "cutoff_year", "list_checkpoints", "max_seconds", "n_layer",
                "optimizer"]
OUTSIDE = "@OUTSIDE@"  # a path value: replaced by a folder outside the project root, watched


@functools.cache
def _grid_flags() -> list[tuple[str, list[list[str]]]]:
    """(flag, value choices) of each of the grid's own flags, from its parser: a flag added
    there without values here fails the net."""
    flags = [max(a.option_strings, key=len) for a in script_actions(SCRIPT, {"root", "dry_run"})]
    missing = [f for f in flags if f not in GRID_VALUES]
    assert not missing, f"give values of {missing} in GRID_VALUES"
    return [(f, [v if isinstance(v, list) else [v] for v in GRID_VALUES[f]]) for f in flags]


@functools.cache
def _pass_flags() -> list[tuple[str, list[list[str]]]]:
    """(flag, value choices) of the training flags in :data:`PASS_THROUGH`, from the training
    command's parsers; a path's values name a folder outside the project root."""
    actions = {a.dest: a for a in script_actions(TRAIN_SCRIPT, set())}
    out = []
    for name in PASS_THROUGH:
        values = _values(actions[name])
        values = [[OUTSIDE if w.startswith("/nonexistent") else w for w in v] for v in values]
        out.append((f"--{name}", values + [[OUTSIDE]] if name.endswith("dir") or name == "init_from" else values))
    return out


def flag_lists(table, max_size: int):
    return st.lists(st.sampled_from(table).flatmap(lambda fv: st.tuples(st.just(fv[0]), st.sampled_from(fv[1]))),
                    max_size=max_size, unique_by=lambda fv: fv[0])


def argv_of(flags, outside: Path) -> list[str]:
    return [str(outside / "x") if w == OUTSIDE else w for name, words in flags for w in (name, *words)]


# --------------------------------------------------------------------------- the call

def run_grid(argv: list[str], root: Path, cwd: Path) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the script run in this process, in ``cwd``, with the
    project root ``root`` (an exception run_main lets through, a bug, fails the test)."""
    return run_in_process(SCRIPT, argv, cwd, {"LONDONLM_ROOT": str(root)}, timeout=900)


def check_exit(code: int, out: str, err: str, argv) -> None:
    """0; 2 with one ``error:`` line last; 1 only when runs failed, said by the last line. Each
    run's own error is one line (on stdout, in the log of the grid)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code in (0, 1, 2), (argv, code, err[-3000:])
    if code:
        assert lines and lines[-1].startswith("error:"), (argv, code, err[-3000:])
        assert [line for line in lines if line.startswith("error:")] == lines[-1:], (argv, err[-3000:])
    if code == 1:
        assert "run(s) failed" in lines[-1] or "no run finished" in lines[-1], (argv, err[-3000:])


def written_nowhere_else(cwd: Path, outside: Path, repo_before: list[str]) -> None:
    assert not list(cwd.iterdir()), sorted(os.listdir(cwd))  # a relative path landed in the working folder
    assert not list(outside.iterdir()), sorted(os.listdir(outside))
    assert sorted(os.listdir(REPO)) == repo_before


@contextlib.contextmanager
def sandbox():
    """(base, cwd, outside): a throwaway folder, the call's working folder, a watched folder
    outside the project root."""
    with tempfile.TemporaryDirectory(prefix="londonlm-grid-") as d:
        base = Path(d)
        (base / "cwd").mkdir()
        (base / "outside").mkdir()
        yield base, base / "cwd", base / "outside"


# --------------------------------------------------------------------------- 1. planning

@given(grid=flag_lists(_grid_flags(), 3), passed=flag_lists(_pass_flags(), 2))
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_grid_plan_is_printed_or_one_line_and_writes_nothing(grid, passed):
    repo_before = sorted(os.listdir(REPO))
    with sandbox() as (base, cwd, outside):
        root = base / "root"
        argv = ["--dry_run", *argv_of(grid, outside), *argv_of(passed, outside)]
        code, out, err = run_grid(argv, root, cwd)
        check_exit(code, out, err, argv)
        assert code in (0, 2), (argv, err[-2000:])  # a dry run trains nothing, so no run fails
        assert not root.exists(), argv  # a dry run makes nothing
        written_nowhere_else(cwd, outside, repo_before)
        if code == 0:
            # (split at newlines only: a prefix may hold a line separator, U+2028)
            names = [line.split(": documents")[0].strip() for line in out.split("\n") if line.startswith("  ")]
            assert names and len(set(names)) == len(names), (argv, out)
            assert all("/" not in n and len(n.encode()) <= 255 for n in names), (argv, names)


# --------------------------------------------------------------------------- earlier runs

def _record(**asked) -> dict:
    """A finished run's run_info.json, as the training stage writes it (what the grid and the
    comparison read); ``asked``: settings other than the grid point's."""
    settings = {"preset": "micro", "learning_rate": 0.001, "batch_size": 2, **asked}
    return {**settings, "settings": settings, "parameters": 136960, "global_step": 2, "max_steps": 2,
            "tokens_per_step": 128, "tokens_seen": 256, "interrupted": None, "eval_curve": [[1, 6.24], [2, 6.21]],
            "cache": {"tokens_validation": 5399}, "validation_bytes": 12001}


def fake_run(run: Path, state: str, rate: float) -> None:
    """A run folder as an earlier call left it, written by hand (nothing to resume in it);
    ``rate``: the learning rate of the grid point it stands for."""
    if state == "file":
        run.parent.mkdir(parents=True, exist_ok=True)
        run.write_text("not a run\n")
        return
    if state == "none":
        return
    (run / "final").mkdir(parents=True)
    (run / "final" / "config.json").write_text('{"model_type": "gpt2"}')
    # weights that read (a whole final model, as a finished run's), told apart by their bytes
    save_file({"w": torch.rand(16)}, str(run / "final" / "model.safetensors"))
    record = {"finished": _record(learning_rate=rate), "other preset": _record(learning_rate=rate, preset="tiny"),
              "other rate": _record(learning_rate=0.5), "damaged record": None}[state]
    (run / "run_info.json").write_text("{bad" if record is None else json.dumps(record))


FAKE_STATES = ["none", "finished", "finished", "other preset", "other rate", "damaged record", "file"]


@given(states=st.lists(st.sampled_from(FAKE_STATES), min_size=2, max_size=2), fresh=st.booleans(),
       passed=st.just([]) | st.just([]) | flag_lists(_pass_flags(), 1))
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_a_grid_over_earlier_runs_skips_refuses_and_tabulates(states, fresh, passed):
    """No corpus in this root: a point that is to train is refused in one line (its run
    failed) before any work, so these grids need no training; what finished is tabulated."""
    repo_before = sorted(os.listdir(REPO))
    with sandbox() as (base, cwd, outside):
        root = base / "root"
        runs = root / "09_models" / "checkpoints"
        names = ["g-lr0.001-bs2", "g-lr0.003-bs2"]
        for name, state, rate in zip(names, states, (0.001, 0.003)):
            fake_run(runs / name, state, rate)
        before, weights = {n: tree_digest(runs / n) for n in names if (runs / n).is_dir()}, final_weights(runs)
        argv = ["--preset", "micro", "--learning_rates", "1e-3,3e-3", "--batch_sizes", "2", "--max_steps", "2",
                "--prefix", "g", *FAST, *(["--fresh"] if fresh else []), *argv_of(passed, outside)]
        code, out, err = run_grid(argv, root, cwd)
        check_exit(code, out, err, argv)
        weights_kept(runs, weights)
        for name, state in zip(names, states):
            if state == "finished" and not fresh and code != 2:  # skipped: never retrained or changed
                assert f"{name}: finished earlier, skipped" in out and tree_digest(runs / name) == before[name]
            elif state in ("other preset", "other rate") and not fresh and code != 2:
                assert f"error: {name}:" in out and tree_digest(runs / name) == before[name], (argv, out)
        if code == 0:
            table = (root / "09_models" / "comparisons" / "g.md").read_text(encoding="utf-8")
            assert all(f"| {n} " in table for n in names), table
        written_nowhere_else(cwd, outside, repo_before)


# --------------------------------------------------------------------------- 2. training

TRAIN = ["--preset", "micro", "--batch_sizes", "2", "--max_steps", "2", "--save_steps", "1", "--eval_steps", "2",
         *FAST]
# states a real earlier run can be in; those with a checkpoint must be resumed or refused
REAL_STATES = ["none", "finished", "interrupted", "interrupted", "damaged weights", "damaged state",
               "damaged latest", "other shape", "other preset"]


@pytest.fixture(scope="module")
def trained_root(micro_root, tmp_path_factory):
    """A micro project root with finished grid runs of two steps, a checkpoint at each: the
    templates of every state (template-lr0.001-bs2, template-lr0.003-bs2), and one of another
    shape (shape-lr0.001-bs2: --n_layer 1)."""
    root = tmp_path_factory.mktemp("grid-fuzz") / "root"
    shutil.copytree(micro_root, root)
    cwd = root.parent / "cwd"
    cwd.mkdir()
    for prefix, extra in (("template", ["--learning_rates", "1e-3,3e-3"]),
                          ("shape", ["--learning_rates", "1e-3", "--n_layer", "1"])):
        code, out, err = run_grid([*TRAIN, "--prefix", prefix, *extra], root, cwd)
        assert code == 0, (out[-2000:], err[-2000:])
    return root


def real_run(runs: Path, name: str, state: str) -> None:
    """``name``'s folder (g-lr...) as an earlier call left it, made from a template run (of the
    same rate and batch, or of another shape)."""
    run = runs / name
    if state == "none":
        return
    shutil.copytree(runs / ("shape-lr0.001-bs2" if state == "other shape" else name.replace("g-", "template-")), run)
    info = json.loads((run / "run_info.json").read_text())
    if state == "other preset":
        info["settings"]["preset"] = "tiny"
    if state not in ("finished", "other preset"):  # stopped after its first step
        shutil.rmtree(run / "final")
        info.update(interrupted="SIGTERM", global_step=1)
        if state != "damaged latest":
            shutil.rmtree(run / "checkpoint-2")
    (run / "run_info.json").write_text(json.dumps(info))
    damage = {"damaged weights": "checkpoint-1/model.safetensors", "damaged state": "checkpoint-1/trainer_state.json",
              "damaged latest": "checkpoint-2/trainer_state.json"}.get(state)
    if damage:
        (run / damage).write_bytes((run / damage).read_bytes()[:100])


def check_state(run: Path, state: str, before: dict, out: str, fresh: bool) -> None:
    """What became of one earlier run: a finished one skipped unchanged (or, asked with other
    settings, started over: :func:`weights_kept` finds its weights moved aside), a checkpoint resumed
    (never a start from scratch) or the run refused in one line, a damaged one untouched."""
    info = json.loads((run / "run_info.json").read_text()) if (run / "run_info.json").is_file() else {}
    done_now = (run / "final").is_dir() and not info.get("interrupted")
    refused = f"error: {run.name}:" in out
    if fresh or state == "none":
        return
    if state == "finished":  # asked with other settings (a drawn --seed): started over, the old one moved aside
        started_over = re.search(rf"{re.escape(run.name)}: training settings changed: .+; starting it over", out)
        assert started_over or (f"{run.name}: finished earlier, skipped" in out and tree_digest(run) == before), \
            out[-3000:]
    elif state in ("damaged weights", "damaged state", "other preset"):
        assert refused and tree_digest(run) == before, (state, out[-3000:])  # never over it from scratch
    else:  # interrupted (of another shape: unless asked with --n_layer 1), its latest checkpoint
        # damaged: resumed from the checkpoint-1 left whole, or refused
        assert refused or done_now, (state, out[-3000:])
        if done_now:
            assert str(info.get("resumed_from")).endswith("checkpoint-1"), (state, info.get("resumed_from"))


@pytest.mark.slow  # a net over real trained runs, ~22 s on 2 cores
@given(states=st.lists(st.sampled_from(REAL_STATES), min_size=1, max_size=2),
       fresh=st.sampled_from([False] * 3 + [True]), passed=st.just([]) | flag_lists(_pass_flags(), 1))
@settings(max_examples=TRAIN_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_a_grid_over_real_earlier_runs_resumes_or_refuses_them(trained_root, states, fresh, passed):
    repo_before = sorted(os.listdir(REPO))
    with sandbox() as (base, cwd, outside):
        root = base / "root"
        shutil.copytree(trained_root, root, ignore=shutil.ignore_patterns("cwd"))
        runs = root / "09_models" / "checkpoints"
        names = ["g-lr0.001-bs2", "g-lr0.003-bs2"][:len(states)]
        for name, state in zip(names, states):
            real_run(runs, name, state)
        before, weights = {n: tree_digest(runs / n) for n in names if (runs / n).is_dir()}, final_weights(runs)
        rates = ",".join(["1e-3", "3e-3"][:len(states)])
        argv = [*TRAIN, "--learning_rates", rates, "--prefix", "g", *(["--fresh"] if fresh else []),
                *argv_of(passed, outside)]
        code, out, err = run_grid(argv, root, cwd)
        check_exit(code, out, err, argv)
        weights_kept(runs, weights)
        if code != 2:
            for name, state in zip(names, states):
                check_state(runs / name, state, before.get(name), out, fresh)
        written_nowhere_else(cwd, outside, repo_before)


# --------------------------------------------------------------------------- what the nets found

def one_error_line(code: int, err: str, *words: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), (code, err[-2000:])
    assert all(w in lines[0] for w in words), lines[0]


# (flag, value) a grid and a family each set for every run themselves
SET_PER_RUN = [("--output_dir", OUTSIDE), ("--run_name", "mine"), ("--run_name_dir", "mine"),
               ("--list_checkpoints", None)]
SET_PER_RUN_CASES = (
    [("grid", f, v) for f, v in SET_PER_RUN + [("--learning_rate", "1e-3"), ("--batch_size", "2"),
                                              ("--per_device_train_batch_size", "2")]]
    + [("family", f, v) for f, v in SET_PER_RUN + [("--processed_dir", OUTSIDE), ("--tokenizer_dir", OUTSIDE),
                                                ("--cutoff_year", "1700")]])


@pytest.mark.parametrize("mode, flag, value", SET_PER_RUN_CASES)
def test_a_flag_the_grid_sets_for_each_run_is_one_line(mode, flag, value):
    """Passed through to every run, each was replaced by the grid's own without a word, or
    (--output_dir) sent every run into one folder outside the project: the second resumed or
    refused the first's checkpoint and no run counted as finished (exit 1)."""
    runs = ["--learning_rates", "1e-3,3e-3"] if mode == "grid" else ["--cutoffs", "1700,1750"]
    with sandbox() as (base, cwd, outside):
        argv = ["--preset", "micro", "--dry_run", *runs, *argv_of([(flag, [value] if value else [])], outside)]
        code, out, err = run_grid(argv, base / "root", cwd)
        one_error_line(code, err, flag, "does not apply")
        assert not out and not list(outside.iterdir())


def test_a_run_flag_the_trainer_refuses_is_one_line_before_the_plan():
    """--eval_steps 1.5: the dry run showed the plan (exit 0), the grid then refused each run
    as it was built: one error per run, exit 1."""
    with sandbox() as (base, cwd, outside):
        argv = ["--preset", "micro", "--dry_run", "--learning_rates", "1e-3,3e-3", "--eval_steps", "1.5"]
        code, out, err = run_grid(argv, base / "root", cwd)
        one_error_line(code, err, "--eval_steps")
        assert "grid " not in out  # no plan shown


@pytest.mark.parametrize("prefix, dry", [("x" * 250, True), ("x" * 250, False), ("x" * 240, False)])
def test_a_prefix_too_long_for_a_file_name_is_one_line(prefix, dry):
    """A 250-byte prefix makes run names past 255 bytes (ENAMETOOLONG: an OSError traceback
    as the first run's folder was made); a 240-byte one fits the runs, not the summary's
    temporary file (a traceback once every run had finished, as the table was written)."""
    with sandbox() as (base, cwd, outside):
        runs = base / "root" / "09_models" / "checkpoints"
        if len(prefix) < 245:  # its runs finished earlier: only the summary is left to write
            for name, rate in ((f"{prefix}-lr0.001-bs2", 0.001), (f"{prefix}-lr0.003-bs2", 0.003)):
                fake_run(runs / name, "finished", rate)
        argv = ["--preset", "micro", "--learning_rates", "1e-3,3e-3", "--batch_sizes", "2", "--prefix", prefix,
                *(["--dry_run"] if dry else [])]
        code, out, err = run_grid(argv, base / "root", cwd)
        one_error_line(code, err, "--prefix", "bytes")
        assert not (base / "root" / "09_models" / "comparisons").exists()


def test_a_finished_run_of_other_settings_is_not_taken_for_the_points():
    """A finished run under a point's name but trained with another rate (or preset) was
    skipped as the point's own: its figures in this grid's table, exit 0."""
    with sandbox() as (base, cwd, outside):
        runs = base / "root" / "09_models" / "checkpoints"
        fake_run(runs / "g-lr0.001-bs2", "finished", 0.001)
        fake_run(runs / "g-lr0.003-bs2", "other rate", 0.003)
        before = tree_digest(runs / "g-lr0.003-bs2")
        argv = ["--preset", "micro", "--learning_rates", "1e-3,3e-3", "--batch_sizes", "2", "--prefix", "g"]
        code, out, err = run_grid(argv, base / "root", cwd)
        said = "error: g-lr0.003-bs2: holds a finished run trained with other settings (learning_rate 0.5, not 0.003)"
        assert code == 1 and said in out, out
        assert tree_digest(runs / "g-lr0.003-bs2") == before
        table = (base / "root" / "09_models" / "comparisons" / "g.md").read_text()
        assert "| g-lr0.001-bs2 " in table and "g-lr0.003-bs2" not in table


def test_resuming_a_checkpoint_of_another_shape_is_one_line(trained_root):
    """An interrupted run of --n_layer 1 under the point's name, resumed with the preset's 2
    layers: a ValueError traceback (an optimizer group of another size) mid-resume."""
    with sandbox() as (base, cwd, outside):
        root = base / "root"
        shutil.copytree(trained_root, root, ignore=shutil.ignore_patterns("cwd"))
        real_run(root / "09_models" / "checkpoints", "g-lr0.001-bs2", "other shape")
        before = tree_digest(root / "09_models" / "checkpoints" / "g-lr0.001-bs2")
        code, out, err = run_grid([*TRAIN, "--learning_rates", "1e-3", "--prefix", "g"], root, cwd)
        assert code == 1 and "as a model of another shape: --n_layer 2 (trained with 1)" in out, out[-2000:]
        assert tree_digest(root / "09_models" / "checkpoints" / "g-lr0.001-bs2") == before


def test_a_run_name_too_long_for_a_file_name_is_one_line(micro_root, capsys):
    """The same limit for the training command's own --run_name (was ENAMETOOLONG: a traceback)."""
    from conftest import train_exit_code

    assert train_exit_code(micro_root, "--run_name", "x" * 300, "--max_steps", "1") == 2
    assert "at most 255 bytes" in capsys.readouterr().err
