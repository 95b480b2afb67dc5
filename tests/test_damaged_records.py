"""The small JSON records the stages keep for themselves (download sidecars and part records,
a shard's plan, a run's status and losses, a checkpoint's config and state, the autotune
cache, a run's record for comparison), damaged two ways no ``except ValueError`` or ``.get``
had met: nested past the JSON parser's depth (a RecursionError) and valid JSON of another kind
(a list: an AttributeError). Each reader falls back as it does for a torn file, or says one
line; tests/test_damaged_artifacts.py runs the same damages through the stages themselves."""
from __future__ import annotations

import json

import pytest

from londonlm.core import LondonLMError

DEEP = "[" * 100_000


@pytest.fixture(params=["deep", "list"])
def content(request) -> str:
    return DEEP if request.param == "deep" else "[1, 2]"


def test_a_downloads_sidecar_says_incomplete(tmp_path, content):
    from londonlm.corpus.download import is_complete

    dest = tmp_path / "a.txt"
    dest.write_text("text")
    (tmp_path / "a.txt.sha256").write_text(content)
    assert is_complete(dest) is False  # fetched again, as for a torn sidecar


def test_a_parts_record_says_another_url(tmp_path, content):
    from londonlm.corpus.partial_download import read_part_info

    (tmp_path / "a.part.json").write_text(content)
    assert read_part_info(tmp_path / "a.part.json", "http://x/a") is None  # the part is discarded


def test_a_shards_plan_resets_the_shard(tmp_path, content):
    from londonlm.corpus.shards import PLAN_FILE, prepare_shard, shard_dir

    d = shard_dir(tmp_path, 0, 2)
    d.mkdir(parents=True)
    (d / PLAN_FILE).write_text(content)
    assert prepare_shard(tmp_path, 0, 2, "plan-1").startswith("reset")
    assert json.loads((d / PLAN_FILE).read_text()) == {"plan": "plan-1"}


def test_a_manifest_line_is_skipped(tmp_path):
    from londonlm.corpus.manifest import read_jsonl

    (tmp_path / "m.jsonl").write_text(f'{{"id": "a"}}\n{DEEP}\n[1]\n{{"id": "b"}}\n')
    assert [r["id"] for r in read_jsonl(tmp_path / "m.jsonl")] == ["a", "b"]


def test_a_run_records_status_and_a_checkpoints_losses_read_as_unknown(tmp_path, content):
    from londonlm.core import describe_checkpoints, latest_valid_checkpoint

    run = tmp_path / "run"
    (run / "checkpoint-2").mkdir(parents=True)
    (run / "run_info.json").write_text(content)
    (run / "checkpoint-2" / "trainer_state.json").write_text(content)
    assert latest_valid_checkpoint(run, warn=lambda *_: None) is None
    assert "checkpoint-2" in describe_checkpoints(run)


def test_a_checkpoints_config_gives_no_saved_rows(tmp_path, content):
    from londonlm.training.plan import _saved

    (tmp_path / "config.json").write_text(content)
    assert _saved(tmp_path, "vocab_size") is None


def test_a_checkpoints_callback_state_reads_as_none(tmp_path, content):
    from londonlm.training.resume import saved_attributes

    (tmp_path / "trainer_state.json").write_text(content)
    assert saved_attributes(tmp_path, object) is None


def test_the_autotune_cache_is_ignored_with_a_warning(tmp_path, content):
    from londonlm.training.speed.cache import load_cache

    (tmp_path / "autotune.json").write_text(content)
    said = []
    assert load_cache(tmp_path / "autotune.json", said.append) == {}
    assert said and said[0].startswith("warning: ignoring the autotune cache")


def test_a_compared_runs_record_is_one_line(tmp_path, content):
    from londonlm.core import RunLayout
    from londonlm.training.tools.compare import read_info

    run = RunLayout(tmp_path / "r")
    run.dir.mkdir()
    run.run_info.write_text(content)
    with pytest.raises(LondonLMError, match=r"run r: .*run_info.json") as e:
        read_info(run)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["tokenizer.json", "vocab.json"])
@pytest.mark.parametrize("text", [DEEP, "[1, 2]", '{"model": ', '{"model": {"vocab": 5}}'])
def test_a_checkpoints_damaged_tokenizer_is_unknown_not_a_traceback(tmp_path, name, text):
    """The resume's check of the checkpoint's tokenizer against the project's: a damaged file was
    a traceback mid-resume; unknown, the run's record of its tokenizer decides (as for a
    checkpoint saved without one)."""
    from londonlm.tokens import tokenizer_identity

    (tmp_path / name).write_text(text)
    assert tokenizer_identity(tmp_path) is None
