"""The language model as the judge of the repairer's close decisions: recorded without changing
a thing, settled by a scorer only where it prefers another option by the margin, and
``repair_ocr.py --lm`` with a model folder (a bad one: one error line)."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from ocr_fixtures import OCR, period_lexicon

from londonlm.corpus.ocr.confusions import load_confusions
from londonlm.corpus.ocr.judge import JudgedRepairer, JudgeSettings
from londonlm.corpus.ocr.repair import OcrRepairer, RepairSettings

LEX = period_lexicon("The Baker came with the Bread on the 27th of May. " * 3)
NOISY = "Tbe Bakcr came, aud tbe Court met Bakcr at tbe Hall; fome Villains liad a Defign on tbe Bread. " * 2
SCRIPT = REPO / "02_data_collection" / "repair_ocr.py"


@pytest.mark.parametrize("long_s_output", ["print", "modern"])
def test_doubts_are_recorded_without_changing_the_repair(long_s_output):
    s = RepairSettings(long_s_output=long_s_output)
    plain, doubting = OcrRepairer(LEX, load_confusions(), s), OcrRepairer(LEX, load_confusions(), s, doubts=3.0)
    for text in (OCR, NOISY, NOISY.lower(), "tbe Bakcr liad"):
        a, b = plain.repair(text, 1744), doubting.repair(text, 1744)
        assert (a.text, a.changes, a.long_s) == (b.text, b.changes, b.long_s) and not a.doubts
    done = doubting.repair(NOISY, 1744)
    assert done.doubts, "the fixture holds close decisions"
    by_start = {c.start: c for c in done.changes}
    for d in done.doubts:  # each as decided: the option taken is the change made there (or none)
        assert NOISY[d.start:d.end] == d.options[0] and d.kinds[0] == "keep"
        assert (by_start[d.start].after == d.options[d.chosen]) if d.chosen else d.start not in by_start


def fake_scorer(prefer: str, by: float):
    """Scores a continuation ``by`` where it starts with ``prefer``, 0 otherwise; counts its calls."""
    def score(items):
        score.calls.append(len(items))
        return [by if cont.lstrip().startswith(prefer) else 0.0 for _, cont in items]
    score.calls = []
    return score


def test_a_judge_that_prefers_an_option_changes_exactly_that_doubt():
    base = OcrRepairer(LEX, load_confusions(), doubts=3.0).repair(NOISY, 1744)
    target = next(d for d in base.doubts if "Had" in d.options)  # "liad": "had" taken, "Had" the runner-up
    score = fake_scorer("Had", 100.0)
    judged = JudgedRepairer(OcrRepairer(LEX, load_confusions()), score, JudgeSettings(lm_weight=1.0, lm_margin=1.0))
    done = judged.repair(NOISY, 1744)
    assert score.calls == [sum(len(d.options) for d in base.doubts)]  # the document's options, in one call
    assert done.text.count("Had") == 2 and done.text.replace("Had", "had") == base.text
    changed = [c for c in done.changes if c not in base.changes]
    assert [(c.before, c.after, c.kind) for c in changed] == [("liad", "Had", "judged word")] * 2
    assert changed[0].start == target.start and judged.overruled == 2 and judged.judged == len(base.doubts)


def test_the_judge_keeps_the_repairers_choice_within_its_margin():
    base = OcrRepairer(LEX, load_confusions()).repair(NOISY, 1744)
    judged = JudgedRepairer(OcrRepairer(LEX, load_confusions()), fake_scorer("Had", 100.0),
                            JudgeSettings(lm_margin=1000.0))
    assert judged.repair(NOISY, 1744).text == base.text and judged.overruled == 0


def test_a_judge_can_undo_a_change():
    base = OcrRepairer(LEX, load_confusions(), doubts=3.0).repair(NOISY, 1744)
    kept = next(d for d in base.doubts if d.options[0] == "Bakcr")
    assert kept.chosen == 1
    judged = JudgedRepairer(OcrRepairer(LEX, load_confusions()), fake_scorer("Bakcr", 100.0))
    done = judged.repair(NOISY, 1744)
    assert done.text.count("Bakcr") == NOISY.count("Bakcr") and "Baker" not in done.text
    assert all(c.before != "Bakcr" for c in done.changes)


def test_the_long_s_is_read_as_s_by_the_judge():
    seen = []

    def score(items):
        seen.extend(items)
        return [0.0] * len(items)

    JudgedRepairer(OcrRepairer(LEX, load_confusions()), score).repair(OCR + NOISY, 1744)
    assert seen and not any("ſ" in ctx + cont for ctx, cont in seen)


# ---------------------------------------------------------------- the script
@pytest.fixture(scope="module")
def lexicon(tmp_path_factory) -> Path:
    return period_lexicon("The Baker came with the Bread on the 27th of May. " * 3).save(
        tmp_path_factory.mktemp("lex") / "lexicon.json.gz")


def run(tmp_path: Path, lexicon: Path, *extra: str):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": t, "year": 1744}) + "\n"
                           for i, t in enumerate([OCR, NOISY, "tbe Court of Aldermen"])))
    res = subprocess.run([sys.executable, str(SCRIPT), "--input", str(src), "--output", str(tmp_path / "out.jsonl"),
                          "--report", str(tmp_path / "report.jsonl"), "--period_corpus", str(lexicon), "--no_adapt",
                          "--root", str(tmp_path), *extra], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    out = tmp_path / "out.jsonl"
    return res, out.read_bytes() if out.exists() else None


def test_repair_ocr_with_a_model_judge(tmp_path, lexicon, tiny_model_dir):
    res, plain = run(tmp_path, lexicon)
    assert res.returncode == 0, res.stderr
    res, judged = run(tmp_path, lexicon, "--lm", str(tiny_model_dir), "--lm_weight", "0.5")
    assert res.returncode == 0, res.stderr
    assert "judged by" in res.stdout and "sha256" in res.stdout
    report = [json.loads(x) for x in (tmp_path / "report.jsonl").read_text().splitlines()]
    assert report[1]["ocr_judge"]["doubts"] > 0 and report[1]["ocr_judge"]["sha256"]
    assert len(judged.splitlines()) == len(plain.splitlines()) == 3
    res, two = run(tmp_path, lexicon, "--lm", str(tiny_model_dir), "--lm_weight", "0.5", "--workers", "2")
    assert res.returncode == 0, res.stderr
    assert two == judged  # each worker loads the model itself; the same rows


@pytest.mark.parametrize("what", ["missing", "empty", "not_a_model"])
def test_a_bad_model_folder_is_one_error_line(tmp_path, lexicon, what):
    folder = tmp_path / "model"
    if what != "missing":
        folder.mkdir()
    if what == "not_a_model":
        (folder / "config.json").write_text("{not json")
    res, out = run(tmp_path, lexicon, "--lm", str(folder))
    assert res.returncode == 2 and out is None
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in res.stderr, res.stderr


def test_the_judged_repairer_pickles_for_a_pool():
    judged = JudgedRepairer(OcrRepairer(LEX, load_confusions()), fake_scorer("Had", 1.0))
    assert pickle.loads(pickle.dumps(judged.s)) == judged.s
