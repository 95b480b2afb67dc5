"""The tokenizer stage and its scripts against damaged inputs and outputs: a deleted output is
rebuilt, a damaged tokenizer or corpus manifest is one `error:` line naming the file and the
fix, an output flag never writes over an input, and a failed save keeps the old tokenizer."""
from __future__ import annotations

import contextlib
import io
import json
import re
import runpy
import shutil
import sys
from pathlib import Path

import pytest

from conftest import REPO, tree_digest

TRAIN = REPO / "03_tokenizer" / "train_historical_tokenizer.py"
REPORT = REPO / "03_tokenizer" / "test_tokenizer.py"
COUNT = REPO / "02_data_collection" / "count_tokens.py"
FIX_TOKENIZER = "train_historical_tokenizer.py --overwrite"
FIX_CORPUS = "historical_data_collector.py --overwrite"


@pytest.fixture
def root(micro_root, tmp_path) -> Path:
    """A copy of the micro project (corpus and tokenizer built) this test may damage."""
    shutil.copytree(micro_root, tmp_path / "root")
    return tmp_path / "root"


def processed(root: Path) -> Path:
    return root / "data" / "london_historical" / "processed"


def tokenizer_dir(root: Path) -> Path:
    return root / "09_models" / "tokenizers" / "london_historical_bpe"


def run_script(script: Path, root: Path, *argv) -> tuple[int, str]:
    """(exit code, stderr) of a stage script run in this process, as its user runs it."""
    err = io.StringIO()
    old_argv = sys.argv
    sys.argv = [str(script), "--root", str(root), *map(str, argv)]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
                pytest.raises(SystemExit) as stop:
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = old_argv
    return stop.value.code, err.getvalue()


def one_error_line(result: tuple[int, str], *parts: str) -> str:
    code, err = result
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err and all(p in err for p in parts), err
    return err


def train(root: Path, out: Path, logs: list | None = None, **kw) -> dict:
    from londonlm.tokens.stage import train_tokenizer_stage

    return train_tokenizer_stage(processed(root), out, vocab_size=400, model_max_length=64,
                                 log=(logs.append if logs is not None else lambda *_: None), **kw)


# ---------------------------------------------------------------- A: outputs the sidecar vouches for
@pytest.mark.parametrize("damage", ["delete tokenizer.json", "empty tokenizer.json", "truncate vocab.json",
                                    "delete tokenizer_config.json", "delete merges.txt"])
def test_a_deleted_or_damaged_output_makes_the_stage_rebuild(root, tmp_path, damage):
    out = tmp_path / "tok"
    train(root, out)
    logs: list[str] = []
    train(root, out, logs)
    assert any("outputs are current" in m for m in logs)
    verb, name = damage.split(" ")
    target = out / name
    if verb == "delete":
        target.unlink()
    else:
        target.write_bytes(b"" if verb == "empty" else target.read_bytes()[:10])
    logs.clear()
    train(root, out, logs)
    assert any(f"rebuilding ({name} was deleted or changed" in m for m in logs), logs
    from londonlm.tokens import load_tokenizer

    assert len(load_tokenizer(out)) == 400


# ---------------------------------------------------------------- B: a damaged tokenizer
DAMAGED = ["", "garbage{", "[]", '{"model":{}}', '{"added_tokens": [], "model": {}}', "\udcff"]


@pytest.mark.parametrize("content", DAMAGED, ids=["empty", "garbage", "list", "no-model", "empty-model", "not-utf8"])
def test_loading_a_damaged_tokenizer_names_the_file_and_the_rebuild(tiny_tokenizer_dir, tmp_path, content):
    from londonlm.core.errors import LondonLMError
    from londonlm.tokens.tokenizer import load_tokenizer

    tok = tmp_path / "tok"
    shutil.copytree(tiny_tokenizer_dir, tok)
    (tok / "tokenizer.json").write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(LondonLMError, match=rf"{re.escape(str(tok / 'tokenizer.json'))}.*{FIX_TOKENIZER}"):
        load_tokenizer(tok)


def test_a_damaged_tokenizer_config_is_one_line_too(tiny_tokenizer_dir, tmp_path):
    from londonlm.tokens.tokenizer import TokenizerUnreadable, load_tokenizer

    tok = tmp_path / "tok"
    shutil.copytree(tiny_tokenizer_dir, tok)
    (tok / "tokenizer_config.json").write_text("garbage{")
    with pytest.raises(TokenizerUnreadable,
                       match=rf"cannot read the tokenizer in {re.escape(str(tok))}.*{FIX_TOKENIZER}"):
        load_tokenizer(tok)


@pytest.mark.parametrize("content", ["", '{"model":{}}'])
def test_report_and_count_scripts_refuse_a_damaged_tokenizer(root, content):
    side = tokenizer_dir(root) / "tokenizer.json"
    side.write_text(content)
    for script in (REPORT, COUNT):
        one_error_line(run_script(script, root), str(side), FIX_TOKENIZER)


# ---------------------------------------------------------------- C: another stage's folder
def test_training_into_another_stages_folder_is_refused(root):
    before = tree_digest(root)
    err = one_error_line(run_script(TRAIN, root, "--preset", "micro", "--output_dir", processed(root)),
                         str(processed(root)), "'corpus' stage")
    assert "nothing was written" in err and tree_digest(root) == before


def test_a_tokenizer_folder_inside_the_corpus_folder_is_refused(root):
    before = tree_digest(root)
    one_error_line(run_script(TRAIN, root, "--preset", "micro", "--output_dir", processed(root) / "tok"),
                   "lies inside the corpus folder")
    assert tree_digest(root) == before and not (processed(root) / "tok").exists()


def test_a_tokenizer_into_a_models_folder_or_any_folder_of_other_files_is_refused(root, tiny_model_dir, tmp_path):
    """Was: `--output_dir <a run's final/>` replaced the model's tokenizer.json with a new
    tokenizer of another vocabulary, exit 0: the model then encoded with ids its embeddings
    were never trained on. A project's root took six tokenizer files among its own."""
    model = tmp_path / "final"
    shutil.copytree(tiny_model_dir, model)
    for folder, named in [(model, "config.json"), (root, "09_models")]:
        before = tree_digest(folder)
        err = one_error_line(run_script(TRAIN, root, "--preset", "micro", "--output_dir", folder),
                             f"--output_dir {folder} holds files that are not a tokenizer's", named)
        assert "nothing was written" in err and tree_digest(folder) == before
    # a tokenizer folder, one a killed save left half-written (no sidecar yet), or a new one: trained
    half = tmp_path / "half"
    half.mkdir()
    (half / "vocab.json").write_text("{}")
    (half / ".saving-0badf00d").mkdir()
    for folder in (tokenizer_dir(root), half, tmp_path / "new"):
        code, err = run_script(TRAIN, root, "--preset", "micro", "--output_dir", folder, "--overwrite")
        assert code == 0 and (folder / "sidecar.json").is_file(), err


# ---------------------------------------------------------------- D: outputs over inputs
def test_an_output_flag_never_writes_over_an_input(root, tmp_path):
    before = tree_digest(root)
    link = tmp_path / "link"
    link.symlink_to(processed(root))
    text = sorted((processed(root) / "texts").iterdir())[0]
    for script, flag, target in [(COUNT, "--output", processed(root) / "manifest.jsonl"),
                                 (COUNT, "--output", text),
                                 (COUNT, "--output", link / "manifest.jsonl"),
                                 (COUNT, "--output", tokenizer_dir(root) / "tokenizer.json"),
                                 (REPORT, "--json", tokenizer_dir(root) / "tokenizer.json"),
                                 (REPORT, "--json", processed(root) / "sidecar.json")]:
        one_error_line(run_script(script, root, flag, target), f"{flag} {target}", "which this command reads")
    assert tree_digest(root) == before
    code, err = run_script(COUNT, root, "--output", tmp_path / "counts.json")  # elsewhere: written
    assert code == 0 and json.loads((tmp_path / "counts.json").read_text())["documents"] == 6, err


def test_a_report_into_another_artifacts_folder_is_refused(root, tiny_model_dir, tmp_path):
    """Was: `count_tokens.py --output <a run's final/>/config.json` replaced the model's config
    with a token count, exit 0 (the model no longer loaded); a report went among a tokenizer's,
    a run's or a model's files alike. The OCR repair's outputs take the same rule."""
    from londonlm.corpus.ocr.files import check_output

    model = tmp_path / "final"
    shutil.copytree(tiny_model_dir, model)
    run = tmp_path / "run"
    run.mkdir()
    (run / "run_info.json").write_text('{"status": "finished"}')
    staged = tmp_path / "gguf"  # another stage's outputs, not an input of these commands
    staged.mkdir()
    (staged / "sidecar.json").write_text('{"stage": "export_gguf"}')
    before = tree_digest(tmp_path), tree_digest(root)
    for script, flag, target, said in [(COUNT, "--output", model / "config.json", "a model's folder"),
                                       (REPORT, "--json", model / "report.json", "a model's folder"),
                                       (COUNT, "--output", staged / "counts.json", "a stage's output folder"),
                                       (REPORT, "--json", run / "report.json", "a training run's folder")]:
        one_error_line(run_script(script, root, flag, target), f"{flag} {target} lies in {said}", "nothing was written")
        with pytest.raises(Exception, match=f"lies in {said}"):
            check_output("--output", target)
    assert (tree_digest(tmp_path), tree_digest(root)) == before


@pytest.mark.parametrize("value, said", [("", "give a file name (got an empty value)"),
                                         ("{tmp}", "is a folder: name a file to write")])
def test_a_report_path_that_names_no_file_is_refused_before_the_report(root, tmp_path, value, said):
    # was: --json '' skipped the JSON report without a word; a folder failed after the report
    code, err = run_script(REPORT, root, "--json", value.format(tmp=tmp_path))
    assert code == 2 and err.strip().startswith("error:") and said in err and err.count("\n") == 1, err


# ---------------------------------------------------------------- E: a save that fails
def _failing_save(monkeypatch, message: str) -> None:
    """transformers' save writes half a tokenizer.json, then the Rust writer's full disk."""
    from transformers import PreTrainedTokenizerFast

    def save(self, folder, *a, **k):
        (Path(folder) / "tokenizer.json").write_text('{"version": "1.0", "trunc')
        raise Exception(message)

    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", save)


def test_a_rebuild_that_runs_out_of_disk_keeps_the_old_tokenizer(root, monkeypatch):
    before = tree_digest(tokenizer_dir(root))
    _failing_save(monkeypatch, "No space left on device (os error 28)")
    one_error_line(run_script(TRAIN, root, "--preset", "micro", "--overwrite"),
                   f"cannot write the tokenizer in {tokenizer_dir(root)}: No space left on device (os error 28)",
                   "the previous tokenizer there, if any, is unchanged")
    after = tree_digest(tokenizer_dir(root))
    assert {k: v for k, v in before.items() if k != "sidecar.json"} == after  # no temporary folder left
    monkeypatch.undo()
    from londonlm.tokens import load_tokenizer

    assert len(load_tokenizer(tokenizer_dir(root))) == 512  # the old one, whole
    code, err = run_script(TRAIN, root, "--preset", "micro")  # (its sidecar gone: rebuilt)
    assert code == 0 and (tokenizer_dir(root) / "sidecar.json").exists(), err


def test_a_second_training_into_the_same_folder_is_one_line_naming_the_first(root):
    """Was: two trainings at once (another --vocab_size) both exited 0; the sidecar the first
    wrote last vouched for the second's files (vocabulary 600 under a sidecar saying 1000),
    and the next run with the first's settings skipped them as current."""
    import os

    from londonlm.core import folder_lock

    before = tree_digest(tokenizer_dir(root))
    with folder_lock(tokenizer_dir(root), AssertionError):  # (a training under way, this process)
        err = one_error_line(run_script(TRAIN, root, "--preset", "micro", "--vocab_size", "400", "--overwrite"),
                             f"another tokenizer training (process PID {os.getpid()}) is writing {tokenizer_dir(root)}")
        assert "nothing was written" in err
        assert tree_digest(tokenizer_dir(root)) == before
    code, err = run_script(TRAIN, root, "--preset", "micro", "--vocab_size", "400")  # the lock went with it
    assert code == 0 and json.loads((tokenizer_dir(root) / "sidecar.json").read_text())["counts"]["vocab_size"] == 400


def test_a_failed_save_is_one_line_and_a_bug_keeps_its_traceback(tiny_tokenizer_dir, tmp_path, monkeypatch):
    from tokenizers import Tokenizer

    from londonlm.tokens.tokenizer import TokenizerSaveFailed, save_tokenizer

    tok = Tokenizer.from_file(str(tiny_tokenizer_dir / "tokenizer.json"))
    out = tmp_path / "tok"
    save_tokenizer(tok, out)
    (out / ".saving-deadbeef").mkdir()  # left by a killed save: removed by the next
    before = tree_digest(out)
    _failing_save(monkeypatch, "Input/output error (os error 5)")
    with pytest.raises(TokenizerSaveFailed, match=rf"cannot write the tokenizer in {re.escape(str(out))}.*os error 5"):
        save_tokenizer(tok, out)
    _failing_save(monkeypatch, "a bug")
    with pytest.raises(Exception, match="^a bug$"):
        save_tokenizer(tok, out)
    assert tree_digest(out) == before and [p.name for p in out.iterdir() if p.name.startswith(".")] == []


# ---------------------------------------------------------------- F: the corpus manifest
@pytest.mark.parametrize("damage, expected", [
    (lambda m, t: m.write_text(m.read_text() + '{"id": "x"}\n'), "manifest.jsonl:7: no 'path'"),
    (lambda m, t: m.write_text(m.read_text().replace('"chars": ', '"chars": "abc", "was": ', 1)),
     "manifest.jsonl:1: 'chars' is 'abc'"),
    (lambda m, t: m.write_text(m.read_text().replace('"year": ', '"year": "abc", "was": ', 1)),
     "manifest.jsonl:1: 'year' is 'abc'"),
    # (the texts' footprint is the sidecar's: the corpus is refused as changed since collected)
    (lambda m, t: [p.unlink() for p in t.iterdir()], "texts was deleted or changed since"),
], ids=["no-path", "chars", "year", "texts-gone"])
def test_every_tokenizer_script_refuses_a_damaged_corpus(root, damage, expected):
    damage(processed(root) / "manifest.jsonl", processed(root) / "texts")
    fix = FIX_CORPUS
    for script, argv in ((TRAIN, ["--preset", "micro", "--overwrite"]), (REPORT, []), (COUNT, [])):
        one_error_line(run_script(script, root, *argv), expected, fix)


def test_a_tokenizer_is_never_trained_on_an_empty_corpus(root, tmp_path):
    from londonlm.corpus import CorpusError

    (processed(root) / "manifest.jsonl").write_text("")
    vouch_for(processed(root))  # a corpus so collected, not one edited since (refused as such)
    with pytest.raises(CorpusError, match=rf"no training text.*{FIX_CORPUS}"):
        train(root, tmp_path / "tok")
    assert not (tmp_path / "tok").exists()
    before = tree_digest(tokenizer_dir(root))
    one_error_line(run_script(TRAIN, root, "--preset", "micro", "--overwrite"), "no training text")
    assert tree_digest(tokenizer_dir(root)) == before


def test_the_token_cache_refuses_a_damaged_tokenizer_and_a_missing_text(root, tmp_path):
    """Training builds its token cache from the same inputs: the same lines, not tracebacks."""
    from londonlm.corpus import CorpusError
    from londonlm.tokens.cache import ensure_cache
    from londonlm.tokens.tokenizer import TokenizerUnreadable

    build = lambda: ensure_cache(tmp_path / "cache", tokenizer_dir(root), processed(root), 64,  # noqa: E731
                                 era_tokens=True, progress=False, log=lambda *_: None)
    next((processed(root) / "texts").iterdir()).unlink()
    with pytest.raises(CorpusError, match=rf"texts was deleted or changed since.*{FIX_CORPUS}"):
        build()
    (tokenizer_dir(root) / "tokenizer.json").write_text("garbage{")
    with pytest.raises(TokenizerUnreadable, match=FIX_TOKENIZER):
        build()


# ---------------------------------------------------------------- a sidecar that is no stage's record
# A sidecar hand-edited or damaged into valid JSON of another shape: the stage reading it as
# its input's record (the corpus's cutoff and counts, the sources it was built from) took
# ``.get`` of a list, a traceback. Such a record vouches for nothing: as a corpus without one (a
# collection stopped part-way) it is refused in one line naming the collection, and nothing is trained.
@pytest.mark.parametrize("record", ["[1, 2]", "null", '"text"', '{"settings": [1], "counts": 3, "inputs": "x"}',
                                    '{"settings": {"cutoff_year": true}}'])
def test_a_corpus_sidecar_of_another_shape_is_a_record_that_says_nothing(root, tmp_path, record):
    (processed(root) / "sidecar.json").write_text(record)
    one_error_line(run_script(TRAIN, root, "--vocab_size", 400, "--output_dir", tmp_path / "tok"),
                   "sidecar.json is not a corpus's record", FIX_CORPUS)
    assert not (tmp_path / "tok").exists()


def vouch_for(folder: Path) -> None:
    """The corpus's sidecar written again for its files as they are now, as its collection would."""
    from londonlm.core import SIDECAR, write_sidecar
    from londonlm.corpus.manifest import CORPUS_OUTPUTS

    rec = json.loads((folder / SIDECAR).read_text())
    write_sidecar(folder / SIDECAR, "corpus", rec["inputs"], rec["settings"], rec["counts"], outputs=CORPUS_OUTPUTS)
