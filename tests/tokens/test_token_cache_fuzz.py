"""Any corpus and any tokenizer the token cache may be given: hypothesis writes a processed corpus
whose texts range over the whole input space (the tokenizer fuzz's texts: empty, whitespace,
punctuation, control characters and NUL, every Unicode plane, the special-token strings as text,
long lines, a file that is not UTF-8), dated in any century or not at all, and builds the cache
with era tokens or without, from one of several tokenizers: the pipeline's own (through
``ensure_cache`` and its folder), one of 65,535 tokens (the most uint16 holds) and one of 65,536,
one whose eos token is unset or another token, one without ``<|endoftext|>``, one without era
tokens. The build either writes a cache whose every document decodes back to its text between
the separators the module documents (``[era token] + text tokens + <|endoftext|>``, no control
token inside the text), whose offsets, counts and checksums agree with its files and whose
metadata names the ids it wrote; or it stops with one LondonLMError, and only for a tokenizer
too large for uint16 or without the boundary token, an era the tokenizer lacks, or a text that
is not UTF-8. A second net cuts documents into pieces and batches of any size: they encode
exactly as the whole."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from test_tokenizer_fuzz import ODD, PROSE, SPECIALS, as_collected, not_utf8, short_text, spoil, text, write_corpus
from londonlm.core import LondonLMError
from londonlm.corpus import read_manifest
from londonlm.tokens.cache import (CacheError, _encode_stream, build_cache, damage, ensure_cache,
                                   load_checked_tokens, load_offsets, load_tokens, read_metadata)
from londonlm.tokens.tokenizer import (EOT, PAD, era_token, era_tokens_for_years, plain_backend, save_tokenizer,
                                       special_ids, train_bpe, wrap_fast)

# examples per run; LONDONLM_FUZZ_EXAMPLES=200 searches longer (minutes)
EXAMPLES = int(os.environ.get("LONDONLM_FUZZ_EXAMPLES", 40))
ERAS = era_tokens_for_years(range(1000, 2101, 50))
QUIET = {"progress": False, "log": lambda *_: None}


def wide_tokenizer(size: int):
    """A byte-level BPE of exactly ``size`` tokens: the specials, the 256 bytes, then a merge for
    each pair of bytes until full, so that text reaches its highest ids (control bytes, NBSP)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    specials = [EOT, PAD, *ERAS]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate(specials + alphabet)}
    merges = []
    for a, b in ((a, b) for a in reversed(alphabet) for b in reversed(alphabet)):
        if len(vocab) >= size:
            break
        vocab[a + b] = len(vocab)
        merges.append((a, b))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    return tok


class Tokenizers(dict):
    """The fixture's tokenizers, shown by name in a failing example (not 65,535 tokens' worth)."""

    def __repr__(self) -> str:
        return "tokenizers"


def without_eot():
    """A byte-level BPE trained with <|pad|> only: a foreign tokenizer with no document boundary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(PROSE, trainers.BpeTrainer(vocab_size=400, special_tokens=[PAD], show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> dict:
    """The tokenizers the net draws from (``trained`` is also saved, for ``ensure_cache``)."""
    from transformers import PreTrainedTokenizerFast

    raw = train_bpe(PROSE * 3 + ["".join(ODD)], vocab_size=1024, era_tokens=ERAS, show_progress=False)
    folder = tmp_path_factory.mktemp("tok")
    save_tokenizer(raw, folder, model_max_length=64, era_tokens=ERAS)
    plain = train_bpe(PROSE * 3, vocab_size=600, show_progress=False)
    return Tokenizers({
        "trained": folder,
        "uint16 limit": wrap_fast(wide_tokenizer(65535), era_tokens=ERAS),
        "past uint16": wrap_fast(wide_tokenizer(65536), era_tokens=ERAS),
        "no eos": PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=EOT, unk_token=EOT, pad_token=PAD,
                                          additional_special_tokens=ERAS),
        "eos is pad": PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=PAD, pad_token=PAD,
                                              additional_special_tokens=ERAS),
        "no eot": without_eot(),
        "no era tokens": wrap_fast(plain),
    })


def refusal_expected(tok, docs, use_era: bool) -> bool:
    """What the build must refuse: a vocabulary past uint16, no <|endoftext|>, a dated document
    whose era the tokenizer lacks (with era tokens), a text that is not UTF-8."""
    vocab = tok.get_vocab()
    return (len(tok) >= 65536 or EOT not in vocab or any(isinstance(body, bytes) for body, _, _ in docs)
            or use_era and any(y is not None and era_token(y) not in vocab for _, _, y in docs))


def check_split(cache: Path, meta: dict, tok, split: str, rows: list[dict], texts: dict, use_era: bool) -> None:
    """One split's files agree with the metadata, and each document is [era] + its text + EOT."""
    plain, stem = plain_backend(tok), {"train": "train", "validation": "val"}[split]
    controls, eot = special_ids(plain), tok.convert_tokens_to_ids(EOT)
    toks, offs = np.asarray(load_tokens(cache, split)), np.asarray(load_offsets(cache, split))
    info, mine = meta["splits"][split], [r for r in rows if r["split"] == split]
    assert len(toks) == info["tokens"] == offs[-1] and len(offs) == info["documents"] + 1 == len(mine) + 1
    assert offs[0] == 0 and (np.diff(offs) >= 1).all()
    assert hashlib.sha256((cache / f"{stem}.bin").read_bytes()).hexdigest() == info["sha256"]
    checked = load_checked_tokens(cache, split)
    assert np.array_equal(np.asarray(checked[0:len(toks)]), toks)
    for row, start, end in zip(mine, offs[:-1], offs[1:]):
        doc = toks[start:end].tolist()
        assert doc[-1] == eot == meta["eot_id"], (doc[-1], eot, meta["eot_id"])
        era = use_era and row["year"] is not None
        if era:
            assert doc[0] == tok.convert_tokens_to_ids(era_token(row["year"]))
        body = doc[1 if era else 0:-1]
        assert not controls & set(body), "text became a control token"
        assert plain.decode(body, skip_special_tokens=False) == texts[row["id"]]


def build(kind: str, tokenizers: dict, cache: Path, processed: Path, use_era: bool):
    """(tokenizer, metadata) of a build through ``ensure_cache`` (the pipeline's own tokenizer,
    from its folder) or ``build_cache`` (a tokenizer object)."""
    from londonlm.tokens.tokenizer import load_tokenizer

    if kind == "trained":
        return load_tokenizer(tokenizers[kind]), ensure_cache(cache, tokenizers[kind], processed, 64, use_era, **QUIET)
    tok = tokenizers[kind]
    return tok, build_cache(cache, tok, "t" * 64, processed, read_manifest(processed), "m" * 64, 64, use_era, **QUIET)


document = st.tuples(text, st.sampled_from(["train", "validation"]),
                     st.one_of(st.none(), st.integers(1000, 2100), st.integers(-10**5, 10**5)))
# one corpus in six has a text that is not UTF-8 on disk
documents = st.builds(spoil, st.lists(document, min_size=1, max_size=6),
                      st.one_of(st.none(), st.none(), st.none(), st.none(), st.none(), not_utf8))


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                                 HealthCheck.function_scoped_fixture])
@given(docs=documents, use_era=st.booleans(),
       kind=st.sampled_from(["trained", "trained", "uint16 limit", "past uint16", "no eos", "eos is pad", "no eot",
                             "no era tokens"]))
def test_any_corpus_and_tokenizer_build_a_cache_that_decodes_to_its_texts_or_one_error(tokenizers, docs, use_era,
                                                                                       kind):
    with tempfile.TemporaryDirectory() as tmp:
        processed, cache = Path(tmp) / "processed", Path(tmp) / "cache"
        rows = write_corpus(processed, docs)
        try:
            tok, meta = build(kind, tokenizers, cache, processed, use_era)
        except LondonLMError as e:
            from londonlm.tokens.tokenizer import load_tokenizer

            tok = load_tokenizer(tokenizers[kind]) if kind == "trained" else tokenizers[kind]
            event(f"refused: {type(e).__name__}")
            assert refusal_expected(tok, docs, use_era), f"refused a build it can make: {e}"
            assert "\n" not in str(e).strip(), str(e)
            assert not (cache / "metadata.json").exists()
            return
        event(f"built with {kind}")
        assert not refusal_expected(tok, docs, use_era), "built a cache it should have refused"
        assert read_metadata(cache) == meta and damage(cache, meta, verify_full=True) is None
        assert meta["vocab_size"] == len(tok) and meta["era_tokens"] is use_era
        texts = {f"d{i}": as_collected(body) for i, (body, _, _) in enumerate(docs)}
        for split in ("train", "validation"):
            check_split(cache, meta, tok, split, rows, texts, use_era)
        if kind == "trained":  # the cache it wrote is the one a rerun finds current
            assert ensure_cache(cache, tokenizers[kind], processed, 64, use_era, mode="require", **QUIET) == meta


@settings(max_examples=EXAMPLES * 10, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.one_of(short_text, st.lists(st.sampled_from(ODD + SPECIALS), max_size=80).map("".join)),
                      min_size=1, max_size=4),
       piece_chars=st.integers(1, 40), batch_chars=st.integers(1, 100))
def test_documents_cut_in_pieces_and_batches_encode_as_the_whole(tokenizers, texts, piece_chars, batch_chars):
    """The cache encodes long documents in ``split_exact`` pieces, batched under a character
    budget; here with pieces and batches of a few characters, so every cut point is tried."""
    tok = tokenizers["no era tokens"]  # (copying the 65,535-token one for every example took a minute)
    plain = plain_backend(tok)
    docs = [({"id": str(i), "year": None}, t) for i, t in enumerate(texts)]
    got = list(_encode_stream(tok, docs, False, batch_chars=batch_chars, piece_chars=piece_chars))
    eot = tok.convert_tokens_to_ids(EOT)
    assert got == [plain.encode(t, add_special_tokens=False).ids + [eot] for t in texts]


# ---------------------------------------------------------------- edges
def test_a_cache_at_the_uint16_limit_holds_its_highest_ids_and_one_past_it_is_refused(tokenizers, tmp_path):
    """65,535 tokens fit (the highest id, 65,534, is written and read back); 65,536 do not, and
    the build says so before it writes anything."""
    top = tokenizers["uint16 limit"].decode([65534])  # the text of the highest id
    write_corpus(tmp_path / "p", [(f"{top} {top}{top}", "train", 1700), ("abc", "validation", None)])
    build("uint16 limit", tokenizers, tmp_path / "c", tmp_path / "p", True)
    assert int(np.asarray(load_tokens(tmp_path / "c", "train")).max()) == 65534
    with pytest.raises(CacheError, match="does not fit uint16"):
        build("past uint16", tokenizers, tmp_path / "d", tmp_path / "p", True)
    assert not (tmp_path / "d").exists()


# ---------------------------------------------------------------- defects the net found
@pytest.mark.parametrize("kind", ["no eos", "eos is pad"])
def test_the_metadata_names_the_id_every_document_ends_with(tokenizers, tmp_path, kind):
    """The cache ends each document with <|endoftext|>, but its metadata's ``eot_id`` was the
    tokenizer's eos id: None for a tokenizer whose eos is unset, <|pad|>'s for one whose eos is
    that. It now records the id the documents end with."""
    write_corpus(tmp_path / "p", [("Up betimes.", "train", None), ("To the Office.", "validation", None)])
    tok, meta = build(kind, tokenizers, tmp_path / "c", tmp_path / "p", False)
    ends = {int(np.asarray(load_tokens(tmp_path / "c", split))[-1]) for split in ("train", "validation")}
    assert ends == {meta["eot_id"]} == {tok.convert_tokens_to_ids(EOT)}
