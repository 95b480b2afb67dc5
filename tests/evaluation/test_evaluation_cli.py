"""End to end: 05_evaluation/run_evaluation.py on a micro model in a throwaway project root
with a tiny processed corpus; outputs, comparison, human-eval round trip, clear errors."""
from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SAMPLE_TEXTS, evaluation_exit_code, tree_digest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "05_evaluation" / "run_evaluation.py"


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _trainer_state(step: int) -> dict:
    logs = [{"step": s, "loss": 6.0 - s / 10, "learning_rate": 1e-3 * (1 - s / 20),
             "grad_norm": 1.0, "tokens_per_second": 1000.0 + s} for s in range(1, step + 1)]
    logs.append({"step": step, "eval_loss": 6.1 - step / 10})
    return {"global_step": step, "log_history": logs, "best_model_checkpoint": None}


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("root")
    proc = root / "data" / "london_historical" / "processed"
    (proc / "texts").mkdir(parents=True)
    rows = []
    for i in range(6):
        doc = f"doc{i}"
        text = "".join(SAMPLE_TEXTS[i % 5:] + SAMPLE_TEXTS[: i % 5]) * 3
        (proc / "texts" / f"{doc}.txt").write_text(text, encoding="utf-8")
        rows.append({"id": doc, "source": "sample", "source_kind": "sample", "title": doc,
                     "author": "", "year": 1600 + 50 * i if i != 5 else None, "decade": None,
                     "license": "pd", "url": "", "sha256": "", "chars": len(text),
                     "words": len(text.split()), "split": "validation" if i % 2 else "train",
                     "path": f"texts/{doc}.txt", "london": True})
    (proc / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = root / "09_models" / "checkpoints" / "micro"
    shutil.copytree(tiny_model_dir, run / "final")
    ck = run / "checkpoint-2"
    shutil.copytree(tiny_model_dir, ck)
    (ck / "trainer_state.json").write_text(json.dumps(_trainer_state(2)))
    import torch

    for f in ("optimizer.pt", "scheduler.pt"):
        torch.save({}, ck / f)
    (run / "run_info.json").write_text(json.dumps({"global_step": 4}))
    return root


def test_the_flags_become_one_settings_object_each_setting_named_as_its_flag(monkeypatch):
    """The stage's flags are parsed into one EvaluationSettings, built once and passed whole;
    a setting renamed on one side only (flag or field) is lost, so each field must be a flag."""
    import dataclasses

    import config
    import londonlm.evaluation.run as run_module
    from londonlm.evaluation import QUICK_MAX_EVAL_TOKENS, EvaluationError, EvaluationSettings
    from londonlm.evaluation.cli import build_parser

    parser = build_parser("run_evaluation.py", list(config.PRESETS), "micro")
    settings = {f.name for f in dataclasses.fields(EvaluationSettings)} - {"leakage_limit"}
    assert settings <= {a.dest for a in parser._actions}
    args = parser.parse_args(["--mode", "comprehensive", "--seed", "3", "--max_eval_tokens", "50",
                              "--lm_eval_tasks", "london_probes", "--cutoff_year", "1700", "--run_name", "r"])
    got = EvaluationSettings.from_flags(vars(args), compare=[Path("m")])
    assert (got.mode, got.seed, got.max_eval_tokens, got.cutoff_year) == ("comprehensive", 3, 50, 1700)
    assert got.lm_eval_tasks == ("london_probes",) and got.compare == (Path("m"),) and got.text_files == ()
    monkeypatch.setattr(run_module, "pick_device", lambda asked: "cpu" if asked == "auto" else asked)
    assert EvaluationSettings().resolved().max_eval_tokens == QUICK_MAX_EVAL_TOKENS
    assert EvaluationSettings().resolved().device == "cpu"
    assert got.resolved().max_eval_tokens == 50
    assert EvaluationSettings(mode="comprehensive").resolved().max_eval_tokens is None
    with pytest.raises(EvaluationError, match="mode must be one of"):
        EvaluationSettings(mode="slow")


def test_quick_with_compare_and_text_file(project, tmp_path, capsys, monkeypatch):
    import collections

    import londonlm.core.checkpoints as weights_module

    extra = tmp_path / "extra.txt"
    extra.write_text("".join(SAMPLE_TEXTS) * 2, encoding="utf-8")
    hashed, sha256_file = collections.Counter(), weights_module.sha256_file

    def counted(path):
        if Path(path).suffix == ".safetensors":
            hashed[Path(path).parent.name] += 1
        return sha256_file(path)

    monkeypatch.setattr(weights_module, "sha256_file", counted)  # the weights' hashes (GBs each)
    rc = evaluation_exit_code(["--root", str(project), "--preset", "micro", "--mode", "quick",
                "--compare", "checkpoint-2", "--text_files", str(extra)])
    assert rc == 0
    assert hashed == {"final": 1, "checkpoint-2": 1}  # each model's weights streamed once
    out_dir = project / "09_models" / "checkpoints" / "micro" / "evaluation"
    m = json.loads((out_dir / "metrics.json").read_text())
    assert m["format_version"] == 1 and m["mode"] == "quick"
    assert m["model"]["name"] == "micro/final" and m["model"]["step"] == 4
    # tied to the weights it scored, and to the files written beside it
    run = project / "09_models" / "checkpoints" / "micro"
    assert m["model"]["weights_sha256"] == _sha(run / "final" / "model.safetensors")
    assert m["model"]["run"] == "micro"
    assert m["outputs"]["samples.jsonl"] == _sha(out_dir / "samples.jsonl")
    assert m["outputs"]["report.md"] == _sha(out_dir / "report.md")
    assert [r["weights_sha256"] for r in m["compare"]] == [_sha(run / "checkpoint-2" / "model.safetensors"),
                                                          _sha(run / "final" / "model.safetensors")]
    g = m["generation"]
    assert g["passages"] == g["passages_requested"] == 4 and g["greedy"]["texts"] == 4
    v = m["lm"]["validation"]
    assert v["documents"] == 3 and v["tokens"] > 0 and v["bits_per_byte"] > 0
    assert m["settings"]["max_eval_tokens"] == 20000
    assert set(m["lm"]["validation_by_century"]) == {"1600s", "1700s", "undated"}
    assert "file:extra.txt" in m["lm"]
    assert m["probes"]["london"]["n"] >= 150
    assert [r["name"] for r in m["compare"]] == ["micro/checkpoint-2", "micro/final"]
    assert m["training"]["steps"] == 2 and m["training"]["throughput_key"] == "tokens_per_second"
    for f in ("report.md", "samples.jsonl", "probe_items.jsonl", "probes_london.png",
              "training_curves.png", "compare.png"):
        assert (out_dir / f).is_file(), f
    assert (out_dir / "probes_london.png").read_bytes()[:4] == b"\x89PNG"
    report = (out_dir / "report.md").read_text()
    assert "bits/byte" in report and "lm_eval --model hf" in report
    printed = capsys.readouterr().out
    assert "validation bits per byte" in printed
    # the figure the --text_files file was passed for, on the console too
    bpb = m["lm"]["file:extra.txt"]["bits_per_byte"]
    assert bpb > 0 and re.search(rf"^extra\.txt bits per byte +{bpb:.4f}$", printed, re.M), printed


@pytest.mark.parametrize("data, say", [
    (b"The Lord Mayor\nat the caf\xe9 in Cheapside\n", "byte 0xe9 at byte 25, line 2"),   # Latin-1
    (b"\xff\xfe\xff", "byte 0xff at byte 0, line 1"),          # binary: scored as nothing before
    (b"  \n\t\n", "is empty: nothing to score"),
])
def test_a_text_file_that_is_not_utf8_text_is_refused_before_any_scoring(data, say, project, tmp_path, capsys):
    """Decoded as bench/bpb.py decodes, the undecodable bytes were dropped unseen: a Latin-1 file
    lost each accented letter and a binary one scored no tokens, its figure null, exit 0."""
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(data)
    out = tmp_path / "o"
    assert evaluation_exit_code(["--root", str(project), "--preset", "micro", "--text_files", str(bad),
                                 "--out_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: text file {bad} ") and say in err and err.count("\n") == 1, err
    assert not out.exists()


def test_the_same_evaluation_again_is_skipped_until_an_input_changes(project, tmp_path, capsys):
    """It evaluated again on every call (minutes for a large model), rewriting its report with
    new times. Skipped while the weights, validation text, files read and settings are those
    metrics.json recorded and every file written beside it is intact; else evaluated again."""
    from londonlm.evaluation.metrics.probes import default_probes_path

    root = tmp_path / "root"
    shutil.copytree(project, root)
    out, probes = tmp_path / "ev", tmp_path / "probes.jsonl"  # (a few probes: a quicker evaluation)
    probes.write_text("".join(default_probes_path().read_text(encoding="utf-8").splitlines(True)[:8]))
    argv = ["--root", str(root), "--preset", "micro", "--max_eval_tokens", "300", "--out_dir", str(out),
            "--probes", str(probes)]

    def evaluated(*more) -> bool:
        capsys.readouterr()
        assert evaluation_exit_code([*argv, *more]) == 0
        said = capsys.readouterr().out
        assert ("outputs are current" in said) != ("wrote " in said), said
        return "wrote " in said

    assert evaluated()
    digest = tree_digest(out)
    assert not evaluated() and tree_digest(out) == digest
    assert evaluated("--overwrite")
    assert evaluated("--seed", "1") and not evaluated("--seed", "1")
    (out / "probes_london.png").unlink()  # a file it wrote, gone or edited
    assert evaluated("--seed", "1")
    texts = root / "data" / "london_historical" / "processed" / "texts"
    (texts / "doc1.txt").write_text((texts / "doc1.txt").read_text() + " More.", encoding="utf-8")
    assert evaluated("--seed", "1")  # the validation text
    from safetensors.torch import load_file, save_file

    weights = root / "09_models" / "checkpoints" / "micro" / "final" / "model.safetensors"
    tensors = load_file(str(weights))
    name = sorted(tensors)[0]
    save_file({**tensors, name: tensors[name] + 1}, str(weights), metadata={"format": "pt"})
    assert evaluated("--seed", "1")  # other weights (the run trained on)
    state = root / "09_models" / "checkpoints" / "micro" / "checkpoint-2" / "trainer_state.json"
    state.write_text(json.dumps(_trainer_state(3)))  # the curves' trainer state
    assert evaluated("--seed", "1")


def test_comprehensive_with_mmlu_and_ratings_import(project, tmp_path, capsys):
    mmlu = tmp_path / "mmlu.jsonl"
    mmlu.write_text(json.dumps({"question": "Where did the Great Fire of 1666 begin?",
                                "choices": ["Pudding Lane", "Bath", "York", "Kew"],
                                "answer": 0, "subject": "history"}) + "\n")
    out_dir = tmp_path / "ev"
    rc = evaluation_exit_code(["--root", str(project), "--preset", "micro", "--model", "checkpoint-2",
                "--mode", "comprehensive", "--mc_files", str(mmlu), "--out_dir", str(out_dir)])
    assert rc == 0
    m = json.loads((out_dir / "metrics.json").read_text())
    assert m["settings"]["max_eval_tokens"] is None and not m["lm"]["validation"]["truncated"]
    assert {"validation_eot_prefixed", "validation_era_conditioned"} <= set(m["lm"])
    assert m["lm"]["validation_eot_prefixed"]["tokens"] > m["lm"]["validation"]["tokens"]
    assert m["probes"]["mmlu"]["n"] == 1
    assert {"greedy", "sampled", "reference"} <= set(m["generation"])
    he = out_dir / "human_eval"
    key = json.loads((he / "blind_key.json").read_text())["items"]
    rows = list(csv.DictReader(open(he / "ratings_sheet.csv")))
    assert {k["model"] for k in key.values()} == {"micro/checkpoint-2", "reference (true text)"}
    ck = project / "09_models" / "checkpoints" / "micro" / "checkpoint-2"
    models = json.loads((he / "blind_key.json").read_text())["models"]
    assert models["micro/checkpoint-2"]["weights_sha256"] == _sha(ck / "model.safetensors")
    assert m["outputs"]["human_eval/blind_key.json"] == _sha(he / "blind_key.json")
    g = m["generation"]  # three short validation documents: every passage each one holds
    assert (g["passages"], g["documents"], g["passages_requested"]) == (12, 3, 16)
    filled = tmp_path / "filled.csv"
    with open(filled, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "fluency": 3, "period_authenticity": 4, "coherence": 2})
    capsys.readouterr()
    assert evaluation_exit_code(["--import_ratings", str(filled), "--key", str(he / "blind_key.json")]) == 0
    assert "reference (true text): fluency 3.00" in capsys.readouterr().out
    results = json.loads((he / "human_eval_results.json").read_text())
    assert results["models"]["micro/checkpoint-2"]["weights_sha256"] == _sha(ck / "model.safetensors")


def test_user_errors_are_one_line(project, tmp_path, capsys):
    assert evaluation_exit_code(["--root", str(tmp_path), "--preset", "micro"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n{oops\n')
    assert evaluation_exit_code(["--root", str(project), "--preset", "micro", "--probes", str(bad),
                  "--out_dir", str(tmp_path / "o")]) == 2
    assert f"{bad}:1:" in capsys.readouterr().err
    assert evaluation_exit_code(["--root", str(project), "--preset", "micro", "--model", "checkpoint-99"]) == 2
    assert "checkpoint-99" in capsys.readouterr().err


def test_a_probe_file_that_is_not_utf8_is_one_line_naming_its_line(project, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"id": "a", "category": "c", "context": "x", "choices": ["p", "q"], "answer": 0}\n'
                    b'{"id": "b", "category": "c", "context": "Caf\xe9", "choices": ["p", "q"], "answer": 0}\n')
    out = tmp_path / "o"  # a report from before: the failed run must leave it as it was
    out.mkdir()
    (out / "metrics.json").write_text('{"earlier": true}')
    assert evaluation_exit_code(["--root", str(project), "--preset", "micro", "--probes", str(bad), "--out_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {bad}:2: not valid UTF-8 (byte 0xe9 at character 45)\n"
    assert [p.name for p in out.iterdir()] == ["metrics.json"] and (out / "metrics.json").read_text() == '{"earlier": true}'


def test_script_help_and_missing_corpus(tmp_path, tiny_model_dir):
    r = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    assert r.returncode == 0 and "--mode" in r.stdout and "lm_eval" in r.stdout
    r = subprocess.run([sys.executable, str(SCRIPT), "--root", str(tmp_path), "--model",
                        str(tiny_model_dir), "--out_dir", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 2 and "corpus manifest" in r.stderr and "Traceback" not in r.stderr


def test_output_folder_follows_the_layout_rule(tmp_path):
    from londonlm.evaluation.cli import evaluation_dir
    from londonlm.core.layout import Layout

    layout = Layout(tmp_path)
    run, other = layout.run("a"), layout.run("b")
    for p in (run.final, run.checkpoint(2), other.checkpoint(5), tmp_path / "loose" / "model"):
        p.mkdir(parents=True)
    assert evaluation_dir(layout, run, run.final) == run.evaluation_dir
    assert evaluation_dir(layout, run, run.checkpoint(2)) == run.evaluation_dir / "checkpoint-2"
    # another run's checkpoint reports into that run, as publishing looks for it
    assert evaluation_dir(layout, run, other.checkpoint(5)) == other.evaluation_dir_for(other.checkpoint(5))
    assert evaluation_dir(layout, run, tmp_path / "loose" / "model") == tmp_path / "loose" / "model" / "evaluation"
    # a model path into a run under another root (the command publishing prints) reports
    # into that run, where publishing reads it back
    elsewhere = Layout(tmp_path / "other_root").run("c")
    elsewhere.final.mkdir(parents=True)
    elsewhere.run_info.write_text("{}")
    assert evaluation_dir(layout, run, elsewhere.final) == elsewhere.evaluation_dir


def test_serving_evaluation_and_inference_never_import_training():
    code = ("import sys, londonlm.generation, londonlm.serving.repl, londonlm.serving.inference_cli, "
            "londonlm.serving, londonlm.serving.cli, londonlm.evaluation, londonlm.evaluation.cli, "
            "londonlm.evaluation.metrics.generation_quality, londonlm.evaluation.curves; "
            "print(sorted(m for m in sys.modules if m.startswith('londonlm.training') or m == 'londonlm.pipeline'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_lm_eval_tasks_recorded_beside_our_figures(project, tmp_path):
    pytest.importorskip("lm_eval")
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text(SAMPLE_TEXTS[0], encoding="utf-8")
    rc = evaluation_exit_code(["--root", str(project), "--preset", "micro", "--mode", "quick",
                "--out_dir", str(tmp_path / "ev"), "--text_files", str(texts / "a.txt"),
                "--lm_eval_tasks", "london_probes", "london_text_bpb",
                "--lm_eval_text_dir", str(texts)])
    assert rc == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(m["lm_eval"]) >= {"london_probes", "london_text_bpb"}
    # (tests/evaluation/test_harness.py checks agreement with our scorer where no window cuts the
    # context; this micro model's 64-token window cuts long probes differently)
    assert 0 <= m["lm_eval"]["london_probes"]["acc"] <= 1
    assert m["lm_eval"]["london_text_bpb"]["bits_per_byte"] > 0
    assert "lm_eval" in m["timing_s"]


def test_leakage_probes_and_what_the_model_could_not_know(project, tmp_path):
    out = tmp_path / "ev"
    assert evaluation_exit_code(["--root", str(project), "--preset", "micro", "--out_dir", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    # the run recorded no cutoff: every item counts as before it, nothing is flagged
    assert m["leakage"]["cutoff_year"] is None and m["leakage"]["facts"]["after"]["n"] == 0
    assert m["leakage"]["facts"]["before"]["n"] >= 150 and not m["leakage"]["flag"]
    # the run's recorded cutoff splits the items (and --cutoff_year overrides it)
    info_path = project / "09_models" / "checkpoints" / "micro" / "run_info.json"
    saved = info_path.read_text()
    try:
        info_path.write_text(json.dumps({"global_step": 4, "corpus_time": {
            "cutoff_year": 1750, "years": [1600, 1750], "words_by_decade": {"1600": 900, "1750": 300}}}))
        assert evaluation_exit_code(["--root", str(project), "--preset", "micro", "--out_dir", str(out)]) == 0
        m = json.loads((out / "metrics.json").read_text())
        assert m["leakage"]["cutoff_year"] == 1750 and m["leakage"]["facts"]["after"]["n"] > 100
        report = (out / "report.md").read_text()
        section = report[report.index("## What this model could not know"):]
        assert "**Cutoff: 1750.**" in section and "| 1600s | 900 |" in section and "Leakage probes" in section
        assert evaluation_exit_code(["--root", str(project), "--preset", "micro", "--out_dir", str(out),
                      "--cutoff_year", "1650"]) == 0
        assert json.loads((out / "metrics.json").read_text())["leakage"]["cutoff_year"] == 1650
    finally:
        info_path.write_text(saved)


def test_a_recorded_corpus_it_may_not_read_is_one_line(project, tmp_path, monkeypatch, capsys):
    """The corpus manifest cannot be read (no permission: simulated where it is opened, since
    root reads anything): one line naming it, before any model is loaded, and nothing
    written."""
    import builtins
    import errno

    manifest = project / "data" / "london_historical" / "processed" / "manifest.jsonl"
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, Path)) and Path(file) == manifest:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    before = sorted(p for p in project.rglob("*"))
    rc = evaluation_exit_code(["--root", str(project), "--preset", "micro", "--out_dir", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: cannot use {manifest}: permission denied")
    assert sorted(p for p in project.rglob("*")) == before and not (tmp_path / "ev").exists()


@pytest.mark.parametrize("argv, flag", [
    (["--import_ratings", "r.csv", "--key", "k.json", "--out_dir", "elsewhere"], "--out_dir"),
    (["--import_ratings", "r.csv", "--key", "k.json", "--mode", "comprehensive"], "--mode"),
    (["--key", "k.json"], "--key"),
    (["--ci", "t"], "--ci"),
    (["--mode", "quick", "--mc_files", str(REPO / "README.md")], "--mc_files"),
    (["--lm_eval_text_dir", str(REPO), "--lm_eval_tasks", "london_probes"], "--lm_eval_text_dir")])
def test_a_flag_the_run_would_not_act_on_is_refused_in_one_line(argv, flag, tmp_path, capsys):
    """Found by test_evaluation_flags_fuzz: ``--mc_files`` in quick mode was never scored,
    ``--key``/``--ci`` without ``--import_ratings`` and the evaluation's flags beside it (its
    ``--out_dir`` too) were dropped without a word; now one line names the flag, before any work."""
    rc = evaluation_exit_code(["--root", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith(f"error: {flag} "), err
    assert list(tmp_path.iterdir()) == []


def test_the_same_flags_where_they_act_still_parse():
    import config
    from londonlm.evaluation.cli import build_parser

    parser = build_parser("run_evaluation.py", list(config.PRESETS), "micro")
    for argv in (["--import_ratings", "r.csv", "--key", "k.json", "--ci", "t", "--root", "x"],
                 ["--mode", "comprehensive", "--mc_files", str(REPO / "README.md")],
                 ["--lm_eval_tasks", "london_text_bpb", "--lm_eval_text_dir", str(REPO)], ["--mode", "quick"]):
        parser.parse_args(argv)


@pytest.mark.parametrize("where", ["model", "compare", "corpus"])
def test_a_report_folder_that_is_a_model_or_in_the_corpus_is_refused_first(where, project, capsys):
    """Found by test_evaluation_flags_fuzz: ``--out_dir`` naming the evaluated model's folder (or
    a compared one, or the corpus) wrote metrics, samples and plots among its files; now one line
    names --out_dir, before any model is loaded, and nothing there changes."""
    from conftest import tree_digest

    run = project / "09_models" / "checkpoints" / "micro"
    out = {"model": run / "final", "compare": run / "checkpoint-2",
           "corpus": project / "data" / "london_historical" / "processed" / "report"}[where]
    before = tree_digest(project)
    rc = evaluation_exit_code(["--root", str(project), "--preset", "micro", "--compare", "checkpoint-2",
                               "--out_dir", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: --out_dir {out} ") and err.count("\n") == 1, err
    assert tree_digest(project) == before
