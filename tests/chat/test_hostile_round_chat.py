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
