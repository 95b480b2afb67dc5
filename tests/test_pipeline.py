"""The one-command pipeline end to end on the micro preset, through the real script, run
from another working directory: every stage writes its artifacts, a second run skips
every stage, and the model it leaves loads with the stock transformers classes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, write_micro_source, write_old_bailey_tei
from script_fuzz import completed_in_process


SCRIPT = REPO / "10_scripts" / "run_pipeline.py"


def _run_in_a_process_of_its_own(args, cwd, root):
    env = dict(os.environ, LONDONLM_ROOT=str(root), WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def _run(args, cwd, root):
    """The script run in this process (the fixture's first run is the real one, in a new
    interpreter from another directory; each run after it saves ~10 s of imports on 2 cores)."""
    return completed_in_process(SCRIPT, args, cwd, timeout=600, env={"LONDONLM_ROOT": str(root)})


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    src = write_micro_source(root / "src", n_docs=8)
    first = _run_in_a_process_of_its_own(["--preset", "micro", "--source_dir", str(src), "--max_steps", "30",
                                          "--eval_max_tokens", "2000"],
                                         cwd=tmp_path_factory.mktemp("elsewhere"), root=root)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    return root, src, first


def test_every_stage_writes_its_artifacts(pipeline_run):
    root, _, first = pipeline_run
    processed = root / "data" / "london_historical" / "processed"
    rows = [json.loads(line) for line in (processed / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and {r["split"] for r in rows} == {"train", "validation"}
    assert all((processed / r["path"]).exists() for r in rows)
    assert (processed / "sidecar.json").exists()

    tok_dir = root / "09_models" / "tokenizers" / "london_historical_bpe"
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "sidecar.json"):
        assert (tok_dir / name).exists(), name

    run = root / "09_models" / "checkpoints" / "micro"
    assert (run / "pretokenized_data" / "train.bin").exists()
    assert (run / "pretokenized_data" / "metadata.json").exists()
    assert sorted(p.name for p in run.glob("checkpoint-*"))
    summary = json.loads((run / "pipeline_summary.json").read_text())
    assert summary["run_info"]["global_step"] == 30
    ev = summary["validation"]
    assert 0 < ev["bits_per_byte"] < 8 and ev["tokens"] > 0
    assert len(summary["samples"]) >= 1 and all(s["continuation"] for s in summary["samples"])
    assert "=== done ===" in first.stdout
    # --chat auto on plain text: the chat step says in one line why it left itself out
    assert "=== 6/6 period chat ===" in first.stdout and "chat" not in summary
    (skip,) = [line for line in first.stdout.splitlines() if line.startswith("chat: skipped")]
    assert "no question/answer exchanges found in 0 XML file(s)" in skip


def test_training_lowered_the_loss_and_model_loads(pipeline_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = pipeline_run[0]
    run = root / "09_models" / "checkpoints" / "micro"
    last = max(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    losses = [e["loss"] for e in json.loads((last / "trainer_state.json").read_text())["log_history"]
              if "loss" in e]
    assert len(losses) >= 3 and losses[-1] < losses[0] - 0.5, losses  # ln(512)=6.2 at start
    model = AutoModelForCausalLM.from_pretrained(run / "final")
    tok = AutoTokenizer.from_pretrained(run / "final")
    ids = tok("It was a dismal time in London", return_tensors="pt")
    with torch.no_grad():
        out = model(**ids, labels=ids["input_ids"])
    assert torch.isfinite(out.loss)
    assert model.config.eos_token_id == tok.eos_token_id and model.config.pad_token_id == tok.pad_token_id


def test_second_run_skips_every_stage(pipeline_run, tmp_path):
    root, src, _ = pipeline_run
    second = _run(["--preset", "micro", "--source_dir", str(src), "--max_steps", "30",
                   "--eval_max_tokens", "2000"], cwd=tmp_path, root=root)
    assert second.returncode == 0, second.stderr[-3000:]
    out = second.stdout.lower()
    assert out.count("current") >= 3, second.stdout  # corpus, tokenizer and training all skip
    # evaluation and samples too: they record the weights they came from, and those are the same
    assert "evaluation: outputs are current" in out and "samples: outputs are current" in out


def test_chat_step_on_old_bailey_material_then_current(pipeline_run, tmp_path):
    """With Old Bailey TEI the chat step builds the dialogue dataset, fine-tunes the base run
    and evaluates the chat model against it; run again, all three are current."""
    root, src, _ = pipeline_run
    tei = write_old_bailey_tei(tmp_path / "tei")
    args = ["--preset", "micro", "--source_dir", str(src), "--max_steps", "30", "--eval_max_tokens", "2000",
            "--chat", "on", "--chat_source_dir", str(tei), "--chat_bait_limit", "2"]
    res = _run(args, cwd=tmp_path, root=root)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "training: outputs are current" in res.stdout   # (before any test changes the settings)
    chat_run = root / "09_models" / "checkpoints" / "micro-chat"
    assert (chat_run / "final" / "chat_info.json").exists() and (chat_run / "sidecar.json").exists()
    assert (root / "data" / "london_historical" / "chat" / "sidecar.json").exists()
    assert (chat_run / "evaluation" / "chat_eval.json").exists()
    summary = json.loads((root / "09_models" / "checkpoints" / "micro" / "pipeline_summary.json").read_text())
    chat = summary["chat"]
    assert chat["dataset"]["exchanges"] > 0 and chat["steps"] == 8
    assert set(chat["answer_loss"]) == set(chat["anachronism_rate"]) == {"chat", "base"}
    assert summary["artifacts"]["chat_model"].endswith("micro-chat/final")
    assert "held-out answer loss chat" in res.stdout
    again = _run(args, cwd=tmp_path, root=root)
    assert again.returncode == 0, again.stderr[-3000:]
    chat_out = again.stdout.split("period chat ===")[1]
    for line in ("chat dataset: outputs are current", "chat fine-tuning: outputs are current",
                 "chat evaluation: outputs are current"):
        assert line in chat_out, again.stdout


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_the_pipeline_chat_step_in_either_precision(pipeline_run, tmp_path, precision):
    """The chat step trains with the precision the pipeline's command line forces (bf16 used
    to crash there on CPUs with native bf16)."""
    import shutil

    from conftest import precision_flags

    root, src, _ = pipeline_run
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    tei = write_old_bailey_tei(tmp_path / "tei")
    res = _run(["--preset", "micro", "--source_dir", str(src), "--max_steps", "30", "--eval_max_tokens",
                "2000", "--chat", "on", "--chat_source_dir", str(tei), "--chat_bait_limit", "1",
                *precision_flags(precision)], cwd=tmp_path, root=copy)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    info = json.loads((copy / "09_models" / "checkpoints" / "micro-chat" / "run_info.json").read_text())
    assert info["status"] == "finished" and info["precision"] == precision


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_changed_training_settings_start_a_fresh_run(pipeline_run, tmp_path):
    """A finished run made with other settings is not 'current': the pipeline names what
    changed, moves the old run aside (never resumes it under new settings), and the
    evaluation it reports describes the new weights."""
    root, src, _ = pipeline_run
    run = root / "09_models" / "checkpoints" / "micro"
    old_weights = _sha(run / "final" / "model.safetensors")
    args = ["--preset", "micro", "--source_dir", str(src), "--max_steps", "30",
            "--eval_max_tokens", "2000", "--learning_rate", "0.002"]
    res = _run(args, cwd=tmp_path, root=root)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "training settings changed: learning_rate 0.003 -> 0.002" in res.stdout, res.stdout
    assert "outputs are current" not in res.stdout.split("token cache + training ===")[1].split(" evaluation ===")[0]
    (previous,) = run.parent.glob("micro.previous-*")
    assert (previous / "final").is_dir() and (previous / "evaluation").is_dir()
    info = json.loads((run / "run_info.json").read_text())
    assert info["settings"]["learning_rate"] == 0.002 and info["global_step"] == 30
    assert info["resumed_from"] is None                 # trained from scratch, not resumed
    new_weights = _sha(run / "final" / "model.safetensors")
    assert new_weights != old_weights
    ev = json.loads((run / "evaluation" / "pipeline_metrics.json").read_text())
    assert ev["model"]["weights_sha256"] == new_weights
    summary = json.loads((run / "pipeline_summary.json").read_text())
    assert summary["model"]["weights_sha256"] == new_weights
    # the settings a run records are the ones the same command asks for: it is now current
    again = _run(args, cwd=tmp_path, root=root)
    assert again.returncode == 0 and "training: outputs are current" in again.stdout, again.stdout


@pytest.mark.parametrize("damage", ["", "[1, 2]"], ids=["emptied", "a-list"])
def test_a_finished_run_whose_record_is_unreadable_resumes_not_retrains_from_scratch(pipeline_run, tmp_path,
                                                                                      damage):
    """Was: an empty run_info.json read as "tokenizer changed": the finished run moved aside and
    trained again from step 0 (hours for a real preset). Its checkpoints resume, at the last
    step no step is taken, and final/ and the record are written again."""
    import shutil

    root, src, _ = pipeline_run
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    run = copy / "09_models" / "checkpoints" / "micro"
    lr = json.loads((run / "run_info.json").read_text())["settings"]["learning_rate"]  # (another test may change it)
    weights = _sha(run / "final" / "model.safetensors")
    moved_aside = set(run.parent.glob("micro.previous-*"))  # (by another test of the shared project)
    (run / "run_info.json").write_text(damage)
    res = _run(["--preset", "micro", "--source_dir", str(src), "--max_steps", "30", "--eval_max_tokens", "2000",
                "--learning_rate", str(lr)], cwd=tmp_path, root=copy)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "tokenizer changed" not in res.stdout, res.stdout
    assert set(run.parent.glob("micro.previous-*")) == moved_aside, res.stdout
    info = json.loads((run / "run_info.json").read_text())
    assert info["global_step"] == 30 and info["resumed_from"].endswith("checkpoint-30")
    assert _sha(run / "final" / "model.safetensors") == weights


def test_settings_of_an_older_run_info_are_still_compared():
    """A run_info.json written before the settings record: the fields it kept still count."""
    from londonlm.training import settings_changes

    old = {"preset": "micro", "learning_rate": 0.003, "batch_size": 8, "max_steps": 30,
           "shape": {"n_layer": 2, "n_head": 2, "n_embd": 64, "context_length": 64, "vocab_size": 512}}
    wanted = {"preset": "micro", "learning_rate": 0.003, "batch_size": 8, "max_steps": 30,
              "n_layer": 2, "n_head": 2, "n_embd": 64, "context_length": 64, "weight_decay": 0.1}
    assert settings_changes(old, wanted) == []          # weight_decay was not recorded
    assert settings_changes(old, {**wanted, "n_embd": 128, "max_steps": 60}) == [
        "max_steps 30 -> 60", "n_embd 64 -> 128"]
    assert settings_changes({"settings": {"optim": "adamw_torch"}}, {"optim": "muon"}) == [
        "optim 'adamw_torch' -> 'muon'"]


def test_missing_source_is_a_clear_error(tmp_path):
    res = _run(["--preset", "micro", "--source_dir", str(tmp_path / "nope")], cwd=tmp_path, root=tmp_path)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr and "nope" in res.stderr


def test_samples_use_the_generation_interface_and_keep_the_leading_eot(tiny_model_dir, monkeypatch):
    """A prompt longer than the context is cut from the left, never dropping the <|endoftext|>
    every training document starts after."""
    import londonlm.generation as generation
    from londonlm.pipeline import generate_samples

    seen, real_load = [], generation.load_model

    def spy_load(path, **kw):
        lm = real_load(path, **kw)
        real_generate = lm.model.generate

        def spy_generate(inp, **k):
            seen.append(inp[0].tolist())
            return real_generate(inp, **k)
        lm.model.generate = spy_generate
        return lm

    monkeypatch.setattr(generation, "load_model", spy_load)
    out = generate_samples(tiny_model_dir, ["the Thames ran black " * 60], max_new_tokens=5, seed=1)
    lm = real_load(str(tiny_model_dir))
    assert len(out) == 1 and isinstance(out[0]["continuation"], str)
    assert seen and seen[0][0] == lm.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert len(seen[0]) + 5 <= lm.context_length


def test_interrupted_training_stops_the_pipeline(tmp_path, monkeypatch):
    import londonlm.pipeline as pipeline
    import londonlm.training as training
    from londonlm.training import TrainingError

    plan = pipeline.PipelinePlan(tmp_path / "p", tmp_path / "m", tmp_path / "tok",
                                 _tiny_config(tmp_path), 512, 8, 2, False, 5.0, 10, (1500, 1900))
    # the pipeline imports the runner when a run trains (the Trainer's code is slow to import)
    monkeypatch.setattr(training, "run_training", lambda config: {"interrupted": "signal SIGINT"})
    with pytest.raises(TrainingError, match="run the same command again"):
        pipeline._train_stage(plan, log=lambda *_: None)


def _tiny_config(tmp_path):
    """A run's configuration tree (nothing trains from it here)."""
    from londonlm.core.layout import Layout
    from londonlm.training import (ModelConfig, OptimConfig, OutputConfig, RunControl, SpeedConfig,
                                   TrainingConfig)
    from londonlm.training.job import DataOptions

    layout = Layout(tmp_path)
    return TrainingConfig(ModelConfig(1, 1, 8, 8), DataOptions(tmp_path / "tok", tmp_path / "p"), SpeedConfig(),
                          OptimConfig(), RunControl(), OutputConfig(layout.run("r"), "r", layout, "micro"))


def _chat_plan(tmp_path, mode, source_dir, options=True):
    from londonlm.chat.preset import ChatTrainOptions
    from londonlm.core.layout import Layout
    from londonlm.pipeline import ChatStep, PipelinePlan

    layout = Layout(tmp_path)
    step = ChatStep(mode, source_dir, layout.chat_data_dir, layout.chat_run("r"),
                    ChatTrainOptions() if options else None)
    return PipelinePlan(tmp_path / "p", tmp_path / "m", tmp_path / "tok", _tiny_config(tmp_path),
                        512, 8, 2, False, 5.0, 10, (1500, 1900), chat=step)


@pytest.mark.parametrize("source, options, why", [
    (None, True, "the embedded sample has no courtroom dialogue"),
    ("empty", True, "no question/answer exchanges found in 1 XML file(s)"),
    ("empty", False, "no chat fine-tuning preset for 'micro'"),
])
def test_chat_auto_skips_in_one_line_and_on_fails_clearly(tmp_path, source, options, why):
    from londonlm.chat.dataset import ChatDataError
    from londonlm.core.errors import LondonLMError
    from londonlm.pipeline import _chat_stage

    src = None
    if source:
        src = tmp_path / "src"
        src.mkdir()
        (src / "other.xml").write_text("<TEI.2><text><body><p>No trials.</p></body></text></TEI.2>")
    lines = []
    assert _chat_stage(_chat_plan(tmp_path, "auto", src, options), log=lines.append) is None
    assert len(lines) == 1 and lines[0].startswith("chat: skipped (") and why in lines[0], lines
    with pytest.raises(ChatDataError, match="--chat on: " + why.replace("(", r"\(").replace(")", r"\)")) as e:
        _chat_stage(_chat_plan(tmp_path, "on", src, options), log=lines.append)
    assert isinstance(e.value, LondonLMError) and "\n" not in str(e.value)
    off = []
    assert _chat_stage(_chat_plan(tmp_path, "off", src, options), log=off.append) is None and off == []


def test_chat_mode_is_checked(tmp_path):
    from londonlm.core.errors import UsageError

    with pytest.raises(UsageError, match="--chat must be one of auto, on, off"):
        _chat_plan(tmp_path, "maybe", None)


def test_cutoff_year_time_locks_the_whole_pipeline(tmp_path):
    """--cutoff_year: a view of the corpus, a tokenizer and a run (PRESET-toYEAR) of its own,
    the leakage probes in the summary, and nothing dated after the cutoff anywhere."""
    from conftest import write_dated_source

    root = tmp_path / "root"
    src = write_dated_source(root / "src", [1650, 1690, 1720, 1745, 1790, 1850], validation_up_to=1750)
    res = _run(["--preset", "micro", "--source_dir", str(src), "--max_steps", "4", "--eval_max_tokens",
                "2000", "--cutoff_year", "1750", "--chat", "off"], cwd=tmp_path, root=root)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "=== 2/6 corpus up to 1750 ===" in res.stdout
    data = root / "data" / "london_historical"
    full = [json.loads(x) for x in (data / "processed" / "manifest.jsonl").read_text().splitlines()]
    view = [json.loads(x) for x in (data / "processed-to1750" / "manifest.jsonl").read_text().splitlines()]
    assert len(full) == 6 and sorted(r["year"] for r in view) == [1650, 1690, 1720, 1745]
    tok = json.loads((root / "09_models/tokenizers/london_historical_bpe-to1750/tokenizer.json").read_text())
    assert not [t for t in tok["added_tokens"] if t["content"] in ("<|1750s|>", "<|1800s|>", "<|1850s|>")]
    run = root / "09_models" / "checkpoints" / "micro-to1750"
    summary = json.loads((run / "pipeline_summary.json").read_text())
    assert summary["run_info"]["corpus_time"]["cutoff_year"] == 1750
    assert summary["run_info"]["corpus_time"]["years"] == [1650, 1745]
    assert summary["leakage"]["cutoff_year"] == 1750 and summary["leakage"]["facts"]["after"]["n"] > 0
    assert (run / "evaluation" / "leakage.json").is_file()
    assert "leakage probes (cutoff 1750):" in res.stdout


def _dated_source(folder: Path, splits: dict[int, str]) -> Path:
    """Micro prose, one document per year, each landing in the split given for it."""
    from conftest import micro_texts
    from londonlm.corpus import assign_split

    folder.mkdir(parents=True, exist_ok=True)
    for i, (text, (year, want)) in enumerate(zip(micro_texts(len(splits), 6000), splits.items())):
        stem = next(f"part{i}v{k}_{year}" for k in range(2000)
                    if assign_split(f"local_part{i}v{k}_{year}", 5.0) == want)
        (folder / f"{stem}.txt").write_text(text, encoding="utf-8")
    return folder


def test_a_collected_corpus_is_the_pipelines_and_never_replaced_without_overwrite(tmp_path):
    """`historical_data_collector.py --source_dir DIR` then `run_pipeline.py --cutoff_year Y`
    rebuilt the corpus from the embedded sample and trained the time-locked model on the First
    Folio (hostile inputs round 3, item 2): the collected corpus is the one viewed and trained on;
    naming another source without --overwrite is refused, the corpus untouched."""
    from conftest import tree_digest

    root = tmp_path / "root"
    src = _dated_source(tmp_path / "src", {1650: "train", 1690: "train", 1720: "validation", 1790: "train"})
    env = dict(os.environ, LONDONLM_ROOT=str(root))
    collected = subprocess.run([sys.executable, str(REPO / "02_data_collection" / "historical_data_collector.py"),
                                "--source_dir", str(src)], env=env, capture_output=True, text=True, timeout=300)
    assert collected.returncode == 0, collected.stderr[-2000:]
    processed = root / "data" / "london_historical" / "processed"
    before = tree_digest(processed)
    res = _run(["--preset", "micro", "--max_steps", "2", "--eval_max_tokens", "500", "--cutoff_year", "1750",
                "--chat", "off"], cwd=tmp_path, root=root)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "corpus: using the corpus collected in" in res.stdout and tree_digest(processed) == before
    view = [json.loads(x) for x in (processed.parent / "processed-to1750" / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["year"] for r in view) == [1650, 1690, 1720]  # the collected texts, not the Folio
    other = write_micro_source(tmp_path / "other")
    refused = _run(["--preset", "micro", "--source_dir", str(other), "--max_steps", "2"], cwd=tmp_path, root=root)
    assert refused.returncode == 2 and "would replace it" in refused.stderr and "--overwrite" in refused.stderr
    assert "Traceback" not in refused.stderr and tree_digest(processed) == before


def test_a_cutoff_that_leaves_nothing_held_out_stops_before_the_tokenizer(tmp_path):
    """The view warned, then the tokenizer and the token cache were built and training failed
    advising `lower --max_length`; now one line before any of that work."""
    root = tmp_path / "root"
    src = _dated_source(tmp_path / "src", {1650: "train", 1690: "train", 1850: "validation"})
    res = _run(["--preset", "micro", "--source_dir", str(src), "--max_steps", "2", "--cutoff_year", "1750",
                "--chat", "off"], cwd=tmp_path, root=root)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    (line,) = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert "no validation document" in line and "later --cutoff_year" in line and "max_length" not in line
    assert not (root / "09_models" / "tokenizers" / "london_historical_bpe-to1750").exists()
