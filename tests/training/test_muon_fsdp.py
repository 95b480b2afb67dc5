"""--optim muon under FSDP2: Newton-Schulz on whole matrices from DTensor shards, the optimizer
state through torch.distributed.checkpoint, and training that stops and resumes exactly.

The fast tests run the pieces in-process (one gloo rank) or with two spawned gloo ranks; the
``slow`` ones run real torchrun jobs of the micro preset (~40 s per job on 2 cores)."""
from __future__ import annotations

import shutil

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

from conftest import micro_gpt2
from londonlm.training.step.optim import MuonOptions, build_muon_adamw, orthogonalize_many
from test_distributed import losses, ok, run_dir, torchrun

COEFFS = (3.4445, -4.7750, 2.0315)


@pytest.fixture
def root(micro_root, tmp_path):
    dst = tmp_path / "root"
    shutil.copytree(micro_root, dst)
    return dst


def _matrices():
    """Wide and tall of one shape (one stack), norms 100-fold apart, a square one, and one
    whose rows do not split evenly over two ranks."""
    torch.manual_seed(0)
    return [torch.randn(16, 48), torch.randn(48, 16) * 100, torch.randn(16, 48) / 100,
            torch.randn(8, 8), torch.randn(5, 12)]


def _check_shards_make_the_whole_matrix_iteration(mesh):
    mats = _matrices()
    for dtype in (torch.float32, torch.bfloat16):
        whole = orthogonalize_many(mats, COEFFS, 5, 1e-7, dtype)
        shards = [distribute_tensor(m, mesh, [Shard(0)]) for m in mats]
        got = orthogonalize_many(shards, COEFFS, 5, 1e-7, dtype)
        for g, w in zip(got, whole):
            # laid out as the update was (tall ones too), and the very numbers of the whole
            assert isinstance(g, DTensor) and g.placements == (Shard(0),)
            assert torch.equal(g.full_tensor(), w)


def test_dtensor_updates_on_one_rank_are_the_plain_path(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        _check_shards_make_the_whole_matrix_iteration(init_device_mesh("cpu", (1,)))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("ns_dtype", [torch.float32, torch.bfloat16])
def test_muon_steps_sharded_parameters_without_an_out_of_place_foreach_lerp(tmp_path, monkeypatch, ns_dtype):
    """FSDP2 + Muon with torch 2.11 (the first GPU run, H200) stopped at its first step: that
    DTensor has no sharding rule for the out-of-place ``torch._foreach_lerp`` (Nesterov's update).
    Here the rule is taken away as 2.11 lacks it; the sharded steps still equal the plain ones."""
    real = torch._foreach_lerp

    def as_in_torch_2_11(tensors, *args, **kwargs):
        if any(isinstance(t, DTensor) for t in tensors):
            raise NotImplementedError("Operator aten._foreach_lerp.Scalar does not have a sharding strategy registered.")
        return real(tensors, *args, **kwargs)

    monkeypatch.setattr(torch, "_foreach_lerp", as_in_torch_2_11)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        plain, sharded = micro_gpt2(seed=1, n_layer=2), _sharded_gpt2(init_device_mesh("cpu", (1,)))
        opts = MuonOptions(lr=0.02, ns_dtype=ns_dtype)
        o_plain, o_sharded = build_muon_adamw(plain, opts), build_muon_adamw(sharded, opts)
        batch = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(5))
        for _ in range(2):
            for model, opt in ((plain, o_plain), (sharded, o_sharded)):
                model(input_ids=batch, labels=batch).loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
        for p, q in zip(plain.parameters(), sharded.parameters()):
            torch.testing.assert_close(q.full_tensor(), p.detach(), rtol=0, atol=1e-6)
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------- fast: two spawned gloo ranks, no Trainer

def _rank_worker(rank, init_file, ckpt):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        mesh = init_device_mesh("cpu", (2,))
        _check_shards_make_the_whole_matrix_iteration(mesh)
        sharded, opt = _fsdp_steps_equal_plain_steps(mesh, rank)
        _checkpoint_round_trip(sharded, opt, ckpt)
    finally:
        dist.destroy_process_group()


def _sharded_gpt2(mesh):
    model = micro_gpt2(seed=1, n_layer=2)
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def _fsdp_steps_equal_plain_steps(mesh, rank):
    """Three Muon+AdamW steps of an FSDP2 model (each rank half the batch) against the plain
    model on the whole batch: the same parameters, so Muon saw whole matrices."""
    plain, sharded = micro_gpt2(seed=1, n_layer=2), _sharded_gpt2(mesh)
    opts = MuonOptions(lr=0.02, ns_dtype=torch.float32)
    o_plain, o_sharded = build_muon_adamw(plain, opts), build_muon_adamw(sharded, opts)
    batch = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(5))
    half = batch[2 * rank:2 * rank + 2]
    for _ in range(3):
        plain(input_ids=batch, labels=batch).loss.backward()
        sharded(input_ids=half, labels=half).loss.backward()
        for opt in (o_plain, o_sharded):
            opt.step()
            opt.zero_grad(set_to_none=True)
    hidden = sharded.transformer.h[0].attn.c_attn.weight
    assert isinstance(o_sharded.muon.state[hidden]["momentum_buffer"], DTensor)
    muon = {id(p) for g in o_plain.muon.param_groups for p in g["params"]}
    for (name, p), (_, q) in zip(plain.named_parameters(), sharded.named_parameters()):
        # Muon's matrices within 1e-6 (measured 1.3e-7); 1e-5 for AdamW's, where the attention
        # key bias (no effect on the loss, gradient ~0) turns the grads' rounding into 3e-6
        torch.testing.assert_close(q.full_tensor(), p.detach(), rtol=0,
                                   atol=1e-6 if id(p) in muon else 1e-5,
                                   msg=lambda m, name=name: f"{name}: {m}")
    return sharded, o_sharded


def _checkpoint_round_trip(model, opt, ckpt):
    """The optimizer through torch.distributed.checkpoint as accelerate saves and loads it
    under FSDP2: loading first steps the fresh optimizer with zero grads at lr 0."""
    dcp.save({"optimizer": get_optimizer_state_dict(model, opt)}, checkpoint_id=ckpt)
    before = [p.detach().to_local().clone() for p in model.parameters()]
    fresh = build_muon_adamw(model, MuonOptions(lr=0.5, ns_dtype=torch.float32))
    loaded = {"optimizer": get_optimizer_state_dict(model, fresh)}
    dcp.load(loaded, checkpoint_id=ckpt)
    set_optimizer_state_dict(model, fresh, loaded["optimizer"])
    assert all(torch.equal(b, p.to_local()) for b, p in zip(before, model.parameters()))
    assert [g["lr"] for g in fresh.param_groups] == [0.02] * 3
    assert fresh.param_groups[0] is fresh.muon.param_groups[0]
    for p in model.parameters():
        saved, got = opt.state[p], fresh.state[p]
        assert set(saved) == set(got)
        for key in saved:
            a, b = saved[key], got[key]
            assert torch.equal(a.to_local() if isinstance(a, DTensor) else a,
                               b.to_local() if isinstance(b, DTensor) else b), key


@pytest.mark.slow  # two ranks, ~34 s on 2 cores
def test_two_ranks_shard_muon_as_whole_matrices_and_checkpoint_it(tmp_path):
    mp.start_processes(_rank_worker, args=(str(tmp_path / "init"), str(tmp_path / "ckpt")),
                       nprocs=2, start_method="spawn")


# --------------------------------------------------------------------------- slow: torchrun jobs

MUON_FSDP = ["--max_steps", "4", "--save_steps", "2", "--optim", "muon", "--fsdp", "full_shard auto_wrap"]


@pytest.mark.slow
def test_fsdp_muon_run_stopped_then_resumed_is_the_whole_run_and_ddps(root):
    ok(torchrun(root, 2, *MUON_FSDP, "--run_name_dir", "split", "--stop_after_steps", "2"))
    assert (run_dir(root, "split") / "checkpoint-2" / "optimizer_0").is_dir()
    out = ok(torchrun(root, 2, *MUON_FSDP, "--run_name_dir", "split"))
    assert "resuming from" in out and "checkpoint-2" in out
    ok(torchrun(root, 2, *MUON_FSDP, "--run_name_dir", "whole"))
    ok(torchrun(root, 2, *MUON_FSDP[:-2], "--run_name_dir", "ddp"))  # no --fsdp
    split, whole, ddp = (losses(run_dir(root, d) / "checkpoint-4") for d in ("split", "whole", "ddp"))
    assert [s for s, _ in split] == [s for s, _ in whole] == [1, 2, 3, 4]
    assert max(abs(x - y) for (_, x), (_, y) in zip(split, whole)) <= 1e-5, (split, whole)
    # DDP's Muon orthogonalises whole matrices: so does FSDP's
    assert max(abs(x - y) for (_, x), (_, y) in zip(whole, ddp)) <= 1e-4, (whole, ddp)


@pytest.mark.slow
def test_fsdp_muon_in_bf16_stops_and_resumes_exactly(root):
    args = [*MUON_FSDP, "--bf16", "true"]
    ok(torchrun(root, 2, *args, "--run_name_dir", "split", "--stop_after_steps", "2"))
    out = ok(torchrun(root, 2, *args, "--run_name_dir", "split"))
    assert "resuming from" in out and "checkpoint-2" in out
    ok(torchrun(root, 2, *args, "--run_name_dir", "whole"))
    split, whole = (losses(run_dir(root, d) / "checkpoint-4") for d in ("split", "whole"))
    assert [s for s, _ in split] == [1, 2, 3, 4]
    assert max(abs(x - y) for (_, x), (_, y) in zip(split, whole)) <= 1e-5, (split, whole)
