"""The tokenizer stage and the token counts, hostile round 20: a vocabulary smaller than the
tokens every tokenizer of the corpus holds before any merge, and a counts file named through a
symbolic link into a model's folder."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import REPO
from test_tokenizer_refusals import run_script
from londonlm.core import SIDECAR, UsageError, write_sidecar
from londonlm.corpus.manifest import CORPUS_OUTPUTS
from londonlm.tokens.stage import train_tokenizer_stage

TRAIN = REPO / "03_tokenizer" / "train_historical_tokenizer.py"
COUNT = REPO / "02_data_collection" / "count_tokens.py"
WORDS = "the Lord Mayor and the Court of Aldermen sat at Guildhall upon the petition of the watermen "


def corpus_of_years(processed: Path, years) -> Path:
    """A processed corpus, one training text a year, as the collection lays it out."""
    (processed / "texts").mkdir(parents=True)
    rows = []
    for i, year in enumerate(years):
        text = f"In the year {year} " + WORDS * 20
        (processed / "texts" / f"d{i}.txt").write_text(text, encoding="utf-8")
        rows.append({"id": f"d{i}", "split": "train", "path": f"texts/d{i}.txt", "chars": len(text),
                     "year": year, "source": "test"})
    (processed / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    write_sidecar(processed / SIDECAR, "corpus", {}, {}, libraries=(), outputs=CORPUS_OUTPUTS)
    return processed


def test_a_vocabulary_smaller_than_the_bytes_specials_and_eras_is_refused(tmp_path):
    """Was: --vocab_size 300 --era_width 1 over 60 years of texts trained a tokenizer of 318
    tokens (256 bytes, 2 specials, 60 eras) with no merge learnt, exit 0, under a sidecar saying
    300: a size nobody asked for, and nothing learnt from the corpus."""
    processed = corpus_of_years(tmp_path / "processed", range(1700, 1760))
    out = tmp_path / "tok"
    code, err = run_script(TRAIN, tmp_path, "--processed_dir", processed, "--output_dir", out,
                           "--vocab_size", "300", "--era_width", "1")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: --vocab_size 300"), err
    assert "318" in err and "60 era tokens" in err
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(UsageError):
        train_tokenizer_stage(processed, out, vocab_size=317, era_width=1, log=lambda *_: None)
    # at the size the fixed tokens take, and with wider eras, it trains as asked
    for size, width in ((318, 1), (300, 50)):
        meta = train_tokenizer_stage(processed, out, vocab_size=size, era_width=width, overwrite=True,
                                     model_max_length=64, log=lambda *_: None)
        assert meta["counts"]["vocab_size"] <= size


def test_token_counts_linked_into_a_models_folder_are_refused(micro_root_copy, tmp_path):
    """Was: exit 0, the model's config.json replaced by the token counts: the counts are written
    through a link to its target, and only the link's own folder was asked whether it is an
    artifact's (round 12 refused the same path named directly)."""
    model = tmp_path / "models" / "m"
    model.mkdir(parents=True)
    config = b'{"model_type": "gpt2"}\n'
    (model / "config.json").write_bytes(config)
    (tmp_path / "work").mkdir()
    link = tmp_path / "work" / "counts.json"
    os.symlink(model / "config.json", link)
    code, err = run_script(COUNT, micro_root_copy, "--output", link)
    assert code == 2 and err.count("\n") == 1 and "a model's folder" in err, err
    assert (model / "config.json").read_bytes() == config and link.is_symlink()
