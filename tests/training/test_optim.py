"""Muon on the hidden matrices, AdamW on the rest: groups, scheduling, checkpoint and resume."""
from __future__ import annotations

import pytest
import torch

from conftest import micro_gpt2, micro_lm_dataset, micro_training_args, patch_core
from londonlm.core.errors import LondonLMError
from londonlm.training.step.optim import (Muon, MuonAdamW, MuonOptions, build_muon_adamw, describe_split,
                            fast_ns_dtype, muon_options_from_args, split_parameters)
from londonlm.training.step.schedules import WarmupStableDecay, make_lr_scheduler
from londonlm.training.step.trainer import RunTrainer


def _names(group):
    return {n for n, _ in group}


def test_hidden_matrices_go_to_muon_and_the_rest_to_adamw():
    model = micro_gpt2(n_layer=2)
    g = split_parameters(model)
    assert _names(g["muon"]) == {f"transformer.h.{i}.{m}.weight" for i in range(2)
                                 for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    # the LM head is tied to wte: one parameter, optimised once, by AdamW
    assert _names(g["adamw_decay"]) == {"transformer.wte.weight", "transformer.wpe.weight"}
    assert all(p.ndim == 1 for _, p in g["adamw_no_decay"])
    assert any("ln_f" in n for n in _names(g["adamw_no_decay"]))
    every = [p for grp in g.values() for _, p in grp]
    assert len(every) == len({id(p) for p in every}) == len(list(model.parameters()))
    assert "Muon on 8 hidden matrices" in describe_split(model)


def test_an_untied_lm_head_stays_with_adamw():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1,
                                       n_head=2, tie_word_embeddings=False))
    assert "lm_head.weight" in _names(split_parameters(model)["adamw_decay"])


def test_one_scheduler_drives_both_halves_and_decay_is_split():
    model = micro_gpt2()
    opt = build_muon_adamw(model, MuonOptions(lr=0.01, weight_decay=0.1))
    assert isinstance(opt.muon, torch.optim.Muon) and isinstance(opt.adamw, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.adamw.param_groups] == [0.1, 0.0]
    sched = make_lr_scheduler(opt, WarmupStableDecay(4, 100))
    for _ in range(2):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.muon.param_groups + opt.adamw.param_groups] == [pytest.approx(0.005)] * 3


def _one_muon_step(cls, **kw):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(32, 96))
    w.grad = torch.randn(32, 96)
    opt = cls([w], lr=0.1, weight_decay=0.0, adjust_lr_fn="match_rms_adamw", **kw)
    opt.step()
    opt.step()  # the second step goes through the momentum buffer
    return w.detach().clone(), opt


def test_fp32_newton_schulz_makes_torchs_muon_update():
    ref, _ = _one_muon_step(torch.optim.Muon)
    same, _ = _one_muon_step(Muon, ns_dtype=torch.bfloat16)
    assert torch.equal(same, ref)  # bf16: the same products as torch's, batched
    fp32, opt = _one_muon_step(Muon, ns_dtype=torch.float32)
    torch.manual_seed(0)
    start = torch.randn(32, 96)
    d_ref, d_fp32 = ref - start, fp32 - start
    # the same step up to bf16 rounding of the iteration
    assert torch.nn.functional.cosine_similarity(d_ref.flatten(), d_fp32.flatten(), dim=0) > 0.99
    assert set(opt.state[opt.param_groups[0]["params"][0]]) == {"momentum_buffer"}


def test_batched_newton_schulz_is_each_matrix_own_iteration_in_one_matmul_per_product():
    from torch.optim._muon import _zeropower_via_newtonschulz
    from torch.utils._python_dispatch import TorchDispatchMode

    from londonlm.training.step.optim import orthogonalize_many

    class CountMatmuls(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.calls += func.__name__.split(".")[0] in ("mm", "addmm", "bmm", "baddbmm")
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)  # wide and tall of one shape share a stack; norms differ 100-fold
    mats = [torch.randn(16, 48), torch.randn(48, 16) * 100, torch.randn(16, 48) / 100, torch.randn(8, 8)]
    coeffs = (3.4445, -4.7750, 2.0315)
    with CountMatmuls() as counter:
        got = orthogonalize_many(mats, coeffs, 5, 1e-7, torch.bfloat16)
    assert counter.calls == 2 * 3 * 5  # two shapes, three products, five steps
    for m, g in zip(mats, got):
        assert g.shape == m.shape
        assert torch.equal(g, _zeropower_via_newtonschulz(m, coeffs, 5, 1e-7))
    with pytest.raises(ValueError, match="2-D"):
        orthogonalize_many([torch.randn(4)], coeffs, 5, 1e-7, torch.float32)
    assert orthogonalize_many([], coeffs, 5, 1e-7, torch.float32) == []


def test_newton_schulz_stacks_are_bounded_in_size(monkeypatch):
    import londonlm.training.step.optim as optim

    stacked = []
    real_stack = torch.stack
    monkeypatch.setattr(optim.torch, "stack", lambda ts, *a, **k: stacked.append(len(ts)) or real_stack(ts, *a, **k))
    monkeypatch.setattr(optim, "STACK_ELEMENTS", 2 * 16 * 48)
    mats = [torch.randn(16, 48) for _ in range(5)]
    got = optim.orthogonalize_many(mats, (3.4445, -4.7750, 2.0315), 5, 1e-7, torch.float32)
    assert stacked == [2, 2, 1]
    for m, g in zip(mats, got):
        assert torch.allclose(g, optim.orthogonalize(m, (3.4445, -4.7750, 2.0315), 5, 1e-7, torch.float32))


def test_newton_schulz_runs_in_bf16_only_where_bf16_is_the_faster(monkeypatch):
    patch_core(monkeypatch, "cpu_has_fast_bf16", lambda: False)
    assert fast_ns_dtype(torch.device("cpu")) == torch.float32
    patch_core(monkeypatch, "cpu_has_fast_bf16", lambda: True)
    assert fast_ns_dtype(torch.device("cpu")) == torch.bfloat16
    assert fast_ns_dtype(torch.device("cuda")) == torch.bfloat16


def test_options_carry_the_adamw_settings_over():
    args = micro_training_args("/tmp/unused", learning_rate=1e-3, weight_decay=0.05, adam_beta2=0.9)
    o = muon_options_from_args(args)
    assert (o.lr, o.weight_decay, o.betas) == (1e-3, 0.05, (0.9, 0.9))


def test_a_foreign_optimizer_state_is_refused_clearly():
    model = micro_gpt2()
    opt = build_muon_adamw(model, MuonOptions(lr=0.01))
    adamw_state = torch.optim.AdamW(model.parameters()).state_dict()
    with pytest.raises(LondonLMError, match="same --optim"):
        opt.load_state_dict(adamw_state)


def _train(out, resume=None, steps=8):
    """Micro GPT-2 through the Trainer with Muon+AdamW and a WSD schedule; losses per step."""
    args = micro_training_args(out, max_steps=steps, save_strategy="steps", save_steps=4,
                               learning_rate=0.02)
    trainer = RunTrainer(model=micro_gpt2(seed=1), args=args, train_dataset=micro_lm_dataset(64),
                         optimizer_builder=lambda m: build_muon_adamw(m, muon_options_from_args(args)),
                         schedule=WarmupStableDecay(2, steps, decay_fraction=0.5, min_lr_ratio=0.1))
    trainer.train(resume_from_checkpoint=resume)
    opt = trainer.optimizer.optimizer  # accelerate's wrapper around ours
    assert isinstance(opt, MuonAdamW)
    # the schedule reached both inner optimizers (loading a state replaces their group dicts)
    assert [g["lr"] for g in opt.muon.param_groups + opt.adamw.param_groups] == [pytest.approx(0.002)] * 3
    return {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}


def test_muon_run_resumes_exactly(tmp_path):
    whole = _train(tmp_path / "a")
    assert (tmp_path / "a" / "checkpoint-4" / "optimizer.pt").exists()
    resumed = _train(tmp_path / "a", resume=str(tmp_path / "a" / "checkpoint-4"))
    assert sorted(resumed) == list(range(1, 9))  # 1-4 from the checkpoint's trainer_state
    for step in (5, 6, 7, 8):
        assert resumed[step] == pytest.approx(whole[step], abs=1e-5)
    # and the optimizer did something: the loss moved
    assert whole[8] < whole[1]


def _stepped(seed=1):
    """A micro GPT-2 and its Muon+AdamW after two steps (state in both halves)."""
    model = micro_gpt2(seed=seed, n_layer=2)
    opt = build_muon_adamw(model, MuonOptions(lr=0.01, ns_dtype=torch.float32))
    for _ in range(2):
        _backward(model)
        opt.step()
        opt.zero_grad()
    return model, opt


def _backward(model, seed=2):
    batch = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(seed))
    model(input_ids=batch, labels=batch).loss.backward()


def _step_both(pairs):
    """One more step of each (model, optimizer) on the same batch; the models' parameters."""
    for model, opt in pairs:
        _backward(model, seed=3)
        opt.step()
    return [[p.detach().clone() for p in model.parameters()] for model, _ in pairs]


def _fresh_copy(model):
    copy = micro_gpt2(seed=9, n_layer=2)
    copy.load_state_dict(model.state_dict())
    return copy, build_muon_adamw(copy, MuonOptions(lr=0.5, ns_dtype=torch.float32))


def test_state_dict_is_torchs_standard_format_and_round_trips_through_torch_save(tmp_path):
    model, opt = _stepped()
    sd = opt.state_dict()
    # what torch's own Optimizer.state_dict makes of the combined groups, Muon's first
    plain = torch.optim.Optimizer.state_dict(opt)
    assert set(sd) == {"state", "param_groups"} and sd["param_groups"] == plain["param_groups"]
    assert sorted(sd["state"]) == sorted(plain["state"]) == list(range(len(list(model.parameters()))))
    assert set(sd["state"][0]) == {"momentum_buffer"} and "exp_avg" in sd["state"][len(sd["state"]) - 1]
    torch.save(sd, tmp_path / "optimizer.pt")
    copy, fresh = _fresh_copy(model)
    fresh.load_state_dict(torch.load(tmp_path / "optimizer.pt", weights_only=True))
    assert [g["lr"] for g in fresh.param_groups] == [0.01] * 3  # the saved groups, re-linked
    assert fresh.param_groups[0] is fresh.muon.param_groups[0]
    a, b = _step_both([(model, opt), (copy, fresh)])
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_a_state_saved_as_the_old_muon_adamw_pair_still_loads(tmp_path):
    model, opt = _stepped()
    # saved and read back: a loaded state dict's tensors would be the live ones
    torch.save({"muon": opt.muon.state_dict(), "adamw": opt.adamw.state_dict()}, tmp_path / "old.pt")
    copy, fresh = _fresh_copy(model)
    fresh.load_state_dict(torch.load(tmp_path / "old.pt", weights_only=True))
    a, b = _step_both([(model, opt), (copy, fresh)])
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_a_same_shaped_state_of_another_optimizer_is_refused_too():
    model, opt = _stepped()
    # AdamW over the same three groups: the sizes match, Muon's settings are missing
    groups = [{"params": list(g["params"])} for g in opt.param_groups]
    foreign = torch.optim.AdamW(groups).state_dict()
    with pytest.raises(LondonLMError, match="same --optim"):
        opt.load_state_dict(foreign)
    with pytest.raises(LondonLMError, match="same --optim"):
        opt.load_state_dict({"state": {}})


def test_newton_schulz_dtype_follows_the_device_the_parameters_end_up_on(monkeypatch):
    import londonlm.training.step.optim as optim

    # FSDP2: the Trainer builds the optimizer on CPU, accelerate repoints its groups to the
    # parameters on the GPU (here: meta stands for the GPU)
    monkeypatch.setattr(optim, "fast_ns_dtype",
                        lambda d: torch.bfloat16 if d.type == "meta" else torch.float32)
    opt = build_muon_adamw(micro_gpt2(), MuonOptions(lr=0.01))
    assert opt.muon.ns_dtype == torch.float32
    group = opt.muon.param_groups[0]
    group["params"] = [p.to("meta") for p in group["params"]]
    assert opt.muon.ns_dtype == torch.bfloat16
    assert Muon([torch.nn.Parameter(torch.ones(2, 2))], ns_dtype=torch.float16).ns_dtype == torch.float16


def test_compiled_newton_schulz_gives_the_eager_iteration_and_falls_back_where_compile_fails(monkeypatch):
    """On CUDA Muon runs its Newton-Schulz stacks through torch.compile; compiled (here by
    inductor's CPU backend) it gives the eager iteration's numbers, in fp32 to rounding; where
    compiling fails, one line says so and every later step runs eager."""
    from londonlm.training.step import optim
    from londonlm.training.step.optim import CompiledNewtonSchulz, newton_schulz, orthogonalize_many

    torch.manual_seed(0)
    mats = [torch.randn(16, 48), torch.randn(48, 16) * 10, torch.randn(8, 8)]
    coeffs = (3.4445, -4.7750, 2.0315)
    eager = orthogonalize_many(mats, coeffs, 5, 1e-7, torch.float32)
    torch._dynamo.reset()
    compiled = CompiledNewtonSchulz(log=lambda m: None)
    got = orthogonalize_many(mats, coeffs, 5, 1e-7, torch.float32, compiled)
    assert compiled.failed is None and compiled.fn is not None
    for e, g in zip(eager, got):
        assert torch.allclose(e, g, atol=1e-5, rtol=1e-5)
    said = []
    broken = CompiledNewtonSchulz(log=said.append)

    def no_compiler(*a, **k):
        raise RuntimeError("no C compiler")
    monkeypatch.setattr(optim.torch, "compile", no_compiler)
    got = orthogonalize_many(mats, coeffs, 5, 1e-7, torch.float32, broken)
    assert broken.failed.startswith("RuntimeError: no C compiler") and len(said) == 1
    assert all(torch.equal(e, g) for e, g in zip(eager, got))
    orthogonalize_many(mats, coeffs, 5, 1e-7, torch.float32, broken)
    assert len(said) == 1  # said once
    # the optimizer's choice: compiled on CUDA by default, eager on the CPU, as asked otherwise
    p = torch.nn.Parameter(torch.randn(8, 16))
    assert Muon([p])._iterate() is newton_schulz
    assert isinstance(Muon([p], ns_compiled=True)._iterate(), CompiledNewtonSchulz)
