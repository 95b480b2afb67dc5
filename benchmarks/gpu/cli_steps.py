"""Steps that run the project's own scripts as subprocesses: the ``gpu`` tests, kill-and-resume
of the training CLI, FSDP under torchrun, the batched server's race, the GGUF export."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from londonlm.core.processes import run_to_log

from . import commands as C
from .arith import curve_diffs, failed_tests, pytest_counts


class StepError(RuntimeError):
    """A subprocess failed or a check did not hold; the message says which and where the log is."""


def run_logged(cmd: list[str], log: Path, timeout: float, env_extra: dict | None = None,
               expect_rc: int = 0) -> str:
    """Run ``cmd`` from the repository with its output in ``log``; returns the output. Past
    ``timeout`` its whole process group (torchrun and its ranks) gets SIGTERM, then SIGKILL. An
    exit code other than ``expect_rc`` is a :class:`StepError`."""
    rc = run_to_log(cmd, log, timeout, env={**C.job_env(), **(env_extra or {})}, cwd=C.REPO, prompt="$ ")
    out = log.read_text(errors="replace")
    if rc != expect_rc:
        why = f"timed out after {timeout:.0f} s" if rc is None else f"exit {rc} (expected {expect_rc})"
        tail = " | ".join(out.strip().splitlines()[-3:])[-600:]
        raise StepError(f"{shlex.join(cmd[:4])} ... {why}; log {log}: {tail}")
    return out


def run_dir(root: Path, name: str) -> Path:
    return root / "09_models" / "checkpoints" / name


def run_info(root: Path, name: str) -> dict:
    return json.loads((run_dir(root, name) / "run_info.json").read_text())


def logged_losses(ckpt: Path) -> list[tuple[int, float]]:
    st = json.loads((ckpt / "trainer_state.json").read_text())
    return [(h["step"], h["loss"]) for h in st["log_history"] if "loss" in h]


def weights_max_diff(a: Path, b: Path) -> float:
    """Largest |difference| over every tensor of two model.safetensors files (same names)."""
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    if wa.keys() != wb.keys():
        raise StepError(f"the two models hold different tensors: {sorted(wa.keys() ^ wb.keys())[:5]}")
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)


def step_pytest(ctx) -> dict:
    log = ctx.logs / "pytest_gpu.log"
    try:
        out, exited_0 = run_logged(C.pytest_cmd(), log, ctx.timeout), True
    except StepError:  # failing tests are this step's figures, not the end of it
        out, exited_0 = log.read_text(errors="replace"), False
    counts = pytest_counts(out)
    # none passed (all skipped, none collected) is no acceptance either
    ok = exited_0 and counts["passed"] > 0 and not counts["failed"] and not counts["errors"]
    res = {"ok": ok, "summary": f"{counts['passed']} passed, {counts['failed']} failed, "
                                f"{counts['skipped']} skipped, {counts['errors']} errors",
           "figures": {**counts, "command": C.shown(C.pytest_cmd())},
           "rows": [{"failed test": t} for t in failed_tests(out)]}
    if not ok:
        res["error"] = f"gpu tests: {res['summary']}; see {log}"
    return res


def step_resume(ctx) -> dict:
    """Run ``a`` straight through; ``b`` stopped after step 6 with --stop_after_steps, then
    resumed by the same command; the two loss curves and final weights compared."""
    root = ctx.root()
    for name, cmd in C.resume_cmds(root).items():
        run_logged(cmd, ctx.logs / f"resume_{name}.log", ctx.timeout)
        if name == "stopped":  # it must really have stopped: a checkpoint, no final model
            b = run_dir(root, "b")
            if not (b / f"checkpoint-{C.RESUME_STOP}").is_dir() or (b / "final").exists():
                raise StepError(f"--stop_after_steps {C.RESUME_STOP} did not stop with a checkpoint in {b}")
    ck = f"checkpoint-{C.RESUME_STEPS}"
    la, lb = logged_losses(run_dir(root, "a") / ck), logged_losses(run_dir(root, "b") / ck)
    same, diffs, why = resume_verdict(la, lb, ctx.resume_tol)
    weight_diff = weights_max_diff(run_dir(root, "a") / "final", run_dir(root, "b") / "final")
    info = run_info(root, "b")
    resumed = str(info.get("resumed_from", "")).endswith(f"checkpoint-{C.RESUME_STOP}")
    res = {"ok": same and resumed,
           "summary": f"max |loss diff| {diffs['max_loss_diff']:.2e} over {len(la)} steps "
                      f"({diffs['max_loss_diff_before_stop']:.2e} before the stop), max |weight diff| {weight_diff:.2e}",
           "figures": {"steps": C.RESUME_STEPS, "stopped_at": C.RESUME_STOP, **diffs, "max_weight_diff": weight_diff,
                       "resumed_from": Path(str(info.get("resumed_from"))).name,
                       "precision": info.get("precision"), "attn_implementation": info.get("attn_implementation"),
                       "tokens_per_s_uninterrupted": run_info(root, "a").get("tokens_per_second"),
                       "command (stop, then again without --stop_after_steps)":
                           C.shown(C.resume_cmds(root)["stopped"], root)},
           "rows": [{"step": s, "loss uninterrupted": x, "loss resumed": y} for (s, x), (_, y) in zip(la, lb)]}
    if not res["ok"]:
        res["error"] = why or f"run b did not resume from checkpoint-{C.RESUME_STOP}"
    return res


def resume_verdict(la: list, lb: list, tol: float) -> tuple[bool, dict, str | None]:
    """Whether the resumed curve ``lb`` is the uninterrupted ``la``, its figures, and why not.
    A difference before the stop is not the resume's (both runs are one process there) but the
    kernels' nondeterminism, and says so rather than blaming the resume."""
    before, after = curve_diffs(la, lb, C.RESUME_STOP)
    diffs = {"max_loss_diff": max(before, after), "max_loss_diff_before_stop": before, "tolerance": tol}
    if before > tol:
        return False, diffs, (f"the runs differ by {before:.3g} before the stop at step {C.RESUME_STOP}: the "
                              f"kernels are not deterministic, so the resume cannot be judged")
    if after > tol:
        return False, diffs, f"resumed run differs: max |loss diff| {after:.3g} > {tol:g}"
    return True, diffs, None


def step_fsdp(ctx) -> dict:
    root = ctx.root()
    run_logged(C.fsdp_cmd(root), ctx.logs / "fsdp.log", ctx.timeout)
    info = run_info(root, "fsdp")
    last = max(run_dir(root, "fsdp").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    sharded = (last / "optimizer_0").is_dir()  # FSDP's sharded optimizer state, not optimizer.pt
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(run_dir(root, "fsdp") / "final"))  # plain folder
    steps = int(C.FSDP_FLAGS[C.FSDP_FLAGS.index("--max_steps") + 1])
    ok = sharded and info.get("global_step") == steps and info.get("world_size") == 1
    res = {"ok": ok, "summary": f"{info.get('tokens_per_second'):,} tokens/s, sharded checkpoint: "
                                f"{'yes' if sharded else 'no'}",
           "figures": {"command": C.shown(C.fsdp_cmd(root), root),
                       "fsdp": C.FSDP_MODE, "world_size": info.get("world_size"),
                       "global_step": info.get("global_step"), "tokens_per_s": info.get("tokens_per_second"),
                       "precision": info.get("precision"), "sharded_checkpoint": sharded,
                       "final_loads": True}}
    if not ok:
        res["error"] = f"FSDP run: sharded checkpoint {sharded}, steps {info.get('global_step')}/{steps}"
    return res


def _stop_and_resume(ctx, cmds: dict, prefix: str, run_b: str) -> tuple[list, list]:
    """Run the three commands (uninterrupted, stopped at RESUME_STOP, resumed); the two loss
    curves at the last checkpoint."""
    root = ctx.root()
    for name, cmd in cmds.items():
        run_logged(cmd, ctx.logs / f"{prefix}_{name}.log", ctx.timeout)
        if name == "stopped" and (run_dir(root, run_b) / "final").exists():
            raise StepError(f"--stop_after_steps {C.RESUME_STOP} did not stop {run_b}")
    ck = f"checkpoint-{C.RESUME_STEPS}"
    run_a = flag_value(cmds["uninterrupted"], "--run_name_dir")
    return logged_losses(run_dir(root, run_a) / ck), logged_losses(run_dir(root, run_b) / ck)


def flag_value(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def step_fsdp_muon(ctx) -> dict:
    """--optim muon under FSDP2 on NCCL (one rank: the DTensor path, the sharded optimizer state
    in torch.distributed.checkpoint): stopped and resumed, its losses are the uninterrupted run's."""
    cmds = C.fsdp_muon_cmds(ctx.root())
    la, lb = _stop_and_resume(ctx, cmds, "fsdp_muon", "fsdp-muon-b")
    same, diffs, why = resume_verdict(la, lb, ctx.resume_tol)
    ck = run_dir(ctx.root(), "fsdp-muon-b") / f"checkpoint-{C.RESUME_STOP}"
    sharded = (ck / "optimizer_0").is_dir()
    res = {"ok": same and sharded,
           "summary": f"max |loss diff| {diffs['max_loss_diff']:.2e} over {len(la)} steps "
                      f"({diffs['max_loss_diff_before_stop']:.2e} before the stop), sharded optimizer state: "
                      f"{'yes' if sharded else 'no'}",
           "figures": {**diffs, "sharded_checkpoint": sharded,
                       "command (stop, then again without --stop_after_steps)":
                           C.shown(cmds["stopped"], ctx.root())},
           "rows": [{"step": s, "loss uninterrupted": x, "loss resumed": y} for (s, x), (_, y) in zip(la, lb)]}
    if not res["ok"]:
        res["error"] = f"FSDP + Muon: {why or 'no sharded optimizer state in ' + ck.name}"
    return res


def step_compile_fallback(ctx) -> dict:
    """No C compiler for Triton: on by default, compile is turned off with a message and the run
    trains; asked for, the run is refused with one line naming --torch_compile false."""
    cmds = C.compile_fallback_cmds(ctx.root())
    default = run_logged(cmds["default"], ctx.logs / "compile_default.log", ctx.timeout, C.NO_COMPILER)
    asked = run_logged(cmds["asked"], ctx.logs / "compile_asked.log", ctx.timeout, C.NO_COMPILER, expect_rc=2)
    said = "torch.compile: off, training eager" in default and "no C compiler" in default
    trained = (run_dir(ctx.root(), "no-compiler") / "final" / "model.safetensors").exists()
    refused = [ln for ln in asked.splitlines() if ln.startswith("error:")]
    ok = said and trained and len(refused) == 1 and "--torch_compile false" in refused[0] \
        and not (run_dir(ctx.root(), "no-compiler-asked") / "pretokenized_data").exists()
    res = {"ok": ok, "summary": f"default: eager with a message {'yes' if said and trained else 'NO'}; "
                                f"asked: refused {'yes' if refused else 'NO'}",
           "figures": {"environment": " ".join(f"{k}={v}" for k, v in C.NO_COMPILER.items()),
                       "default_run_said": said, "default_run_trained": trained,
                       "asked_refusal": refused[0] if refused else None}}
    if not ok:
        res["error"] = "compile fallback did not behave; see compile_default.log and compile_asked.log"
    return res


def step_profile(ctx) -> dict:
    """--profile_steps on the GPU: CUDA kernels recorded and charged to the op groups."""
    run_logged(C.profile_cmd(ctx.root()), ctx.logs / "profile.log", ctx.timeout)
    prof = json.loads((run_dir(ctx.root(), "profiled") / "profile" / "profile.json").read_text())
    rows = [{k: r.get(k) for k in ("group", "ms_per_step", "gpu_ms_per_step", "share")} for r in prof["groups"]]
    gemm = next(r for r in prof["groups"] if r["group"] == "GEMM").get("gpu_ms_per_step") or 0
    ok = prof.get("gpu_busy_share") is not None and gemm > 0
    res = {"ok": ok, "summary": f"GPU busy {100 * (prof.get('gpu_busy_share') or 0):.1f}% of "
                                f"{prof['step_ms']:.1f} ms steps; GEMM kernels {gemm:.2f} ms per step",
           "figures": {"steps": prof["steps"], "step_ms": prof["step_ms"], "gpu_busy_share": prof.get("gpu_busy_share"),
                       "command": C.shown(C.profile_cmd(ctx.root()), ctx.root())}, "rows": rows}
    if prof.get("kernels"):  # each kernel once, by its own name: a table of its own (report.step_section)
        res["kernels"] = {"--profile_steps, kernels by name": prof["kernels"]}
    if not ok:
        res["error"] = "the profile holds no GPU kernel time"
    return res


def step_server(ctx) -> dict:
    """benchmarks/server_throughput.py (serial vs batched servers, 1/8/32 clients) on the GPU,
    serving the micro model the resume step trained."""
    work = ctx.work / "server"
    run_logged(C.server_cmd(ctx.micro_model(), work), ctx.logs / "server.log", ctx.timeout)
    res = json.loads((work / "results.json").read_text())
    rows = [{"mode": mode, **{k: r[k] for k in ("clients", "requests", "errors", "tokens_per_s",
                                                 "p50_seconds", "p95_seconds")},
             **{f"stall_{k}": v for k, v in r.get("stalls", {}).items()}}
            for mode in ("serial", "batched") for r in res[mode]]
    speedup = {f"batched_over_serial_{b['clients']}_clients": round(b["tokens_per_s"] / max(s["tokens_per_s"], 1e-9), 2)
               for s, b in zip(res["serial"], res["batched"])}
    errors = sum(r["errors"] for r in rows)
    top = max(res["batched"], key=lambda r: r["clients"])
    dtype = res["meta"].get("dtype")
    out = {"ok": errors == 0 and all(r["tokens_per_s"] > 0 for r in rows) and dtype in ("bfloat16", "float16"),
           "summary": f"batched {top['tokens_per_s']:,} tokens/s at {top['clients']} clients in {dtype}, "
                      f"{errors} errors",
           "figures": {"model": "micro preset (2 layers, 64 wide, context 64)", "weights": dtype,
                       "kv_cache_mb (auto)": res["meta"].get("kv_cache_mb"),
                       "max_concurrency": res["meta"].get("max_concurrency"), **speedup, "burst": res.get("burst"),
                       "command": C.shown(C.server_cmd(Path("MODEL"), Path("WORK")))},
           "rows": rows}
    if not out["ok"]:
        out["error"] = f"{errors} failed requests, weights {dtype}; see {work}"
    return out


def gguf_readback(path: Path, n_layer: int) -> str | None:
    """The file read back with gguf's reader: a GPT-2 with the model's layer count; None when
    it holds, else what is wrong."""
    from gguf import GGUFReader

    r = GGUFReader(str(path))
    field = lambda key: r.fields[key].parts[r.fields[key].data[0]]  # noqa: E731
    arch = bytes(field("general.architecture")).decode()
    blocks = int(field(f"{arch}.block_count")[0]) if f"{arch}.block_count" in r.fields else None
    if arch != "gpt2" or blocks != n_layer or not r.tensors:
        return f"{path.name}: architecture {arch!r}, {blocks} blocks, {len(r.tensors)} tensors"
    return None


# f16 logits against transformers' at the first step; llama.cpp's GPT-2 uses the tanh GELU
# (ours the exact one, < 5e-4 apart) and half-precision weights, so not bit-equal
F16_LOGIT_TOL = 0.05


def verify_problems(out: str, rows: list[dict]) -> list[str]:
    """export_gguf.py --verify prints one JSON line per file. Held: llama.cpp tokenizes the
    prompt as transformers does, and the f16 file's first logits are within F16_LOGIT_TOL.
    Greedy agreement is recorded, not required: an under-trained micro model has near-ties
    that half precision flips (tests/export/test_export_gguf.py requires it of a memorised text)."""
    checks = {Path(c["gguf"]).name: c for c in
              (json.loads(ln) for ln in out.splitlines() if ln.startswith("{") and '"gguf"' in ln)}
    problems = [] if checks else ["no --verify result printed"]
    for row in rows:
        c = checks.get(row["file"])
        if c is None:
            problems.append(f"{row['file']}: not verified")
            continue
        row.update(greedy_prefix=f"{c['matching_prefix']}/{c['steps']}", tokenizer_agrees=c["prompt_tokens_agree"],
                   max_first_logit_diff=round(c["max_first_logit_diff"], 5))
        if not c["prompt_tokens_agree"]:
            problems.append(f"{row['file']}: llama.cpp tokenizes the prompt differently")
        if "-f16" in row["file"] and c["max_first_logit_diff"] > F16_LOGIT_TOL:
            problems.append(f"{row['file']}: first logits differ by {c['max_first_logit_diff']:.3g}")
    return problems


def step_gguf(ctx) -> dict:
    """10_scripts/export_gguf.py on the micro model; the project's check (--verify: llama.cpp
    greedy tokens against transformers) where llama-cpp-python is installed, else a read-back."""
    from londonlm.export.gguf_check import llama_cpp_available

    model = ctx.micro_model()
    verify = llama_cpp_available()
    out = run_logged(C.gguf_cmd(ctx.root(), model.parent.name, verify), ctx.logs / "gguf.log", ctx.timeout)
    files = sorted((model.parent / "gguf").glob("*.gguf"))
    if not files:
        raise StepError(f"no .gguf file in {model.parent / 'gguf'}")
    n_layer = json.loads((model / "config.json").read_text())["n_layer"]
    rows = [{"file": f.name, "bytes": f.stat().st_size} for f in files]
    if verify:
        problems = verify_problems(out, rows)
    else:
        problems = [p for p in (gguf_readback(f, n_layer) for f in files) if p]
    check = f"llama.cpp round trip (--verify): same prompt tokens, f16 first logits within {F16_LOGIT_TOL}" if verify else \
        "read back with gguf.GGUFReader (llama-cpp-python not installed: --verify skipped)"
    res = {"ok": not problems, "summary": ", ".join(f"{r['file']} {r['bytes'] / 1e6:.2f} MB" for r in rows),
           "figures": {"check": check, "check_passed": not problems,
                       "command": C.shown(C.gguf_cmd(ctx.root(), model.parent.name, verify), ctx.root())},
           "rows": rows}
    if problems:
        res["error"] = "; ".join(problems)
    return res


def step_race(ctx) -> dict:
    """benchmarks/gpu_race.py on the data prepared on a CPU (``--race_data``): ours against the
    seed recipe at equal seconds, both scored in bits per byte on the same held-out text."""
    cmd = C.race_cmd(ctx.race, ctx.work, ctx.out)
    run_logged(cmd, ctx.logs / "race.log", C.race_timeout(ctx.race.seconds))
    res = json.loads((ctx.out / "gpu_race.json").read_text())
    rows = [{"recipe": name, **{k: res[name].get(k) for k in ("steps", "tokens", "train_seconds", "tokens_per_s",
                                                               "mfu", "bpb")}} for name in ("ours", "seed_recipe")]
    ours, seed = res["ours"].get("bpb"), res["seed_recipe"].get("bpb")
    return {"summary": f"held-out bpb ours {ours}, seed recipe {seed} after {ctx.race.seconds:g} s each "
                       f"({ctx.race.preset}; ours {'lower' if res.get('ours_lower') else 'not lower'})",
            "figures": {"command": C.shown(cmd), "json": str(ctx.out / "gpu_race.json")}, "rows": rows}
