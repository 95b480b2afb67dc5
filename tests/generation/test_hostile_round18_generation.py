"""Hostile round 18, loading models and the server's stops: a model saved as pickled shards
(``pytorch_model.bin.index.json``) was "model weights missing" to the model interface and the
GGUF export; a pickle holding more than tensors was a traceback; a damaged ``pytorch_model.bin``
was "[Errno 22] Invalid argument" or "KeyError: 174812789"; a stop string holding U+FFFD (bytes
that are no character) was found only at the row's end, while its text ended in U+FFFD."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from londonlm.serving.textout import TextTracker, decoder_of
from pickled_weights import BIN_INDEX, save_pickled_shards


def byte_chars() -> dict[int, str]:
    """GPT-2's byte-level alphabet: byte -> the character its token is spelled with."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def byte_ids(tok, data: bytes) -> list[int]:
    chars = byte_chars()
    ids = tok.convert_tokens_to_ids([chars[b] for b in data])
    assert None not in ids and tok.unk_token_id not in ids
    return ids


def track(tok, ids, stop):
    """(index of the token after which the stop was found or None, pieces released meanwhile)."""
    tracker, pieces = TextTracker(decoder_of(tok), tuple(stop)), []
    for i, t in enumerate(ids):
        tracker.add(t)
        pieces.append(tracker.release())
        if tracker.stopped:
            return i, pieces, tracker
    tracker.finish()
    pieces.append(tracker.release())
    return None, pieces, tracker


# --- stops and bytes that are no character ------------------------------------------------------------
def test_a_stop_holding_a_replacement_character_is_found_when_it_is_whole(tok):
    """Was: a run of invalid bytes (an untrained model writes them) kept the text ending in
    U+FFFD, so nothing was taken in and the stop "\ufffd" was found only at the row's end:
    generation ran on to max_tokens."""
    ids = tok("London", add_special_tokens=False)["input_ids"] + byte_ids(tok, b"\x80" * 12)
    at, pieces, tracker = track(tok, ids, ["\ufffd"])
    assert at == len(ids) - 11 and tracker.text == "London"   # the second bad byte shows the first is final
    at, _, tracker = track(tok, ids, ["don\ufffd\ufffd"])
    assert at == len(ids) - 10 and tracker.text == "Lon"


def test_text_before_a_run_of_bad_bytes_streams_at_once(tok):
    ids = tok("London", add_special_tokens=False)["input_ids"] + byte_ids(tok, b"\x80" * 6)
    tracker = TextTracker(decoder_of(tok))
    got = []
    for t in ids:
        tracker.add(t)
        got.append(tracker.release())
    assert "".join(got) == "London" + "\ufffd" * 5          # all but the last: it may still be completed
    tracker.finish()
    assert "".join(got) + tracker.release() == tok.decode(ids)


def test_a_stop_is_never_found_inside_a_character_still_arriving(tok):
    """A stop "\ufffd" must not match the half of 日 (E6 97 of E6 97 A5) decoded so far."""
    ids = tok("London", add_special_tokens=False)["input_ids"] + byte_ids(tok, "日本".encode()) \
        + tok(" a", add_special_tokens=False)["input_ids"]
    at, pieces, tracker = track(tok, ids, ["\ufffd"])
    assert at is None and "".join(pieces) == "London日本 a"
    at, _, tracker = track(tok, ids, ["日"])
    assert at == len(tok("London", add_special_tokens=False)["input_ids"]) + 2 and tracker.text == "London"


def test_a_bad_byte_then_a_character_split_across_tokens(tok):
    """E6 then E6 97 A5: the first E6 becomes final (U+FFFD) only when the second starts."""
    ids = byte_ids(tok, b"a\xe6\xe6\x97\xa5b")
    at, pieces, tracker = track(tok, ids, ["\ufffd"])
    assert at == 2 and tracker.text == "a"
    at, pieces, tracker = track(tok, ids, ["x"])
    assert at is None and "".join(pieces) == "a\ufffd日b" == tok.decode(ids)


# --- pickled shards ----------------------------------------------------------------------------------
def pickled_copy(src: Path, dst: Path, extra=None) -> Path:
    """``src`` copied to ``dst`` with its weights as pickled shards (:func:`save_pickled_shards`)."""
    shutil.copytree(src, dst)
    return save_pickled_shards(dst, extra=extra)


@pytest.fixture(scope="module")
def pickled(tmp_path_factory, tiny_model_dir) -> Path:
    return pickled_copy(tiny_model_dir, tmp_path_factory.mktemp("pickled") / "model")


def test_pickled_shards_load_as_the_safetensors_save_does(pickled, tiny_model_dir):
    """Was: "the model at … cannot be loaded: model weights missing"; transformers loads it."""
    import torch

    from londonlm.core import checkpoint_problem, weight_files, weights_sha256
    from londonlm.generation import load_model

    assert checkpoint_problem(pickled, need_training_state=False) is None
    assert [f.name for f in weight_files(pickled)] == [BIN_INDEX] + [
        f"pytorch_model-0000{i}-of-00003.bin" for i in (1, 2, 3)]
    assert weights_sha256(pickled) != weights_sha256(tiny_model_dir)
    one, many = (load_model(d, device="cpu") for d in (tiny_model_dir, pickled))
    ids = torch.tensor([[0, 5, 9, 42]])
    with torch.no_grad():
        assert torch.equal(one.model(ids).logits, many.model(ids).logits)


def test_a_damaged_pickled_set_is_one_line(pickled, tmp_path):
    from londonlm.core import checkpoint_problem

    for name, damage, words in (
            ("missing", lambda f: f.unlink(), "pytorch_model-00002-of-00003.bin, named by " + BIN_INDEX + ", is missing"),
            ("cut", lambda f: f.write_bytes(f.read_bytes()[:-200]), "a torch archive cut short"),
            ("junk", lambda f: f.write_bytes(b"<html>"), "not a torch archive")):
        folder = tmp_path / name
        shutil.copytree(pickled, folder)
        damage(folder / "pytorch_model-00002-of-00003.bin")
        assert words in checkpoint_problem(folder, need_training_state=False)


class Payload:
    def __reduce__(self):
        return (shutil.rmtree, ("/nonexistent-londonlm-test",))


def test_a_pickle_holding_more_than_tensors_is_one_line(tiny_model_dir, tmp_path):
    """Was: torch's UnpicklingError as a traceback, ending by advising weights_only=False."""
    from londonlm.generation import DamagedModel, load_model, load_weights_to_train

    folder = pickled_copy(tiny_model_dir, tmp_path / "model", extra=Payload())
    for load in (lambda: load_model(folder, device="cpu"), lambda: load_weights_to_train(folder)):
        with pytest.raises(DamagedModel) as e:
            load()
        assert "hold objects that are not tensors" in str(e.value) and "shutil.rmtree" in str(e.value)
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("damage, words", [
    (lambda f: f.write_bytes(f.read_bytes()[:20000]), "pytorch_model.bin damaged (a torch archive cut short)"),
    (lambda f: f.write_bytes(b"junk\n"), "pytorch_model.bin damaged (not a torch archive)")])
def test_a_damaged_single_pytorch_model_bin_is_named(tiny_model_dir, tmp_path, damage, words):
    """Was: "cannot load model from …: [Errno 22] Invalid argument" / "KeyError: 174812789"."""
    import torch
    from safetensors.torch import load_file

    from londonlm.generation import GenerationError, load_model

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    torch.save(load_file(str(folder / "model.safetensors")), str(folder / "pytorch_model.bin"))
    (folder / "model.safetensors").unlink()
    damage(folder / "pytorch_model.bin")
    with pytest.raises(GenerationError) as e:
        load_model(folder, device="cpu")
    assert words in str(e.value), e.value


def test_the_gguf_export_reads_pickled_shards(pickled, tiny_model_dir, tmp_path):
    """Was: "…/model.safetensors not found: the GGUF export needs … model.safetensors"."""
    gguf = pytest.importorskip("gguf")
    import numpy as np

    from londonlm.export import GGUFOptions, export_gguf

    got = {}
    for name, folder in (("one", tiny_model_dir), ("pickled", pickled)):
        out = export_gguf(folder, tmp_path / name, GGUFOptions(stem=name, types=("f16",)), log=lambda *_: None)
        reader = gguf.GGUFReader(str(out.files["f16"]))
        got[name] = {t.name: (t.tensor_type, np.asarray(t.data).tobytes()) for t in reader.tensors}
    assert got["one"] == got["pickled"]
