"""repair_ocr.py, hostile round 20: an output named through a symbolic link into another
artifact's folder, a run stopped between putting its output and its report in place, and an
earlier run's output repaired again."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from ocr_fixtures import period_lexicon

from londonlm.corpus.ocr import jsonl
from londonlm.corpus.ocr.confusions import load_confusions

SCRIPT = REPO / "02_data_collection" / "repair_ocr.py"
ROWS = b'{"id": "a", "text": "tbe Court of Aldermen"}\n{"id": "b", "text": "tbe Lord Mayor"}\n'


@pytest.fixture(scope="module")
def lexicon(tmp_path_factory) -> Path:
    return period_lexicon().save(tmp_path_factory.mktemp("lex") / "lexicon.json.gz")


def script(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_an_output_linked_into_a_models_folder_is_refused(tmp_path, lexicon):
    """Was: exit 0, the model's config.json replaced by JSONL rows (or the report, or the gzip
    lexicon): the output is written through a link to its target, and only the link's own
    folder was asked whether it is an artifact's."""
    model, tmp_path = tmp_path / "models" / "m", tmp_path / "work"  # (the links' folder is no artifact's)
    model.mkdir(parents=True)
    tmp_path.mkdir()
    config = b'{"model_type": "gpt2"}\n'
    (model / "config.json").write_bytes(config)
    (tmp_path / "in.jsonl").write_bytes(ROWS)
    os.symlink(model / "config.json", tmp_path / "link.jsonl")
    os.symlink(model / "new.jsonl", tmp_path / "dangling.jsonl")  # a file the model's folder does not hold yet
    base = ["--input", "in.jsonl", "--period_corpus", lexicon, "--root", tmp_path, "--workers", "1", "--no_adapt"]
    for extra in (["--output", "link.jsonl"], ["--output", "o.jsonl", "--report", "link.jsonl"],
                  ["--output", "o.jsonl", "--save_lexicon", "link.jsonl"], ["--output", "dangling.jsonl"]):
        res = script(*base, *extra, cwd=tmp_path)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and "a model's folder" in lines[0], (extra, res.stderr)
        assert (model / "config.json").read_bytes() == config and sorted(os.listdir(model)) == ["config.json"]
        assert not (tmp_path / "o.jsonl").exists()
    # a link to a file in an ordinary folder is still written through
    (tmp_path / "plain").mkdir()
    os.symlink(tmp_path / "plain" / "rows.jsonl", tmp_path / "ok.jsonl")
    res = script(*base, "--output", "ok.jsonl", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "ok.jsonl").is_symlink() and (tmp_path / "plain" / "rows.jsonl").read_text().count("\n") == 2


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_a_run_stopped_between_its_output_and_its_report_leaves_no_report_of_another_run(tmp_path, monkeypatch):
    """Was: the output renamed into place, then the report written: a run stopped between the
    two (kill -9, a full disk, a power cut) left the new output beside the earlier run's report,
    whose rows, changes and summary were another input's. Now the report is whole before the
    output is put in place and the earlier one is gone by then: at worst an output without one."""
    repair = jsonl.DocumentRepair(period_lexicon(), load_confusions())
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_bytes(b'{"id": "old", "text": "tbe Court"}\n')
    second.write_bytes(ROWS)
    out, report = tmp_path / "out.jsonl", tmp_path / "report.jsonl"
    jsonl.repair_jsonl(first, out, repair, report)
    assert [e.get("id") for e in _rows(report)[:-1]] == ["old"]

    from londonlm.core import artifacts
    real_replace = os.replace

    def stopped_at_the_report(src, dst, *a, **kw):  # the process ends as this rename would happen
        if Path(dst) == report:
            raise KeyboardInterrupt
        return real_replace(src, dst, *a, **kw)
    monkeypatch.setattr(artifacts.os, "replace", stopped_at_the_report)
    with pytest.raises(KeyboardInterrupt):
        jsonl.repair_jsonl(second, out, repair, report)
    monkeypatch.setattr(artifacts.os, "replace", real_replace)
    ids = [r["id"] for r in _rows(out)]
    assert ids == ["a", "b"]  # the new output is in place ...
    assert not report.exists()  # ... and no report of the first run's rows beside it
    # the rerun writes both
    jsonl.repair_jsonl(second, out, repair, report)
    assert [e.get("id") for e in _rows(report)[:-1]] == ids and _rows(report)[-1]["summary"]["rows"] == 2


def test_a_row_an_earlier_run_passed_through_and_this_one_repairs_loses_the_earlier_mark(tmp_path, lexicon):
    """Was: an output repaired again (a row passed through as too_large under --max_row_mb 1, now
    repaired under the default) kept the first run's ``"ocr_repair_error": "too_large"`` on the
    repaired row, while the summary counted it repaired: a later filter on the mark dropped it."""
    big = {"id": "big", "text": "tbe Court of Aldermen " * 60_000}
    (tmp_path / "in.jsonl").write_text(json.dumps(big) + "\n" + '{"id": "s", "text": "tbe Court"}\n')
    base = ["--period_corpus", lexicon, "--root", tmp_path, "--workers", "1", "--no_adapt"]
    res = script("--input", "in.jsonl", "--output", "once.jsonl", "--max_row_mb", "1", *base, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert [r.get("ocr_repair_error") for r in _rows(tmp_path / "once.jsonl")] == ["too_large", None]
    res = script("--input", "once.jsonl", "--output", "twice.jsonl", *base, cwd=tmp_path)
    assert res.returncode == 0 and "2 repaired" in res.stdout, res.stdout + res.stderr
    rows = _rows(tmp_path / "twice.jsonl")
    assert [r.get("ocr_repair_error") for r in rows] == [None, None]
    assert rows[0]["text"].startswith("the Court of Aldermen")
    # a row that still cannot be repaired keeps saying why
    (tmp_path / "bad.jsonl").write_text('{"id": "x", "text": 5, "ocr_repair_error": "no_text"}\n')
    res = script("--input", "bad.jsonl", "--output", "bad_out.jsonl", *base, cwd=tmp_path)
    assert res.returncode == 0 and _rows(tmp_path / "bad_out.jsonl")[0]["ocr_repair_error"] == "no_text"
