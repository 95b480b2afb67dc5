"""Hostile round 23: the remaining readers of a corpus (the evaluation's validation texts, the
pipeline's validation figures, ``count_tokens``) while the corpus is collected again. They read
without ``reading_corpus``: a re-collection under them was neither refused nor seen, and their
figures were of the old manifest's rows over the new texts, written as the corpus's, exit 0. (The
token count lives in ``tokens``; its test is here, beside the evaluation's, as one round's readers.)"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import evaluation_exit_code, script_as_module, tree_digest, vouch_for_corpus
from reading_at import read_at
from londonlm.corpus import CollectionOptions, CorpusError, build_corpus
from londonlm.corpus.collect import CollectionBusy
from londonlm.tokens.counts import count_tokens_with

REPO = Path(__file__).resolve().parents[2]
quiet = lambda *a: None  # noqa: E731
MADE_AGAIN = (r"the corpus in .*processed was made again while it was read \(another process collected it or "
              r"remade the view\): what was read is of two corpora, so nothing made from it was kept; run the "
              r"same command again")


@pytest.fixture
def root(micro_root, tmp_path) -> Path:
    """A project root with the micro corpus, its tokenizer and the folder it was collected from."""
    out = tmp_path / "root"
    for part in ("data", "src", "09_models/tokenizers"):
        shutil.copytree(micro_root / part, out / part)
    return out


def processed_of(root: Path) -> Path:
    return root / "data" / "london_historical" / "processed"


def corpus_digest(processed: Path) -> dict:
    return {p: h for p, h in tree_digest(processed).items() if not p.startswith(("shards/", ".collection"))}


def collect_again(root: Path, refused: list) -> None:
    """The user's folder changed and `historical_data_collector.py` run again (another process)."""
    first = sorted((root / "src").iterdir())[0]
    first.write_text(first.read_text(encoding="utf-8") + " And so the plague went on.", encoding="utf-8")
    try:
        build_corpus(processed_of(root), processed_of(root).parent / "metadata",
                     options=CollectionOptions(validation_percent=20, log=quiet), source_dir=root / "src")
    except CollectionBusy as e:
        refused.append(str(e))


def copied_over(processed: Path) -> None:
    """Another corpus copied over this one (`cp -r`, rsync: no lock taken): every text replaced, and
    a sidecar vouching for what is there now."""
    rows = [json.loads(line) for line in (processed / "manifest.jsonl").read_text().splitlines()]
    for r in rows:
        text = "Another corpus altogether. " * 40
        (processed / r["path"]).write_text(text, encoding="utf-8")
        r.update(chars=len(text), sha256=hashlib.sha256(text.encode()).hexdigest())
    (processed / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    vouch_for_corpus(processed)


def evaluate(root: Path, model: Path, out: Path) -> int:
    return evaluation_exit_code(["--root", str(root), "--mode", "quick", "--model", str(model), "--out_dir",
                                 str(out), "--max_eval_tokens", "64"])


def test_a_collection_while_the_evaluation_reads_its_validation_texts_is_refused(root, tiny_model_dir, tmp_path,
                                                                                 monkeypatch):
    """`run_evaluation.py` read the manifest's validation rows, then their texts: the corpus collected
    again between, its held-out figures were of texts no manifest described together, exit 0. Now
    the collection is refused in one line while the evaluation reads, and the corpus is as it was."""
    processed, refused = processed_of(root), []
    before = corpus_digest(processed)
    read_at(monkeypatch, 1, lambda: collect_again(root, refused))
    assert evaluate(root, tiny_model_dir, tmp_path / "ev") == 0
    monkeypatch.undo()
    (why,) = refused
    assert why.startswith(f"process PID {os.getpid()} is reading the corpus in {processed} now")
    assert corpus_digest(processed) == before and (tmp_path / "ev" / "metrics.json").is_file()


def test_a_corpus_copied_over_while_the_evaluation_reads_is_one_line_and_no_metrics(root, tiny_model_dir, tmp_path,
                                                                                    monkeypatch, capsys):
    """Held against a writer that takes no lock (a copy over the folder): the evaluation vouched for
    figures of two corpora. Now one line before any metrics are written."""
    processed = processed_of(root)
    read_at(monkeypatch, 1, lambda: copied_over(processed))
    assert evaluate(root, tiny_model_dir, tmp_path / "ev") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "was made again while it was read" in err, err
    assert not (tmp_path / "ev" / "metrics.json").exists()


def test_the_pipelines_validation_figures_are_of_one_corpus(root, tiny_model_dir, monkeypatch):
    from londonlm.pipeline import evaluate_validation

    processed = processed_of(root)
    read_at(monkeypatch, 1, lambda: copied_over(processed))
    with pytest.raises(CorpusError, match=MADE_AGAIN):
        evaluate_validation(tiny_model_dir, processed, 64)


def test_a_collection_under_count_tokens_is_refused_and_the_counts_are_of_one_corpus(root, monkeypatch):
    """`count_tokens.py` read the rows, then the texts: collected again between, it wrote counts of
    the old rows over the new texts as the corpus's. Now the collection is refused while it counts."""
    processed, tok, refused = processed_of(root), root / "09_models" / "tokenizers" / "london_historical_bpe", []
    undisturbed = count_tokens_with(processed, tok)
    read_at(monkeypatch, 2, lambda: collect_again(root, refused))
    assert count_tokens_with(processed, tok) == undisturbed
    (why,) = refused
    assert why.startswith(f"process PID {os.getpid()} is reading the corpus in {processed} now")


def test_a_corpus_copied_over_under_count_tokens_writes_no_counts(root, monkeypatch, capsys):
    processed, out = processed_of(root), root / "counts.json"
    out.write_text("the counts of an earlier run\n")
    read_at(monkeypatch, 2, lambda: copied_over(processed))
    from londonlm.core.errors import run_main

    with script_as_module(REPO / "02_data_collection" / "count_tokens.py", "count_tokens_r23") as script:
        with pytest.raises(SystemExit) as stop:
            run_main(script.main, ["--root", str(root), "--output", str(out)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was made again while it was read" in err, err
    assert out.read_text() == "the counts of an earlier run\n"
