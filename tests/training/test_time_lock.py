"""Time-locked runs: the cutoff and years reach run_info.json and the token cache, and a run
with a cutoff refuses a corpus, tokenizer, --init_from parent or resumed checkpoint that
reaches past it, naming both years."""
import json
import shutil

import pytest

from conftest import train_exit_code as train
from londonlm.corpus import cutoff_view
from test_training import root  # noqa: F401  (the copied micro project)

QUICK = ["--max_steps", "2", "--logging_steps", "1", "--save_steps", "100", "--eval_steps", "100"]


def run_info(root, name):
    return json.loads((root / "09_models" / "checkpoints" / name / "run_info.json").read_text())


def set_years(root, name, years):
    """The run's record of its corpus years, in run_info.json and in each checkpoint's."""
    run = root / "09_models" / "checkpoints" / name
    path = run / "run_info.json"
    info = json.loads(path.read_text())
    info["corpus_time"]["years"] = years
    path.write_text(json.dumps(info))
    for state in run.glob("checkpoint-*/trainer_state.json"):
        st = json.loads(state.read_text())
        st["stateful_callbacks"]["RunRecord"]["attributes"]["record"]["corpus_time"]["years"] = years
        state.write_text(json.dumps(st))


def drop_checkpoint_records(run):
    """Checkpoints as saved before they carried their run's record."""
    for state in run.glob("checkpoint-*/trainer_state.json"):
        st = json.loads(state.read_text())
        del st["stateful_callbacks"]["RunRecord"]
        state.write_text(json.dumps(st))


def processed(root):
    return root / "data" / "london_historical" / "processed"


def test_run_records_years_and_cutoff_and_refuses_a_later_corpus(root, capsys):
    assert train(root, *QUICK, "--run_name_dir", "plain") == 0
    info = run_info(root, "plain")
    assert info["corpus_time"]["years"] == [1722, 1722] and info["corpus_time"]["cutoff_year"] is None
    assert info["corpus_time"]["words_by_decade"]["1720"] > 0
    cache = json.loads((root / "09_models/checkpoints/plain/pretokenized_data/metadata.json").read_text())
    assert cache["corpus_time"]["years"] == [1722, 1722]
    # the micro corpus is dated 1722: a 1700 cutoff must not train on it
    assert train(root, *QUICK, "--run_name_dir", "early", "--cutoff_year", "1700") == 2
    err = capsys.readouterr().err
    assert "reaches 1722" in err and "--cutoff_year 1700" in err and "Traceback" not in err
    assert not (root / "09_models/checkpoints/early/run_info.json").exists()
    # a cutoff the corpus keeps is recorded
    assert train(root, *QUICK, "--run_name_dir", "locked", "--cutoff_year", "1750") == 0
    assert run_info(root, "locked")["corpus_time"]["cutoff_year"] == 1750


def test_cutoff_view_sets_the_cutoff_without_the_flag(root):
    view = root / "data" / "london_historical" / "processed-to1750"
    cutoff_view(processed(root), view, 1750, log=lambda *_: None)
    assert train(root, *QUICK, "--run_name_dir", "view", "--processed_dir", str(view)) == 0
    info = run_info(root, "view")
    assert info["corpus_time"]["cutoff_year"] == 1750 and info["processed_dir"] == str(view)


def test_init_from_refuses_a_parent_past_the_cutoff(root, capsys):
    assert train(root, *QUICK, "--run_name_dir", "base") == 0
    set_years(root, "base", [1722, 1851])  # as if its corpus had reached 1851
    assert train(root, *QUICK, "--run_name_dir", "child", "--init_from", "base",
                 "--cutoff_year", "1750") == 2
    err = capsys.readouterr().err
    assert "reaches 1851" in err and "cutoff 1750" in err and "Traceback" not in err
    # unknown provenance cannot seed a time-locked model either
    path = root / "09_models/checkpoints/base/run_info.json"
    info = json.loads(path.read_text())
    del info["corpus_time"]
    path.write_text(json.dumps(info))
    assert train(root, *QUICK, "--run_name_dir", "child", "--init_from", "base",
                 "--cutoff_year", "1750") == 2
    assert "unknown" in capsys.readouterr().err
    # without a cutoff the same parent is accepted (nothing to protect)
    assert train(root, *QUICK, "--run_name_dir", "child", "--init_from", "base") == 0


def test_init_from_a_parent_inside_the_cutoff_is_accepted(root):
    assert train(root, *QUICK, "--run_name_dir", "base") == 0
    assert train(root, *QUICK, "--run_name_dir", "child", "--init_from", "base",
                 "--cutoff_year", "1750") == 0
    assert run_info(root, "child")["parent"]["run_name"] == "base"


def test_resume_refuses_a_checkpoint_trained_past_the_cutoff(root, capsys):
    common = ["--max_steps", "4", "--logging_steps", "1", "--save_steps", "2", "--eval_steps", "100"]
    assert train(root, *common, "--run_name_dir", "r", "--stop_after_steps", "2") == 0
    set_years(root, "r", [1722, 1880])
    assert train(root, *common, "--run_name_dir", "r", "--cutoff_year", "1750") == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "1880" in err and "1750" in err
    # the checkpoint is still there: nothing was lost or started over
    assert (root / "09_models/checkpoints/r/checkpoint-2").is_dir()


def test_resume_reads_the_cache_when_run_info_is_missing(root, capsys):
    common = ["--max_steps", "4", "--logging_steps", "1", "--save_steps", "2", "--eval_steps", "100"]
    assert train(root, *common, "--run_name_dir", "k", "--stop_after_steps", "2") == 0
    run = root / "09_models/checkpoints/k"
    (run / "run_info.json").unlink()  # as after a crash
    drop_checkpoint_records(run)  # of a version before checkpoints carried their run's record
    meta_path = run / "pretokenized_data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["corpus_time"]["years"] = [1722, 1899]
    meta_path.write_text(json.dumps(meta))
    assert train(root, *common, "--run_name_dir", "k", "--cutoff_year", "1750") == 2
    assert "1899" in capsys.readouterr().err


def test_tokenizer_with_a_later_era_token_is_refused(root, tiny_tokenizer_dir, capsys):
    # the tiny tokenizer carries <|1800s|>: a token that cannot exist in a 1750 model
    assert train(root, *QUICK, "--run_name_dir", "t", "--tokenizer_dir", str(tiny_tokenizer_dir),
                 "--cutoff_year", "1750") == 2
    err = capsys.readouterr().err
    assert "<|1800s|>" in err and "past the cutoff" in err


def test_tokenizer_trained_on_later_text_is_refused(root, capsys):
    tok = root / "09_models" / "tokenizers" / "london_historical_bpe"
    side = json.loads((tok / "sidecar.json").read_text())
    assert side["counts"]["corpus_time"]["years"] == [1722, 1722]
    side["counts"]["corpus_time"]["years"] = [1722, 1801]
    (tok / "sidecar.json").write_text(json.dumps(side))
    assert train(root, *QUICK, "--run_name_dir", "t", "--cutoff_year", "1750") == 2
    assert "up to 1801" in capsys.readouterr().err


def test_bad_cutoff_value_is_one_line(root, capsys):
    assert train(root, *QUICK, "--cutoff_year", "seventeen") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "cutoff_year" in err[0]


def test_undated_documents_are_refused_under_a_cutoff(root):
    from londonlm.training.dist import TrainingError
    from londonlm.training.timelock import corpus_time

    manifest = processed(root) / "manifest.jsonl"
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    rows[0].update(year=None, decade=None, year_rule=None, date_evidence={})
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert corpus_time(processed(root), None)["undated_documents"] == 1  # no cutoff: recorded only
    with pytest.raises(TrainingError, match="1 undated documents"):
        corpus_time(processed(root), 1750)


# --------------------------------------------------------------------------- a run's identity on resume

RESUMABLE = ["--max_steps", "4", "--logging_steps", "1", "--save_steps", "2", "--eval_steps", "100"]


def test_a_foreign_checkpoint_is_refused_and_nothing_is_written(root, capsys):
    """`resume_training.sh <another run>/checkpoint-2` resumed run micro from micro-b's
    checkpoint and overwrote micro's checkpoints and final/ (hostile inputs round 3, item 1)."""
    from conftest import tree_digest

    assert train(root, *RESUMABLE, "--run_name_dir", "micro") == 0
    assert train(root, *RESUMABLE, "--run_name_dir", "micro-b", "--stop_after_steps", "2") == 0
    runs = root / "09_models" / "checkpoints"
    before = tree_digest(runs)
    foreign = runs / "micro-b" / "checkpoint-2"
    assert train(root, *RESUMABLE, "--run_name_dir", "micro", "--resume_from_checkpoint", str(foreign)) == 2
    err = capsys.readouterr().err
    assert "is not one of this run's" in err and "--run_name micro-b" in err and f"--init_from {foreign}" in err
    assert tree_digest(runs) == before


def test_a_resume_on_other_data_is_refused_before_anything_is_written(root, capsys):
    """A stopped run resumed with --era_tokens false, another --processed_dir or without its
    cutoff went on over other text (item 3); each is refused, the run folder untouched."""
    from conftest import tree_digest

    view = processed(root).parent / "processed-to1750"
    cutoff_view(processed(root), view, 1750, log=lambda *_: None)
    assert train(root, *RESUMABLE, "--run_name_dir", "to1750", "--processed_dir", str(view),
                 "--stop_after_steps", "2") == 0
    run = root / "09_models" / "checkpoints" / "to1750"
    before = tree_digest(run)
    capsys.readouterr()
    for argv, said in ((["--processed_dir", str(view), "--era_tokens", "false"], "era tokens off (trained with on)"),
                       ([], "time-locked to 1750"),                    # the full corpus: no cutoff
                       (["--processed_dir", str(view), "--max_length", "32"], "context 32 (trained with 64)")):
        assert train(root, *RESUMABLE, "--run_name_dir", "to1750", *argv) == 2, argv
        err = capsys.readouterr().err
        assert "cannot resume" in err and said in err and "Traceback" not in err, err
        assert tree_digest(run) == before, argv
    (run / "run_info.json").unlink()  # as after a crash: the cache still says what it trained on
    other = processed(root).parent / "processed-other"  # the view with one document retitled
    shutil.copytree(view, other)
    rows = (other / "manifest.jsonl").read_text().splitlines()
    rows[0] = json.dumps({**json.loads(rows[0]), "title": "Another Title"})
    (other / "manifest.jsonl").write_text("\n".join(rows) + "\n")
    assert train(root, *RESUMABLE, "--run_name_dir", "to1750", "--processed_dir", str(other),
                 "--cutoff_year", "1750") == 2
    assert "corpus manifest sha256" in capsys.readouterr().err
    assert train(root, *RESUMABLE, "--run_name_dir", "to1750", "--processed_dir", str(view)) == 0  # as started
