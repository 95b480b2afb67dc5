"""The model builder: a stock GPT2LMHeadModel that AutoModelForCausalLM reloads exactly."""
import pytest
import torch
from transformers import AutoModelForCausalLM

from londonlm.training.modeling import ModelShape, build_model, padded_vocab


def test_built_model_uses_exact_gelu_and_reloads_with_the_same_outputs(tmp_path):
    shape = ModelShape(n_layer=2, n_head=2, n_embd=32, n_positions=16, vocab_size=padded_vocab(90))
    m = build_model(shape, 1, 2, 3, seed=0).eval()
    # exact (erf) GELU, chosen for CPU speed (BENCHMARKS.md); a standard transformers name
    assert m.config.activation_function == "gelu"
    act = m.transformer.h[0].mlp.act
    x = torch.linspace(-4, 4, 101)
    assert torch.allclose(act(x), torch.nn.functional.gelu(x), atol=1e-6)
    assert (act(x) - torch.nn.functional.gelu(x, approximate="tanh")).abs().max() > 1e-5
    assert m.config.vocab_size == 128 and m.config.tie_word_embeddings
    assert (m.config.bos_token_id, m.config.eos_token_id, m.config.pad_token_id) == (1, 2, 3)
    m.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 90, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(m(ids).logits, again(ids).logits)


def test_same_seed_same_weights_and_bad_shapes_fail_clearly():
    shape = ModelShape(n_layer=1, n_head=2, n_embd=16, n_positions=8, vocab_size=64)
    a, b = build_model(shape, 0, 0, 0, seed=5), build_model(shape, 0, 0, 0, seed=5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(ValueError, match="divisible"):
        build_model(ModelShape(n_layer=1, n_head=3, n_embd=16, n_positions=8, vocab_size=64), 0, 0, 0)
    with pytest.raises(ValueError, match="positive"):
        build_model(ModelShape(n_layer=0, n_head=2, n_embd=16, n_positions=8, vocab_size=64), 0, 0, 0)
