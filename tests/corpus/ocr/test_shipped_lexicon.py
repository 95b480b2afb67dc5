"""The period lexicon shipped with the package: learned from public domain text only (it says
from what, how, under which licence), used where the user names none, and the collection's own
transcribed text winning where there is enough of it."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO
from ocr_fixtures import OCR, period_lexicon

import londonlm.corpus.ocr.step as step
from londonlm.corpus.ocr.step import default_period_lexicon, shipped_lexicon, with_shipped

SCRIPT = REPO / "02_data_collection" / "repair_ocr.py"


def test_the_shipped_lexicon_says_what_it_was_learned_from_and_is_public_domain_only():
    lex = shipped_lexicon()
    made = lex.made_from
    assert "public domain" in made["licence"] and made["command"].startswith("python benchmarks/ocr_repair.py lexicon")
    assert "gutenberg_" in made["period_corpus"] and "oldbailey" not in made["period_corpus"]
    assert made["words_read"] > 1_000_000 and len(lex) > 20_000
    for word in ("the", "shew", "connexion", "admiralty"):
        assert word in lex


def test_own_text_wins_when_there_is_enough_and_is_added_to_the_shipped_when_not(monkeypatch):
    own = period_lexicon(extra="Quillsworthy Quillsworthy Quillsworthy")
    assert with_shipped(None) is shipped_lexicon()
    merged = with_shipped(own)   # a few hundred words: too few to stand alone
    assert "quillsworthy" not in shipped_lexicon() and merged.count("quillsworthy") == 3 and merged.count("the") == shipped_lexicon().count("the") + own.count("the")
    assert merged.made_from["added"]["test"] == "PERIOD" and "licence" in merged.made_from
    monkeypatch.setattr(step, "OWN_MIN_WORDS", own.made_from["words_read"])
    assert with_shipped(own) is own


def test_no_collected_corpus_means_the_shipped_lexicon(tmp_path):
    assert default_period_lexicon(tmp_path / "processed") is shipped_lexicon()


def test_repair_ocr_with_only_input_and_output_repairs_in_a_fresh_layout(tmp_path):
    """A new user's first command: no --period_corpus, nothing collected under the root."""
    src, out = tmp_path / "scans.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps({"id": "g", "text": OCR, "year": 1744}) + "\n", encoding="utf-8")
    env = {**os.environ, "LONDONLM_ROOT": str(tmp_path / "fresh_root")}
    res = subprocess.run([sys.executable, str(SCRIPT), "--input", str(src), "--output", str(out)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    text = json.loads(out.read_text(encoding="utf-8"))["text"]
    assert "Admiralty" in text and "tbe" not in text and "tlie" not in text and "Yeſterday" in text
