"""Device facts: the heap setting for CPU training, precision choice, peak table."""
import platform

from londonlm.hardware import choose_precision, keep_freed_memory_in_heap, peak_flops


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
