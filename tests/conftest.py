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
