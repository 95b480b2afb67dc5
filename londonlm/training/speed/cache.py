"""Where ``--autotune`` keeps its measurements: the machine and model-shape key they are filed
under, and the per-user cache file (``$XDG_CACHE_HOME/londonlm/autotune.json``), which only
holds measurements, so a damaged one is ignored with a warning and measured again."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable

from ...core import write_json_atomic

CACHE_FORMAT = "londonlm-autotune"
CACHE_VERSION = 1
# Bumped whenever a candidate's kernels change speed (2: the bf16 fused loss writes its softmax
# straight into the gradient), so measurements of the old kernels are not reused for the new
KERNELS_REVISION = 2
# instruction-set flags that change which kernels are fast; the others (virtualisation,
# microcode, security mitigations) differ between VMs of one CPU and would only force re-probes
RELEVANT_CPU_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni",
                      "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16")


def _cpu_facts() -> dict:
    name, family, model, flags = "unknown", "?", "?", set()
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name":
                name = value
            elif key == "cpu family":
                family = value
            elif key == "model":
                model = value
            elif key == "flags":
                flags = set(value.split())
                break  # the first processor's block holds all we need
    except OSError:
        import platform

        name = platform.processor() or platform.machine()
    return {"cpu": name, "family_model": f"{family}-{model}",
            "flags": [f for f in RELEVANT_CPU_FLAGS if f in flags]}


def device_key() -> dict:
    """What decides the fastest settings on this machine, apart from the model shape."""
    import torch

    if torch.cuda.is_available():
        cap = torch.cuda.get_device_capability(0)
        return {"device": "cuda", "gpu": torch.cuda.get_device_name(0), "capability": f"{cap[0]}.{cap[1]}",
                "torch": torch.__version__, "cuda": torch.version.cuda}
    return {"device": "cpu", **_cpu_facts(), "threads": torch.get_num_threads(), "torch": torch.__version__}


def shape_class(shape, batch_size: int) -> str:
    """The model shape as a cache key; the vocabulary rounded up to a power of two, so a
    retrained tokenizer of about the same size reuses the measurement."""
    vocab = 1 << max(0, int(shape.vocab_size) - 1).bit_length()
    return (f"L{shape.n_layer}-H{shape.n_head}-D{shape.n_embd}-T{shape.n_positions}"
            f"-V{vocab}-B{batch_size}")


def cache_key(dev: dict, shape, batch_size: int, dropout: float = 0.0) -> str:
    """The key of one machine, shape and dropout. Dropout's masks cost a step time (1.19x at 0.1
    on a Xeon, BENCHMARKS.md), so a run with dropout reads figures timed with it; without any,
    the key is the one every cache written before it was keyed by."""
    parts = [f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in dev.items()]
    masks = [f"dropout={dropout:g}"] if dropout else []
    return " | ".join([*parts, f"shape={shape_class(shape, batch_size)}", *masks, f"kernels={KERNELS_REVISION}"])


def default_cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "londonlm" / "autotune.json"


def _step_time(value) -> bool:
    """A step time a run can be fitted from: a finite positive number. json reads NaN and
    Infinity, and true is an int: a damaged figure of NaN was a traceback where a time budget
    was fitted, and a negative one "fits only -15 steps"."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def _valid_entry(entry) -> bool:
    figs = entry.get("figures") if isinstance(entry, dict) else None
    return isinstance(figs, dict) and all(
        isinstance(f, dict) and (_step_time(f.get("step_seconds")) or "error" in f and "step_seconds" not in f)
        for f in figs.values())


def load_cache(path: Path, log: Callable[[str], None]) -> dict:
    """The cache's entries; an unreadable or foreign file is ignored with a warning (and
    replaced at the next write), never an error: it only holds measurements."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(data, dict) and data.get("format") == CACHE_FORMAT
                and data.get("version") == CACHE_VERSION and isinstance(data.get("entries"), dict)):
            raise ValueError(f"not a version-{CACHE_VERSION} {CACHE_FORMAT} file")
    except (OSError, ValueError, RecursionError) as e:
        log(f"warning: ignoring the autotune cache {path} ({e}); it will be measured again and "
            f"rewritten")
        return {}
    bad = [k for k, v in data["entries"].items() if not _valid_entry(v)]
    if bad:
        log(f"warning: ignoring {len(bad)} malformed entr{'y' if len(bad) == 1 else 'ies'} in the "
            f"autotune cache {path}")
    return {k: v for k, v in data["entries"].items() if k not in bad}


def save_cache(path: Path, entries: dict) -> None:
    write_json_atomic(path, {"format": CACHE_FORMAT, "version": CACHE_VERSION, "entries": entries})


def forget(path: Path, key: str) -> bool:
    """Drop the entry ``key`` (its figures proved wrong for this machine); True when one was there."""
    entries = load_cache(Path(path), lambda _m: None)
    if entries.pop(key, None) is None:
        return False
    save_cache(Path(path), entries)
    return True
