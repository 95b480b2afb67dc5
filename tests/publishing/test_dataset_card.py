"""londonlm.publishing.cards: the dataset card's metadata and tables, and LICENSE with each source's terms,
from the one corpus summary (``londonlm.corpus.manifest.summarize``)."""
from __future__ import annotations

from card_fixtures import ROWS, front_matter
from londonlm.publishing.cards import dataset_license, license_text, render_dataset_card
from londonlm.corpus.manifest import summarize


def test_dataset_card_and_license():
    corpus = summarize(ROWS)
    assert corpus["by_source"]["gutenberg"]["documents"] == 2 and corpus["words"] == 160
    assert dataset_license(corpus) == "other"
    assert dataset_license(summarize(ROWS[1:])) == "cc0-1.0"
    card = render_dataset_card(corpus, "me/london-texts", model_repo_id="me/londonlm-tiny")
    meta = front_matter(card)
    assert meta["license"] == "other" and meta["language"] == ["en"]
    # load_dataset(repo) reads one table per split, texts included (not the bare manifest)
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "data/train.parquet"},
                                                {"split": "validation", "path": "data/validation.parquet"}]
    assert "load_dataset('me/london-texts')" in card
    assert "## Sources and licences" in card and "## Period coverage" in card
    assert "| oldbailey | web | 1 | 100 | 1674 | cc-by-4.0 |" in card  # one year, not a range
    assert "me/londonlm-tiny" in card
    lic = license_text("mit", "A. Person", corpus, year=2024)
    assert lic.startswith("MIT License\n\nCopyright (c) 2024 A. Person")
    assert "- oldbailey (web, 1 documents): cc-by-4.0" in lic
    assert "apache.org" in license_text("apache-2.0", corpus=corpus)


def test_dataset_card_states_the_cutoff():
    corpus = summarize(ROWS)
    card = render_dataset_card(corpus, "me/london-texts", corpus_time={
        "cutoff_year": 1750, "years": [1598, 1741], "words_by_decade": {}, "undated_documents": 0})
    assert "## Dates and cutoff" in card and "**Cutoff: 1750.**" in card and "1598–1741" in card
    assert "`year_rule`" in card and "`date_evidence`" in card
    assert "no cutoff year" in render_dataset_card(corpus, "me/x", corpus_time={"cutoff_year": None,
                                                                               "years": [1598, 1891]})
