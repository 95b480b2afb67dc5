"""A GPU profile's kernels by name: where a training step's GPU time goes.

Under ``torch.compile`` the ops that launch kernels are mostly graph wrappers: one compiled graph
launches Inductor's GEMM templates, its fused norms, activations and loss pieces and its copies
alike, so charging kernels to their launching ops (:mod:`.profiling`'s op groups) lumps them
together. Kernel names are stable instead: cuBLAS's GEMMs are ``nvjet_*`` or
``sm90_xmma_gemm_*``, CUTLASS's ``cutlass*``, FlashAttention's ``flash_*``, the memory-efficient
kernel's ``fmha_*``, cuDNN's attention ``cudnn_*sdpa*``, fused AdamW's ``multi_tensor_apply_kernel``,
and what Inductor generates ``triton_poi_*`` / ``triton_red_*`` / ``triton_per_*`` (its GEMM
templates ``triton_tem_*``). Each kernel goes to a group by its name (:func:`kernel_group`), beside
the GPU's idle time (the wall time no kernel covers: the host's share, launches and syncs) and the
costliest kernels by name (:func:`breakdown`). Used by ``--profile_steps`` on a GPU and by the GPU
acceptance's throughput step (``benchmarks/gpu/kernels.py``); pure, tested on the real libraries'
kernel names.
"""
from __future__ import annotations

from typing import Iterable

# (group, substrings of a kernel's lower-cased name), first match wins: Inductor's kernels first (its
# GEMM templates, then the rest it generated, whatever aten ops they fuse: the split between what the
# compiler wrote and what libraries run is the point), attention before the library GEMMs (cuDNN's
# and FlashAttention's kernel names carry "sm90" and "cutlass" too)
KERNEL_GROUPS = (
    ("GEMM", ("triton_tem_",)),
    ("Inductor's fused kernels", ("triton_",)),
    ("attention", ("flash", "fmha", "sdpa", "attention")),
    ("GEMM", ("gemm", "nvjet", "cutlass", "xmma", "cublas", "splitk", "matmul")),
    ("optimizer", ("multi_tensor_apply", "adam")),
    ("communication", ("nccl",)),
    ("copies and fills", ("memcpy", "memset", "copy", "fill", "cat_")),
    ("softmax and loss (eager)", ("softmax", "cross_entropy", "nll_loss")),
    ("norms and elementwise (eager)", ("layer_norm", "elementwise", "vectorized", "reduce", "gelu", "dropout")),
)
OTHER = "other kernels"
GROUPS = tuple(dict.fromkeys(g for g, _ in KERNEL_GROUPS)) + (OTHER,)
TOP = 10  # the kernels listed by name, by their total time


def kernel_group(name: str) -> str:
    """The group of a GPU kernel named ``name`` (see :data:`KERNEL_GROUPS`)."""
    low = name.lower()
    for group, needles in KERNEL_GROUPS:
        if any(n in low for n in needles):
            return group
    return OTHER


def busy_us(intervals: Iterable[tuple[float, float]]) -> float:
    """Microseconds covered by at least one of the ``(start, end)`` intervals: kernels on two
    streams at once count once, so busy never exceeds the wall time."""
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


def breakdown(kernels: list[tuple[str, float, float]], wall_us: float, steps: int) -> dict:
    """Per-step figures of ``kernels`` (name, start µs, end µs) run in ``wall_us`` over ``steps``
    steps: each group's milliseconds and share of the step, the GPU's busy and idle time, and the
    :data:`TOP` kernels by time (how many times each ran a step)."""
    per = {g: 0.0 for g in GROUPS}
    by_name: dict[str, list[float]] = {}
    for name, s, e in kernels:
        per[kernel_group(name)] += e - s
        by_name.setdefault(name, []).append(e - s)
    busy = busy_us((s, e) for _, s, e in kernels)

    def ms(us: float) -> float:  # per step
        return round(us / 1e3 / steps, 3)

    def share(us: float) -> float:  # of the wall time
        return round(us / wall_us, 4) if wall_us else 0.0

    top = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:TOP]
    return {"steps": steps, "step_ms": ms(wall_us), "gpu_busy_ms": ms(busy), "gpu_idle_ms": ms(max(0.0, wall_us - busy)),
            "gpu_busy_share": share(busy), "kernels_per_step": round(len(kernels) / steps, 1),
            "groups": [{"group": g, "ms_per_step": ms(us), "share_of_step": share(us)} for g, us in per.items() if us],
            "top": [{"kernel": n if len(n) <= 90 else n[:87] + "...", "group": kernel_group(n),
                     "runs_per_step": round(len(d) / steps, 2), "ms_per_step": ms(sum(d)),
                     "share_of_step": share(sum(d))} for n, d in top]}


def device_kernels(events) -> list[tuple[str, float, float]]:
    """(name, start µs, end µs) of the GPU activity among ``torch.profiler`` events: kernels,
    copies and fills, not the GPU-side spans of ``record_function`` annotations (which enclose
    kernels already counted)."""
    from torch.autograd import DeviceType

    return [(e.name, e.time_range.start, e.time_range.end) for e in events
            if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]


def markdown(name: str, result: dict) -> list[str]:
    """Markdown lines: one profile's kernel time by group, then its costliest kernels."""
    if result.get("error"):
        return [f"**{name}**: {result['error']}", ""]
    lines = [f"**{name}**: {result['step_ms']:.1f} ms a step under the profiler, the GPU busy "
             f"{result['gpu_busy_ms']:.1f} ms ({100 * result['gpu_busy_share']:.1f}%) and idle "
             f"{result['gpu_idle_ms']:.1f} ms; {result['kernels_per_step']:g} kernels a step.", "",
             "| kernel group | GPU ms per step | share of the step |", "|---|---:|---:|"]
    lines += [f"| {g['group']} | {g['ms_per_step']:.2f} | {100 * g['share_of_step']:.1f}% |"
              for g in sorted(result["groups"], key=lambda g: -g["ms_per_step"])]
    lines += ["", "| kernel | group | runs a step | GPU ms per step | share of the step |", "|---|---|---:|---:|---:|"]
    # a "|" in a C++ template argument would end the cell even inside backticks (GitHub's tables)
    lines += [f"| `{t['kernel'].replace('|', '/')}` | {t['group']} | {t['runs_per_step']:g} | {t['ms_per_step']:.2f} | "
              f"{100 * t['share_of_step']:.1f}% |" for t in result["top"]]
    return lines + [""]
