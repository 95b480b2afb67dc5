"""The model builder: a stock GPT2LMHeadModel that AutoModelForCausalLM reloads exactly."""
import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from londonlm.training.model import ModelShape, build_model, padded_vocab

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "benchmarks") not in sys.path:
    sys.path.append(str(REPO / "benchmarks"))  # appended: benchmarks/ never shadows a package
from memory_estimate import measured_peak_bytes  # noqa: E402  (the benchmark's instrument)


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


def _graph_breaks(model) -> int:
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    torch._dynamo.reset()
    return torch._dynamo.explain(lambda x: model(input_ids=x, labels=x).loss)(ids).graph_break_count


def test_a_training_model_names_its_loss_so_a_compiled_step_is_one_graph():
    """transformers finds no loss in the class name "GPT2LMHeadModel" and calls its warn-once
    logger on every forward with labels: a graph break in every compiled training step. The
    builder and the Trainer's model name the loss (the control: a model loaded bare breaks)."""
    from londonlm.training.model import with_causal_lm_loss

    shape = ModelShape(n_layer=1, n_head=2, n_embd=16, n_positions=8, vocab_size=64)
    built = build_model(shape, 0, 0, 0, seed=0)
    assert _graph_breaks(built) == 0
    bare = type(built)(built.config)
    assert _graph_breaks(bare) >= 1
    assert _graph_breaks(with_causal_lm_loss(bare)) == 0


def test_a_model_prepared_to_train_builds_no_generation_cache_outside_a_trainer_too(monkeypatch, tmp_path):
    """The Trainer turns the cache off (TrainingArguments.use_cache); a model prepared to train
    has it off before any Trainer, so what the throughput benchmarks and the speed probe time
    is what trains: no copy of every layer's keys and values into a cache nothing reads."""
    from transformers import cache_utils

    from londonlm.training.model import prepare_for_training
    from londonlm.training.speed.probe import StepTimer
    from londonlm.training.speed.settings import SpeedSettings

    built = []
    real = cache_utils.DynamicCache.__init__
    monkeypatch.setattr(cache_utils.DynamicCache, "__init__",
                        lambda self, *a, **k: (built.append(1), real(self, *a, **k))[1])
    shape = ModelShape(n_layer=1, n_head=2, n_embd=16, n_positions=8, vocab_size=64)
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    bare = build_model(shape, 0, 0, 0, seed=0)
    assert bare(input_ids=ids, labels=ids).past_key_values is not None and built  # the default
    built.clear()
    model = prepare_for_training(build_model(shape, 0, 0, 0, seed=0), SpeedSettings("fp32", "sdpa", False, False))
    out = model(input_ids=ids, labels=ids)
    assert out.past_key_values is None and not built
    model.save_pretrained(tmp_path)  # generate() on the saved model still keeps a cache
    assert json.loads((tmp_path / "generation_config.json").read_text()).get("use_cache", True) is True
    timer = StepTimer(shape, 2)  # the speed probe's own model
    timer(SpeedSettings("fp32", "sdpa", False))
    assert not built


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
@pytest.mark.parametrize("fused", [False, True], ids=["stock-loss", "fused-loss"])
def test_memory_estimate_is_within_a_quarter_of_the_measured_peak(attention, precision, fused):
    """Each attention kind, precision and loss, on a width-heavy and a context-heavy shape: the
    old estimate (T x T scores for every kind, no logits) was off by 2-3x on the second."""
    for shape, batch in ((ModelShape(2, 4, 192, 96, 2048), 6), (ModelShape(2, 8, 64, 384, 512), 4)):
        est = shape.memory_estimate_gb(batch, attention=attention, precision=precision, fused_loss=fused) * 1e9
        got = measured_peak_bytes(shape, batch, attention, precision, fused)
        assert 0.75 <= est / got <= 1.25, (shape, batch, est / 1e6, got / 1e6)


def test_memory_parts_follow_the_kernels():
    s = ModelShape(24, 16, 1024, 1024, 50304)  # GPT-2 Medium
    sdpa = s.training_memory(8, attention="sdpa", precision="bf16")
    eager = s.training_memory(8, attention="eager", precision="bf16")
    assert sdpa.scores == 0 and eager.scores == 8 * 24 * 8 * 1024 * 16 * 1024  # B*H*T^2 per layer
    fused = s.training_memory(8, fused_loss=True)
    assert fused.logits == 8 * 1024 * 50304 * 2 and sdpa.logits == 5 * fused.logits
    muon = s.training_memory(8, optimizer="muon")
    assert muon.state == sdpa.state - 4 * 24 * 12 * 1024 ** 2
    assert s.training_memory(8, shards=4).state == sdpa.state / 4
    assert sdpa.per_sequence(8) * 8 == sdpa.activations + sdpa.logits
