"""``--profile_steps N``: a ``torch.profiler`` window over N whole training steps of a real run
(data loading, forward, backward, optimizer, the Trainer's own work), and a table of where the
time went by op group.

Every op's own (self) time goes to one group:

- **GEMM**: the linear layers' matrix products (attention QKV/output, MLP), forward and backward;
- **attention**: the attention core (scores, softmax, weighted sum) and its reshapes;
- **norms/GELU**: layer norms, the MLP activation, residual adds and dropout;
- **LM head + loss**: the tied output projection and cross-entropy (fused or stock);
- **embeddings**; **optimizer: Newton-Schulz** (Muon's matrix products) and **optimizer: other**;
- **data**: the DataLoader's batches; **other ops**: grad-norm clipping, zeroing, copies;
- **Python/Trainer overhead**: the rest of the wall time: Python between ops, callbacks, logging.

Forward ops are grouped by the module that ran them (forward hooks open a ``record_function``
scope per module while the profiler runs); a backward op goes to the group of the forward op
that recorded its autograd node (the two share a ``sequence_nr``).

Under ``torch.compile`` (the default on CUDA) modules no longer run one by one: a compiled graph
runs the whole forward (or backward) as library calls plus generated kernels that fuse several
modules' elementwise work. No hooks are installed then (they would force a recompilation inside
the window), and an op outside every scope is grouped by its name: matrix products (``aten::mm``
and the like: the LM head's too, and attention's where the compiler decomposes it) are **GEMM**,
the SDPA kernels **attention**, embedding lookups **embeddings**, and the generated kernels
(``triton_*`` on a GPU; on a CPU they run inline, inside the compiled graph's own time) are
**compiled fused kernels**: norms, GELU, residual adds, softmax and loss pieces fused together.

On a GPU the profiler records CUDA activity too, and every kernel's time goes to the group of the
op that launched it (the profiler links the two): the table then has a GPU column, and the share
of the wall time the GPU was busy (what is not busy is time the GPU waited for the host). The
window begins and ends with a device synchronisation, so its wall time holds the kernels it ran.
A compiled graph launches its GEMMs and its generated kernels alike, so a second table charges
every kernel by its own name (:mod:`.kernels`: GEMM, attention, Inductor's fused kernels, ...),
with the costliest kernels listed.
"""
from __future__ import annotations

import time
from pathlib import Path

from transformers import TrainerCallback

from ...core import write_json_atomic
from . import kernels

GROUPS = ("GEMM", "attention", "norms/GELU", "LM head + loss", "embeddings",
          "compiled fused kernels", "optimizer: Newton-Schulz", "optimizer: other", "data", "other ops",
          "Python/Trainer overhead")
PREFIX = "londonlm::"
# module class name -> group of the ops it runs itself (an inner labelled module wins)
MODULE_GROUPS = {"Conv1D": "GEMM", "Linear": "GEMM", "GPT2Attention": "attention",
                 "LayerNorm": "norms/GELU", "GPT2MLP": "norms/GELU", "GPT2Block": "norms/GELU",
                 "Embedding": "embeddings", "GELUActivation": "norms/GELU", "GELU": "norms/GELU",
                 "Dropout": "norms/GELU"}
MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul")
ATTENTION_OPS = ("aten::scaled_dot_product_attention", "aten::_scaled_dot_product",
                 "aten::_flash_attention", "aten::_efficient_attention", "aten::_cudnn_attention")
EMBEDDING_OPS = ("aten::embedding", "aten::embedding_dense_backward")
DYNAMO_GUARDS = "TorchDynamo Cache Lookup"  # checking a compiled graph's guards: host overhead
# what a compiled graph runs besides library calls: its generated kernels' launches (GPU; Inductor
# names a template GEMM ``triton_tem_*``), and the graphs themselves, whose own time on a CPU is
# the generated C++ kernels that run inline
COMPILED_GRAPH = ("Torch-Compiled Region", "CompiledFunction", "## Call CompiledFxGraph", "triton_")


def _op_name_group(name: str) -> str | None:
    """The group an op outside every labelled scope belongs to by its name alone (a compiled
    graph's ops, or a backward node the forward did not label), or None."""
    if name in MATMULS or name.startswith("triton_tem_"):
        return "GEMM"
    if name.startswith(ATTENTION_OPS):
        return "attention"
    if name in EMBEDDING_OPS:
        return "embeddings"
    if name.startswith(COMPILED_GRAPH) or "cpp_fused" in name:
        return "compiled fused kernels"
    return None


def _scope_group(name: str) -> str | None:
    """The group a scope event opens, or None when it opens none."""
    if name.startswith(PREFIX):
        return name[len(PREFIX):]
    if name.startswith("Optimizer.step"):
        return "optimizer: other"
    if name.startswith("Optimizer.zero_grad"):
        return "other ops"
    if name.startswith("enumerate(DataLoader)"):
        return "data"
    return None


def _is_scope(name: str) -> bool:
    return _scope_group(name) is not None or name.startswith("autograd::engine::evaluate_function")


def _forward_group(event) -> str | None:
    """The innermost labelled scope above ``event`` (None: outside every scope)."""
    e = event
    while e is not None:
        g = _scope_group(e.name)
        if g is not None:
            return g
        e = e.cpu_parent
    return None


def group_events(events) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Self CPU time (µs), FLOPs and self device time (µs: the kernels each op launched) per
    group for ``torch.profiler`` function events (their ``cpu_parent`` links intact). Scope
    events' own CPU time is Python between ops: overhead. The GPU's own events (kernels, copies)
    are among the events too, each already in its launching op's device time: counted there only
    (they once went to a second group by their names as well, and the GPU column then held every
    kernel twice)."""
    events = [e for e in events if _on_host(e)]
    by_seq: dict[tuple, str] = {}
    for e in events:  # forward ops that recorded an autograd node, by its sequence number
        g = _forward_group(e)
        if e.sequence_nr >= 0 and _backward_node(e) is None and g is not None \
                and not g.startswith(("optimizer", "data")):
            by_seq.setdefault((e.thread, e.sequence_nr), g)
    totals = {g: 0.0 for g in GROUPS}
    flops = {g: 0.0 for g in GROUPS}
    device = {g: 0.0 for g in GROUPS}
    for e in events:
        node = _backward_node(e)
        if node is None:
            g = _forward_group(e)
        else:  # a backward op: the group of the forward op whose node it runs
            g = by_seq.get((node.fwd_thread, node.sequence_nr)) or _backward_name_group(node.name)
        g = _own_group(e, g)
        totals[g] += e.self_cpu_time_total
        device[g] += getattr(e, "self_device_time_total", 0.0) or 0.0
        # an op redispatched to itself (autocast calls aten::addmm again) reports its FLOPs at
        # both levels: count the innermost
        if e.flops and not any(c.flops for c in e.cpu_children):
            flops[g] += e.flops
    return totals, flops, device


def _on_host(event) -> bool:
    """An op the host ran (not a kernel or copy the GPU ran, which has no CPU time of its own)."""
    from torch.autograd import DeviceType

    return getattr(event, "device_type", DeviceType.CPU) == DeviceType.CPU


def _backward_node(event):
    """The ``autograd::engine::evaluate_function`` event above ``event`` (itself included)."""
    e = event
    while e is not None:
        if e.name.startswith("autograd::engine::evaluate_function"):
            return e
        e = e.cpu_parent
    return None


def _backward_name_group(name: str) -> str | None:
    n = name.split(":")[-1].strip()
    if n.startswith(("Addmm", "Mm")):
        return "GEMM"
    if n.startswith(("LinearCrossEntropy", "LogSoftmax", "NllLoss")):
        return "LM head + loss"
    if n.startswith("Embedding"):
        return "embeddings"
    return None


def _own_group(event, group: str | None) -> str:
    """Where ``event``'s self time goes inside ``group`` (None: no scope or node names one)."""
    if _is_scope(event.name) or event.name.startswith(DYNAMO_GUARDS):
        return "Python/Trainer overhead"
    if group == "optimizer: other" and event.name in MATMULS:
        return "optimizer: Newton-Schulz"
    return group or _op_name_group(event.name) or "other ops"


class ModuleLabels:
    """Forward hooks that open a ``record_function`` scope named after each module's group for
    the module's forward (while the profiler runs; removed afterwards)."""

    def __init__(self, model):
        self.handles = []
        self.model = model

    def __enter__(self):
        import torch

        head = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        body = getattr(self.model, "base_model", None)
        for module in self.model.modules():
            if module is body and body is not self.model:
                group = "norms/GELU"  # the transformer's own ops: final norm, residual adds
            elif module is self.model:
                group = "LM head + loss"  # what the model runs outside its transformer
            elif module is head:
                group = "LM head + loss"
            else:
                group = MODULE_GROUPS.get(type(module).__name__)
            if group is None:
                continue
            stack = []

            def pre(_m, _a, group=group, stack=stack):
                rf = torch.autograd.profiler.record_function(PREFIX + group)
                rf.__enter__()
                stack.append(rf)

            def post(_m, _a, _o, stack=stack):
                if stack:
                    stack.pop().__exit__(None, None, None)

            self.handles += [module.register_forward_pre_hook(pre),
                             module.register_forward_hook(post, always_call=True)]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles.clear()


def profile_table(totals_us: dict[str, float], wall_s: float, steps: int, gemm_flops: float = 0.0,
                  device_us: dict[str, float] | None = None) -> dict:
    """Per-step milliseconds and shares; the wall time not covered by any op is overhead. With
    ``device_us`` (a GPU profile), each group's kernel milliseconds and the GPU's busy share."""
    covered = sum(totals_us.values()) / 1e6
    rows = dict(totals_us)
    rows["Python/Trainer overhead"] += max(0.0, wall_s - covered) * 1e6
    step_ms = wall_s / steps * 1e3
    on_gpu = bool(device_us) and any(device_us.values())
    table = [{"group": g, "ms_per_step": round(rows[g] / 1e3 / steps, 2),
              "share": round(rows[g] / 1e6 / wall_s, 4) if wall_s else 0.0,
              **({"gpu_ms_per_step": round(device_us[g] / 1e3 / steps, 2)} if on_gpu else {})}
             for g in GROUPS]
    out = {"steps": steps, "wall_seconds": round(wall_s, 4), "step_ms": round(step_ms, 2), "groups": table}
    gemm_s = (device_us["GEMM"] if on_gpu else rows["GEMM"]) / 1e6
    if gemm_flops and gemm_s:
        out["gemm_gflops_per_s"] = round(gemm_flops / gemm_s / 1e9, 1)
    if on_gpu:
        busy = sum(device_us.values()) / 1e6
        out["gpu_busy_share"] = round(min(1.0, busy / wall_s), 4) if wall_s else 0.0
    return out


def markdown(result: dict) -> str:
    gpu = "gpu_busy_share" in result
    lines = [f"{result['steps']} steps, {result['step_ms']:.1f} ms per step (profiled)", "",
             "| op group | ms per step | share |" + (" GPU ms per step |" if gpu else ""),
             "|---|---|---|" + ("---|" if gpu else "")]
    lines += [f"| {r['group']} | {r['ms_per_step']:.1f} | {100 * r['share']:.1f}% |"
              + (f" {r['gpu_ms_per_step']:.1f} |" if gpu else "") for r in result["groups"]]
    if gpu:
        lines += ["", f"GPU busy {100 * result['gpu_busy_share']:.1f}% of the wall time (the rest it "
                      f"waited for the host); ms per step is the host's time launching each group"]
    if "gemm_gflops_per_s" in result:
        lines += ["", f"GEMM rate inside the linear layers: {result['gemm_gflops_per_s']:.0f} GFLOP/s"]
    if "kernels" in result:
        lines += [""] + kernels.markdown("GPU kernels by name", result["kernels"])
    return "\n".join(lines).rstrip("\n") + "\n"


def profiler_activities() -> list:
    """What the profiler records: the host's ops, and the GPU's kernels where there is one."""
    import torch

    acts = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    return acts


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class ProfileCallback(TrainerCallback):
    """Profiles ``steps`` whole steps after ``skip`` warm-up steps of this invocation and writes
    ``profile.json``, ``profile.md`` and a Chrome trace (``trace.json``) to ``out_dir``, on
    the main process only."""

    def __init__(self, out_dir: Path, steps: int, skip: int = 3, log=print):
        self.out_dir, self.steps, self.skip, self.log = Path(out_dir), steps, skip, log
        self.prof = self.labels = None
        self.begin_step = None
        self.t0 = 0.0
        self.done = False

    def on_train_begin(self, args, state, control, **kw):
        self.begin_step = state.global_step

    def on_step_end(self, args, state, control, model=None, **kw):
        if self.done or not state.is_world_process_zero:
            return
        k = state.global_step - self.begin_step
        if k == self.skip and self.prof is None:
            self._start(model, labels=not args.torch_compile)
        elif self.prof is not None and k == self.skip + self.steps:
            self._stop()

    def on_train_end(self, args, state, control, **kw):
        if self.prof is not None:  # training ended inside the window: profile what ran
            k = state.global_step - self.begin_step - self.skip
            self._stop(steps=max(1, k))
        elif not self.done and state.is_world_process_zero:
            self.log(f"--profile_steps: training ended within the {self.skip} warm-up steps; "
                     f"nothing was profiled (give the run more steps)")

    def _start(self, model, labels: bool = True) -> None:
        """Opens the window; ``labels``: hook the modules (not for a compiled model: its graphs
        would recompile inside the window, and its ops are grouped by name instead)."""
        import torch

        self.labels = ModuleLabels(model).__enter__() if labels else None
        self.prof = torch.profiler.profile(activities=profiler_activities(), record_shapes=True,
                                           with_flops=True)
        _synchronize()  # the window's wall time starts with no kernel of an earlier step queued
        self.prof.__enter__()
        self.t0 = time.perf_counter()

    def _stop(self, steps: int | None = None) -> None:
        _synchronize()  # ... and ends once the window's kernels have run
        wall = time.perf_counter() - self.t0
        self.prof.__exit__(None, None, None)
        if self.labels is not None:
            self.labels.__exit__()
        events = self.prof.events()
        totals, flops, device = group_events(events)
        result = profile_table(totals, wall, steps or self.steps, gemm_flops=flops["GEMM"], device_us=device)
        on_gpu = kernels.device_kernels(events)
        if on_gpu:  # by the kernels' own names: what a compiled graph's launching ops cannot say
            result["kernels"] = kernels.breakdown(on_gpu, wall * 1e6, steps or self.steps)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prof.export_chrome_trace(str(self.out_dir / "trace.json"))
        (self.out_dir / "profile.md").write_text(markdown(result))
        write_json_atomic(self.out_dir / "profile.json", result)  # last: marks the profile complete
        self.log(f"profile of {result['steps']} steps -> {self.out_dir}\n{markdown(result)}")
        self.prof, self.done = None, True
