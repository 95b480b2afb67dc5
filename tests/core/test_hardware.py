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
