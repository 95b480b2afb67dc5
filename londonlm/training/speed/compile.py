"""torch.compile's policy and preflight: compiled by default on CUDA unless a time budget too
short to pay back the warm-up, never by default on CPU (:func:`compile_pays`), and, before any data
work, whether torch.compile can build kernels here at all (:func:`settle_compile`)."""
from __future__ import annotations

import os
import shutil
import sysconfig
import warnings
from pathlib import Path

from ..dist import TrainingError, agree, log

# torch.compile's warm-up on a GPU (about 30-60 s for GPT-2 Small) is paid back within minutes of
# training; a run given less than this many seconds stays eager
COMPILE_MIN_BUDGET_SECONDS = 600


def compile_pays(cuda: bool, time_budget: float) -> bool:
    """``torch_compile`` by default: on CUDA, unless a time budget too short to pay back the
    warm-up; never on CPU (measured on 2 cores: compiling the blocks took ~24 s and made the tiny
    step no faster, BENCHMARKS.md)."""
    return cuda and not (0 < time_budget < COMPILE_MIN_BUDGET_SECONDS)


def _compiler_problem(device_type: str) -> str | None:
    """What torch.compile's code generators need and this machine lacks, or None: on CUDA,
    Triton and a C compiler (Triton builds a small C launcher per kernel signature), on the
    CPU a C++ compiler (inductor's kernels); and the Python headers, both."""
    if device_type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Triton is not installed (torch's CUDA wheels for Linux bring it)"
        cc = os.environ.get("CC")
        if not (shutil.which(cc) if cc else any(shutil.which(c) for c in ("cc", "gcc", "clang"))):
            return (f"no C compiler ({'CC=' + cc if cc else 'cc, gcc or clang'}): Triton builds a C "
                    f"launcher for each kernel; install gcc")
    else:
        import torch._inductor.config as inductor_config

        cxx = inductor_config.cpp.cxx[-1]  # what inductor will call ($CXX, else g++)
        if not shutil.which(cxx):
            return f"no C++ compiler ({cxx}) for inductor's CPU kernels; install g++"
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.exists():
        return f"no Python headers ({headers}); install the python3-dev package of this Python"
    return None


def _probe(x):
    return (x * 2.0).sin() + 1.0


def compile_problem(device_type: str) -> str | None:
    """Why torch.compile cannot build kernels for ``device_type`` here (one line), or None. The
    tools it needs first, then a real compile of a tiny function with inductor's caches off (a
    cached kernel would load without a compiler and prove nothing)."""
    import torch
    import torch._inductor.config as inductor_config

    missing = _compiler_problem(device_type)
    if missing:
        return missing
    try:
        with inductor_config.patch(force_disable_caches=True), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "dynamo_pgo force disabled": what we asked for
            torch.compile(_probe, dynamic=False)(torch.ones(8, device=device_type))
        if device_type == "cuda":
            torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001  (whatever stops the compile stops the run's too)
        lines = str(e).strip().splitlines()
        return f"{type(e).__name__}: {lines[0][:300] if lines else ''}"
    finally:
        torch._dynamo.reset()
    return None


def settle_compile(config):
    """Before any data work, every rank checks that torch.compile can build kernels here. Where
    one cannot: asked for on the command line, the run is refused naming the fix; on by default
    (CUDA), every rank trains eager and the log says why. Returns the tree, eager where it
    must be."""
    import torch

    if not config.speed.torch_compile:
        return config
    cuda = not config.trainer.get("use_cpu") and torch.cuda.is_available()
    problem = compile_problem("cuda" if cuda else "cpu")
    if not agree([int(problem is not None)])[0]:
        return config
    problem = problem or "another rank could not compile"
    if config.speed.compile_given:
        raise TrainingError(f"--torch_compile: torch.compile cannot build kernels here ({problem}); "
                            f"install what it names, or pass --torch_compile false")
    log(f"torch.compile: off, training eager: it cannot build kernels here ({problem}). Install what "
        f"it names to compile; --torch_compile false skips this check")
    return config.but(speed={"torch_compile": False})
