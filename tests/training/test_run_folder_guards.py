"""Where a training run may write and what it leaves: a run refused after its settings were
worked out leaves the run folder's training_config.json as it was; the tokenizer saved with a
model states the model's positions; a run folder inside another run's own files or a model's
folder, or named by an empty flag, is refused with one `error:` line before anything is made."""
import json
import os

import pytest

from conftest import train_exit_code

COMMON = ["--save_steps", "2", "--eval_steps", "100", "--logging_steps", "1"]


def run_dir(root, name="micro"):
    return root / "09_models" / "checkpoints" / name


def one_error_line(err: str, *words) -> None:
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("error:") and err.count("error:") == 1 and "Traceback" not in err, err
    assert all(w in last for w in words), err


def test_a_flag_refused_as_the_trainer_is_built_leaves_training_config_as_it_was(micro_root_copy, capsys):
    """--fsdp in one process is refused once the Trainer is built, after the settings were
    decided: training_config.json was rewritten with the refused command's."""
    root = micro_root_copy
    assert train_exit_code(root, "--max_steps", "2", *COMMON) == 0
    saved = (run_dir(root) / "training_config.json").read_bytes()
    capsys.readouterr()
    assert train_exit_code(root, "--max_steps", "4", *COMMON, "--fsdp", "full_shard") == 2
    one_error_line(capsys.readouterr().err, "--fsdp")
    assert (run_dir(root) / "training_config.json").read_bytes() == saved


@pytest.mark.parametrize("length", [128, 32])
def test_the_tokenizer_saved_with_the_model_states_its_positions(micro_root_copy, capsys, length):
    """The tokenizer folder says 64 (the tokenizer stage's context); --max_length gives the model
    its positions. final/'s tokenizer said 64 beside 128 positions (inputs truncated to half what
    the model reads) or beside 32 (inputs let through that the model cannot read)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = micro_root_copy
    assert train_exit_code(root, "--max_steps", "2", *COMMON, "--max_length", str(length)) == 0
    out = capsys.readouterr().out
    assert f"the model has {length} positions" in out and "model_max_length 64" in out
    for folder in (run_dir(root) / "final", run_dir(root) / "checkpoint-2"):
        tok = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder))
        assert tok.model_max_length == model.config.n_positions == length
        assert len(tok("word " * 300, truncation=True)["input_ids"]) == length
    tok_dir = root / "09_models" / "tokenizers" / "london_historical_bpe"
    assert json.loads((tok_dir / "tokenizer_config.json").read_text())["model_max_length"] == 64  # left alone
    # (the checkpoint's tokenizer numbers tokens as the folder's: the resume goes on)
    assert train_exit_code(root, "--max_steps", "4", *COMMON, "--max_length", str(length)) == 0


def test_a_continued_runs_saved_tokenizer_states_its_parents_positions(micro_root_copy, capsys):
    """--init_from keeps the parent's positions whatever --max_length trains at: the saved
    tokenizer states those, what the saved model reads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = micro_root_copy
    assert train_exit_code(root, "--max_steps", "2", *COMMON, "--max_length", "128", "--run_name_dir", "parent") == 0
    capsys.readouterr()
    assert train_exit_code(root, "--max_steps", "2", *COMMON, "--max_length", "64", "--run_name_dir", "child",
                           "--init_from", str(run_dir(root, "parent") / "final")) == 0
    assert "the model has 128 positions" in capsys.readouterr().out
    final = run_dir(root, "child") / "final"
    assert AutoTokenizer.from_pretrained(str(final)).model_max_length == 128
    assert AutoModelForCausalLM.from_pretrained(str(final)).config.n_positions == 128


@pytest.mark.parametrize("inside", ["final/sub", "checkpoint-2/sub", "evaluation", "checkpoint-9", "link/sub"])
def test_a_run_folder_inside_another_runs_own_files_is_refused(micro_root_copy, capsys, inside):
    """A run trained in another's final/ or checkpoint-2/ (exit 0) was deleted with it at that
    run's next save or rotation; its evaluation/ and a checkpoint not yet there are that run's too;
    a symlink leads there as well."""
    root = micro_root_copy
    assert train_exit_code(root, "--max_steps", "2", *COMMON) == 0
    os.symlink(run_dir(root) / "final", root / "link")
    before = sorted(p.relative_to(root) for p in run_dir(root).rglob("*"))
    where = (root if inside.startswith("link") else run_dir(root)) / inside
    capsys.readouterr()
    assert train_exit_code(root, "--max_steps", "2", *COMMON, "--output_dir", str(where)) == 2
    one_error_line(capsys.readouterr().err, "--output_dir", "lies inside", "nothing was written")
    assert sorted(p.relative_to(root) for p in run_dir(root).rglob("*")) == before


def test_a_run_folder_inside_a_model_folder_is_refused(micro_root_copy, tiny_model_dir, capsys):
    where = tiny_model_dir / "runs" / "mine"
    assert train_exit_code(micro_root_copy, "--max_steps", "2", *COMMON, "--output_dir", str(where)) == 2
    one_error_line(capsys.readouterr().err, "lies inside the model folder")
    assert not (tiny_model_dir / "runs").exists()


@pytest.mark.parametrize("flag", ["--output_dir", "--run_name_dir", "--run_name"])
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_run_name_or_folder_is_refused_not_the_presets_run(micro_root_copy, capsys, flag, value):
    """(A variable that was not set.) Each was read as not given: the preset's run trained, or
    resumed, in its folder, exit 0."""
    assert train_exit_code(micro_root_copy, "--max_steps", "2", *COMMON, flag, value) == 2
    one_error_line(capsys.readouterr().err, f"{flag} is empty")
    assert not (micro_root_copy / "09_models" / "checkpoints").exists() or \
        not any((micro_root_copy / "09_models" / "checkpoints").iterdir())
