"""launch_training.sh and resume_training.sh: interpreter choice, GPU count, Slurm, and the
torchrun wrapper's one-line preemption message. A stub interpreter prints its arguments, so
these tests check what would be launched without starting training."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from londonlm.training.launch import stop_message

from conftest import patch_core

REPO = Path(__file__).resolve().parents[2]
STUB = "#!/bin/sh\necho \"STUB $0 $*\"\n"


def _stub(path: Path, text: str = STUB) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def repo_copy(tmp_path):
    """The two shell scripts in a folder of their own, with a stub .venv interpreter and an
    empty PATH folder for fake nvidia-smi/scontrol."""
    for name in ("launch_training.sh", "resume_training.sh"):
        shutil.copy2(REPO / name, tmp_path / name)
    _stub(tmp_path / ".venv" / "bin" / "python")
    (tmp_path / "bin").mkdir()
    return tmp_path


def _run(repo: Path, *args, env_extra=None, drop=("PYTHON", "CUDA_VISIBLE_DEVICES")):
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("SLURM_")}
    env["PATH"] = f"{repo / 'bin'}:/usr/bin:/bin"
    env["LONDONLM_ROOT"] = str(repo)
    env.update(env_extra or {})
    out = subprocess.run(["bash", str(repo / args[0]), *args[1:]], env=env, text=True,
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _fake_gpus(repo: Path, n: int) -> None:
    lines = "".join(f"echo 'GPU {i}: NVIDIA H100 (UUID: GPU-{i})'\n" for i in range(n))
    _stub(repo / "bin" / "nvidia-smi", "#!/bin/sh\n" + lines)


def test_uses_project_venv_when_python_not_set(repo_copy):
    out = _run(repo_copy, "launch_training.sh", "micro", "--max_steps", "1")
    assert f"STUB {repo_copy}/.venv/bin/python" in out
    assert "04_training/train_model_slm.py --preset micro --max_steps 1" in out


def test_explicit_python_wins(repo_copy):
    other = _stub(repo_copy / "other" / "python")
    out = _run(repo_copy, "launch_training.sh", "micro", env_extra={"PYTHON": str(other)})
    assert f"STUB {other}" in out


def test_resume_lists_checkpoints_with_venv_python(repo_copy):
    out = _run(repo_copy, "resume_training.sh", "--preset", "micro")
    assert f"STUB {repo_copy}/.venv/bin/python" in out
    assert "test_checkpoint_slm.py --preset micro --list-checkpoints" in out


def test_all_listed_gpus_without_cuda_visible_devices(repo_copy):
    _fake_gpus(repo_copy, 4)
    out = _run(repo_copy, "launch_training.sh", "slm")
    assert "-m londonlm.training.launch" in out and "--nproc_per_node=4" in out


@pytest.mark.parametrize("visible,expect", [("0,1", "--nproc_per_node=2"), ("2", "--nproc_per_node=1")])
def test_cuda_visible_devices_is_honoured(repo_copy, visible, expect):
    _fake_gpus(repo_copy, 4)
    out = _run(repo_copy, "launch_training.sh", "slm", env_extra={"CUDA_VISIBLE_DEVICES": visible})
    assert expect in out


@pytest.mark.parametrize("visible", ["", "-1"])
def test_hidden_gpus_train_on_cpu(repo_copy, visible):
    _fake_gpus(repo_copy, 4)
    out = _run(repo_copy, "launch_training.sh", "micro", env_extra={"CUDA_VISIBLE_DEVICES": visible})
    assert "training on CPU" in out and "londonlm.training.launch" not in out


def test_cpu_ranks_on_request(repo_copy):
    out = _run(repo_copy, "launch_training.sh", "micro", env_extra={"NPROC_PER_NODE": "2"})
    assert "--nproc_per_node=2" in out and "--shutdown_timeout=300" in out


def test_slurm_allocation_sets_nodes_rank_and_master(repo_copy):
    _fake_gpus(repo_copy, 2)
    _stub(repo_copy / "bin" / "scontrol", "#!/bin/sh\necho gpu-node-07\necho gpu-node-08\n")
    out = _run(repo_copy, "launch_training.sh", "slm", env_extra={
        "SLURM_JOB_ID": "123", "SLURM_NNODES": "2", "SLURM_NODEID": "1",
        "SLURM_JOB_NODELIST": "gpu-node-[07-08]", "SHUTDOWN_GRACE": "120"})
    for want in ("--nnodes=2", "--node_rank=1", "--master_addr=gpu-node-07",
                 "--nproc_per_node=2", "--shutdown_timeout=120"):
        assert want in out, out


def test_stop_message_names_checkpoint_and_resume_command(tmp_path):
    from safetensors.torch import save_file
    import torch

    ck = tmp_path / "run" / "checkpoint-20"
    ck.mkdir(parents=True)
    (ck / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    save_file({"w": torch.zeros(2)}, str(ck / "model.safetensors"))
    (ck / "trainer_state.json").write_text(json.dumps({"global_step": 20}))
    for f in ("optimizer.pt", "scheduler.pt"):
        (ck / f).write_bytes(b"x")
    msg = stop_message(tmp_path / "run", int(signal.SIGTERM), "./launch_training.sh tiny")
    assert msg == (f"training stopped by SIGTERM; checkpoint saved in {ck}; "
                   "resume with: ./launch_training.sh tiny")
    empty = stop_message(tmp_path / "none", int(signal.SIGINT), "x")
    assert "SIGINT" in empty and "no valid checkpoint" in empty


def test_launcher_shares_cores_unless_omp_num_threads_is_set(monkeypatch):
    from londonlm.training.launch import threads_per_rank

    patch_core(monkeypatch, "usable_cores", lambda: 16)
    assert threads_per_rank(["--nproc_per_node=4", "x.py"], {}) == "4"
    assert threads_per_rank(["--nproc_per_node", "3", "x.py"], {}) == "5"
    assert threads_per_rank(["--nproc_per_node=4"], {"OMP_NUM_THREADS": "2"}) is None
    assert threads_per_rank(["--nproc_per_node=gpu"], {}) is None
