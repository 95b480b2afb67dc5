"""The throughput step's ``kernels`` sub: where a training step's GPU time goes, kernel by kernel.

An MFU figure says how far a step is from the card's peak, not where the rest went. This profiles a
few steps of the same compiled model (``torch.profiler`` with CUDA activity) and charges every
kernel the GPU ran to a group by its name, with the GPU's idle time and the costliest kernels: the
arithmetic is the trainer's ``--profile_steps``'s (:mod:`londonlm.training.step.kernels`).
:func:`profile_kernels` runs on any device (a CPU profile has no kernels, and says so).
"""
from __future__ import annotations

import time
from typing import Callable

from londonlm.training.step.kernels import breakdown, device_kernels


def profile_kernels(step: Callable[[], object], sync: Callable[[], None], steps: int) -> dict:
    """:func:`breakdown` of ``steps`` calls of ``step`` (already warmed up and compiled) under the
    profiler, the window between two device synchronisations. Without a GPU the breakdown holds no
    kernels and ``error`` says so."""
    import torch

    acts = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts) as prof:
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        wall_us = (time.perf_counter() - t0) * 1e6
    out = breakdown(device_kernels(prof.events()), wall_us, steps)
    if not out["kernels_per_step"]:
        out["error"] = "the profile holds no GPU kernel (no CUDA device, or the profiler saw none)"
    return out
