"""The steps in order, what each would run (the dry run), and running one: timed, and a
failure recorded with its message while the next step still runs."""
from __future__ import annotations

import shlex
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import cli_steps, commands as C, cuda_steps, levers
from .cuda_steps import SmallConfig
from .levers import ThroughputConfig


@dataclass(frozen=True)
class RaceConfig:
    """The race step (benchmarks/gpu_race.py): its data prepared on a CPU and carried here."""
    data: Path
    preset: str = "slm"
    seconds: float = 180.0
    bench_md: Path | None = None    # the race writes its own block (gpu-race) there


@dataclass
class Context:
    out: Path                       # reports and logs
    work: Path                      # scratch: the micro project root, server work folder
    timeout: float = 300.0          # seconds per subprocess
    resume_tol: float = 1e-5        # the README's claim for an exact resume
    small: SmallConfig = field(default_factory=SmallConfig)
    throughput: ThroughputConfig = field(default_factory=ThroughputConfig)
    race: RaceConfig | None = None
    _root_ready: bool = field(default=False, init=False, repr=False)

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    def root(self) -> Path:
        """The micro project root (corpus and tokenizer), made on first use."""
        root = self.work / "root"
        if not self._root_ready:
            C.prepare_micro_root(root)
            self._root_ready = True
        return root

    def micro_model(self) -> Path:
        """A trained micro model: run ``a`` of the resume step, trained here if that step did
        not run (``--steps server`` alone)."""
        final = cli_steps.run_dir(self.root(), "a") / "final"
        if not (final / "config.json").exists():
            cli_steps.run_logged(C.resume_cmds(self.root())["uninterrupted"],
                                 self.logs / "micro_model.log", self.timeout)
        return final


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    run: Callable[[Context], dict]
    plan: Callable[[Context], list[str]]
    in_all: bool = True             # run by ``--steps all`` (the default)


def _small(ctx: Context) -> str:
    s = ctx.small
    return (f"in-process: GPT-2 Small (12 layers, 12 heads, 768 wide, vocab 50304), batch {s.batch_size} "
            f"x context {s.context}, bf16 autocast, SDPA flash, fused AdamW")


def _cmd(cmd: list[str]) -> str:
    return "$ " + shlex.join(cmd)


STEPS = [
    Step("pytest", "gpu-marked tests", cli_steps.step_pytest, lambda c: [_cmd(C.pytest_cmd())]),
    Step("throughput", "MFU of GPT-2 Small and Medium, each lever on and off (one lease)", levers.step_levers,
         lambda c: levers.plan_lines(c.throughput)),
    Step("throughput_gpt2", "GPT-2 Small at GPT-2's vocabulary: eager and torch.compile, graph breaks",
         cuda_steps.step_throughput,
         lambda c: [_small(c) + (", eager and torch.compile" if c.small.compile else ", eager"),
                    f"{c.small.warmup} warm-up steps, median of {c.small.windows} windows of "
                    f"{c.small.steps_per_window} steps; MFU = tokens/s x ModelShape.flops_per_token "
                    f"(6N + 12*L*H*Q*T) / hardware.peak_flops(GPU)"]),
    Step("optimizers", "Muon vs AdamW optimizer step (GPT-2 Small)", cuda_steps.step_optimizers,
         lambda c: ["in-process: one step of fused AdamW, foreach AdamW, Muon+AdamW (build_muon_adamw); "
                    "median ms of 20"]),
    Step("memory", "memory estimate vs measured peak (GPT-2 Small)", cuda_steps.step_memory,
         lambda c: [_small(c), "ModelShape.training_memory vs torch.cuda.max_memory_allocated, for sdpa and "
                               "eager attention x stock and fused loss"]),
    Step("micro_batch", "micro-batch fitted to the free GPU memory (slm, regular)", cuda_steps.step_micro_batch,
         lambda c: ["in-process: londonlm.training.speed.choice.fit_batch_to_memory for the slm and regular presets, "
                    "then two bf16 steps at the chosen micro-batch (peak vs estimate, no out-of-memory)"]),
    Step("probe", "speed settings on a GPU: fixed rules, the step timed as it trains", cuda_steps.step_probe,
         lambda c: ["in-process: resolve_speed_settings on CUDA (nothing timed), time_candidate eager and "
                    "torch.compile at " + _small(c).split(": ", 1)[1] + ", memory left after timing"]),
    Step("resume", "kill and exact resume (training CLI, micro preset)", cli_steps.step_resume,
         lambda c: [f"prepare {c.work / 'root'}: corpus + 512-token tokenizer from the embedded sample"]
         + [_cmd(cmd) for cmd in C.resume_cmds(c.work / "root").values()]),
    Step("fsdp", "FSDP2 on one GPU under torchrun (micro preset)", cli_steps.step_fsdp,
         lambda c: [_cmd(C.fsdp_cmd(c.work / "root"))]),
    Step("fsdp_muon", "Muon under FSDP2 on NCCL: stop and exact resume (micro preset)", cli_steps.step_fsdp_muon,
         lambda c: [_cmd(cmd) for cmd in C.fsdp_muon_cmds(c.work / "root").values()]),
    Step("compile_fallback", "torch.compile without a C compiler: eager by default, refused when asked",
         cli_steps.step_compile_fallback,
         lambda c: [f"with {' '.join(f'{k}={v}' for k, v in C.NO_COMPILER.items())}:"]
         + [_cmd(cmd) for cmd in C.compile_fallback_cmds(c.work / "root").values()]),
    Step("profile", "--profile_steps on the GPU: kernel time by op group", cli_steps.step_profile,
         lambda c: [_cmd(C.profile_cmd(c.work / "root"))]),
    Step("server", "batched OpenAI-compatible server, 1/8/32 clients, bf16 weights", cli_steps.step_server,
         lambda c: [_cmd(C.server_cmd(c.work / "root/09_models/checkpoints/a/final", c.work / "server"))]),
    Step("gguf", "GGUF export of the trained micro model", cli_steps.step_gguf,
         lambda c: [_cmd(C.gguf_cmd(c.work / "root", "a", verify=False)) + "  (+ --verify where llama-cpp-python is)"]),
    # minutes long and on data prepared on a CPU: only when named (--steps race)
    Step("race", "GPU race: ours against the seed recipe at equal seconds (held-out bpb)", cli_steps.step_race,
         lambda c: [_cmd(C.race_cmd(c.race, c.work, c.out)),
                    f"(its steps: python benchmarks/gpu_race.py --dry_run; data prepared on a CPU with "
                    f"`python benchmarks/gpu_race.py --prepare --data {c.race.data} --preset {c.race.preset} "
                    f"--source_dir ../shared/corpus`)"], in_all=False),
]
BY_NAME = {s.name: s for s in STEPS}


def run_step(step: Step, ctx: Context) -> dict:
    """The step's result with ``status`` (passed/failed), ``seconds`` and ``title``; an
    exception becomes ``error`` (its traceback goes to the step's log, not the report)."""
    t0 = time.perf_counter()
    try:
        res = step.run(ctx)
        status = "passed" if res.pop("ok", True) else "failed"
    except Exception as e:  # noqa: BLE001  (every failure is recorded; the other steps still run)
        ctx.logs.mkdir(parents=True, exist_ok=True)
        (ctx.logs / f"{step.name}_traceback.log").write_text(traceback.format_exc())
        res, status = {"error": f"{type(e).__name__}: {e}"[:2000]}, "failed"
    return {"title": step.title, "status": status, "seconds": round(time.perf_counter() - t0, 2), **res}
