"""No command's output folder is another artifact's: every stage script with an output folder
flag, pointed at the folder of each other artifact of a micro project (the tokenizer, the
corpus, the chat dataset, a run's final/ model, the run's folder), refuses in one ``error:``
line, and the project is as it was, byte for byte: no file changed, removed or added.

What this net found, mended: the tokenizer stage replaced a model's tokenizer.json with one of
another vocabulary; pre-training and chat fine-tuning trained into the tokenizer's, the corpus's
or the dataset's folder, chat fine-tuning's sidecar replacing theirs (whose own stage then
refused its folder as chat_finetune's); the LR finder, the GGUF export, the evaluation and the
run comparison wrote their files among another artifact's.

Each script runs in this process (``script_fuzz.run_in_process``) from a scratch working
directory, over a fresh copy of the project for each pair.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import REPO, tree_digest, write_old_bailey_tei
from script_fuzz import one_error_line, run_in_process

FAST = ["--report_to", "none", "--disable_tqdm", "true"]

# where each artifact lies in the project
VICTIMS = {
    "tokenizer": "09_models/tokenizers/london_historical_bpe",
    "corpus": "data/london_historical/processed",
    "chat dataset": "data/london_historical/chat",
    "final model": "09_models/checkpoints/micro/final",
    "run folder": "09_models/checkpoints/micro",
}

# script, its output folder flag, the rest of its command line ({root}, {src} filled in)
COMMANDS = {
    "tokenizer": ("03_tokenizer/train_historical_tokenizer.py", "--output_dir", ["--preset", "micro"]),
    "training": ("04_training/train_model_slm.py", "--output_dir", ["--preset", "micro", "--max_steps", "1", *FAST]),
    "lr finder": ("04_training/find_lr.py", "--output_dir", ["--preset", "micro", "--steps", "10"]),
    "evaluation": ("05_evaluation/run_evaluation.py", "--out_dir", ["--preset", "micro", "--mode", "quick"]),
    "chat dataset": ("07_finetuning/build_chat_dataset.py", "--out_dir", ["--source_dir", "{src}"]),
    "chat fine-tuning": ("07_finetuning/finetune_chat.py", "--output_dir",
                         ["--preset", "micro", "--init_from", "micro", "--max_steps", "1", *FAST]),
    "gguf": ("10_scripts/export_gguf.py", "--out_dir", ["--preset", "micro", "--types", "f16"]),
    "comparison": ("10_scripts/compare_runs.py", "--out_dir", ["micro"]),
    "publish (dry run)": ("10_scripts/publish_to_huggingface.py", "--stage_dir", ["--preset", "micro", "--dry_run"]),
}

# a command's own artifact: writing there is its job (a run resumed or skipped, a dataset rebuilt)
OWN = {("training", "run folder"), ("chat dataset", "chat dataset"), ("tokenizer", "tokenizer")}


@pytest.fixture(scope="module")
def project(micro_root, tmp_path_factory) -> Path:
    """The micro project (corpus, tokenizer) with a finished 2-step micro run and the chat
    dataset built from the TEI fixtures (its sources in src/)."""
    from londonlm.chat.dataset import ChatDatasetOptions, build_chat_dataset

    root = tmp_path_factory.mktemp("artifacts") / "project"
    shutil.copytree(micro_root, root)
    code, out, err = run_in_process(REPO / "04_training/train_model_slm.py",
                                    ["--preset", "micro", "--root", str(root), "--max_steps", "2", *FAST],
                                    root, {})
    assert code == 0, (out + err)[-3000:]
    src = write_old_bailey_tei(root / "src")
    build_chat_dataset(src, root / VICTIMS["chat dataset"], ChatDatasetOptions(validation_percent=34.0),
                       log=lambda *_: None)
    return root


@pytest.mark.parametrize("victim", list(VICTIMS))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_output_folder_that_is_another_artifacts_keeps_its_files(command, victim, project, tmp_path,
                                                                    monkeypatch):
    if (command, victim) in OWN:
        pytest.skip("the command's own artifact")
    root = tmp_path / "project"
    shutil.copytree(project, root)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.setenv("LONDONLM_ROOT", str(tmp_path / "decoy"))  # a write past --root would land here
    script, flag, rest = COMMANDS[command]
    argv = ["--root", str(root), *[a.format(src=root / "src") for a in rest], flag, str(root / VICTIMS[victim])]
    before = tree_digest(root)
    code, out, err = run_in_process(REPO / script, argv, cwd, {}, timeout=300)
    one_error_line(code, err, argv)
    after = tree_digest(root)
    lost = sorted(f for f, sha in before.items() if after.get(f) != sha)
    assert not lost, f"{command} into the {victim}'s folder (exit {code}) changed or removed:\n  " + \
        "\n  ".join(lost[:20]) + "\n" + (out + err)[-2000:]
    # nor written among them: refused, with nothing added anywhere in the project
    added = sorted(set(after) - set(before))
    assert code == 2 and not added, f"{command} into the {victim}'s folder (exit {code}) added:\n  " + \
        "\n  ".join(added[:20]) + "\n" + (out + err)[-2000:]
    assert not (tmp_path / "decoy").exists() and not any(cwd.iterdir())
