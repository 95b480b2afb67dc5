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

from conftest import (NVIDIA_SMI_FAILS, NVIDIA_SMI_GARBLED, NVIDIA_SMI_HANGS, broken_nvidia_smi,
                      fake_nvidia_smi)

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


def _refused(repo: Path, *args, env_extra=None):
    """The launcher's run that must end in one error line (exit 2), nothing launched."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "CUDA_VISIBLE_DEVICES")}
    env.update(PATH=f"{repo / 'bin'}:/usr/bin:/bin", LONDONLM_ROOT=str(repo), **(env_extra or {}))
    out = subprocess.run(["bash", str(repo / "launch_training.sh"), *args], env=env, text=True,
                         capture_output=True, timeout=60)
    assert out.returncode == 2 and "STUB" not in out.stdout, out.stdout + out.stderr
    (line,) = out.stderr.splitlines()
    assert line.startswith("error: ")
    return line


CPU_ON_PURPOSE = "To train on the CPU on purpose, set CUDA_VISIBLE_DEVICES= (empty) or pass --use_cpu true"


def test_a_hung_nvidia_smi_is_one_error_line_after_the_timeout(repo_copy):
    """nvidia-smi hanging (a stuck driver) once hung the launcher forever: now it waits
    LONDONLM_NVIDIA_SMI_TIMEOUT_S (30 s by default, as the Python side), then stops."""
    import time

    broken_nvidia_smi(repo_copy / "bin", NVIDIA_SMI_HANGS)
    started = time.monotonic()
    line = _refused(repo_copy, "micro", env_extra={"LONDONLM_NVIDIA_SMI_TIMEOUT_S": "1"})
    assert time.monotonic() - started < 5
    assert line.startswith("error: `nvidia-smi --list-gpus` did not answer within 1 s, so whether this machine "
                           "has GPUs is unknown") and line.endswith(CPU_ON_PURPOSE)
    bad = _refused(repo_copy, "micro", env_extra={"LONDONLM_NVIDIA_SMI_TIMEOUT_S": "soon"})
    assert bad == "error: LONDONLM_NVIDIA_SMI_TIMEOUT_S must be whole seconds >= 1, got 'soon'"


def test_a_failing_nvidia_smi_is_one_error_line_quoting_it_unless_the_cpu_is_asked_for(repo_copy):
    """nvidia-smi failing (no driver loaded) once meant "No GPU found: training on CPU", its own
    message thrown away: the README promises training never falls back to the CPU silently."""
    broken_nvidia_smi(repo_copy / "bin", NVIDIA_SMI_FAILS)
    line = _refused(repo_copy, "micro")
    assert line.startswith("error: `nvidia-smi --list-gpus` failed (exit 9): 'NVIDIA-SMI has failed because it "
                           "couldn't communicate with the NVIDIA driver.") and line.endswith(CPU_ON_PURPOSE)
    out = _run(repo_copy, "launch_training.sh", "micro", "--use_cpu", "true")
    assert out.startswith("`nvidia-smi --list-gpus` failed (exit 9): 'NVIDIA-SMI has failed")
    assert "training on the CPU, as --use_cpu asks" in out and "train_model_slm.py --preset micro --use_cpu true" in out
    out = _run(repo_copy, "launch_training.sh", "micro", env_extra={"CUDA_VISIBLE_DEVICES": ""})
    assert "training on CPU" in out and "nvidia-smi" not in out  # hidden GPUs: nvidia-smi is not asked


def test_garbled_nvidia_smi_output_is_one_error_line_saying_what_it_printed(repo_copy):
    broken_nvidia_smi(repo_copy / "bin", NVIDIA_SMI_GARBLED)
    line = _refused(repo_copy, "micro")
    assert line.startswith("error: `nvidia-smi --list-gpus` printed 'GPU garbage ~~', not a list of GPUs, so "
                           "whether this machine has GPUs is unknown")


def test_stop_message_names_checkpoint_and_resume_command(tmp_path):
    from safetensors.torch import save_file
    import torch

    ck = tmp_path / "run" / "checkpoint-20"
    ck.mkdir(parents=True)
    (ck / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    save_file({"w": torch.zeros(2)}, str(ck / "model.safetensors"))
    (ck / "trainer_state.json").write_text(json.dumps({"global_step": 20}))
    for f in ("optimizer.pt", "scheduler.pt"):
        torch.save({}, ck / f)
    msg = stop_message(tmp_path / "run", int(signal.SIGTERM), "./launch_training.sh tiny")
    assert msg == (f"training stopped by SIGTERM; checkpoint saved in {ck}; "
                   "resume with: ./launch_training.sh tiny")
    empty = stop_message(tmp_path / "none", int(signal.SIGINT), "x")
    assert "SIGINT" in empty and "no valid checkpoint" in empty


def test_launcher_shares_cores_unless_omp_num_threads_is_set(monkeypatch):
    from londonlm.training import launch
    from londonlm.training.launch import threads_per_rank

    monkeypatch.setattr(launch, "usable_cores", lambda: 16)
    assert threads_per_rank(["--nproc_per_node=4", "x.py"], {}) == "4"
    assert threads_per_rank(["--nproc_per_node", "3", "x.py"], {}) == "5"
    assert threads_per_rank(["--nproc_per_node=4"], {"OMP_NUM_THREADS": "2"}) is None
    assert threads_per_rank(["--nproc_per_node=gpu"], {}) is None


def test_gpu_machine_with_cpu_only_torch_is_refused_before_any_rank_starts(micro_root, tmp_path):
    """The acceptance: a fake nvidia-smi listing one GPU, no CUDA_VISIBLE_DEVICES, this CPU-only
    torch: ./launch_training.sh micro --max_steps 2 exits 2 with one error line, no checkpoint."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this torch can use a GPU")
    root = tmp_path / "root"
    shutil.copytree(micro_root, root)
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "PYTHON")}
    env.update(PATH=f"{fake_nvidia_smi(tmp_path / 'bin', 1)}:{env['PATH']}", LONDONLM_ROOT=str(root),
               WANDB_MODE="disabled")
    out = subprocess.run(["bash", str(REPO / "launch_training.sh"), "micro", "--max_steps", "2"],
                         env=env, text=True, capture_output=True, timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: nvidia-smi shows 1 GPU"), out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert not list((root / "09_models" / "checkpoints").glob("*/checkpoint-*"))


def test_training_script_refuses_gpus_it_cannot_use_unless_the_cpu_is_asked_for(monkeypatch, tmp_path):
    """Run directly (no launcher), a training job stops at its flags, and every job's one
    TrainingArguments constructor refuses too; --use_cpu true is the way to the CPU on purpose."""
    import torch

    from londonlm.core import GpuUnusable
    from londonlm.training.flags import parse_train_flags
    from londonlm.training.job import make_training_arguments

    if torch.cuda.is_available():
        pytest.skip("this torch can use a GPU")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(GpuUnusable, match="CUDA_VISIBLE_DEVICES shows 1 GPU"):
        parse_train_flags(["--preset", "micro"])
    with pytest.raises(GpuUnusable):
        make_training_arguments({"output_dir": str(tmp_path)})
    assert parse_train_flags(["--preset", "micro", "--use_cpu", "true"]).trainer["use_cpu"] is True
    assert make_training_arguments({"output_dir": str(tmp_path), "use_cpu": True}).use_cpu
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert parse_train_flags(["--preset", "micro"]).trainer["use_cpu"] is True


def test_launcher_lets_cpu_on_purpose_through(monkeypatch):
    from londonlm.training.launch import cpu_on_purpose

    assert cpu_on_purpose(["--nproc_per_node=2", "x.py", "--use_cpu", "true"])
    assert cpu_on_purpose(["x.py", "--use_cpu=1"])
    assert not cpu_on_purpose(["x.py", "--use_cpu", "false"]) and not cpu_on_purpose(["x.py"])


def _launch(tmp_path, *torchrun_args, timeout=120):
    import sys

    return subprocess.run([sys.executable, "-m", "londonlm.training.launch", "--run_dir", str(tmp_path / "run"),
                           "--resume_hint", "AGAIN", "--", *torchrun_args], cwd=str(REPO), text=True,
                          capture_output=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _error_lines(out) -> list[str]:
    return [line for line in out.stderr.splitlines() if line.startswith("error:")]


def test_nodes_that_never_meet_end_in_one_line_naming_the_interface_variables(tmp_path):
    """A two-node job whose other node never comes: torchrun's rendezvous times out and the
    launcher says where the nodes were to meet and which variables pick the network interface."""
    from test_distributed import free_port

    script = tmp_path / "hi.py"
    script.write_text("print('hi')\n")
    port = free_port()
    out = _launch(tmp_path, "--nnodes=2", "--node_rank=0", "--nproc_per_node=1", "--master_addr=127.0.0.1",
                  f"--master_port={port}", "--rdzv_conf", "timeout=2", str(script))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    (line,) = _error_lines(out)
    assert "could not meet" in line and f"127.0.0.1:{port}" in line and "NNODES (2)" in line
    assert "GLOO_SOCKET_IFNAME" in line and "NCCL_SOCKET_IFNAME" in line


def test_a_failing_rank_ends_in_one_line_not_torchruns_traceback(tmp_path):
    from test_distributed import free_port

    script = tmp_path / "fail.py"
    script.write_text("import sys\nprint('error: a user error in the rank', file=sys.stderr)\nsys.exit(2)\n")
    out = _launch(tmp_path, "--nproc_per_node=1", f"--master_port={free_port()}", str(script))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert _error_lines(out) == ["error: a user error in the rank",
                                 "error: training failed on rank 0 (exit code 2); that rank's own error is above"]


def test_a_gloo_group_that_cannot_connect_names_the_interface_variable(monkeypatch):
    from londonlm.core import LondonLMError
    from londonlm.training import dist as ranks

    class Dist:
        DistError = RuntimeError

        def new_group(self, **kw):
            raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:144] connect: Connection refused")

    monkeypatch.setattr(ranks, "_dist", lambda: Dist())
    monkeypatch.setattr(ranks, "_groups", {})
    with pytest.raises(LondonLMError, match="GLOO_SOCKET_IFNAME") as e:
        ranks._group("control")
    assert "Connection refused" in str(e.value)
