"""Shared tiny fixtures: a byte-level BPE tokenizer and a 2-layer GPT-2 saved as HF folders."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_CORPUS = SHARED / "corpus"

SAMPLE_TEXTS = [
    "It was the best of times, it was the worst of times; the Thames ran black by Southwark.\n",
    "Thou hast ſeen the Cheapside stalls, where a pound (£1) bought a goose and æther.\n",
    "Up betimes, and to the Office, where Sir W. Pen and I sat all the morning.\n",
    "The prisoner was indicted for stealing a silver watch, value 40 s. the goods of John Smith.\n",
    "London, that great Wen, swallowed the country lads by the waggon-load — every day.\n",
]


def pytest_collection_modifyitems(config, items):
    # keep the documented marker meaning even when -m is overridden on the command line
    pass


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    from londonlm.tokenizer import save_tokenizer, train_bpe

    out = tmp_path_factory.mktemp("tok")
    eras = ["<|1600s|>", "<|1650s|>", "<|1800s|>"]
    tok = train_bpe(SAMPLE_TEXTS * 20, vocab_size=512, min_frequency=2, era_tokens=eras,
                    show_progress=False)
    save_tokenizer(tok, out, model_max_length=64, era_tokens=eras)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A randomly initialised 2-layer GPT-2 + tokenizer in one save_pretrained folder."""
    from transformers import AutoTokenizer

    from londonlm.modeling import ModelShape, build_model, padded_vocab

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    shape = ModelShape(n_layer=2, n_head=2, n_embd=32, n_positions=64,
                       vocab_size=padded_vocab(len(tok)))
    model = build_model(shape, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, seed=0)
    out = tmp_path_factory.mktemp("model")
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


MICRO_TEXT_SOURCE = SHARED_CORPUS / "gutenberg_journal_of_the_plague_year.txt"


def micro_texts(n_docs: int = 6, chars: int = 6000) -> list[str]:
    """A few KB of real period prose: Defoe from ../shared when present, else a built-in
    paragraph set (so the suite runs without ../shared)."""
    if MICRO_TEXT_SOURCE.exists():
        raw = MICRO_TEXT_SOURCE.read_text(encoding="utf-8")
        body = raw[raw.find("It was about the beginning"):] if "It was about the beginning" in raw else raw[5000:]
        return [body[i * chars:(i + 1) * chars] for i in range(n_docs)]
    # Without ../shared: the embedded offline sample (First Folio, installed by install.sh),
    # one play per document, skipping each file's header.
    from londonlm.sources.sample import sample_files

    texts = [f.read_text(encoding="utf-8", errors="replace") for f in sample_files()[:n_docs]]
    return [t[len(t) // 3:len(t) // 3 + chars] for t in texts]


def write_micro_source(folder: Path, n_docs: int = 6, chars: int = 6000) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(micro_texts(n_docs, chars)):
        (folder / f"plague_part{i}_1722.txt").write_text(t, encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def micro_root(tmp_path_factory) -> Path:
    """A project root with a processed micro corpus and its tokenizer (stages 02-03 done)."""
    from londonlm.corpus import build_corpus
    from londonlm.tokenizer_stage import train_tokenizer_stage

    root = tmp_path_factory.mktemp("root")
    src = write_micro_source(root / "src")
    data = root / "data" / "london_historical"
    build_corpus(data / "processed", data / "metadata", source_dir=src, validation_percent=20,
                 log=lambda *_: None)
    train_tokenizer_stage(data / "processed", root / "09_models" / "tokenizers" / "london_historical_bpe",
                          vocab_size=512, min_frequency=2, era_tokens=True, model_max_length=64,
                          log=lambda *_: None)
    return root
