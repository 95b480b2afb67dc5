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


def _finished_run(tmp_path):
    from safetensors.torch import save_file
    import torch

    from londonlm.core import RunLayout

    run = RunLayout(tmp_path / "run")
    run.final.mkdir(parents=True)
    (run.final / "config.json").write_text("{}")
    save_file({"w": torch.zeros(64)}, str(run.final / "model.safetensors"))
    run.run_info.write_text('{"global_step": 2, "max_steps": 2, "interrupted": null}')
    return run


def test_a_run_is_finished_only_with_a_whole_final_model(tmp_path):
    """A final/ cut short or lost is no finished model: skipped as one, it failed where it was
    read (a family's leakage probe); the run resumes and writes it again."""
    from londonlm.training import finished

    run = _finished_run(tmp_path)
    assert finished(run)
    weights = run.final / "model.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[:len(whole) // 2])
    assert not finished(run)
    weights.unlink()
    assert not finished(run)
    weights.write_bytes(whole)
    (run.final / "config.json").unlink()
    assert not finished(run)


def test_an_early_stopped_run_is_finished_and_an_interrupted_one_is_not(tmp_path):
    """Early stopping ends a run before max_steps, not interrupted: the pipeline resumed it on
    every call (it judged by the step count)."""
    from londonlm.training import finished

    run = _finished_run(tmp_path)
    run.run_info.write_text('{"global_step": 1, "max_steps": 2, "interrupted": null}')
    assert finished(run)
    run.run_info.write_text('{"global_step": 1, "max_steps": 2, "interrupted": "SIGTERM"}')
    assert not finished(run)
