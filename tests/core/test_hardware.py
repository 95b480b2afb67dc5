"""Device facts: the heap setting for CPU training, precision choice, peak table."""
import platform

import pytest

from londonlm.core.hardware import choose_precision, keep_freed_memory_in_heap, peak_flops


def test_keep_freed_memory_in_heap_applies_on_glibc_linux():
    ok = keep_freed_memory_in_heap()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert ok is True
    else:
        assert ok is False


def test_precision_explicit_flags_win_and_peak_table_is_absent_on_cpu():
    assert choose_precision(explicit_bf16=True) == {"bf16": True, "fp16": False}
    assert choose_precision(explicit_fp16=True) == {"bf16": False, "fp16": True}
    assert peak_flops(None) is None and peak_flops("NVIDIA H100 80GB HBM3") == 989e12


ZEN4 = "vendor_id\t: AuthenticAMD\ncpu family\t: 25\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
XEON_AMX = "vendor_id\t: GenuineIntel\ncpu family\t: 6\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n"
# family 6 model 207 in a VM that does not expose AMX: bf16 GEMMs at half the fp32 rate
XEON_NO_AMX = "vendor_id\t: GenuineIntel\ncpu family\t: 6\nflags\t\t: fpu avx512f avx512_bf16 avx512_fp16\n"
ZEN1 = "vendor_id\t: AuthenticAMD\ncpu family\t: 23\nflags\t\t: fpu avx2\n"


@pytest.mark.parametrize("cpuinfo, native, fast", [(ZEN4, True, True), (XEON_AMX, True, True),
                                                   (XEON_NO_AMX, True, False), (ZEN1, False, False)],
                         ids=["zen4", "xeon-amx", "xeon-avx512-bf16-only", "zen1"])
def test_bf16_is_taken_where_it_outruns_fp32_not_wherever_it_is_native(monkeypatch, cpuinfo, native, fast):
    """The probe times bf16 wherever the CPU has the instructions; the fixed rules (and Muon's
    Newton-Schulz, training's default precision) take it only where it is the faster."""
    from londonlm.core import hardware
    from londonlm.training.speed.settings import fixed_rules, machine_bf16

    monkeypatch.setattr(hardware, "_cpuinfo", lambda: cpuinfo)
    assert (hardware.cpu_has_native_bf16(), hardware.cpu_has_fast_bf16()) == (native, fast)
    assert choose_precision() == {"bf16": fast, "fp16": False}
    cpu = {"device": "cpu"}
    bf16 = machine_bf16(cpu)
    assert (bf16.cpu_native, bf16.cpu_fast) == (native, fast)
    assert fixed_rules(cpu, bf16).precision == ("bf16" if fast else "fp32")


@pytest.mark.parametrize("name, flops", [
    ("NVIDIA L4", 121e12),
    ("NVIDIA L40", 181e12),            # once matched "L4" (121e12)
    ("NVIDIA L40S", 362e12),
    ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA H100 80GB HBM3", 989e12),
    ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA GH200 480GB", 989e12),
    ("NVIDIA H200", 989e12),
    ("NVIDIA A100-SXM4-80GB", 312e12),
    ("NVIDIA A100-PCIE-40GB", 312e12),
    ("NVIDIA A100 80GB PCIe", 312e12),
    ("NVIDIA A10", 125e12),
    ("NVIDIA A10G", 70e12),
    ("NVIDIA GeForce RTX 4090", 165e12),
])
def test_peak_table_most_specific_whole_word_name_wins(name, flops):
    assert peak_flops(name) == flops
    assert peak_flops(name.lower()) == flops


@pytest.mark.parametrize("name", ["NVIDIA L400", "NVIDIA A1000", "NVIDIA RTX A4000", "Tesla T4"])
def test_peak_table_unknown_gpus_have_no_peak(name):
    assert peak_flops(name) is None


# --------------------------------------------------------------------------- GPUs torch cannot use

from conftest import fake_nvidia_smi  # noqa: E402
from londonlm.core.hardware import GpuListing, gpu_problem, listed_gpus  # noqa: E402


def test_listed_gpus_from_nvidia_smi_and_cuda_visible_devices(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{fake_nvidia_smi(tmp_path, 2)}:/usr/bin:/bin")
    assert listed_gpus({}) == GpuListing(2, "nvidia-smi", "535.104.05")
    assert listed_gpus({"CUDA_VISIBLE_DEVICES": "1"}) == GpuListing(1, "CUDA_VISIBLE_DEVICES", "535.104.05")
    assert listed_gpus({"CUDA_VISIBLE_DEVICES": ""}).count == 0
    assert listed_gpus({"CUDA_VISIBLE_DEVICES": "-1"}).count == 0
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert listed_gpus({}) == GpuListing(0, "nvidia-smi", None)


def test_a_cpu_only_torch_on_a_gpu_machine_names_the_driver_and_the_wheel_index():
    msg = gpu_problem(GpuListing(1, "nvidia-smi", "535.104.05"), "2.13.0+cpu", None, False)
    assert "1 GPU (NVIDIA driver 535.104.05)" in msg and "CPU-only build" in msg
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 bash install.sh" in msg
    assert "CUDA_VISIBLE_DEVICES=" in msg and "\n" not in msg


def test_a_cuda_13_torch_on_an_older_driver_says_which_driver_it_needs():
    msg = gpu_problem(GpuListing(8, "nvidia-smi", "550.54.15"), "2.13.0", "13.0", False)
    assert "built for CUDA 13.0, which needs NVIDIA driver >= 580" in msg
    assert "whl/cu126" in msg
    new_driver = gpu_problem(GpuListing(8, "nvidia-smi", "580.65.06"), "2.13.0", "13.0", False)
    assert "cannot reach them" in new_driver and "--gpus" in new_driver
    too_old = gpu_problem(GpuListing(1, "nvidia-smi", "470.82.01"), "2.13.0+cpu", None, False)
    assert "upgrade the NVIDIA driver to >= 525" in too_old


def test_without_nvidia_smi_the_fix_names_both_indexes():
    msg = gpu_problem(GpuListing(2, "CUDA_VISIBLE_DEVICES", None), "2.13.0+cpu", None, False)
    assert "CUDA_VISIBLE_DEVICES shows 2 GPUs but" in msg and "no nvidia-smi here" in msg
    assert "whl/cu126 bash install.sh for drivers >= 525" in msg and "cu130 for >= 580" in msg


def test_no_problem_when_torch_uses_the_gpus_or_none_are_shown():
    assert gpu_problem(GpuListing(1, "nvidia-smi", "580.1"), "2.13.0", "13.0", True) is None
    assert gpu_problem(GpuListing(0, "nvidia-smi"), "2.13.0+cpu", None, False) is None


def test_return_freed_memory_gives_a_kept_heap_back(tmp_path):
    """With freed memory kept in the heap (CPU training), a burst stays resident until
    return_freed_memory (after the speed probe) gives it back. In a process of its own: the
    heap settings are process-wide."""
    import subprocess
    import sys

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    code = """
from londonlm.core.hardware import keep_freed_memory_in_heap, return_freed_memory
def rss():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS')) // 1024
keep_freed_memory_in_heap()
base = rss()
blocks = [bytearray(4 << 20) for _ in range(75)]
del blocks
kept = rss()
return_freed_memory()
print(base, kept, rss())
"""
    base, kept, after = map(int, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                check=True).stdout.split())
    assert kept - base > 250 and after - base < 50, (base, kept, after)


def test_large_blocks_go_back_to_the_system_when_freed():
    """A streaming stage's large blocks (a book's text) are mapped and given back when freed;
    with glibc's default a freed large block raises the threshold and later ones leave holes
    in the heap. In processes of their own: the setting is process-wide."""
    import subprocess
    import sys

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    code = """
import sys
def rss():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS')) // 1024
if sys.argv[1] == "fixed":
    from londonlm.core.hardware import large_blocks_from_the_system
    assert large_blocks_from_the_system()
big = bytearray(8 << 20); del big          # with glibc's default, the threshold rises to 8 MiB
base = rss()
blocks = [bytearray((1 << 20) + i * 4096) for i in range(120)]
keep = blocks[1::2]; del blocks            # every other block freed
print(rss() - base)
"""
    grew = {m: int(subprocess.run([sys.executable, "-c", code, m], capture_output=True, text=True,
                                  check=True).stdout) for m in ("default", "fixed")}
    assert grew["fixed"] < 90 < grew["default"], grew  # 60 blocks of ~1.1 MiB kept either way


# --------------------------------------------------------------------------- nvidia-smi misbehaving

from conftest import NVIDIA_SMI_FAILS, NVIDIA_SMI_GARBLED, NVIDIA_SMI_HANGS, broken_nvidia_smi  # noqa: E402


def test_a_hung_nvidia_smi_is_reported_after_the_timeout(tmp_path, monkeypatch):
    """A stuck driver hangs nvidia-smi: it is given LONDONLM_NVIDIA_SMI_TIMEOUT_S (30 s by
    default), then killed, and the listing says so; it is not a machine without GPUs."""
    import time

    monkeypatch.setenv("PATH", f"{broken_nvidia_smi(tmp_path, NVIDIA_SMI_HANGS)}:/usr/bin:/bin")
    started = time.monotonic()
    listing = listed_gpus({"LONDONLM_NVIDIA_SMI_TIMEOUT_S": "1"})
    assert time.monotonic() - started < 5
    assert listing.count == 0 and listing.nvidia_smi_problem == "`nvidia-smi --list-gpus` did not answer within 1 s"
    msg = gpu_problem(listing, "2.13.0+cpu", None, False)
    assert msg.startswith("`nvidia-smi --list-gpus` did not answer within 1 s, so whether this machine has GPUs "
                          "is unknown") and "CUDA_VISIBLE_DEVICES=" in msg and "\n" not in msg
    assert gpu_problem(listing, "2.13.0", "12.6", True) is None  # torch reaches the GPUs: nothing to say


def test_a_bad_nvidia_smi_timeout_is_refused():
    from londonlm.core.hardware import GpuUnusable, nvidia_smi_timeout

    assert nvidia_smi_timeout({}) == 30 and nvidia_smi_timeout({"LONDONLM_NVIDIA_SMI_TIMEOUT_S": "2"}) == 2
    for bad in ("0", "-1", "1.5", "x"):
        with pytest.raises(GpuUnusable, match="whole seconds"):
            nvidia_smi_timeout({"LONDONLM_NVIDIA_SMI_TIMEOUT_S": bad})


def test_a_failing_nvidia_smi_is_quoted_not_taken_for_no_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{broken_nvidia_smi(tmp_path, NVIDIA_SMI_FAILS)}:/usr/bin:/bin")
    listing = listed_gpus({})
    assert listing.count == 0 and listing.nvidia_smi_problem.startswith(
        "`nvidia-smi --list-gpus` failed (exit 9): 'NVIDIA-SMI has failed because it couldn't communicate")
    msg = gpu_problem(listing, "2.13.0+cpu", None, False)
    assert "failed (exit 9): 'NVIDIA-SMI has failed" in msg and "training would silently run on the CPU" in msg
    assert "--use_cpu true" in msg and "\n" not in msg
    import torch

    from londonlm.core.hardware import GpuUnusable, require_usable_gpus

    if not torch.cuda.is_available():  # every training script and the launcher's torchrun wrapper stop
        with pytest.raises(GpuUnusable, match="NVIDIA-SMI has failed"):
            require_usable_gpus({})


def test_garbled_nvidia_smi_output_is_quoted_as_it_was_seen(tmp_path, monkeypatch):
    """Once "nvidia-smi shows 1 GPU ... (no nvidia-smi here to read its version)": now the
    listing's line must be a GPU line, and what nvidia-smi printed instead is quoted."""
    monkeypatch.setenv("PATH", f"{broken_nvidia_smi(tmp_path, NVIDIA_SMI_GARBLED)}:/usr/bin:/bin")
    listing = listed_gpus({})
    assert listing.count == 0
    assert listing.nvidia_smi_problem == "`nvidia-smi --list-gpus` printed 'GPU \ufffdgarbage ~~', not a list of GPUs"
    assert "no nvidia-smi here" not in gpu_problem(listing, "2.13.0+cpu", None, False)
    # the GPUs listed, the driver's version garbled: the fix says what the version query printed
    listing = listed_gpus({"CUDA_VISIBLE_DEVICES": "0"})
    assert listing.count == 1 and listing.driver is None
    msg = gpu_problem(listing, "2.13.0+cpu", None, False)
    assert "(`nvidia-smi --query-gpu=driver_version` printed 'GPU \ufffdgarbage ~~', not a driver version)" in msg
    assert "no nvidia-smi here" not in msg
