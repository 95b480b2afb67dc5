"""Damaged chat inputs: each is one line naming the file and what rebuilds it, never a traceback
(and never a fine-tuning that trains and then fails to save)."""
from __future__ import annotations

import gzip
import json
import shutil

import pytest

from conftest import tree_digest, write_old_bailey_tei
from londonlm.chat.dataset import ChatDataError, build_chat_dataset, load_chat_dataset
from londonlm.chat.respond import ChatModelDamaged, is_chat_model, read_chat_info
from londonlm.core import LondonLMError


@pytest.mark.parametrize("body", [b"not gzip at all", "cut"])
def test_a_damaged_gzip_source_is_one_line_and_writes_nothing(tmp_path, body):
    src = write_old_bailey_tei(tmp_path / "src")
    whole = gzip.compress(next(src.glob("*.xml")).read_bytes())
    (src / "late.xml.gz").write_bytes(whole[: len(whole) // 2] if body == "cut" else body)
    with pytest.raises(ChatDataError, match="late.xml.gz is not a whole gzip file"):
        build_chat_dataset(src, tmp_path / "chat", log=lambda *_: None)
    assert not (tmp_path / "chat").exists()


def _damage(folder, how):
    if how == "arrow cut":
        arrow = next((folder / "validation").glob("*.arrow"))
        arrow.write_bytes(arrow.read_bytes()[:100])
    elif how == "split gone":
        shutil.rmtree(folder / "validation")
    elif how == "dict not json":
        (folder / "dataset_dict.json").write_text("{")
    elif how == "sidecar without settings":
        (folder / "sidecar.json").write_text("{}")


@pytest.mark.parametrize("how", ["arrow cut", "split gone", "dict not json", "sidecar without settings"])
def test_a_damaged_chat_dataset_is_refused_before_any_work(chat_root, tmp_path, how):
    data = tmp_path / "chat"
    shutil.copytree(chat_root / "data" / "london_historical" / "chat", data)
    _damage(data, how)
    with pytest.raises(ChatDataError, match=r"chat dataset.*damaged.*build_chat_dataset\.py"):
        load_chat_dataset(data)


@pytest.mark.parametrize("name,text", [
    ("chat_info.json", "{"), ("chat_info.json", "[1]"), ("chat_info.json", '{"base_model": 5}'),
    ("tokenizer.json", "{"), ("tokenizer.json", '"x"'),
])
def test_damaged_chat_files_of_a_model_are_one_line(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    with pytest.raises(ChatModelDamaged, match=name) as e:
        read_chat_info(tmp_path) if name == "chat_info.json" else is_chat_model(tmp_path)
    assert isinstance(e.value, LondonLMError)


def test_whole_chat_files_still_read(tmp_path):
    (tmp_path / "tokenizer.json").write_text(json.dumps({"added_tokens": [{"content": "<|user|>"}, 7]}))
    assert is_chat_model(tmp_path) is False and read_chat_info(tmp_path) == {}
    (tmp_path / "chat_info.json").write_text(json.dumps({"place": "Old Bailey", "base_model": "tiny"}))
    assert read_chat_info(tmp_path)["base_model"] == "tiny" and is_chat_model(tmp_path)


@pytest.mark.parametrize("where", ["the source folder", "above the sources", "a folder of notes"])
def test_out_dir_that_the_dataset_would_replace_whole_is_refused(tmp_path, where):
    """The finished dataset replaces --out_dir whole: pointed at the sources (or a folder holding
    them, or any folder of other files) it used to delete them, exit 0."""
    from londonlm.core import UsageError

    src = write_old_bailey_tei(tmp_path / "top" / "src")
    out = {"the source folder": src, "above the sources": tmp_path / "top",
           "a folder of notes": tmp_path / "notes"}[where]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("precious")
    before = tree_digest(tmp_path)
    with pytest.raises(UsageError, match="--out_dir.*nothing was written"):
        build_chat_dataset(src, out, log=lambda *_: None)
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize("spelling", [".", "chat/.", "chat/../chat"])
def test_an_out_dir_spelled_with_dots_builds_the_dataset_there(tmp_path, monkeypatch, spelling):
    """`--out_dir .` (run from the dataset's folder) built the dataset inside that folder, then
    renaming '.' onto itself failed: EBUSY, a traceback, and a stray build folder left in it."""
    src = write_old_bailey_tei(tmp_path / "src")
    (tmp_path / "chat").mkdir()
    monkeypatch.chdir(tmp_path / "chat" if spelling == "." else tmp_path)
    build_chat_dataset(src, spelling, log=lambda *_: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat", "src"]
    assert load_chat_dataset(tmp_path / "chat")["train"].num_rows > 0
    assert not [p for p in (tmp_path / "chat").iterdir() if p.name.startswith(".")]


def test_two_builds_into_one_folder_at_once_do_not_tear_each_other(tmp_path, monkeypatch):
    """A second build while one writes is one line and leaves the first's whole: the two shared
    the build folder beside the dataset, and one deleted the other's half-written files
    (FileNotFoundError, a traceback), or moved the dataset aside and never put one back."""
    import threading

    from londonlm.chat import dataset as chat_dataset

    src, out = write_old_bailey_tei(tmp_path / "src"), tmp_path / "data" / "chat"
    first_writing, second_done = threading.Event(), threading.Event()
    card = chat_dataset.dataset_card

    def paused(*args):  # the first build stops half-written, its card not yet there
        if threading.current_thread().name == "first":
            first_writing.set()
            second_done.wait(30)
        return card(*args)

    monkeypatch.setattr(chat_dataset, "dataset_card", paused)
    errors = []
    first = threading.Thread(name="first", target=lambda: _collect(errors, build_chat_dataset, src, out))
    first.start()
    assert first_writing.wait(60)
    try:
        with pytest.raises(ChatDataError, match="another chat dataset build .* is writing in"):
            build_chat_dataset(src, out, overwrite=True, log=lambda *_: None)
    finally:
        second_done.set()
        first.join(60)
    assert errors == [] and sorted(p.name for p in out.parent.iterdir()) == ["chat"]
    assert load_chat_dataset(out)["train"].num_rows > 0 and (out / "README.md").is_file()


def _collect(errors: list, build, *args) -> None:
    try:
        build(*args, log=lambda *_: None)
    except Exception as e:  # noqa: BLE001 (the test says which)
        errors.append(e)
