"""When a run on disk is what a request asks for (:mod:`londonlm.training.currency`): the
tokenizer, corpus and settings it recorded against the request's."""
from londonlm.core import sha256_file
from londonlm.corpus import MANIFEST
from londonlm.training import changed_inputs


def _inputs(tmp_path):
    tok, corpus = tmp_path / "tok", tmp_path / "corpus"
    tok.mkdir(), corpus.mkdir()
    (tok / "tokenizer.json").write_text('{"model": {}}')
    (corpus / MANIFEST).write_text("id\tyear\n")
    info = {"tokenizer_sha256": sha256_file(tok / "tokenizer.json"),
            "cache": {"manifest_sha256": sha256_file(corpus / MANIFEST)},
            "settings": {"max_steps": 3, "precision": "fp32"}}
    return tok, corpus, info


def test_the_same_inputs_and_settings_are_current(tmp_path):
    tok, corpus, info = _inputs(tmp_path)
    assert changed_inputs(info, tok, corpus, {"max_steps": 3, "precision": "auto", "unrecorded": 1}) is None


def test_each_changed_input_is_named(tmp_path):
    tok, corpus, info = _inputs(tmp_path)
    assert changed_inputs(info, tok, corpus, {"max_steps": 5}) == "training settings changed: max_steps 3 -> 5"
    (corpus / MANIFEST).write_text("id\tyear\nA\t1700\n")
    assert changed_inputs(info, tok, corpus, {}) == "corpus changed"
    (tok / "tokenizer.json").write_text('{"model": {"vocab": {}}}')
    assert changed_inputs(info, tok, corpus, {}) == "tokenizer changed"


def test_a_missing_input_is_not_counted_as_changed(tmp_path):
    """A finished run is not moved aside for a training that cannot start: the training names
    the command that makes the missing input."""
    tok, corpus, info = _inputs(tmp_path)
    (tok / "tokenizer.json").unlink()
    (corpus / MANIFEST).unlink()
    assert changed_inputs(info, tok, corpus, {"max_steps": 3}) is None
    assert changed_inputs({"cache": "damaged"}, tok, corpus, {}) is None
