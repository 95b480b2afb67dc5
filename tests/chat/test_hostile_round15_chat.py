"""Hostile round 15 on the period chat data and fine-tuning (docs/hostile_inputs.md, Round 15):
TEI sources in other encodings, a dataset changed by hand since its build, a fine-tuning asked for
rows longer than its base model can read. Each test names what used to happen."""
from __future__ import annotations

import json

import pytest

from conftest import OLD_BAILEY_1818, tree_digest, write_old_bailey_tei
from londonlm.chat.dataset import build_chat_dataset, load_chat_dataset


def _quiet(*_):
    pass


def _answers(data_dir) -> list[str]:
    data = load_chat_dataset(data_dir)
    return [m["content"] for split in data.values() for row in split for m in row["messages"]
            if m["role"] == "assistant"]


def _without_declaration(text: str) -> str:
    return text.split("?>", 1)[1] if text.startswith("<?xml") else text


ACCENTED = OLD_BAILEY_1818.replace("He is the man.", "He is the man, señor.")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be-bom", "cp1252", "latin-1"])
def test_tei_in_another_encoding_keeps_its_exchanges(tmp_path, encoding):
    # was: a UTF-16 file (a Windows editor's "Unicode") skipped whole as "no Old Bailey trials";
    # a cp1252 / Latin-1 file without an encoding declaration read as broken UTF-8, its accented
    # answer rejected as ocr_noise ("He is the man, se\ufffdor.")
    text = _without_declaration(ACCENTED)
    data = ("\ufeff" + text).encode("utf-16-be") if encoding == "utf-16-be-bom" else text.encode(encoding)
    src = tmp_path / "src"
    src.mkdir()
    (src / "paper.xml").write_bytes(data)
    stats = build_chat_dataset(src, tmp_path / "chat", log=_quiet)
    assert stats["files"]["paper.xml"]["trials"] == 1
    assert "He is the man, señor." in _answers(tmp_path / "chat")


def test_tei_that_declares_its_encoding_is_read_by_it(tmp_path):
    # (as before: the parser honours a declaration; the bytes are not decoded a second time)
    src = tmp_path / "src"
    src.mkdir()
    (src / "paper.xml").write_bytes(('<?xml version="1.0" encoding="ISO-8859-1"?>'
                                     + _without_declaration(ACCENTED)).encode("latin-1"))
    build_chat_dataset(src, tmp_path / "chat", log=_quiet)
    assert "He is the man, señor." in _answers(tmp_path / "chat")


def _built(tmp_path):
    src = write_old_bailey_tei(tmp_path / "src")
    data = tmp_path / "chat"
    build_chat_dataset(src, data, log=_quiet)
    return src, data


def test_a_dataset_file_cut_short_since_its_build_is_rebuilt_not_skipped(tmp_path):
    # was: "chat dataset: outputs are current; skipping" over a split whose arrow file was cut
    # short: the build vouched for nothing it wrote, and fine-tuning then refused the dataset
    src, data = _built(tmp_path)
    whole = tree_digest(data)
    arrow = next((data / "train").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:100])
    lines = []
    build_chat_dataset(src, data, log=lines.append)
    assert not any("skipping" in line for line in lines), lines
    assert len(_answers(data)) > 0
    assert tree_digest(data)[f"train/{arrow.name}"] == whole[f"train/{arrow.name}"]


@pytest.mark.parametrize("older_build", [False, True], ids=["this build", "an older build"])
@pytest.mark.parametrize("damage", ["deleted", "not json", "a list"])
def test_a_dataset_whose_statistics_were_damaged_is_rebuilt_not_a_traceback(tmp_path, damage, older_build):
    # was: FileNotFoundError / JSONDecodeError traceback on every later build (the skip read
    # stats.json unguarded); a stats.json of another shape crashed the statistics table. A
    # dataset an older build wrote has a sidecar that vouches for no output: the skip itself checks
    src, data = _built(tmp_path)
    if older_build:
        sidecar = json.loads((data / "sidecar.json").read_text())
        del sidecar["outputs"]
        (data / "sidecar.json").write_text(json.dumps(sidecar))
    stats = data / "stats.json"
    if damage == "deleted":
        stats.unlink()
    else:
        stats.write_text("{" if damage == "not json" else "[1]")
    lines = []
    out = build_chat_dataset(src, data, log=lines.append)
    assert not any("skipping" in line for line in lines), lines
    assert out["conversations"] > 0 and json.loads(stats.read_text()) == out


def test_a_dataset_left_as_built_is_still_skipped(tmp_path):
    src, data = _built(tmp_path)
    before = tree_digest(data)
    lines = []
    build_chat_dataset(src, data, log=lines.append)
    assert any("skipping" in line for line in lines) and tree_digest(data) == before


def test_a_max_length_past_the_base_models_positions_is_one_line_before_any_work(chat_root, tmp_path):
    # was: an IndexError traceback from the position embedding at the first step, after the run
    # folder and its run_info.json ("status": "running") were written
    from londonlm.chat.finetune import ChatTrainError, finetune_chat
    from londonlm.chat.preset import ChatTrainOptions
    from londonlm.core import LondonLMError, RunLayout

    base = chat_root / "09_models" / "checkpoints" / "base" / "final"
    positions = json.loads((base / "config.json").read_text())["n_positions"]
    run = RunLayout(tmp_path / "long-chat")
    with pytest.raises(ChatTrainError, match=rf"--max_length {positions * 2} .*{positions} positions") as e:
        finetune_chat(base, chat_root / "data" / "london_historical" / "chat", run,
                      ChatTrainOptions(max_steps=1, batch_size=2, max_length=positions * 2), log=_quiet)
    assert isinstance(e.value, LondonLMError)
    assert not run.dir.exists()


@pytest.mark.parametrize("damage", ["chat_info.json deleted", "chat_info.json torn"])
def test_a_chat_run_whose_final_lost_its_chat_files_writes_them_again(chat_model_dir, tmp_path, damage):
    # was: "chat fine-tuning: outputs are current; skipping" over a final/ that was no chat model
    # any more (evaluate_chat.py: "the chat model does not record its base model: pass --base")
    import shutil

    from londonlm.chat.finetune import finetune_chat
    from londonlm.chat.preset import ChatTrainOptions
    from londonlm.core import RunLayout

    root = chat_model_dir.parents[3]
    run = RunLayout(tmp_path / "fixture-chat")
    shutil.copytree(chat_model_dir.parent, run.dir)
    whole = tree_digest(run.final)
    info = run.final / "chat_info.json"
    info.unlink() if damage.endswith("deleted") else info.write_text('{"place": "Old Ba')
    lines = []
    finetune_chat(root / "09_models" / "checkpoints" / "base" / "final", root / "data" / "london_historical" / "chat",
                  run, ChatTrainOptions(max_steps=2, batch_size=4, warmup_steps=1, save_steps=2, eval_steps=2,
                                        logging_steps=1), log=lines.append)
    assert not any("skipping" in line for line in lines), lines
    assert json.loads(info.read_text())["base_model"].endswith("base/final")
    now = tree_digest(run.final)
    assert now["model.safetensors"] == whole["model.safetensors"]  # the last checkpoint's model, no step past it


@pytest.mark.parametrize("argv", [["--learning_rate", "1e39"], ["--learning_rate", "1e38"],
                                  ["--learning_rate", "1e37", "--adam_beta1", "0.99"]])
def test_a_rate_adam_cannot_apply_to_float32_weights_is_one_line_before_any_work(chat_root, tmp_path, argv, capsys):
    # was: "RuntimeError: value cannot be converted to type float without overflow" from torch's
    # Adam at the first step (its step is the rate over 1 - beta1), the run's record already written
    import importlib.util

    from conftest import REPO
    from londonlm.core.errors import run_main

    spec = importlib.util.spec_from_file_location("finetune_chat", REPO / "07_finetuning" / "finetune_chat.py")
    ft = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ft)
    out = tmp_path / "fast-chat"
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_main(ft.main, ["--preset", "micro", "--init_from", "base", "--root", str(chat_root),
                           "--output_dir", str(out), "--max_steps", "1", *argv])
    err = capsys.readouterr().err.splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "largest rate Adam can apply" in err[0], err
    assert not out.exists()
