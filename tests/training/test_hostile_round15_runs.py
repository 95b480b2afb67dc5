"""Hostile round 15, training run folders: an --output_dir that holds other artifacts (the runs
folder itself, the project root, the corpus's parent, 09_models/) or lies inside another run
(its token cache, its top) mixed a run's checkpoint-N/, final/ and records among them, exit 0;
--fresh then moved by name what was not the run's (a run named final/ in the runs folder) and a
save replaced it. Each is one `error:` line, exit 2, nothing made; an empty folder and a run's
own folder (cache, evaluation, gguf, logs) still train."""
import shutil

import pytest

from conftest import train_exit_code
from test_run_folder_guards import COMMON, one_error_line, run_dir


def listing(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def trained_root(micro_root, tmp_path_factory):
    """A project with one finished micro run (its token cache, final/, checkpoint-2/), shared by
    the refusals, which change nothing (each checks so)."""
    root = tmp_path_factory.mktemp("r15") / "root"
    shutil.copytree(micro_root, root)
    assert train_exit_code(root, "--max_steps", "2", *COMMON) == 0
    return root


@pytest.mark.parametrize("where, words", [
    ("09_models/checkpoints", ["the training run"]),            # the runs folder itself
    (".", ["the tokenizer folder"]),                            # the project root
    ("data/london_historical", ["the corpus folder"]),          # the corpus's parent
    ("09_models", ["the tokenizer folder"]),
    ("09_models/checkpoints/micro/pretokenized_data/x", ["lies inside the training run"]),
    ("09_models/checkpoints/micro/pretokenized_data", ["lies inside the training run"]),
    ("09_models/checkpoints/micro/sub", ["lies inside the training run"]),
])
def test_a_run_folder_among_other_artifacts_is_refused(trained_root, capsys, where, words):
    """Each trained, exit 0, its files among the others'."""
    root = trained_root
    before = listing(root)
    capsys.readouterr()
    assert train_exit_code(root, "--max_steps", "2", *COMMON, "--output_dir", str(root / where)) == 2
    one_error_line(capsys.readouterr().err, "--output_dir", *words, "nothing was written")
    assert listing(root) == before


def test_a_project_root_reading_a_tokenizer_elsewhere_is_refused(trained_root, tmp_path, capsys):
    """With the tokenizer and corpus named outside it, the project root held no input: its own
    09_models/ and data/ say what it is."""
    root = trained_root
    tok = tmp_path / "tok"
    shutil.copytree(root / "09_models" / "tokenizers" / "london_historical_bpe", tok)
    other = tmp_path / "other-root"
    (other / "09_models" / "checkpoints").mkdir(parents=True)
    capsys.readouterr()
    assert train_exit_code(root, "--max_steps", "2", *COMMON, "--tokenizer_dir", str(tok),
                           "--output_dir", str(other)) == 2
    one_error_line(capsys.readouterr().err, "it is a project root")
    assert sorted(p.name for p in other.iterdir()) == ["09_models"]


def test_fresh_in_the_runs_folder_no_longer_moves_a_run_named_final(trained_root, capsys):
    """The runs folder holding a run named `final`: a run trained there (was exit 0) replaced that
    run's folder with its own final model at its save, and its --fresh moved it aside."""
    root = trained_root
    runs = run_dir(root).parent
    assert train_exit_code(root, "--max_steps", "2", *COMMON, "--run_name_dir", "final") == 0
    try:
        before = listing(root)
        capsys.readouterr()
        assert train_exit_code(root, "--max_steps", "2", *COMMON, "--output_dir", str(runs), "--fresh") == 2
        one_error_line(capsys.readouterr().err, "holds the training run")
        assert listing(root) == before
        # (a run so named makes no run of the runs folder: the other runs' folders are let be)
        from londonlm.core.layout import refuse_foreign_run_folder

        refuse_foreign_run_folder("--output_dir", run_dir(root), "training run", {})
    finally:
        shutil.rmtree(runs / "final")


@pytest.mark.parametrize("kind", ["empty", pytest.param("own", marks=pytest.mark.slow)])  # own: ~20 s
def test_an_empty_folder_or_the_runs_own_folder_still_trains(micro_root_copy, kind, capsys):
    """Not refused: an empty folder, and the run's own folder with its evaluation/, gguf/ (a
    sidecar of its own), logs and token cache, resumed and started over with --fresh."""
    root = micro_root_copy
    where = root / "mine"
    where.mkdir()
    assert train_exit_code(root, "--max_steps", "2", *COMMON, "--output_dir", str(where)) == 0
    if kind == "own":
        (where / "evaluation" / "checkpoint-2").mkdir(parents=True)
        (where / "gguf").mkdir()
        (where / "gguf" / "sidecar.json").write_text('{"stage": "gguf export"}')
        (where / ".final.tmp").mkdir()
        assert train_exit_code(root, "--max_steps", "4", *COMMON, "--output_dir", str(where)) == 0
        assert train_exit_code(root, "--max_steps", "2", *COMMON, "--output_dir", str(where), "--fresh") == 0
    assert (where / "final" / "model.safetensors").is_file()


def test_a_run_reading_its_own_final_tokenizer_is_not_refused(tmp_path):
    """The folder-holds-an-input rule leaves out what lies in the run's own parts: a tokenizer
    read from the run's final/ (or a checkpoint) is the run's, not another artifact inside it."""
    from londonlm.core.layout import refuse_foreign_run_folder

    run = tmp_path / "run"
    for part in ("final", "checkpoint-2"):
        (run / part).mkdir(parents=True)
        (run / part / "tokenizer.json").write_text("{}")
        refuse_foreign_run_folder("--output_dir", run, "training run", {"the tokenizer folder": run / part})
    with pytest.raises(Exception, match="holds the tokenizer folder"):
        refuse_foreign_run_folder("--output_dir", tmp_path, "training run", {"the tokenizer folder": run / "final"})


@pytest.mark.parametrize("copy", ["checkpoint-2-keep", "checkpoint-2.bak", "checkpoint-2 (copy)"])
def test_a_copy_the_trainers_rotation_would_delete_is_refused(trained_root, capsys, copy):
    """A user's copy of a checkpoint kept in the run folder (`cp -r checkpoint-2 checkpoint-2-keep`)
    was deleted by the resumed run's rotation (transformers reads its step from the name's start),
    exit 0."""
    run = run_dir(trained_root)
    shutil.copytree(run / "checkpoint-2", run / copy)
    try:
        before = listing(trained_root)
        capsys.readouterr()
        assert train_exit_code(trained_root, "--max_steps", "6", *COMMON, "--save_total_limit", "1") == 2
        one_error_line(capsys.readouterr().err, f"holds {copy}/", "rotation", "nothing was written")
        assert listing(trained_root) == before
    finally:
        shutil.rmtree(run / copy)
