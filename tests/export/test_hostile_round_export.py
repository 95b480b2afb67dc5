"""GGUF export of hand-edited or damaged model folders: one line, nothing written or lost."""
from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("gguf")

from londonlm.core import LondonLMError  # noqa: E402
from londonlm.export.gguf import GGUFExportError, GGUFOptions, export_gguf  # noqa: E402


def _edit(folder, name, change):
    data = json.loads((folder / name).read_text())
    change(data)
    (folder / name).write_text(json.dumps(data))


@pytest.mark.parametrize("name,change,match", [
    ("tokenizer.json", lambda d: d["model"].update(vocab=[1, 2]), "expected a map"),
    ("tokenizer.json", lambda d: d["added_tokens"].append(7), "AddedToken"),
    ("config.json", lambda d: d.update(n_layer="2"), "n_layer is '2'"),
    ("config.json", lambda d: d.update(n_positions=None), "n_positions is None"),
])
def test_a_hand_edited_model_folder_is_one_line(tiny_model_dir, tmp_path, name, change, match):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    _edit(model, name, change)
    with pytest.raises(LondonLMError, match=match):  # the export's own, or the model interface's
        export_gguf(model, tmp_path / "out", GGUFOptions(types=("f16",)), log=lambda *_: None)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_folder_where_a_file_goes_keeps_every_old_file(tiny_model_dir, tmp_path):
    """Found before anything changes: the old f16 file and the sidecar stay as they were."""
    out = tmp_path / "out"
    export_gguf(tiny_model_dir, out, GGUFOptions(types=("f16", "q8_0"), stem="m"), log=lambda *_: None)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "m-q8_0.gguf").unlink()
    (out / "m-q8_0.gguf").mkdir()
    with pytest.raises(GGUFExportError, match="m-q8_0.gguf: it is a folder"):
        export_gguf(tiny_model_dir, out, GGUFOptions(types=("f16", "q8_0"), stem="m", overwrite=True),
                    log=lambda *_: None)
    assert (out / "m-f16.gguf").read_bytes() == before["m-f16.gguf"]
    assert (out / "sidecar.json").read_bytes() == before["sidecar.json"]
    assert sorted(p.name for p in out.iterdir()) == ["m-f16.gguf", "m-q8_0.gguf", "sidecar.json"]


def test_two_exports_into_one_folder_at_once_do_not_tear_each_other(tiny_model_dir, tmp_path, monkeypatch):
    """A second export while one writes the folder is one line and touches nothing: the two
    shared temporary files, one renamed the other's half-written file into place, and the other's
    rename then failed (FileNotFoundError, a traceback) after deleting the first's sidecar."""
    import hashlib
    import threading

    from londonlm.export import gguf as gguf_export

    out, first_wrote, second_done = tmp_path / "out", threading.Event(), threading.Event()
    write = gguf_export._write_gguf_temp

    def paused(*args):  # the first export stops with its files written, not yet renamed
        tmp = write(*args)
        if threading.current_thread().name == "first":
            first_wrote.set()
            second_done.wait(30)
        return tmp

    monkeypatch.setattr(gguf_export, "_write_gguf_temp", paused)
    results = {}
    first = threading.Thread(name="first", target=lambda: results.update(first=export_gguf(
        tiny_model_dir, out, GGUFOptions(types=("f16",), stem="m"), log=lambda *_: None)))
    first.start()
    assert first_wrote.wait(30)
    try:
        with pytest.raises(GGUFExportError, match="being written by another GGUF export"):
            export_gguf(tiny_model_dir, out, GGUFOptions(types=("f16",), stem="m", overwrite=True),
                        log=lambda *_: None)
    finally:
        second_done.set()
        first.join(30)
    side = json.loads((out / "sidecar.json").read_text())
    assert "first" in results and sorted(p.name for p in out.iterdir()) == ["m-f16.gguf", "sidecar.json"]
    assert side["files"]["f16"]["sha256"] == hashlib.sha256((out / "m-f16.gguf").read_bytes()).hexdigest()
