"""The years an era token covers are the tokenizer's, recorded in its folder: the token cache,
evaluation, generation and the cards map a document's year with that width. Before, the
tokenizer stage honoured ``era_width`` while every later stage assumed 50: a 25-year
tokenizer's 1680 document asked the cache for ``<|1650s|>``, which it did not have."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, write_dated_source
from londonlm.corpus import CollectionOptions, build_corpus
from londonlm.generation import GenerationError, normalize_era
from londonlm.publishing.cards.format import era_period
from londonlm.tokens import ERA_WIDTH, era_token_for, era_width_of, load_tokenizer
from londonlm.tokens.cache import CacheError, ensure_cache, load_offsets, load_tokens
from londonlm.tokens.stage import train_tokenizer_stage
from londonlm.tokens.tokenizer import TokenizerUnreadable, era_width_in

QUIET = {"log": lambda *_: None}
YEARS = [1655, 1668, 1680, 1690, 1702, 1730]


@pytest.fixture(scope="module")
def dated_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("eras")
    src = write_dated_source(root / "src", YEARS)
    build_corpus(root / "processed", root / "metadata",
                 options=CollectionOptions(validation_percent=5, log=lambda *_: None), source_dir=src)
    return root / "processed"


def tokenizer(corpus, out, width, **kw):
    return train_tokenizer_stage(corpus, out, vocab_size=400, era_tokens=True, era_width=width,
                                 model_max_length=64, **{**QUIET, **kw})


def test_the_tokenizer_records_its_width_and_its_eras_follow_it(dated_corpus, tmp_path):
    tokenizer(dated_corpus, tmp_path / "tok", 25)
    tok = load_tokenizer(tmp_path / "tok")
    assert era_width_of(tok) == era_width_in(tmp_path / "tok") == 25
    eras = [t for t in tok.get_vocab() if t.startswith("<|1")]
    assert sorted(eras) == ["<|1650s|>", "<|1675s|>", "<|1700s|>", "<|1725s|>"]
    assert era_token_for(tok, 1690) == "<|1675s|>"


def test_a_tokenizer_of_the_default_width_keeps_its_files_and_sidecar(dated_corpus, tmp_path):
    meta = tokenizer(dated_corpus, tmp_path / "tok", ERA_WIDTH)
    assert "era_width" not in meta["settings"]  # a tokenizer saved before the width was recorded stays current
    assert era_width_of(load_tokenizer(tmp_path / "tok")) == 50


def test_a_folder_saved_before_the_width_was_recorded_is_of_the_default(tiny_tokenizer_dir, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(tiny_tokenizer_dir, old)
    config = json.loads((old / "tokenizer_config.json").read_text())
    assert config.pop("era_width") == 50  # (written now: the fixture has era tokens)
    (old / "tokenizer_config.json").write_text(json.dumps(config))
    assert era_width_in(old) == era_width_of(load_tokenizer(old)) == 50


def test_a_new_width_retrains_the_tokenizer(dated_corpus, tmp_path):
    tokenizer(dated_corpus, tmp_path / "tok", 50)
    said = []
    tokenizer(dated_corpus, tmp_path / "tok", 100, log=said.append)
    assert any("rebuilding" in s for s in said)
    assert era_width_in(tmp_path / "tok") == 100


@pytest.mark.parametrize("width", [0, -5, 1001, 2.5])
def test_a_width_that_is_no_number_of_years_is_refused(dated_corpus, tmp_path, width):
    from londonlm.core import UsageError

    with pytest.raises(UsageError, match="--era_width: must be a whole number of years"):
        tokenizer(dated_corpus, tmp_path / "tok", width)
    assert not (tmp_path / "tok").exists()


def test_the_cache_prefixes_each_document_with_its_era_of_the_tokenizers_width(dated_corpus, tmp_path):
    tokenizer(dated_corpus, tmp_path / "tok", 25)
    tok = load_tokenizer(tmp_path / "tok")
    meta = ensure_cache(tmp_path / "cache", tmp_path / "tok", dated_corpus, 64, era_tokens=True,
                        progress=False, **QUIET)
    assert meta["era_width"] == 25
    rows = [json.loads(line) for line in (dated_corpus / "manifest.jsonl").read_text().splitlines()]
    toks, offs = load_tokens(tmp_path / "cache", "train"), load_offsets(tmp_path / "cache", "train")
    train = [r for r in rows if r["split"] == "train"]
    firsts = [tok.convert_ids_to_tokens(int(toks[start])) for start in offs[:-1]]
    assert firsts == [f"<|{(r['year'] // 25) * 25}s|>" for r in train]
    assert "<|1675s|>" in firsts  # (a 50-year mapping had asked for <|1650s|>, and failed)


def test_a_cache_of_another_width_is_not_current(dated_corpus, tmp_path):
    tokenizer(dated_corpus, tmp_path / "tok", 25)
    ensure_cache(tmp_path / "cache", tmp_path / "tok", dated_corpus, 64, True, progress=False, **QUIET)
    config = tmp_path / "tok" / "tokenizer_config.json"  # tokenizer.json (the cache's hash of it) unchanged
    config.write_text(json.dumps({**json.loads(config.read_text()), "era_width": 50}))
    # a folder of the user's own (no sidecar: a stage-made one edited so is refused before, round 21)
    (tmp_path / "tok" / "sidecar.json").unlink()
    with pytest.raises(CacheError, match=r"era width mismatch \(cache 25 years, tokenizer 50\)"):
        ensure_cache(tmp_path / "cache", tmp_path / "tok", dated_corpus, 64, True, mode="require",
                     progress=False, **QUIET)


@pytest.mark.parametrize("value", ['"fifty"', "0", "true", "[50]", "1e9"])
def test_a_damaged_width_is_one_line_naming_the_folder(dated_corpus, tmp_path, value):
    tokenizer(dated_corpus, tmp_path / "tok", 25)
    config = tmp_path / "tok" / "tokenizer_config.json"
    config.write_text(config.read_text().replace('"era_width": 25', f'"era_width": {value}'))
    with pytest.raises(TokenizerUnreadable, match="era_width is .*not a number of years") as e:
        era_width_in(tmp_path / "tok")
    assert str(tmp_path / "tok") in str(e.value) and "\n" not in str(e.value)


def test_generation_reads_an_era_with_the_models_width():
    eras = ["<|1650s|>", "<|1675s|>"]
    assert normalize_era("1680s", eras, 25) == normalize_era(1699, eras, 25) == "<|1675s|>"
    assert normalize_era("1660", eras, 25) == "<|1650s|>"
    with pytest.raises(GenerationError, match=r"\(<\|1700s\|>\) is not in this model's tokenizer"):
        normalize_era("1710s", eras, 25)


def test_the_card_names_the_period_an_era_token_covers():
    assert [era_period(w) for w in (50, 25, 100, 10, 30, None)] == [
        "half-century", "quarter-century", "century", "decade", "30-year period", "half-century"]


def test_the_tokenizer_script_takes_the_width(dated_corpus, tmp_path):
    def run(*argv):
        return subprocess.run([sys.executable, str(REPO / "03_tokenizer" / "train_historical_tokenizer.py"),
                               "--processed_dir", str(dated_corpus), "--output_dir", str(tmp_path / "tok"),
                               "--vocab_size", "400", *argv], capture_output=True, text=True)

    bad = run("--era_width", "0")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].endswith("must be at least 1 (got 0)")
    ok = run("--era_width", "25")
    assert ok.returncode == 0, ok.stderr
    assert era_width_in(tmp_path / "tok") == 25
    assert np.isin(["<|1675s|>"], list(load_tokenizer(tmp_path / "tok").get_vocab())).all()


def test_evaluation_conditions_on_the_era_of_the_tokenizers_width(dated_corpus, tmp_path):
    from londonlm.evaluation.run import _prefix_lists

    tokenizer(dated_corpus, tmp_path / "tok", 25)
    tok = load_tokenizer(tmp_path / "tok")
    (plain,), (conditioned,) = (_prefix_lists(tok, [1690], 1, era) for era in (False, True))
    assert tok.convert_ids_to_tokens(conditioned) == ["<|endoftext|>", "<|1675s|>"]
    assert plain == conditioned[:1]


def test_the_family_trains_its_tokenizers_with_the_width(tmp_path, monkeypatch):
    from londonlm import family
    from londonlm.core import Layout

    widths, layout = [], Layout(tmp_path)
    monkeypatch.setattr(family, "train_tokenizer_stage", lambda *a, **k: widths.append(k["era_width"]))
    monkeypatch.setattr(family, "cutoff_view", lambda *a, **k: None)
    monkeypatch.setattr(family, "sha256_file", lambda *a: "digest")
    plan = family.FamilyPlan("fam", [1700], layout, layout.processed_dir, "bpe", 512, era_width=25)
    family.prepare_member(plan, 1700, {}, log=lambda *_: None)
    assert widths == [25]


class _Stop(Exception):
    pass


def test_the_pipeline_trains_its_tokenizer_with_the_configured_width(tmp_path, monkeypatch):
    import runpy

    import config
    from londonlm import pipeline, tokens

    widths = []

    def tokenizer_stage(*a, **k):
        widths.append(k["era_width"])
        raise _Stop

    monkeypatch.setattr(config, "TOKENIZER", config.TokenizerDefaults(era_width=25))
    monkeypatch.setattr(tokens, "train_tokenizer_stage", tokenizer_stage)
    monkeypatch.setattr(pipeline, "corpus_stage", lambda plan, log: {"validation_documents": 1})
    script = runpy.run_path(str(REPO / "10_scripts" / "run_pipeline.py"))
    with pytest.raises(_Stop):
        script["main"](["--preset", "micro", "--root", str(tmp_path), "--chat", "off"])
    assert widths == [25]
