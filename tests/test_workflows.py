"""Training workflows end to end on the micro preset through the real CLIs: best checkpoint,
continued pre-training (--init_from), shape flags, learning-rate finder, run comparison and
the hyperparameter grid."""
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import config
from conftest import precision_flags
from script_fuzz import run_in_process
from londonlm.core.errors import run_main
from londonlm.core.layout import RunLayout
from londonlm.training.cli import TrainDefaults, main as train_main

REPO = Path(__file__).resolve().parents[1]
FAST = ["--report_to", "none", "--disable_tqdm", "true", "--logging_steps", "1"]
DEFAULTS = TrainDefaults(config.PRESETS, "micro", config.get_layout(), config.TOKENIZER.name,
                         config.TRAINING.seed, "londonlm-test")


def exit_code(main, argv):
    """A script main's exit code as the script gives it (wrapped in run_main)."""
    with pytest.raises(SystemExit) as stop:
        run_main(main, argv)
    return stop.value.code


def train(root, *argv):
    return exit_code(lambda a: train_main(a, DEFAULTS),
                     ["--preset", "micro", "--root", str(root), *FAST, *argv])


def script(rel):
    spec = importlib.util.spec_from_file_location(Path(rel).stem, REPO / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_dir(root, name):
    return root / "09_models" / "checkpoints" / name


def info(root, name):
    return json.loads((run_dir(root, name) / "run_info.json").read_text())


@pytest.fixture(scope="module")
def wf_root(micro_root, tmp_path_factory):
    """A project root with one finished run, ``parent``: 6 steps, evaluated and saved every
    2 steps, --save_best, at most 1 rotating checkpoint."""
    root = tmp_path_factory.mktemp("wf") / "root"
    shutil.copytree(micro_root, root)
    assert train(root, "--run_name", "parent", "--max_steps", "6", "--save_steps", "2",
                 "--eval_steps", "2", "--save_total_limit", "1", "--save_best") == 0
    return root


@pytest.fixture(scope="module")
def child(wf_root):
    """``child``: continued pre-training from parent's best model, new lr and schedule."""
    assert train(wf_root, "--run_name", "child", "--init_from", "parent/best",
                 "--learning_rate", "1e-3", "--warmup_steps", "2", "--max_steps", "2",
                 "--save_steps", "2", "--eval_steps", "2", "--eval_on_start", "true") == 0
    return run_dir(wf_root, "child")


def test_save_best_survives_rotation_and_resolves(wf_root, capsys):
    rd = run_dir(wf_root, "parent")
    ri = info(wf_root, "parent")
    curve = ri["eval_curve"]
    assert [s for s, _ in curve] == [2, 4, 6]
    best_step, best_loss = min(curve, key=lambda x: x[1])
    binfo = json.loads((rd / "best" / "best_info.json").read_text())
    assert binfo["step"] == best_step and binfo["checkpoint"] == f"checkpoint-{best_step}"
    assert abs(binfo["eval_loss"] - best_loss) < 1e-6 and ri["best_checkpoint"] == binfo["checkpoint"]
    assert not (rd / "best" / "optimizer.pt").exists()
    assert len(list(rd.glob("checkpoint-*"))) <= 2  # rotation ran (limit 1 + protected best)
    for ck in rd.glob("checkpoint-*"):  # even once every rotating checkpoint is gone ...
        if ck.name != "checkpoint-6":
            shutil.rmtree(ck)
    run = RunLayout(rd)
    assert run.resolve("best") == rd / "best"  # ... `best` resolves by name
    assert config.get_layout(wf_root).resolve_model("parent/best", "other") == rd / "best"
    assert run.resolve("final") == rd / "final"
    assert run.resolve("latest") == rd / "checkpoint-6"
    assert run.resolve("checkpoint-6") == rd / "checkpoint-6"
    capsys.readouterr()
    assert train(wf_root, "--run_name", "parent", "--list_checkpoints") == 0
    out = capsys.readouterr().out
    assert f"best: checkpoint-{best_step} (step {best_step}" in out and "final: final/" in out
    from londonlm.serving.checkpoint_cli import main as ck_main

    assert ck_main(["--root", str(wf_root), "--run_name", "parent", "--checkpoint", "best",
                    "--max_new_tokens", "3", "--prompt", "The"], config.get_layout(), "micro",
                   list(config.PRESETS), "x", 5) == 0
    out = capsys.readouterr().out
    assert f"{rd / 'best'}" in out and f"step: {best_step}" in out and f"{best_loss:.4f}" in out


def test_save_best_keeps_an_early_best_beyond_the_last_n(wf_root):
    # a learning rate far below float32's resolution (0 is refused): the weights never change,
    # every evaluation ties, so the first (step 2) stays best while rotation (last 2) goes on;
    # best/ and the listing must still name checkpoint-2
    assert train(wf_root, "--run_name", "flat", "--learning_rate", "1e-30", "--max_steps", "8",
                 "--save_steps", "2", "--eval_steps", "2", "--save_total_limit", "2",
                 "--save_best") == 0
    rd = run_dir(wf_root, "flat")
    assert sorted(p.name for p in rd.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-8"]
    assert json.loads((rd / "best" / "best_info.json").read_text())["step"] == 2
    assert info(wf_root, "flat")["best_checkpoint"] == "checkpoint-2"
    shutil.rmtree(rd / "checkpoint-2")  # a copy in best/ does not depend on the checkpoint
    assert RunLayout(rd).resolve("best") == rd / "best"
    from londonlm.core.layout import describe_checkpoints

    assert "best: checkpoint-2 (step 2" in describe_checkpoints(rd)


def test_load_best_model_at_end_alone_makes_final_the_best_evaluation(wf_root, precision):
    # the Trainer's own flag, given alone: every preset evaluates by steps, so it is accepted
    # (TrainingArguments refused it while parsing, against its default of no evaluations); the
    # weights never change (a rate below float32's resolution), every evaluation ties, and the
    # first one (step 2) stays best: final/ is loaded from it and run_info says so
    assert train(wf_root, "--run_name", f"lbme_{precision}", "--learning_rate", "1e-30", "--max_steps", "6",
                 "--save_steps", "2", "--eval_steps", "2", "--load_best_model_at_end", "true",
                 *precision_flags(precision)) == 0
    ri = info(wf_root, f"lbme_{precision}")
    assert ri["global_step"] == 6 and ri["best_step"] == 2 and ri["final_weights_step"] == 2
    assert abs(ri["final_eval_loss"] - ri["best_eval_loss"]) < 1e-6


def test_the_preset_default_keeps_the_best_evaluation_and_a_flag_turns_it_off(wf_root, capsys):
    # micro (like tiny) makes final/ the best evaluation's weights by default: the flat run as
    # above, without the flag, ends on step 2's; --load_best_model_at_end false keeps step 6's
    flat = ["--learning_rate", "1e-30", "--max_steps", "6", "--save_steps", "2", "--eval_steps", "2"]
    assert config.PRESETS["micro"].load_best_model_at_end
    assert train(wf_root, "--run_name", "flat_default", *flat) == 0
    assert info(wf_root, "flat_default")["final_weights_step"] == 2
    assert "final/ holds the weights of step 2, the lowest validation loss" in capsys.readouterr().out
    assert train(wf_root, "--run_name", "flat_last", *flat, "--load_best_model_at_end", "false") == 0
    assert info(wf_root, "flat_last")["final_weights_step"] == 6


def test_the_preset_default_gives_way_to_save_steps_that_miss_evaluations(wf_root, capsys):
    # a checkpoint every 3 steps, evaluations every 2: the Trainer could not load the best
    # evaluation's weights; the default (never asked for) gives way with a note, the flag
    # given is refused in one line
    steps = ["--max_steps", "6", "--save_steps", "3", "--eval_steps", "2"]
    assert train(wf_root, "--run_name", "odd_steps", *steps) == 0
    assert "note: final/ will hold the last step's weights" in capsys.readouterr().out
    assert info(wf_root, "odd_steps")["final_weights_step"] == 6
    assert train(wf_root, "--run_name", "odd_steps_asked", *steps, "--load_best_model_at_end", "true") == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "multiple of the evaluation" in err and "Traceback" not in err


@pytest.mark.parametrize("best_at_end", ["true", "false"])
def test_a_stopped_run_keeps_its_resume_point_under_save_total_limit_1(wf_root, best_at_end):
    # every evaluation ties (the weights never change), so step 2 stays best; the Trainer ended
    # train() by deleting every checkpoint but the best, the stopped run's checkpoint-5 with it,
    # and the next run resumed from step 2 (or, finished, lost its last optimizer state)
    name = f"limit1_{best_at_end}"
    args = ["--run_name", name, "--learning_rate", "1e-30", "--max_steps", "8", "--save_steps", "2",
            "--eval_steps", "2", "--save_total_limit", "1", "--load_best_model_at_end", best_at_end]
    assert train(wf_root, *args, "--stop_after_steps", "5") == 0
    rd = run_dir(wf_root, name)
    assert sorted(p.name for p in rd.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-5"]
    assert train(wf_root, *args) == 0  # resumes where it stopped
    ri = info(wf_root, name)
    assert ri["resumed_from"].endswith("checkpoint-5") and ri["global_step"] == 8
    assert ri["final_weights_step"] == (2 if best_at_end == "true" else 8)
    assert sorted(p.name for p in rd.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-8"]


def test_init_from_records_parent_fresh_optimizer_and_weights(wf_root, child):
    import torch

    ri, parent = info(wf_root, "child"), info(wf_root, "parent")
    p = ri["parent"]
    assert Path(p["path"]) == (run_dir(wf_root, "parent") / "best").resolve()
    assert p["run_name"] == "parent" and p["step"] == parent["best_step"]
    assert p["tokenizer"] == "same" and p["resized_embeddings"] is False
    assert ri["resumed_from"] is None and ri["global_step"] == 2 and ri["learning_rate"] == 1e-3
    # the step-0 evaluation scores the loaded weights: exactly the parent's best model
    assert ri["eval_curve"][0][0] == 0
    assert abs(ri["eval_curve"][0][1] - parent["best_eval_loss"]) < 1e-4
    state = json.loads((child / "checkpoint-2" / "trainer_state.json").read_text())
    lrs = [h["learning_rate"] for h in state["log_history"] if "learning_rate" in h]
    assert state["max_steps"] == 2 and lrs[0] < 1e-3  # the child's own warmup, from step 0
    opt = torch.load(child / "checkpoint-2" / "optimizer.pt", weights_only=False)
    assert {int(s["step"]) for s in opt["state"].values()} == {2}  # fresh AdamW (parent had 6)


def test_continued_run_stops_and_resumes(wf_root, capsys):
    argv = ["--run_name", "chunked", "--init_from", "parent/final", "--max_steps", "4",
            "--save_steps", "2", "--eval_steps", "100"]
    assert train(wf_root, *argv, "--stop_after_steps", "2") == 0
    assert info(wf_root, "chunked")["interrupted"]
    assert train(wf_root, *argv) == 0  # the same command resumes instead of starting over
    ri = info(wf_root, "chunked")
    assert ri["global_step"] == 4 and ri["resumed_from"].endswith("checkpoint-2")
    assert ri["parent"]["path"] == str((run_dir(wf_root, "parent") / "final").resolve())
    capsys.readouterr()
    assert train(wf_root, "--run_name", "chunked", "--init_from", "parent/best") == 2
    assert "already has checkpoints" in capsys.readouterr().err


def test_init_from_refusals_before_data(wf_root, tiny_model_dir, capsys):
    capsys.readouterr()
    # a foreign tokenizer: refused with the way out, before any token cache is built
    assert train(wf_root, "--run_name", "foreign", "--init_from", str(tiny_model_dir)) == 2
    err = capsys.readouterr().err
    assert "tokenizer" in err and "differs" in err and "--resize_embeddings" in err
    assert not (run_dir(wf_root, "foreign") / "pretokenized_data").exists()
    assert train(wf_root, "--run_name", "x", "--init_from", "parent/final", "--max_length", "128") == 2
    assert "shorter than --max_length 128" in capsys.readouterr().err
    assert train(wf_root, "--run_name", "x", "--init_from", "parent/final", "--n_layer", "3") == 2
    assert "shape comes from the parent" in capsys.readouterr().err
    assert train(wf_root, "--run_name", "x", "--init_from", "nosuchrun") == 2
    err = capsys.readouterr().err
    assert "runs with weights:" in err and "parent" in err
    assert not (run_dir(wf_root, "x") / "pretokenized_data").exists()
    # ... and accepted when resizing is asked for
    assert train(wf_root, "--run_name", "foreign", "--init_from", str(tiny_model_dir),
                 "--resize_embeddings", "--max_steps", "1", "--save_steps", "100",
                 "--eval_steps", "100") == 0
    ri = info(wf_root, "foreign")
    assert ri["parent"]["resized_embeddings"] is True and ri["shape"]["n_embd"] == 32


def test_shape_flags_override_and_bad_shapes_fail_fast(wf_root, capsys):
    capsys.readouterr()
    assert train(wf_root, "--run_name", "shaped", "--n_layer", "1", "--n_head", "4", "--n_embd", "32",
                 "--max_length", "32", "--max_steps", "1", "--save_steps", "100",
                 "--eval_steps", "100") == 0
    out = capsys.readouterr().out
    assert "1 layers x 32 wide, 4 heads, context 32" in out and "M parameters" in out
    assert "per device to train at micro-batch" in out
    ri = info(wf_root, "shaped")
    assert ri["shape"] == {"n_layer": 1, "n_head": 4, "n_embd": 32, "context_length": 32,
                           "vocab_size": ri["shape"]["vocab_size"], "embedding_rows": 512}
    for bad, msg in ((["--n_head", "3"], "not divisible"), (["--n_layer", "0"], "must be at least 1 (got 0)"),
                     (["--max_length", "-4"], "must be at least 2 (got -4)"),
                     (["--n_embd", "30", "--n_head", "4"], "not divisible"),
                     (["--vocab_size", "999"], "differs from the tokenizer")):
        assert train(wf_root, "--run_name", "bad", *bad) == 2, bad
        assert msg in capsys.readouterr().err, bad
    assert not run_dir(wf_root, "bad").exists()  # failed before any data work


def test_lr_finder_writes_table_plot_and_suggestion(wf_root, tmp_path, capsys, precision):
    """The range test trains through the training package's Trainer, in either precision."""
    out = tmp_path / "lr"
    rc = script("04_training/find_lr.py").main(
        ["--preset", "micro", "--root", str(wf_root), "--run_name", "parent", "--steps", "20",
         "--min_lr", "1e-5", "--max_lr", "0.5", "--output_dir", str(out), *precision_flags(precision)])
    assert rc == 0
    s = json.loads((out / "lr_find.json").read_text())
    assert s["precision"] == precision
    assert 1e-5 <= s["suggested_lr"] <= 0.5 and s["suggested_lr"] <= s["min_loss_lr"]
    rows = (out / "lr_find.csv").read_text().splitlines()
    assert rows[0] == "step,learning_rate,loss,smoothed_loss" and len(rows) == s["steps_run"] + 1
    assert (out / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    assert "suggested --learning_rate" in capsys.readouterr().out


def test_compare_runs_tabulates_and_plots(wf_root, child, tmp_path, capsys):
    rc = script("10_scripts/compare_runs.py").main(
        ["parent", str(child), "--root", str(wf_root), "--out_dir", str(tmp_path), "--name", "pc"])
    assert rc == 0
    out = capsys.readouterr().out
    for h in ("preset", "params (M)", "tokens seen", "wall (s)", "best val loss", "best val bpb"):
        assert h in out
    lines = [ln for ln in out.splitlines() if ln.startswith("| parent") or ln.startswith("| child")]
    assert len(lines) == 2 and "parent" in lines[[ln.startswith("| child") for ln in lines].index(True)]
    assert (tmp_path / "pc.png").read_bytes()[:4] == b"\x89PNG"
    csv_rows = (tmp_path / "pc.csv").read_text().splitlines()
    assert len(csv_rows) == 3 and "best_val_bpb" in csv_rows[0]
    assert exit_code(script("10_scripts/compare_runs.py").main, ["nope", "--root", str(wf_root)]) == 2
    assert "runs available:" in capsys.readouterr().err


def test_grid_runs_every_combination_and_summarises(wf_root, capsys):
    grid = script("10_scripts/run_grid.py")
    argv = ["--preset", "micro", "--root", str(wf_root), "--learning_rates", "1e-3,3e-3",
            "--batch_sizes", "2,4", "--max_steps", "2", "--save_steps", "2", "--eval_steps", "2",
            "--prefix", "g", *FAST]
    assert grid.main(argv) == 0
    names = [f"g-lr{lr}-bs{bs}" for lr in ("0.001", "0.003") for bs in (2, 4)]
    for n in names:
        ri = info(wf_root, n)
        assert ri["global_step"] == 2 and ri["seed"] == config.TRAINING.seed
    # same validation set for every batch size: comparable losses
    assert len({info(wf_root, n)["eval_blocks"] for n in names}) == 1
    summary = (wf_root / "09_models" / "comparisons" / "g.md").read_text()
    assert all(n in summary for n in names)
    assert (wf_root / "09_models" / "comparisons" / "g.png").exists()
    capsys.readouterr()
    assert grid.main(argv) == 0  # a second call skips finished runs
    assert capsys.readouterr().out.count("finished earlier, skipped") == 4


def test_a_grid_run_refused_now_is_failed_though_an_old_one_finished(wf_root, capsys, monkeypatch):
    """--fresh, each run refused before it starts (here by a stand-in for any LondonLMError):
    the finished runs of an earlier call were counted as this call's, exit 0."""
    import londonlm.training.tools.grid as grid_mod
    from londonlm.core import LondonLMError

    grid = script("10_scripts/run_grid.py")
    argv = ["--preset", "micro", "--root", str(wf_root), "--learning_rates", "1e-3", "--batch_sizes", "2",
            "--max_steps", "2", "--save_steps", "2", "--eval_steps", "2", "--prefix", "r", *FAST]
    assert grid.main(argv) == 0

    def refused(config):
        raise LondonLMError("refused for this test")

    monkeypatch.setattr(grid_mod, "run_training", refused)
    capsys.readouterr()
    assert grid.main([*argv, "--fresh"]) == 1
    captured = capsys.readouterr()
    assert "error: r-lr0.001-bs2: refused for this test" in captured.out
    assert "1 run(s) failed" in captured.err or "no run finished" in captured.err, captured.err


def test_a_grid_asked_for_other_settings_retrains_its_finished_runs(wf_root, capsys):
    """A finished run was skipped whatever this call asked (here twice the steps) and its figures
    tabulated as this grid's; it starts over now, the old run moved aside, and is current after."""
    grid = script("10_scripts/run_grid.py")
    argv = ["--preset", "micro", "--root", str(wf_root), "--learning_rates", "1e-3", "--batch_sizes", "2",
            "--max_steps", "2", "--save_steps", "2", "--eval_steps", "2", "--prefix", "more", *FAST]
    assert grid.main(argv) == 0
    argv[argv.index("--max_steps") + 1] = "4"
    capsys.readouterr()
    assert grid.main(argv) == 0
    out = capsys.readouterr().out
    assert "more-lr0.001-bs2: training settings changed: max_steps 2 -> 4; starting it over" in out
    assert info(wf_root, "more-lr0.001-bs2")["global_step"] == 4
    assert list((wf_root / "09_models" / "checkpoints").glob("more-lr0.001-bs2.previous-*"))
    assert grid.main(argv) == 0
    assert "finished earlier, skipped" in capsys.readouterr().out


def test_a_grid_missing_an_input_every_run_reads_is_one_line(wf_root, tmp_path, capsys):
    """A missing tokenizer failed each run alike: an error line per run, "no run finished", exit 1."""
    argv = ["--preset", "micro", "--root", str(wf_root), "--learning_rates", "1e-3,2e-3", "--batch_sizes", "2",
            "--max_steps", "2", "--prefix", "notok", "--tokenizer_dir", str(tmp_path / "none"), *FAST]
    capsys.readouterr()
    assert exit_code(script("10_scripts/run_grid.py").main, argv) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("error: no tokenizer at ") and "03_tokenizer/" in err, err
    assert "error:" not in out and "notok-lr0.002-bs2: learning rate" not in out


def test_a_file_where_one_grid_runs_folder_goes_fails_that_run_only(wf_root, capsys):
    """(As a family member's does.) It stopped the whole grid in one line before the other runs."""
    runs = wf_root / "09_models" / "checkpoints"
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "blocked-lr0.001-bs2").write_text("not a run\n")
    argv = ["--preset", "micro", "--root", str(wf_root), "--learning_rates", "1e-3,2e-3", "--batch_sizes", "2",
            "--max_steps", "2", "--save_steps", "2", "--eval_steps", "2", "--prefix", "blocked", *FAST]
    capsys.readouterr()
    assert exit_code(script("10_scripts/run_grid.py").main, argv) == 1
    out, err = capsys.readouterr()
    assert re.search(r"^error: blocked-lr0.001-bs2: cannot .*blocked-lr0.001-bs2.* a file", out, re.M), out
    assert "Traceback" not in err and (runs / "blocked-lr0.001-bs2").read_text() == "not a run\n"
    assert info(wf_root, "blocked-lr0.002-bs2")["global_step"] == 2


@pytest.mark.parametrize("argv, said", [
    (["--learning_rates", "nan"], "error: --learning_rates: 'nan' is not a finite number"),
    (["--learning_rates", ","], "error: --learning_rates: give at least one value"),
    (["--batch_sizes", "0"], "error: --batch_sizes: must be at least 1 (got 0)"),
    (["--prefix", "../elsewhere"], "error: --prefix '../elsewhere' is not a folder name"),
    (["--eval_stepz", "5"], "error: unrecognized arguments: --eval_stepz 5"),
    (["--cutoffs", "1700", "--learning_rate", "nan"], "error: --learning_rate: 'nan' is not a finite number"),
])
def test_grid_refuses_nonsense_in_one_line_even_dry(tmp_path, argv, said):
    """A NaN rate named runs "lrnan", a prefix with '/' put runs outside the checkpoints folder,
    and the runs' own flags were read only after the plan was shown (a dry run took anything)."""
    # (in this process: a new one costs 10 s of imports on 2 cores)
    code, out, err = run_in_process(REPO / "10_scripts" / "run_grid.py",
                                    ["--preset", "micro", "--root", str(tmp_path), "--dry_run", *argv], tmp_path, {})
    assert code == 2 and err.startswith(said) and err.count("\n") == 1, err
    assert "lrnan" not in out and not (tmp_path / "09_models").exists()


def test_a_rate_given_twice_names_one_run():
    a, _ = script("10_scripts/run_grid.py").parse(["--preset", "micro", "--learning_rates", "1e-3,1e-3,2e-3"])
    assert a.learning_rates == [1e-3, 2e-3]


def test_scripts_help_from_any_cwd():
    for rel in ("04_training/find_lr.py", "10_scripts/compare_runs.py", "10_scripts/run_grid.py"):
        r = subprocess.run([sys.executable, str(REPO / rel), "--help"], capture_output=True,
                           text=True, cwd="/", timeout=120)
        assert r.returncode == 0 and "usage:" in r.stdout, (rel, r.stderr[-2000:])
