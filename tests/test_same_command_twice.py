"""The same command twice changes nothing: every stage script that writes outputs, run a second
time with the identical command line over what its first run left, exits 0, says it skipped
(where the script has a notion of "current"), and leaves every file byte for byte as it was.

Each script runs as ``python SCRIPT ...`` would (``script_fuzz.run_in_process``: its exit code
and ``error:`` line), in this process to keep the file within about a minute on 2 cores, from a
scratch working directory, with ``--root`` a copy of a micro project made for this module;
``$LONDONLM_ROOT`` points at an empty decoy folder that must stay empty (a script that wrote to
the default root despite ``--root`` would show there), so nothing is written into the repository.

Between the two runs the test waits for the next whole second: the records' times
(``created``, ``now_iso``) have a resolution of one second, so a second run that rewrote a record
instead of skipping would otherwise go unseen whenever both runs fell within one second.

Scripts with no notion of "current" (a filter, a report, a dry run) are named in
:data:`NO_SKIP_NOTION`; they pass when their second run writes the same bytes again. No file is
exempt: the one log the project names (``04_training/model_training.log``, README "Logs") is
written only by training steps, and a skipped run takes none.

The LR finder is a measurement made again on each call: its summary records the sweep's
seconds, and every other byte is held to the rule. (What this net found, mended: the evaluation
stage evaluated again on every call, rewriting its report with new times; the pipeline's rerun
replaced the summary's timings of the call that made the outputs with its own seconds of
skipping.)
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import REPO, tree_digest, write_dated_source, write_micro_source
from script_fuzz import changed_files, run_in_process

# Scripts with no skip notion: they recompute and rewrite their outputs on every call (no
# sidecar, no --overwrite); the rule then asks that the rewrite be the same bytes.
NO_SKIP_NOTION = {
    "02_data_collection/repair_ocr.py": "a JSONL filter: --output, --report and --save_lexicon are "
                                        "rewritten from --input on every call",
    "02_data_collection/count_tokens.py": "a report: metadata/token_counts.json rewritten on every call",
    "03_tokenizer/test_tokenizer.py": "a report: --json rewritten on every call",
    "04_training/find_lr.py": "a range test, a measurement: lr_find.json/.csv/.png rewritten on every "
                              "call, lr_find.json with the sweep's seconds",
    "07_finetuning/evaluate_chat.py": "evaluates again on every call",
    "10_scripts/compare_runs.py": "a report: NAME.md/.csv/.png rewritten on every call",
    "10_scripts/publish_to_huggingface.py": "--dry_run stages hub_stage/ again on every call",
}

FAST = ["--report_to", "none", "--disable_tqdm", "true"]


# --------------------------------------------------------------------------- running a command

def _next_second() -> None:
    """Sleep into the next whole second of the clock: a record stamped by the second run then
    differs from the first run's if it was rewritten."""
    time.sleep(1.02 - time.time() % 1.0)


@dataclass
class Twice:
    """One command run twice: exit codes, output, and the digest of each watched folder after
    each run (``kept``: the first run's bytes of a few files, to say how they changed)."""
    command: str
    watch: dict
    codes: list = field(default_factory=list)
    outs: list = field(default_factory=list)
    digests: list = field(default_factory=list)
    kept: dict = field(default_factory=dict)

    def changed(self) -> list[str]:
        """``folder/path`` of every file the second run added, removed or rewrote."""
        first, second = self.digests
        return [f"{folder}/{rel}" for folder in first for rel in changed_files(first[folder], second[folder])]

    def path(self, spec: str) -> Path:
        """``name/relative path`` -> the file in watched folder ``name``."""
        name, rel = spec.split("/", 1)
        return self.watch[name] / rel

    def tail(self, n: int = 3000) -> str:
        return f"$ {self.command}\n" + "\n".join(f"--- run {i + 1}: exit {c}\n{o[-n:]}"
                                                for i, (c, o) in enumerate(zip(self.codes, self.outs)))


def twice(rel: str, argv: list[str], watch: dict[str, Path], keep: tuple[str, ...] = ()) -> Twice:
    """Run ``python REL ARGV`` twice; ``watch``: name -> folder whose files must not change;
    ``keep``: ``name/relative path`` files whose first-run bytes to keep."""
    t = Twice(f"python {rel} " + " ".join(map(str, argv)), watch)
    for i in range(2):
        if i:
            _next_second()
        code, out, err = run_in_process(REPO / rel, [str(a) for a in argv], Path.cwd(), {})
        t.codes.append(code)
        t.outs.append(out + err)
        t.digests.append({name: tree_digest(folder) for name, folder in watch.items()})
        if not i:
            for spec in keep:
                t.kept[spec] = t.path(spec).read_bytes() if t.path(spec).is_file() else None
    return t


def assert_same(t: Twice, skipped: str | None) -> None:
    """Exit 0 both times, the second run says ``skipped`` (None: a script without a skip
    notion, see NO_SKIP_NOTION), and no file changed."""
    assert t.codes == [0, 0], t.tail()
    if skipped is not None:
        assert skipped in t.outs[1], t.tail()
    changes = t.changed()
    assert not changes, "the second run changed:\n  " + "\n  ".join(changes) + "\n" + t.tail(1500)


# --------------------------------------------------------------------------- the micro projects

@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """This module's scratch folder; the working directory is a folder in it and
    $LONDONLM_ROOT an empty decoy, checked empty once every test of the module has run."""
    base = tmp_path_factory.mktemp("twice")
    cwd, decoy = base / "cwd", base / "decoy_root"
    cwd.mkdir()
    decoy.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.setenv("LONDONLM_ROOT", str(decoy))
        yield base
    assert not any(decoy.iterdir()), f"written under $LONDONLM_ROOT despite --root: {list(decoy.rglob('*'))}"
    assert not any(cwd.iterdir()), f"written into the working directory: {list(cwd.rglob('*'))}"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def project(micro_root, scratch) -> Path:
    """A copy of the micro project: corpus and tokenizer (stages 02-03), its source in src/."""
    return _copy(micro_root, scratch / "project")


@pytest.fixture(scope="module")
def training(project, scratch) -> tuple[Twice, Path]:
    root = _copy(project, scratch / "train_root")
    t = twice("04_training/train_model_slm.py",
              ["--preset", "micro", "--root", str(root), "--max_steps", "2", *FAST], {"root": root})
    assert t.codes[0] == 0, t.tail()
    return t, root


@pytest.fixture(scope="module")
def trained(training) -> Path:
    """A project whose micro run finished (2 steps): copy it before writing into it."""
    return training[1]


# --------------------------------------------------------------------------- stage 02

def test_collector_on_a_local_folder(project, scratch):
    root = scratch / "collect_root"
    src = project / "src"
    t = twice("02_data_collection/historical_data_collector.py",
              ["--source_dir", str(src), "--root", str(root), "--validation_percent", "20", "--workers", "1"],
              {"root": root, "src": src})
    assert "documents" in t.outs[0] and "outputs are current" not in t.outs[0], t.tail()  # the first one built
    assert_same(t, "corpus: outputs are current")


def test_repair_ocr(project, scratch):
    from ocr_fixtures import OCR, PERIOD

    io_dir = scratch / "ocr"
    (io_dir / "period").mkdir(parents=True)
    (io_dir / "period" / "period.txt").write_text(PERIOD * 3, encoding="utf-8")
    (io_dir / "in.jsonl").write_text(json.dumps({"id": "a", "text": OCR, "year": 1744}) + "\n"
                                     + json.dumps({"id": "b", "text": "tbe Court of Aldermen"}) + "\n",
                                     encoding="utf-8")
    root = _copy(project, scratch / "ocr_root")
    t = twice("02_data_collection/repair_ocr.py",
              ["--input", str(io_dir / "in.jsonl"), "--output", str(io_dir / "out.jsonl"),
               "--report", str(io_dir / "report.jsonl"), "--period_corpus", str(io_dir / "period"),
               "--save_lexicon", str(io_dir / "lexicon.json.gz"), "--workers", "1", "--root", str(root)],
              {"root": root, "ocr": io_dir})
    assert (io_dir / "out.jsonl").is_file() and (io_dir / "lexicon.json.gz").is_file(), t.tail()
    assert_same(t, None)  # NO_SKIP_NOTION


def test_repair_ocr_with_the_default_lexicon(project, scratch):
    """No --period_corpus: the lexicon comes from the corpus under --root (and the shipped one)."""
    from ocr_fixtures import OCR

    io_dir = scratch / "ocr_default"
    io_dir.mkdir()
    (io_dir / "in.jsonl").write_text(json.dumps({"id": "a", "text": OCR, "year": 1744}) + "\n", encoding="utf-8")
    root = _copy(project, scratch / "ocr_default_root")
    t = twice("02_data_collection/repair_ocr.py",
              ["--input", str(io_dir / "in.jsonl"), "--output", str(io_dir / "out.jsonl"), "--workers", "1",
               "--root", str(root)], {"root": root, "ocr": io_dir})
    assert_same(t, None)  # NO_SKIP_NOTION


def test_count_tokens(project, scratch):
    root = _copy(project, scratch / "count_root")
    t = twice("02_data_collection/count_tokens.py", ["--root", str(root)], {"root": root})
    assert_same(t, None)  # NO_SKIP_NOTION


# --------------------------------------------------------------------------- stage 03

def test_tokenizer(project, scratch):
    # another --name: the fixture's tokenizer is current already, so the first run builds
    root = _copy(project, scratch / "tok_root")
    t = twice("03_tokenizer/train_historical_tokenizer.py",
              ["--preset", "micro", "--root", str(root), "--name", "twice_bpe"], {"root": root})
    assert "outputs are current" not in t.outs[0], t.tail()
    assert_same(t, "tokenizer: outputs are current")


def test_tokenizer_report(project, scratch):
    root = _copy(project, scratch / "tokreport_root")
    out = scratch / "tokreport_out"
    out.mkdir()
    t = twice("03_tokenizer/test_tokenizer.py", ["--root", str(root), "--json", str(out / "report.json")],
              {"root": root, "out": out})
    assert (out / "report.json").is_file(), t.tail()
    assert_same(t, None)  # NO_SKIP_NOTION


# --------------------------------------------------------------------------- stage 04

def test_training(training):
    t, _ = training
    assert "final model saved" in t.outs[0], t.tail()
    assert_same(t, "finished earlier with this tokenizer, corpus and these settings; skipped")


LR_SUMMARY = "out/lr_find.json"


@pytest.fixture(scope="module")
def lr_finder(trained, scratch) -> Twice:
    root = _copy(trained, scratch / "lr_root")
    out = scratch / "lr_out"
    return twice("04_training/find_lr.py", ["--preset", "micro", "--root", str(root), "--run_name", "micro",
                                            "--steps", "10", "--output_dir", str(out)],
                 {"root": root, "out": out}, keep=(LR_SUMMARY,))


def test_lr_finder_changes_nothing_but_its_seconds(lr_finder):
    """Exit 0 twice; the table, the plot and the summary's figures are the same bytes; at most
    lr_find.json's 'seconds' (the sweep's own time) differs."""
    t = lr_finder
    assert t.codes == [0, 0], t.tail()
    assert set(t.changed()) <= {LR_SUMMARY}, t.tail()
    first = json.loads(t.kept[LR_SUMMARY])
    second = json.loads(t.path(LR_SUMMARY).read_text(encoding="utf-8"))
    first.pop("seconds")
    second.pop("seconds")
    assert first == second  # NO_SKIP_NOTION


# --------------------------------------------------------------------------- stage 05

@pytest.fixture(scope="module")
def evaluation(trained, scratch) -> Twice:
    root = _copy(trained, scratch / "eval_root")
    return twice("05_evaluation/run_evaluation.py",
                 ["--preset", "micro", "--root", str(root), "--mode", "quick", "--max_eval_tokens", "500",
                  "--device", "cpu"], {"root": root})


def test_evaluation(evaluation):
    assert_same(evaluation, "evaluation: outputs are current")


# --------------------------------------------------------------------------- stage 07

@pytest.fixture(scope="module")
def chat_project(chat_root, scratch) -> Path:
    """A copy of conftest's chat root: a micro base run (base/final) and the dialogue dataset."""
    return _copy(chat_root, scratch / "chat_project")


def test_build_chat_dataset(chat_project, scratch):
    root = _copy(chat_project, scratch / "chatdata_root")
    shutil.rmtree(root / "data" / "london_historical" / "chat")  # the first run builds it
    stats = scratch / "chatdata_json"
    stats.mkdir()
    t = twice("07_finetuning/build_chat_dataset.py",
              ["--source_dir", str(root / "src"), "--root", str(root), "--json", str(stats / "stats.json")],
              {"root": root, "json": stats})
    assert "outputs are current" not in t.outs[0], t.tail()
    assert_same(t, "chat dataset: outputs are current")


@pytest.fixture(scope="module")
def chat_finetuned(chat_project, scratch) -> tuple[Twice, Path]:
    root = _copy(chat_project, scratch / "chatft_root")
    t = twice("07_finetuning/finetune_chat.py",
              ["--preset", "micro", "--init_from", "base", "--max_steps", "2", "--root", str(root), *FAST],
              {"root": root})
    assert t.codes[0] == 0, t.tail()
    return t, root


def test_finetune_chat(chat_finetuned):
    t, _ = chat_finetuned
    assert "chat model:" in t.outs[0], t.tail()
    assert_same(t, "chat fine-tuning: outputs are current")


def test_evaluate_chat(chat_finetuned):
    _, root = chat_finetuned
    t = twice("07_finetuning/evaluate_chat.py",
              ["--model", "base-chat", "--years", "1818", "--bait_limit", "1", "--max_new_tokens", "4",
               "--root", str(root)], {"root": root})
    assert_same(t, None)  # NO_SKIP_NOTION


# --------------------------------------------------------------------------- stage 10

def test_export_gguf(trained, scratch):
    root = _copy(trained, scratch / "gguf_root")
    out = scratch / "gguf_out"  # a folder outside the root too
    t = twice("10_scripts/export_gguf.py", ["--preset", "micro", "--root", str(root)], {"root": root})
    assert "gguf: wrote" in t.outs[0], t.tail()
    assert_same(t, "gguf: outputs are current")
    t = twice("10_scripts/export_gguf.py", ["--preset", "micro", "--root", str(root), "--out_dir", str(out),
                                            "--types", "q8_0"], {"root": root, "out": out})
    assert_same(t, "gguf: outputs are current")


def test_compare_runs(trained, scratch):
    root = _copy(trained, scratch / "compare_root")
    out = scratch / "compare_out"
    t = twice("10_scripts/compare_runs.py", ["--root", str(root)], {"root": root})
    assert_same(t, None)  # NO_SKIP_NOTION
    t = twice("10_scripts/compare_runs.py", ["micro", "--root", str(root), "--out_dir", str(out), "--name", "pc"],
              {"root": root, "out": out})
    assert_same(t, None)


def test_run_grid(trained, scratch):
    root = _copy(trained, scratch / "grid_root")
    t = twice("10_scripts/run_grid.py",
              ["--preset", "micro", "--root", str(root), "--learning_rates", "1e-3", "--batch_sizes", "2",
               "--max_steps", "2", "--save_steps", "2", "--eval_steps", "2", "--prefix", "g", *FAST],
              {"root": root})
    assert "final model saved" in t.outs[0], t.tail()
    assert_same(t, "g-lr0.001-bs2: finished earlier, skipped")


def test_run_grid_family(scratch):
    """--cutoffs: per cutoff a corpus view, a tokenizer, a run and the leakage probes."""
    from londonlm.core import Layout
    from londonlm.corpus import CollectionOptions, build_corpus

    root = scratch / "family_root"
    src = write_dated_source(scratch / "family_src", [1650, 1680, 1705, 1722, 1740, 1790],
                             validation_up_to=1700, percent=30)
    layout = Layout(root)
    build_corpus(layout.processed_dir, layout.metadata_dir,
                 options=CollectionOptions(validation_percent=30, log=lambda *_: None), source_dir=src)
    t = twice("10_scripts/run_grid.py",
              ["--preset", "micro", "--root", str(root), "--cutoffs", "1700,1760", "--max_steps", "2",
               "--prefix", "fam", "--save_steps", "100", "--eval_steps", "100", "--leakage_limit", "20", *FAST],
              {"root": root, "src": src})
    assert t.outs[1].count("finished earlier, skipped") == 2, t.tail()
    assert t.outs[1].count("leakage probes: outputs are current") == 2, t.tail()
    assert_same(t, "fam-to1760: finished earlier, skipped")


def test_publish_dry_run(trained, scratch):
    root = _copy(trained, scratch / "publish_root")
    t = twice("10_scripts/publish_to_huggingface.py",
              ["--repo_id", "someone/micro", "--preset", "micro", "--root", str(root), "--dry_run"], {"root": root})
    assert "dry run: nothing uploaded" in t.outs[0], t.tail()
    assert_same(t, None)  # NO_SKIP_NOTION


# --------------------------------------------------------------------------- the pipeline

PIPELINE_STAGES = ("corpus", "tokenizer", "training", "evaluation", "samples", "chat dataset",
                   "chat fine-tuning", "chat evaluation")
@pytest.fixture(scope="module")
def pipeline(scratch) -> Twice:
    from conftest import write_old_bailey_tei

    root = scratch / "pipeline_root"
    src = write_micro_source(scratch / "pipeline_src")
    tei = write_old_bailey_tei(scratch / "pipeline_tei")
    return twice("10_scripts/run_pipeline.py",
                 ["--preset", "micro", "--root", str(root), "--source_dir", str(src), "--max_steps", "2",
                  "--eval_max_tokens", "500", "--chat", "on", "--chat_source_dir", str(tei),
                  "--chat_bait_limit", "1", *FAST],
                 {"root": root, "src": src, "tei": tei})


def test_pipeline(pipeline):
    assert_same(pipeline, "=== done ===")
    for stage in PIPELINE_STAGES:
        assert f"{stage}: outputs are current" in pipeline.outs[1], (stage, pipeline.tail())
