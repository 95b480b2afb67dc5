"""Hostile round 24, publishing under concurrency: the corpus published as a Hub dataset, and the
OCR step's period lexicon, read a corpus without round 22's shared hold (``reading_corpus``), so a
collection under them gave a dataset or a lexicon of two corpora; a model published while its run
trained was staged from whatever ``final/`` held at each file (weights of one save, config and
tokenizer of the next), and ``--gguf`` exported ``final/`` again after staging and linked the export's
files after its lock was let go, so the GGUF files could be of other weights than the safetensors."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import vouch_for_corpus
from hub_fixtures import staged_files
from reading_at import read_at
from test_publish import REPO_ID, _run, project  # noqa: F401  (project: a fixture)
from londonlm.core import lock_folder
from londonlm.corpus import CorpusError

pytestmark = pytest.mark.network_local

DATASET_ID = "someone/london-texts"
MADE_AGAIN = "was made again while it was read"


def _processed(project) -> Path:
    return project / "data" / "london_historical" / "processed"


def _final(project) -> Path:
    return project / "09_models" / "checkpoints" / "micro" / "final"


def last_error(err: str) -> str:
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("error:") and err.count("error:") == 1 and "Traceback" not in err, err
    return last


def recollected(processed: Path) -> None:
    """The corpus collected again (no lock taken: a copy over it, or a writer of round 21's kind): a
    document added and a year corrected, the texts already there unchanged, a new sidecar."""
    rows = [json.loads(line) for line in (processed / "manifest.jsonl").read_text().splitlines()]
    text = "A new document, collected since. " * 40
    (processed / "texts" / "doc9.txt").write_text(text, encoding="utf-8")
    rows[0]["year"] = 1675
    rows.append({**rows[1], "id": "doc9", "path": "texts/doc9.txt", "title": "Doc 9", "chars": len(text),
                 "sha256": hashlib.sha256(text.encode()).hexdigest(), "words": len(text.split())})
    (processed / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    vouch_for_corpus(processed)


def at_text_hash(monkeypatch, n: int, then) -> None:
    """``then()`` as the dataset's staging hashes its ``n``-th text."""
    import londonlm.publishing.dataset as dataset_module

    real, calls = dataset_module.sha256_file, []

    def sha256_file(path, *a, **kw):
        calls.append(path)
        if len(calls) == n:
            then()
        return real(path, *a, **kw)

    monkeypatch.setattr(dataset_module, "sha256_file", sha256_file)


# --- the corpus as a Hub dataset --------------------------------------------------------------------
def test_a_corpus_collected_again_while_the_dataset_is_staged_is_not_published(project, hub, monkeypatch, capsys):
    """Was: exit 0; the dataset repo got the new manifest (listing doc9, its year corrected) beside
    the old texts (no texts/doc9.txt) and split tables of the old rows: a dataset of two corpora."""
    processed = _processed(project)
    vouch_for_corpus(processed)
    refused = []

    def collection():
        fd = lock_folder(processed)  # a collection takes the folder exclusively before it writes
        refused.append(fd is None)
        if fd is not None:
            os.close(fd)
        recollected(processed)

    at_text_hash(monkeypatch, 5, collection)  # the second staging (the first is the dry run before the model)
    assert _run(project, "--repo_id", REPO_ID, "--dataset_repo_id", DATASET_ID) == 2
    line = last_error(capsys.readouterr().err)
    assert MADE_AGAIN in line and str(processed) in line, line
    assert refused == [True]  # a real collection (it takes the lock) is the one refused
    repo = hub.repos.get(("dataset", DATASET_ID))
    assert repo is None or not repo.commits  # (the model, of one save, went up before: the script's order)
    # the rerun (the hook fires once: it is past its call now) publishes the corpus as it stands
    assert _run(project, "--repo_id", REPO_ID, "--dataset_repo_id", DATASET_ID) == 0
    published = hub.files(DATASET_ID, repo_type="dataset")
    assert "texts/doc9.txt" in published and published["manifest.jsonl"] == (processed / "manifest.jsonl").read_bytes()


# --- the OCR step's period lexicon -------------------------------------------------------------------
def test_the_default_period_lexicon_is_learnt_from_one_corpus(project, monkeypatch):
    """`repair_ocr.py` (no --period_corpus) and `--period_corpus <a collected corpus>` learnt the
    lexicon from the old manifest's rows over whatever texts were there as they were read; a text
    pruned under it was a FileNotFoundError traceback. Now the read holds the corpus shared: a
    collection is refused, and a writer that takes no lock is one line, nothing learnt."""
    from londonlm.corpus.ocr.step import default_period_lexicon, load_period_lexicon

    processed = _processed(project)
    vouch_for_corpus(processed)
    refused = []

    def collection():
        fd = lock_folder(processed)
        refused.append(fd is None)
        if fd is not None:
            os.close(fd)

    read_at(monkeypatch, 1, collection)
    assert default_period_lexicon(processed) is not None
    assert refused == [True]
    monkeypatch.undo()
    for learn in (default_period_lexicon, load_period_lexicon):
        read_at(monkeypatch, 2, lambda: recollected(processed))
        with pytest.raises(CorpusError, match=MADE_AGAIN):
            learn(processed)
        monkeypatch.undo()


def test_a_text_pruned_under_the_lexicon_is_one_line(project, monkeypatch):
    from londonlm.corpus.ocr.step import load_period_lexicon

    processed = _processed(project)
    vouch_for_corpus(processed)

    def pruned():
        (processed / "texts" / "doc2.txt").unlink()
        vouch_for_corpus(processed)

    read_at(monkeypatch, 1, pruned)
    with pytest.raises(CorpusError, match=MADE_AGAIN):
        load_period_lexicon(processed)


# --- a model saved again while it is published ---------------------------------------------------------
def another_save(project) -> bytes:
    """A training of the run saving final/ again now (``record.save_model_folder``: a whole new folder
    renamed in by ``swap_in``): other weights, and a config that says which save it is."""
    from londonlm.training.record import swap_in

    final = _final(project)
    tmp = final.parent / ".final.tmp"
    shutil.copytree(final, tmp)
    from safetensors.torch import load_file, save_file

    weights = load_file(str(tmp / "model.safetensors"))
    save_file({k: v + 0.01 for k, v in weights.items()}, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((tmp / "config.json").read_text())
    (tmp / "config.json").write_text(json.dumps({**cfg, "londonlm_save": 2}))
    swap_in(tmp, final)
    return (final / "model.safetensors").read_bytes()


@pytest.mark.parametrize("at", [1, 2], ids=["before_its_weights", "between_weights_and_config"])
def test_final_saved_again_while_it_is_staged_is_not_published(project, hub, monkeypatch, capsys, at):
    """Was: exit 0. Saved again between the weights and the config (``at`` 2): the repo got the old
    weights with the new config and tokenizer. Saved again after the evaluation's check of the weights
    (``at`` 1): the new weights went up with metrics.json and a card of the old ones' evaluation."""
    import londonlm.publishing.staging as staging_module

    real, calls = staging_module.link_or_copy, []

    def link_or_copy(src, dst, *a, **kw):
        calls.append(src)
        if len(calls) == at:
            another_save(project)
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(staging_module, "link_or_copy", link_or_copy)
    training = lock_folder(_final(project).parent)  # the run lock of the training that saves it
    try:
        assert _run(project, "--repo_id", REPO_ID) == 2
    finally:
        os.close(training)
    line = last_error(capsys.readouterr().err)
    assert "was saved again while it was published" in line and str(_final(project)) in line, line
    assert f"by process PID {os.getpid()}" in line and "which is training" in line, line
    assert not [r for r in hub.requests if r.method in ("PUT", "POST")]


def test_the_gguf_files_are_of_the_staged_weights(project, hub, monkeypatch):
    """Was: `--gguf` exported final/ again after staging, so a save in between gave GGUF files of
    other weights than the safetensors beside them, exit 0."""
    pytest.importorskip("gguf")
    import londonlm.publishing.publish as publish_module

    real = publish_module.verify_model_folder

    def verify_then_saved_again(*a, **kw):
        report = real(*a, **kw)
        another_save(project)
        return report

    monkeypatch.setattr(publish_module, "verify_model_folder", verify_then_saved_again)
    assert _run(project, "--repo_id", REPO_ID, "--gguf", "--dry_run") == 0
    stage = project / "09_models" / "checkpoints" / "micro" / "hub_stage"
    made_from = json.loads((project / "09_models" / "checkpoints" / "micro" / "gguf" / "sidecar.json").read_text())
    staged = hashlib.sha256((stage / "model.safetensors").read_bytes()).hexdigest()
    assert made_from["inputs"]["model.safetensors"] == staged
    assert any(n.endswith(".gguf") for n in staged_files(stage))


def test_a_gguf_export_replaced_after_the_publishs_export_is_not_staged(project, hub, monkeypatch):
    """Was: the export's files were linked after its lock was let go: another `export_gguf.py`
    replacing them in between put its files in the upload."""
    pytest.importorskip("gguf")
    import londonlm.export as export_module

    real = export_module.export_gguf

    def export_then_replaced(*a, **kw):
        result = real(*a, **kw)
        for path in result.files.values():  # another export's files renamed over these names
            tmp = path.with_suffix(".other")
            tmp.write_bytes(b"GGUF of another export")
            os.replace(tmp, path)
        return result

    monkeypatch.setattr(export_module, "export_gguf", export_then_replaced)
    assert _run(project, "--repo_id", REPO_ID, "--gguf", "--dry_run") == 0
    stage = project / "09_models" / "checkpoints" / "micro" / "hub_stage"
    ggufs = {n: b for n, b in staged_files(stage).items() if n.endswith(".gguf")}
    assert ggufs and all(b.startswith(b"GGUF") and b != b"GGUF of another export" for b in ggufs.values())
