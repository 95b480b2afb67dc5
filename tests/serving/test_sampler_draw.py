"""BatchSampler's draw: one batched ``argmax(probs / q)`` per step on every device, with ``q`` drawn
row by row from each row's generator, picks ``torch.multinomial``'s tokens (on CPU here; on a
CUDA GPU with CUDA generators in the ``gpu`` tests) and reads the step's tokens back once."""
from __future__ import annotations

import pytest
import torch

from londonlm.generation import GenerationSettings
from londonlm.serving.sampler import BatchSampler, RowSampling

ROWS = [GenerationSettings(temperature=0.0), GenerationSettings(temperature=0.8),
        GenerationSettings(temperature=1.3, top_k=5, top_p=0.5, repetition_penalty=1.3),
        GenerationSettings(temperature=0.7, top_k=0, top_p=0.9),
        GenerationSettings(temperature=1.0, top_k=3, top_p=1.0),
        GenerationSettings(temperature=0.0, repetition_penalty=1.2),
        GenerationSettings(temperature=1.1, top_k=40, top_p=0.95)]
VOCAB = 300


def expected(rows, logits, history, generators) -> list[int]:
    """Each row alone through generate()'s processors, then argmax or torch.multinomial."""
    from transformers import (RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
                              TopPLogitsWarper)

    out = []
    for i, s in enumerate(rows):
        ids, scores = history[i:i + 1], logits[i:i + 1].clone()
        scores = RepetitionPenaltyLogitsProcessor(s.repetition_penalty)(ids, scores)
        if not s.sampling:
            out.append(int(scores.argmax()))
            continue
        scores = TemperatureLogitsWarper(s.temperature)(ids, scores)
        scores = TopKLogitsWarper(s.top_k)(ids, scores) if s.top_k else scores
        scores = TopPLogitsWarper(s.top_p)(ids, scores) if s.top_p < 1 else scores
        out.append(int(torch.multinomial(scores.softmax(dim=-1), 1, generator=generators[i])))
    return out


def run_steps(rows, device: str, steps: int, seed: int = 0):
    """(the sampler's tokens, the reference's tokens) over ``steps`` steps, each side with its
    own identically seeded generators, kept from step to step as a decode keeps them."""
    def generators():
        return [torch.Generator(device=device).manual_seed(seed + i) if s.sampling else None
                for i, s in enumerate(rows)]

    ours, theirs = generators(), generators()
    sampler = BatchSampler([RowSampling(s, g) for s, g in zip(rows, ours)], device)
    rng = torch.Generator().manual_seed(seed)
    got, want = [], []
    for step in range(steps):
        logits = torch.randn(len(rows), VOCAB, generator=rng) * 3
        logits = logits.round() if step % 3 == 2 else logits  # ties among the top-k survivors
        history = torch.randint(0, VOCAB, (len(rows), 8), generator=rng)
        seen = torch.zeros(len(rows), VOCAB, dtype=torch.bool).scatter(1, history, True)
        logits, history, seen = logits.to(device), history.to(device), seen.to(device)
        got.append(sampler.choose(logits, seen, history.tolist()))
        want.append(expected(rows, logits, history, theirs))
    return got, want


@pytest.mark.parametrize("rows", [ROWS, [s for s in ROWS if s.sampling]], ids=["mixed", "all-sampled"])
def test_the_batched_draw_is_multinomials_over_many_steps_on_cpu(rows):
    got, want = run_steps(rows, "cpu", 20)
    assert got == want


@pytest.mark.parametrize("rows", [ROWS, [s for s in ROWS if s.sampling], [s for s in ROWS if not s.sampling]],
                         ids=["mixed", "all-sampled", "all-greedy"])
def test_a_step_reads_its_tokens_back_once(rows, monkeypatch):
    """One ``.tolist()`` per step (on a GPU each is a wait for the device), greedy rows included;
    top-p is left out here: its tie check is a read of its own."""
    rows = [s if not s.sampling else GenerationSettings(temperature=s.temperature, top_k=s.top_k, top_p=1.0)
            for s in rows]
    sampler = BatchSampler([RowSampling(s, torch.Generator().manual_seed(i) if s.sampling else None)
                            for i, s in enumerate(rows)], "cpu")
    logits = torch.randn(len(rows), VOCAB, generator=torch.Generator().manual_seed(1))
    seen = torch.zeros(len(rows), VOCAB, dtype=torch.bool)
    reads, real = [], torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: (reads.append(self.shape), real(self))[1])
    chosen = sampler.choose(logits, seen, [[] for _ in rows])
    monkeypatch.undo()
    assert reads == [torch.Size([len(rows)])] and isinstance(chosen, list) and len(chosen) == len(rows)
    assert all(isinstance(t, int) for t in chosen)


@pytest.mark.gpu
@pytest.mark.parametrize("rows", [ROWS, [s for s in ROWS if s.sampling] * 8], ids=["mixed", "48-sampled"])
def test_the_batched_draw_is_multinomials_on_cuda(rows):
    """CUDA generators, identically seeded: the batched draw and torch.multinomial row by row
    pick the same tokens, step after step (the generators' states advance alike)."""
    got, want = run_steps(rows, "cuda", 60, seed=3)
    assert got == want


@pytest.mark.gpu
def test_the_draw_alone_is_multinomials_on_cuda_with_a_large_vocabulary():
    rows = [GenerationSettings(temperature=1.0, top_k=0, top_p=1.0)] * 32
    ours = [torch.Generator(device="cuda").manual_seed(100 + i) for i in range(len(rows))]
    theirs = [torch.Generator(device="cuda").manual_seed(100 + i) for i in range(len(rows))]
    sampler = BatchSampler([RowSampling(s, g) for s, g in zip(rows, ours)], "cuda")
    for step in range(50):
        probs = torch.randn(len(rows), 50_304, device="cuda").mul(2).softmax(dim=-1)
        drawn = sampler._draw(probs).tolist()
        assert drawn == [int(torch.multinomial(probs[i:i + 1], 1, generator=g)) for i, g in enumerate(theirs)], step


@pytest.mark.parametrize("temperature", [1e-39, 1e-320, 9.9e-6])
def test_a_temperature_too_small_to_divide_by_is_greedy(temperature):
    """At 1e-39 every float32 logit divided by the temperature was -inf: the softmax was NaN and
    the row picked a wrong token (<|endoftext|> at -9.42 over "\\n" at -3.12). Below
    GREEDY_BELOW a row is greedy, as at 0; the rows beside it sample as before."""
    rng = torch.Generator().manual_seed(3)
    logits = (-3 - torch.rand(1, VOCAB, generator=rng) * 6).repeat(3, 1)  # the best at -3.x, as in the report
    seen = torch.zeros(3, VOCAB, dtype=torch.bool)
    seen[:, 0] = True  # the history below: token 0, penalised
    rows = [GenerationSettings(temperature=temperature), GenerationSettings(temperature=0.0),
            GenerationSettings(temperature=0.8)]
    gens = [None, None, torch.Generator().manual_seed(1)]
    got = BatchSampler([RowSampling(s, g) for s, g in zip(rows, gens)], "cpu").choose(logits, seen, [[]] * 3)
    assert got[0] == got[1]
    want = expected(rows, logits, torch.zeros(3, 1, dtype=torch.long), [None, None, torch.Generator().manual_seed(1)])
    assert got == want

    from londonlm.core.generation_settings import GREEDY_BELOW

    assert not rows[0].sampling and rows[2].sampling and GenerationSettings(temperature=GREEDY_BELOW).sampling
