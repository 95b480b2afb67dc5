"""Device facts: peak FLOP/s table for MFU, precision and thread choices (affinity,
cgroup quota and OMP_NUM_THREADS respected, cores shared among a node's ranks), free memory,
and whether this torch can use the GPUs the machine shows."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from .errors import LondonLMError

# Dense bf16/fp16 tensor-core peak FLOP/s (no sparsity), from vendor datasheets, keyed by
# model name as it appears in torch.cuda.get_device_name() ("NVIDIA L40S", "NVIDIA H100 PCIe",
# "NVIDIA A100-SXM4-80GB"). A key matches as whole words and the longest matching key wins
# (see peak_flops), so the order here does not matter.
PEAK_FLOPS_BF16: list[tuple[str, float]] = [
    ("GH200", 989e12),
    ("H200", 989e12),
    ("H100", 989e12),          # SXM / HBM3
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("A100", 312e12),          # SXM4 and PCIe, 40 and 80 GB alike
    ("A30", 165e12),
    ("A10", 125e12),
    ("A10G", 70e12),           # AWS variant of A10: 70 TFLOP/s
    ("L4", 121e12),
    ("L40", 181e12),
    ("L40S", 362e12),
    ("RTX 4090", 165e12),
    ("RTX 4080", 97e12),
    ("RTX 4070", 58e12),
    ("RTX 3090", 71e12),
    ("RTX 3080", 59e12),
    ("RTX 3070", 40e12),
    ("RTX 3060", 25e12),
]


def _names_model(device_name: str, key: str) -> bool:
    """KEY occurs in DEVICE_NAME as whole words: "L4" is in "NVIDIA L4" but not in
    "NVIDIA L40", "A10" not in "NVIDIA A100-SXM4-80GB"."""
    return re.search(rf"(?<![a-z0-9]){re.escape(key.lower())}(?![a-z0-9])",
                     device_name.lower()) is not None


def peak_flops(device_name: str | None) -> float | None:
    """Peak bf16 FLOP/s for a GPU name, or None (CPU, unknown GPU): MFU is then absent,
    never made up. The most specific (longest) key naming the device wins: "H100 PCIe"
    over "H100"."""
    if not device_name:
        return None
    found = [(len(key), flops) for key, flops in PEAK_FLOPS_BF16 if _names_model(device_name, key)]
    return max(found)[1] if found else None


def device_name() -> str | None:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return None


def _core_of_cpu(cpuinfo: str = "/proc/cpuinfo") -> dict[int, tuple[str, str]]:
    """Logical CPU number -> (physical package, core): hyper-thread siblings share a core."""
    out, cpu, phys, core = {}, None, None, None
    try:
        with open(cpuinfo) as f:
            for line in list(f) + [""]:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "processor":
                    cpu = int(value)
                elif key == "physical id":
                    phys = value
                elif key == "core id":
                    core = value
                elif not line.strip():
                    if cpu is not None and core is not None:
                        out[cpu] = (phys, core)
                    cpu = phys = core = None
    except (OSError, ValueError):
        return {}
    return out


def physical_cores(cpus: set[int] | None = None, cpuinfo: str = "/proc/cpuinfo") -> int:
    """Physical cores (hyper-threads share the FPUs, so more threads only add contention),
    of the machine or, given ``cpus``, among those logical CPUs."""
    cores = _core_of_cpu(cpuinfo)
    if cores:
        return max(1, len({c for cpu, c in cores.items() if cpus is None or cpu in cpus}))
    n = len(cpus) if cpus is not None else (os.cpu_count() or 2)
    return max(1, n // 2)


def cgroup_cpu_limit(root: str = "/sys/fs/cgroup", self_cgroup: str = "/proc/self/cgroup") -> float | None:
    """CPUs a cgroup quota allows this process (cgroup v2 ``cpu.max`` or v1
    ``cpu.cfs_quota_us``/``cpu.cfs_period_us``), or None when unlimited or unknown."""
    rel = {"v2": "", "v1": ""}
    try:
        for line in open(self_cgroup).read().splitlines():
            hier, ctrls, path = line.split(":", 2)
            if hier == "0" and ctrls == "":
                rel["v2"] = path.lstrip("/")
            elif "cpu" in ctrls.split(","):
                rel["v1"] = path.lstrip("/")
    except (OSError, ValueError):
        pass
    candidates = [(os.path.join(root, rel["v2"], "cpu.max"), None), (os.path.join(root, "cpu.max"), None),
                  (os.path.join(root, "cpu", rel["v1"], "cpu.cfs_quota_us"), "v1"),
                  (os.path.join(root, "cpu", "cpu.cfs_quota_us"), "v1")]
    for path, kind in candidates:
        try:
            if kind is None:
                quota, period = open(path).read().split()[:2]
            else:
                quota = open(path).read().strip()
                period = open(path.replace("cfs_quota_us", "cfs_period_us")).read().strip()
        except (OSError, ValueError):
            continue
        if quota in ("max", "-1") or int(quota) <= 0:
            return None
        return int(quota) / int(period)
    return None


def usable_cores() -> int:
    """Physical cores this process may use: those of its CPU affinity mask (taskset, Slurm's
    --cpus-per-task binding), capped by a cgroup CPU quota (containers)."""
    try:
        cpus = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        cpus = None
    n = physical_cores(cpus)
    quota = cgroup_cpu_limit()
    if quota is not None:
        n = min(n, max(1, int(quota)))
    return n


def training_threads(environ=os.environ) -> tuple[int, str]:
    """Threads for CPU training and why: ``OMP_NUM_THREADS`` when set (the user's word, and
    torchrun's); else the usable physical cores shared among this node's ranks."""
    given = environ.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) > 0:
        return int(given), "OMP_NUM_THREADS"
    ranks = max(1, int(environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    cores = usable_cores()
    return max(1, cores // ranks), (f"{cores} usable cores / {ranks} ranks" if ranks > 1
                                     else f"{cores} usable cores")


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def cpu_has_native_bf16() -> bool:
    """The CPU has bf16 instructions (x86: avx512_bf16, AMX): bf16 is not emulated, so the
    autotune probe times it beside fp32. Whether it is the faster: :func:`cpu_has_fast_bf16`."""
    flags = _cpuinfo()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_has_fast_bf16() -> bool:
    """bf16 matmuls outrun fp32 ones on this CPU: what the fixed rules (``--autotune off``, a
    probe that could not decide) and Muon's Newton-Schulz go by. Intel's AMX tiles (its bf16
    matmul units), and AMD's avx512_bf16 (a Zen 4: bf16 GEMMs at 418-442 GFLOP/s, fp32 at
    169-193). Not Intel's avx512_bf16 without AMX, which has the instructions but not the rate:
    a Xeon of family 6 model 207 whose VM does not expose its AMX ran bf16 GEMMs at half its
    fp32 rate, and training steps 1.3-1.7x longer (BENCHMARKS.md, "bf16 on CPUs")."""
    # (cpu_has_native_bf16 looked up here: tests emulate a CPU without bf16 by patching it)
    if not cpu_has_native_bf16():
        return False
    info = _cpuinfo()
    return "amx_bf16" in info or "AuthenticAMD" in info


def choose_precision(explicit_bf16: bool = False, explicit_fp16: bool = False) -> dict:
    """bf16 on Ampere+ GPUs, fp16 on older GPUs; on CPUs bf16 only where it is the faster
    (:func:`cpu_has_fast_bf16`); explicit flags win."""
    import torch

    if explicit_bf16 or explicit_fp16:
        return {"bf16": explicit_bf16, "fp16": explicit_fp16}
    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return {"bf16": True, "fp16": False}
        return {"bf16": False, "fp16": True}
    return {"bf16": cpu_has_fast_bf16(), "fp16": False}


def keep_freed_memory_in_heap() -> bool:
    """CPU training allocates and frees the same large activation tensors every step. glibc
    serves blocks over 128 KiB-32 MiB with fresh mmap()s and returns them on free, so every
    step page-faults (and the kernel zeroes) hundreds of MB again. Raising the mmap and trim
    thresholds keeps freed blocks in the heap for reuse: measured ~10% faster steps and 40%
    less system time on 2 CPU cores (tiny shape, bf16). No-op where glibc is absent."""
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 1 << 30) == 1
        ok = libc.mallopt(m_trim_threshold, (1 << 31) - 1) == 1 and ok
        return ok
    except (OSError, AttributeError):
        return False


def large_blocks_from_the_system(threshold: int = 128 << 10) -> bool:
    """Blocks over ``threshold`` (a book's text, ~1 MB) mapped from the system and given back when
    freed, always. glibc's default raises its mmap threshold to the largest block freed so far
    (up to 32 MiB), after which such blocks come from the heap and leave holes there: the
    collector's main process, handing on a book at a time, crept by ~45 MB over a 10 GB
    collection. Fixed, it stayed flat (BENCHMARKS.md). For streaming stages, not CPU training
    (:func:`keep_freed_memory_in_heap`, which wants the opposite). No-op where glibc is absent."""
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux":
        return False
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(-3, int(threshold)) == 1
    except (OSError, AttributeError):
        return False


def return_freed_memory() -> bool:
    """Give the heap's free memory back to the system now (glibc ``malloc_trim``). With
    :func:`keep_freed_memory_in_heap` nothing is ever given back on its own, so after a
    one-off burst (the speed probe's eight candidate steps, the largest fp32 with stock loss)
    the process would keep that peak for the whole run. No-op where glibc is absent."""
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux":
        return False
    try:
        return bool(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def hardware_summary() -> dict:
    import platform

    import torch

    out = {"platform": platform.platform(), "torch": torch.__version__,
           "cpu_cores_physical": physical_cores(), "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return out


def use_training_threads() -> int | None:
    """CPU training: set torch's thread count from :func:`training_threads` (GPU runs keep
    torch's own choice). Returns the count set, or None."""
    import torch

    if torch.cuda.is_available():
        return None
    n, _ = training_threads()
    torch.set_num_threads(n)
    return n


# --------------------------------------------------------------------------- GPUs torch cannot use

# The oldest NVIDIA driver (major version) each CUDA major release runs on, with CUDA's minor
# version compatibility (NVIDIA's CUDA compatibility guide, "CUDA Toolkit ... Driver Version Ranges")
MIN_DRIVER_FOR_CUDA = {11: 450, 12: 525, 13: 580}
TORCH_WHEEL_INDEX = "https://download.pytorch.org/whl/{tag}"


class GpuUnusable(LondonLMError, RuntimeError):
    """The machine shows GPUs that this torch cannot use: training would silently run on the CPU."""


@dataclass(frozen=True)
class GpuListing:
    """The GPUs this machine shows, whatever torch makes of them."""
    count: int
    source: str                 # "CUDA_VISIBLE_DEVICES" or "nvidia-smi"
    driver: str | None = None   # the NVIDIA driver version nvidia-smi reports
    # what nvidia-smi did instead of answering (hung, failed, printed no GPU or no version): a
    # machine whose nvidia-smi fails may well have GPUs, so this is never read as "none"
    nvidia_smi_problem: str | None = None


NVIDIA_SMI_TIMEOUT_S = 30  # a hung driver hangs nvidia-smi; LONDONLM_NVIDIA_SMI_TIMEOUT_S overrides
# a GPU line of `nvidia-smi --list-gpus`: "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-...)"
_GPU_LINE = re.compile(r"GPU \d+: ")


def nvidia_smi_timeout(environ=os.environ) -> int:
    """Seconds nvidia-smi gets to answer: LONDONLM_NVIDIA_SMI_TIMEOUT_S (whole seconds, as
    launch_training.sh reads it) or NVIDIA_SMI_TIMEOUT_S."""
    given = environ.get("LONDONLM_NVIDIA_SMI_TIMEOUT_S", "").strip()
    if not given:
        return NVIDIA_SMI_TIMEOUT_S
    if not given.isdecimal() or int(given) < 1:
        raise GpuUnusable(f"LONDONLM_NVIDIA_SMI_TIMEOUT_S must be whole seconds >= 1, got {given!r}")
    return int(given)


def _quoted(output: str) -> str:
    """nvidia-smi's first non-blank line, quoted on one line (control characters dropped)."""
    line = next((x.strip() for x in output.splitlines() if x.strip()), "")
    line = "".join(c for c in line if c.isprintable())[:200]
    return f"'{line}'" if line else "nothing"


def _nvidia_smi(*args: str, environ=os.environ) -> tuple[str, str | None]:
    """nvidia-smi's output and, where it did not answer, what it did instead (one line quoting
    it); ``("", None)`` where there is no nvidia-smi. A hung nvidia-smi (a driver stuck in the
    kernel, where even SIGKILL may not end it) is killed and never waited for."""
    import signal

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return "", None
    asked, timeout = " ".join(["nvidia-smi", *args]), nvidia_smi_timeout(environ)
    try:
        proc = subprocess.Popen([exe, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as e:
        return "", f"`{asked}` could not run ({e.strerror or e})"
    try:
        raw, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: any child it started goes too
        except OSError:
            pass
        proc.stdout.close()
        return "", f"`{asked}` did not answer within {timeout} s"
    out = raw.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        return "", f"`{asked}` failed (exit {proc.returncode}): {_quoted(out)}"
    return out, None


def nvidia_driver_version(environ=os.environ) -> str | None:
    """The driver version nvidia-smi reports (``535.104.05``), or None."""
    return _driver(environ)[0]


def _driver(environ=os.environ) -> tuple[str | None, str | None]:
    """(the driver version, or None; what nvidia-smi did instead of reporting one, if it is there)."""
    out, problem = _nvidia_smi("--query-gpu=driver_version", "--format=csv,noheader", environ=environ)
    found = re.search(r"\b(\d{3,}\.\d+(?:\.\d+)?)\b", out)
    if found or problem:
        return (found.group(1) if found else None), problem
    if shutil.which("nvidia-smi") is None:
        return None, None
    return None, f"`nvidia-smi --query-gpu=driver_version` printed {_quoted(out)}, not a driver version"


def listed_gpus(environ=os.environ) -> GpuListing:
    """The GPUs this machine shows: ``CUDA_VISIBLE_DEVICES`` decides when set (empty or -1 hides
    them all), else the GPU lines ``nvidia-smi --list-gpus`` prints; as ``launch_training.sh``
    counts them. An nvidia-smi that hangs, fails or prints no GPU line is recorded, not taken
    for a machine without GPUs."""
    ids = environ.get("CUDA_VISIBLE_DEVICES")
    if ids is not None:
        ids = ids.replace(" ", "")
        count = 0 if ids == "" or ids.startswith("-1") else len([i for i in ids.split(",") if i])
        source, problem = "CUDA_VISIBLE_DEVICES", None
    else:
        out, problem = _nvidia_smi("--list-gpus", environ=environ)
        count, source = sum(1 for line in out.splitlines() if _GPU_LINE.match(line)), "nvidia-smi"
        if not count and out.strip() and problem is None:
            problem = f"`nvidia-smi --list-gpus` printed {_quoted(out)}, not a list of GPUs"
    if not count:
        return GpuListing(0, source, None, problem)
    driver, driver_problem = _driver(environ)
    return GpuListing(count, source, driver, problem or driver_problem)


def _major(version: str | None) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def wheel_index_for(driver: str | None) -> str | None:
    """The PyTorch wheel index whose CUDA build runs on ``driver`` (None: no CUDA 12 or 13 build
    does, or the driver is unknown)."""
    major = _major(driver)
    if major is None or major < MIN_DRIVER_FOR_CUDA[12]:
        return None
    return TORCH_WHEEL_INDEX.format(tag="cu130" if major >= MIN_DRIVER_FOR_CUDA[13] else "cu126")


def gpu_problem(listing: GpuListing, torch_version: str, torch_cuda: str | None,
                cuda_available: bool) -> str | None:
    """Why the GPUs ``listing`` shows go unused by this torch (one line, with the fix), or None
    when torch uses them or none are shown."""
    if cuda_available:
        return None
    if listing.count == 0:
        return None if listing.nvidia_smi_problem is None else nvidia_smi_failed(listing.nvidia_smi_problem)
    shown = f"{listing.source} shows {listing.count} GPU{'s' if listing.count > 1 else ''}" + (
        f" (NVIDIA driver {listing.driver})" if listing.driver else "")
    index, cu126 = wheel_index_for(listing.driver), TORCH_WHEEL_INDEX.format(tag="cu126")
    if index:
        install = f"reinstall torch for this driver: TORCH_INDEX_URL={index} bash install.sh"
    elif listing.driver is None:
        unread = listing.nvidia_smi_problem or "no nvidia-smi here to read its version"
        install = (f"install the CUDA build of torch for the NVIDIA driver ({unread}): "
                   f"TORCH_INDEX_URL={cu126} bash install.sh for drivers >= "
                   f"{MIN_DRIVER_FOR_CUDA[12]}, .../whl/cu130 for >= {MIN_DRIVER_FOR_CUDA[13]}")
    else:
        install = (f"upgrade the NVIDIA driver to >= {MIN_DRIVER_FOR_CUDA[12]} (CUDA 12), then "
                   f"TORCH_INDEX_URL={cu126} bash install.sh")
    need = MIN_DRIVER_FOR_CUDA.get(_major(torch_cuda) or -1)
    if torch_cuda is None:
        why, fix = f"this torch ({torch_version}) is a CPU-only build", install
    elif need and _major(listing.driver) is not None and _major(listing.driver) < need:
        why = (f"this torch ({torch_version}) is built for CUDA {torch_cuda}, which needs NVIDIA "
               f"driver >= {need}")
        fix = f"{install}, or upgrade the driver"
    else:
        why = (f"torch {torch_version} (CUDA {torch_cuda}) cannot reach them "
               f"(torch.cuda.is_available() is False)")
        fix = ("check that `nvidia-smi` works where training runs (a container needs --gpus; the "
               "driver must be loaded)")
    return (f"{shown} but {why}, so training would silently run on the CPU. Fix: {fix}. To train "
            f"on the CPU on purpose, set CUDA_VISIBLE_DEVICES= (empty) or pass --use_cpu true")


def nvidia_smi_failed(problem: str) -> str:
    """Why a machine whose nvidia-smi hangs, fails or answers nonsense is not taken for one
    without GPUs (one line, with the fix); ``launch_training.sh`` words it the same."""
    return (f"{problem}, so whether this machine has GPUs is unknown and training would silently run on "
            f"the CPU. Fix: make `nvidia-smi` work where training runs (the NVIDIA driver loaded; a "
            f"container needs --gpus). To train on the CPU on purpose, set CUDA_VISIBLE_DEVICES= (empty) "
            f"or pass --use_cpu true")


def require_usable_gpus(environ=os.environ) -> None:
    """Stop before any work when the machine shows GPUs this torch cannot use."""
    import torch

    if torch.cuda.is_available():
        return
    problem = gpu_problem(listed_gpus(environ), torch.__version__, torch.version.cuda, False)
    if problem:
        raise GpuUnusable(problem)


# --------------------------------------------------------------------------- free memory

def free_memory_bytes(device: str = "cpu") -> int | None:
    """Bytes a new allocation can still get on ``device``: the GPU's free memory, or on the CPU
    ``MemAvailable`` capped by a cgroup memory limit (containers); None when unknown."""
    import torch

    if str(device).startswith("cuda"):
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        meminfo = open("/proc/meminfo").read()
        free = int(re.search(r"MemAvailable:\s+(\d+) kB", meminfo).group(1)) * 1024
    except (OSError, AttributeError, ValueError):
        return None
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit, used = open(limit_file).read().strip(), int(open(usage_file).read())
        except (OSError, ValueError):
            continue
        if limit.isdigit():
            free = min(free, max(0, int(limit) - used))
        break
    return free
