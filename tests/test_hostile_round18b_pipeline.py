"""Hostile round 18b: the one-command pipeline over a collection that was interrupted."""
from __future__ import annotations

import json

from conftest import REPO, tree_digest, write_dated_source
from script_fuzz import completed_in_process

SCRIPT = REPO / "10_scripts" / "run_pipeline.py"


def test_a_stopped_collection_of_the_users_sources_is_not_replaced_by_the_sample(tmp_path):
    """`historical_data_collector.py --source_dir my_texts` stopped before its sidecar (Ctrl-C,
    a full disk), then `run_pipeline.py --cutoff_year 1750`: the stopped corpus was no finished
    one, so the pipeline built the embedded sample over it (the user's texts pruned from
    processed/) and trained the time-locked model on the 1623 First Folio, exit 0. Now one line
    naming the collector, and the folder is left as it was."""
    from londonlm.corpus import CollectionOptions, build_corpus

    root = tmp_path / "root"
    processed = root / "data" / "london_historical" / "processed"
    src = write_dated_source(tmp_path / "my_texts", [1650, 1690, 1720, 1790], validation_up_to=1750)
    build_corpus(processed, root / "meta", CollectionOptions(log=lambda m: None), source_dir=src)
    (processed / "sidecar.json").unlink()  # the collection stopped before its last write
    before = tree_digest(processed)
    res = completed_in_process(SCRIPT, ["--preset", "micro", "--max_steps", "1", "--eval_max_tokens", "100",
                                        "--cutoff_year", "1750", "--chat", "off"], tmp_path, timeout=600,
                               env={"LONDONLM_ROOT": str(root)})
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    (line,) = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert "holds a collection from local that stopped before it finished" in line
    assert "historical_data_collector.py" in line and "--overwrite" in line and "Traceback" not in res.stderr
    assert tree_digest(processed) == before
    assert not (root / "09_models").exists()


def test_a_stopped_build_of_the_sample_itself_is_still_rebuilt(tmp_path):
    """The embedded sample's own corpus, stopped part-way, is rebuilt freely as before (it is
    the pipeline's own); so is a folder whose manifest names no source or cannot be read."""
    from londonlm.pipeline import _refuse_a_stopped_collection

    processed = tmp_path / "processed"
    processed.mkdir()
    for rows in ([{"id": "a", "source": "first_folio"}], [{"id": "a"}]):
        (processed / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        _refuse_a_stopped_collection(processed, "first_folio")
    (processed / "manifest.jsonl").write_text('{"id": "a", "sour')
    _refuse_a_stopped_collection(processed, "first_folio")
