"""Round trip of a GGUF export through llama.cpp (``llama-cpp-python``): greedy generation
from the GGUF file beside greedy generation from the transformers model it came from.

Both sides start from the same token ids (``[<|endoftext|>] + prompt tokens``, the way our
generation begins a prompt) and pick the arg-max token ``steps`` times without stopping at
end of text, so the two sequences are comparable token by token. llama.cpp's GPT-2 uses the
tanh GELU where our models were trained with the exact one (< 5e-4 apart) and F16/Q8_0
weights, so a near-tied choice can differ; the report says where the sequences part.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..core import read_json
from .gguf import GGUFExportError


@dataclass
class GreedyAgreement:
    gguf: str
    steps: int
    hf_tokens: list[int]
    gguf_tokens: list[int]
    matching_prefix: int        # tokens equal from the first step until the first difference
    matching_positions: int     # positions equal anywhere in the sequence
    prompt_tokens_agree: bool   # llama.cpp's own tokenizer gives the ids transformers gives
    max_first_logit_diff: float  # |logit difference| over the vocabulary at the first step

    @property
    def identical(self) -> bool:
        return self.matching_prefix == self.steps

    def to_dict(self) -> dict:
        return {**asdict(self), "identical": self.identical}


def llama_cpp_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def require_llama_cpp() -> None:
    """A clear error when llama-cpp-python is missing: said before an export with ``--verify``
    writes anything, not after it."""
    if not llama_cpp_available():
        raise GGUFExportError("the llama.cpp check needs llama-cpp-python (it compiles "
                              "llama.cpp, 10-25 min on 2 cores): pip install llama-cpp-python")


def _hf_greedy(model, ids: list[int], steps: int):
    """Greedy continuation by transformers, and the first step's logits."""
    import torch

    seq, first = list(ids), None
    with torch.inference_mode():
        for _ in range(steps):
            logits = model(input_ids=torch.tensor([seq])).logits[0, -1]
            first = logits.numpy().copy() if first is None else first
            seq.append(int(logits.argmax()))
    return seq[len(ids):], first


def _llama_greedy(gguf_path: Path, ids: list[int], steps: int, n_ctx: int):
    """Greedy continuation by llama.cpp, its first step's logits and its tokenizer."""
    import numpy as np
    from llama_cpp import Llama

    # logits_all: llama-cpp-python keeps a row of scores only then (it samples in C otherwise)
    llm = Llama(model_path=str(gguf_path), n_ctx=n_ctx, n_threads=max(1, os.cpu_count() or 1),
                logits_all=True, verbose=False)
    llm.eval(ids)
    out, first = [], None
    for _ in range(steps):
        logits = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        first = logits.copy() if first is None else first
        out.append(int(logits.argmax()))
        llm.eval([out[-1]])
    return out, first, llm


def greedy_agreement(model_dir: str | os.PathLike, gguf_path: str | os.PathLike,
                     prompt: str, steps: int = 32) -> GreedyAgreement:
    """Greedy ``steps`` tokens from transformers and from llama.cpp on ``prompt``, compared."""
    require_llama_cpp()
    from ..generation import load_model

    model_dir, gguf_path = Path(model_dir), Path(gguf_path)
    lm = load_model(model_dir, device="cpu", dtype="float32")  # the model interface's checks
    tok = lm.tokenizer
    ids = [tok.bos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"]
    n_ctx = len(ids) + steps
    n_positions = read_json(model_dir / "config.json").get("n_positions", n_ctx)
    if n_ctx > n_positions:
        raise GGUFExportError(f"prompt ({len(ids)} tokens) + {steps} steps exceed the model's "
                              f"{n_positions}-token context; use a shorter prompt or fewer steps")
    hf, hf_first = _hf_greedy(lm.model, ids, steps)
    ll, ll_first, llm = _llama_greedy(gguf_path, ids, steps, n_ctx)
    prefix = next((i for i, (a, b) in enumerate(zip(hf, ll)) if a != b), steps)
    n = min(len(hf_first), len(ll_first))
    return GreedyAgreement(
        gguf=str(gguf_path), steps=steps, hf_tokens=hf, gguf_tokens=ll,
        matching_prefix=prefix, matching_positions=sum(a == b for a, b in zip(hf, ll)),
        prompt_tokens_agree=llm.tokenize(prompt.encode("utf-8"), add_bos=True,
                                         special=False) == ids,
        max_first_logit_diff=float(abs(hf_first[:n] - ll_first[:n]).max()))
