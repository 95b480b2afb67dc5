
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from londonlm.tokens.tokenizer import (EOT, TOKENIZER_FILES, era_token, era_tokens_for_years, era_tokens_of,
                                load_tokenizer, roundtrip_failures, train_bpe)

from conftest import SHARED_CORPUS


def test_files_and_special_ids(tiny_tokenizer_dir):
    for f in TOKENIZER_FILES:
        assert (tiny_tokenizer_dir / f).exists(), f
    tok = load_tokenizer(tiny_tokenizer_dir)
    assert tok.eos_token_id == tok.bos_token_id == 0 and tok.pad_token_id == 1
    assert era_tokens_of(tok) == ["<|1600s|>", "<|1650s|>", "<|1800s|>"]
    ids = tok.encode("<|1650s|>Thou", add_special_tokens=False)
    assert ids[0] == tok.convert_tokens_to_ids("<|1650s|>")


def test_era_helpers():
    assert era_token(1666) == "<|1650s|>" and era_token(1700) == "<|1700s|>" and era_token(None) is None
    assert era_tokens_for_years([1666, 1623, None, 1650]) == ["<|1600s|>", "<|1650s|>"]


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=200))
def test_roundtrip_any_unicode(tiny_tokenizer_dir, text):
    tok = load_tokenizer(tiny_tokenizer_dir)
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids, clean_up_tokenization_spaces=False) == text


def test_roundtrip_period_text(tiny_tokenizer_dir):
    tok = load_tokenizer(tiny_tokenizer_dir)
    samples = ["ſhall be moſt  welcome\r\n\tæther £3 10s. — «quoth» naïve 1666\n\n", "  \n", "日本語 🙂"]
    assert list(roundtrip_failures(tok, [(str(i), s) for i, s in enumerate(samples)])) == []


def _shared_files():
    return sorted(p for p in SHARED_CORPUS.rglob("*") if p.is_file() and p.suffix in (".txt", ".xml"))


@pytest.mark.skipif(not SHARED_CORPUS.is_dir(), reason="../shared/corpus absent: no shared corpus to round-trip")
def test_roundtrip_every_shared_file_head(tiny_tokenizer_dir):
    """Every shared file, its first 64 KB (BOMs, CRLF, XML, accents); the full files are
    in the slow test below (45 MB takes minutes with this 512-token vocabulary)."""
    tok = load_tokenizer(tiny_tokenizer_dir)
    files = _shared_files()
    assert len(files) >= 50
    docs = ((p.name, p.read_text(encoding="utf-8")[:65536]) for p in files)
    assert list(roundtrip_failures(tok, docs)) == []


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_CORPUS.is_dir(), reason="../shared/corpus absent: no shared corpus to round-trip")
def test_roundtrip_every_shared_file_full(tiny_tokenizer_dir):
    tok = load_tokenizer(tiny_tokenizer_dir)
    docs = ((p.name, p.read_text(encoding="utf-8")) for p in _shared_files())
    assert list(roundtrip_failures(tok, docs)) == []


def test_missing_tokenizer_message(tmp_path):
    from londonlm.core.errors import LondonLMError

    with pytest.raises(FileNotFoundError, match="train_historical_tokenizer.py"):
        load_tokenizer(tmp_path)
    with pytest.raises(LondonLMError):
        load_tokenizer(tmp_path)


# --------------------------------------------------------------------------- text stays text

QUOTING = "the printer set <|endoftext|> and <|1650s|> and <|pad|> in type, thus: <|1800s|>.\n"


def test_plain_encoding_reads_special_token_strings_as_text(tiny_tokenizer_dir):
    from londonlm.tokens.tokenizer import plain_backend, special_ids

    tok = load_tokenizer(tiny_tokenizer_dir)
    specials = special_ids(tok)
    assert specials == {0, 1} | {tok.convert_tokens_to_ids(t) for t in era_tokens_of(tok)}
    plain = plain_backend(tok)
    ids = plain.encode(QUOTING, add_special_tokens=False).ids
    assert not specials & set(ids) and len(ids) > 20
    assert plain.decode(ids, skip_special_tokens=False) == QUOTING
    # the shared tokenizer is left as it was: its explicit special tokens still parse
    assert tok.encode("<|1650s|>", add_special_tokens=False) == [tok.convert_tokens_to_ids("<|1650s|>")]


def test_roundtrip_check_encodes_like_the_cache_and_flags_control_tokens(tiny_tokenizer_dir, monkeypatch):
    import londonlm.tokens.tokenizer as T

    tok = load_tokenizer(tiny_tokenizer_dir)
    assert list(roundtrip_failures(tok, [("quoting", QUOTING)])) == []
    # were text ever read as a control token again, the check must say where, even though
    # decoding with special tokens kept would give the text back exactly
    from tokenizers import Tokenizer

    monkeypatch.setattr(T, "plain_backend", lambda t: Tokenizer.from_str(t.backend_tokenizer.to_str()))
    assert list(roundtrip_failures(tok, [("quoting", QUOTING)])) == [("quoting", QUOTING.index("<|"))]


def _vouch_for(folder):
    """The corpus's sidecar written again for its files as they are now, as its collection would."""
    import json

    from londonlm.core import SIDECAR, write_sidecar
    from londonlm.corpus.manifest import CORPUS_OUTPUTS

    rec = json.loads((folder / SIDECAR).read_text())
    write_sidecar(folder / SIDECAR, "corpus", rec["inputs"], rec["settings"], rec["counts"], outputs=CORPUS_OUTPUTS)


def test_tokenizer_report_counts_special_token_strings_as_text(micro_root, tmp_path):
    import shutil

    from londonlm.corpus import read_manifest
    from londonlm.tokens.tokenizer import plain_backend
    from londonlm.tokens.stage import tokenizer_report

    root = tmp_path / "root"
    shutil.copytree(micro_root, root)
    proc = root / "data" / "london_historical" / "processed"
    tok_dir = root / "09_models" / "tokenizers" / "london_historical_bpe"
    val = [proc / r["path"] for r in read_manifest(proc) if r["split"] == "validation"]
    for f in val:
        f.write_text(QUOTING + f.read_text(encoding="utf-8"), encoding="utf-8")
    _vouch_for(proc)  # as a collection of these texts would have left it (else refused as changed since)
    rep = tokenizer_report(tok_dir, proc)
    assert rep["roundtrip"]["failures"] == []
    plain = plain_backend(load_tokenizer(tok_dir))
    assert rep["validation"]["tokens"] == sum(
        len(plain.encode(f.read_text(encoding="utf-8")).ids) for f in val)


def test_tokenizer_trained_on_pieces_has_the_merges_of_whole_documents(micro_root):
    """Stage 03 feeds the BPE trainer documents in pieces (memory follows the piece): pieces
    cut at pre-token boundaries count the same words, so vocabulary and merges are the same."""
    import json

    from conftest import micro_texts
    from londonlm.tokens import split_exact

    texts = micro_texts(n_docs=4, chars=4000)
    whole = train_bpe(texts, vocab_size=400, show_progress=False)
    pieces = [p for t in texts for p in split_exact(t, 300)]
    assert len(pieces) > 4 * 10
    cut = train_bpe(pieces, vocab_size=400, show_progress=False)
    model = lambda tok: json.loads(tok.to_str())["model"]  # noqa: E731
    assert model(cut)["vocab"] == model(whole)["vocab"] and model(cut)["merges"] == model(whole)["merges"]


def test_encode_text_goes_through_the_backend_in_pieces(tiny_tokenizer_dir, monkeypatch):
    """A long text is encoded piece by piece (a whole validation document once cost ~100
    bytes a token at once); the ids equal the whole text's, control-token strings included."""
    import londonlm.generation.model as gm
    from londonlm.tokens import load_tokenizer, plain_backend, split_exact

    tok = load_tokenizer(tiny_tokenizer_dir)
    text = ("In the Year of our Lord 1666, upon the 2d of September, <|endoftext|> the Fire began "
            "in Pudding-lane,\n near Fish-street hill. ") * 60
    monkeypatch.setattr(gm, "split_exact", lambda t: split_exact(t, 500))
    seen = []
    real = type(plain_backend(tok)).encode
    monkeypatch.setattr(type(plain_backend(tok)), "encode",
                        lambda self, t, *a, **k: seen.append(len(t)) or real(self, t, *a, **k))
    assert gm.encode_text(tok, text) == real(plain_backend(tok), text, add_special_tokens=False).ids
    assert len(seen) > 1 and max(seen) < 1000, seen
    seen.clear()
    with_control = gm.encode_text(tok, text, allow_control_tokens=True)
    assert with_control == real(tok.backend_tokenizer, text, add_special_tokens=False).ids
    assert len(seen) > 1 and max(seen) < 1000 and tok.convert_tokens_to_ids(EOT) in with_control


def test_tokenizer_stage_trains_on_pieces_and_reports_on_pieces(micro_root, tmp_path, monkeypatch):
    """The stage gives the BPE trainer, and the report's encoder, pieces of documents (the
    whole longest document once set the stage's peak memory); the report's counts stay exact."""
    import shutil

    import londonlm.tokens.stage as stage
    from londonlm.tokens import split_exact

    root = tmp_path / "root"
    shutil.copytree(micro_root, root)
    proc = root / "data" / "london_historical" / "processed"
    monkeypatch.setattr(stage, "split_exact", lambda t: split_exact(t, 400))
    fed = []
    real_train = stage.train_bpe
    monkeypatch.setattr(stage, "train_bpe", lambda texts, **k: real_train(
        (fed.append(len(t)) or t for t in texts), **{**k, "show_progress": False}))
    stage.train_tokenizer_stage(proc, tmp_path / "tok", vocab_size=400, log=lambda *_: None)
    assert len(fed) > 20 and max(fed) < 1000, fed
    rep = stage.tokenizer_report(tmp_path / "tok", proc)
    monkeypatch.setattr(stage, "split_exact", lambda t: [t])
    assert stage.tokenizer_report(tmp_path / "tok", proc)["validation"] == rep["validation"]


def test_a_large_training_split_is_sampled_and_the_sidecar_says_so(micro_root, tmp_path, monkeypatch):
    """Over the character budget the trainer sees a sample of documents chosen by a hash of
    their ids (the same on every run), and the log and sidecar say how much; a corpus under
    the budget is trained on whole, with the settings (and so the sidecar) it always had."""
    import json
    import shutil

    import londonlm.tokens.stage as stage

    root = tmp_path / "root"
    shutil.copytree(micro_root, root)
    proc = root / "data" / "london_historical" / "processed"
    rows = [json.loads(x) for x in (proc / "manifest.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    budget = sum(r["chars"] for r in train) // 2
    fed: list[str] = []
    real_train = stage.train_bpe
    monkeypatch.setattr(stage, "train_bpe", lambda texts, **k: real_train((fed.append(t) or t for t in texts), **k))
    logs: list[str] = []
    side = stage.train_tokenizer_stage(proc, tmp_path / "tok", vocab_size=400, sample_chars=budget, log=logs.append)
    sampled = stage.sample_rows(train, budget)
    assert 0 < len(sampled) < len(train) and sampled == stage.sample_rows(list(reversed(train)), budget)[::-1]
    assert "".join(fed) == "".join((proc / r["path"]).read_text() for r in sampled)
    assert side["settings"]["sample_chars"] == budget
    assert side["counts"]["sample_documents"] == len(sampled) < side["counts"]["train_documents"]
    assert any("a sample of the training split" in m for m in logs)
    whole = stage.train_tokenizer_stage(proc, tmp_path / "tok2", vocab_size=400, log=lambda *_: None)
    assert "sample_chars" not in whole["settings"] and whole["counts"]["sample_documents"] == len(train)
