"""benchmarks/gpu_acceptance.py on a machine without a GPU: its arithmetic (throughput, MFU,
medians, pytest's summary), the command lines it starts, the report writer and the
BENCHMARKS.md section, the dry run, the one-line refusal without CUDA, and the step runner."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_acceptance.py"
if str(REPO / "benchmarks") not in sys.path:
    sys.path.append(str(REPO / "benchmarks"))  # appended: benchmarks/ never shadows a package

from gpu import arith, cli_steps, commands as C, report, runner  # noqa: E402

SMALL_FLOPS = 855_383_040  # 6 * 123,689,472 + 12 * 12 * 768 * 1024 (worked by hand below)


# --------------------------------------------------------------------------- arithmetic

def test_small_flops_per_token_is_the_projects_formula():
    from londonlm.training.model import ModelShape

    shape = ModelShape(**arith.SMALL)
    # N = 12 layers * (12 d^2 + 13 d) + 2 d (final norm) + LM head 50304 * 768
    n = 12 * (12 * 768 ** 2 + 13 * 768) + 2 * 768 + 50304 * 768
    assert n == 123_689_472
    terms = arith.flop_terms(12, 12, 768, 1024, n)
    assert (terms["six_N"], terms["attention"]) == (742_136_832, 113_246_208)
    assert terms["flops_per_token"] == shape.flops_per_token() == SMALL_FLOPS
    assert terms["formula"].startswith("6*N + 12*L*H*Q*T")


def test_mfu_on_known_numbers():
    # 500k tokens/s of GPT-2 Small on a 989 TFLOP/s (H100/H200 dense bf16) GPU: 43.2%
    assert arith.mfu(500_000, SMALL_FLOPS, 989e12) == pytest.approx(0.432448, abs=1e-6)
    assert arith.mfu(1e6, 1e9, 1e15) == pytest.approx(1.0)
    assert arith.mfu(500_000, SMALL_FLOPS, None) is None  # unknown peak: no made-up MFU


def test_tokens_per_second_is_the_median_window_rate():
    assert arith.tokens_per_step(16, 1024) == 16_384
    assert arith.tokens_per_step(16, 1024, grad_accum=2) == 32_768
    # rates 163,840 / 81,920 / 327,680 tokens/s: the median, not the mean (191,146.7)
    assert arith.tokens_per_second([1.0, 2.0, 0.5], 10, 16_384) == 163_840
    assert arith.median_ms([0.002, 0.001, 0.010]) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        arith.tokens_per_second([], 10, 16_384)


def test_time_windows_syncs_and_leaves_warmup_untimed():
    now, calls = [0.0], []

    def step():  # each step "takes" one second of the fake clock
        calls.append("step")
        now[0] += 1.0

    windows = arith.time_windows(step, lambda: calls.append("sync"), lambda: now[0],
                                 warmup=3, windows=4, steps_per_window=5)
    assert windows == [5.0, 5.0, 5.0, 5.0]
    assert calls.count("step") == 3 + 4 * 5 and calls.count("sync") == 2 * 4
    assert calls[:4] == ["step", "step", "step", "sync"]  # warm-up first, then a synced window


def test_pytest_summary_and_failures_parsed():
    out = ("..F.s\nFAILED tests/test_gpu.py::test_x - AssertionError: 1 != 2\n"
           "ERROR tests/test_gpu.py::test_y - RuntimeError\n"
           "3 passed, 1 failed, 2 skipped, 812 deselected, 1 error in 12.34s\n")
    assert arith.pytest_counts(out) == {"passed": 3, "failed": 1, "skipped": 2, "deselected": 812, "errors": 1}
    assert arith.failed_tests(out) == ["tests/test_gpu.py::test_x", "tests/test_gpu.py::test_y"]
    assert arith.pytest_counts("no tests ran in 0.1s")["passed"] == 0


def test_max_abs_diff():
    assert arith.max_abs_diff([1.0, 2.0, 3.0], [1.0, 2.5, 2.9]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        arith.max_abs_diff([1.0], [1.0, 2.0])


def test_curve_diffs_split_at_the_stop():
    a = [(1, 6.0), (2, 5.0), (3, 4.0), (4, 3.0)]
    assert arith.curve_diffs(a, [(1, 6.0), (2, 5.1), (3, 4.0), (4, 3.3)], 2) == pytest.approx((0.1, 0.3))
    with pytest.raises(ValueError):
        arith.curve_diffs(a, a[:3], 2)


# the first GPU run's curves (H200, without deterministic kernels): apart from step 4, before the stop
H200_A = [(1, 6.2558), (2, 6.2522), (3, 6.2242), (4, 6.160864), (5, 6.075263), (6, 5.998664), (7, 5.92253)]
H200_B = [(1, 6.2558), (2, 6.2522), (3, 6.2242), (4, 6.160863), (5, 6.075244), (6, 5.998649), (7, 5.92247)]


def test_resume_verdict_blames_the_kernels_for_a_difference_before_the_stop():
    same, diffs, why = cli_steps.resume_verdict(H200_A, H200_B, 1e-5)
    assert not same and diffs["max_loss_diff_before_stop"] == pytest.approx(1.9e-5, abs=1e-7)
    assert "before the stop" in why and "not deterministic" in why


def test_resume_verdict_blames_the_resume_for_a_difference_after_it():
    b = [(s, x + (1e-3 if s > C.RESUME_STOP else 0.0)) for s, x in H200_A]
    same, diffs, why = cli_steps.resume_verdict(H200_A, b, 1e-5)
    assert not same and diffs["max_loss_diff_before_stop"] == 0 and "resumed run differs" in why
    assert cli_steps.resume_verdict(H200_A, H200_A, 1e-5) == (True, {"max_loss_diff": 0.0, "max_loss_diff_before_stop": 0.0,
                                                                     "tolerance": 1e-5}, None)


# --------------------------------------------------------------------------- command lines

def flag(cmd: list[str], name: str) -> str:
    """The value after ``name`` in ``cmd`` (a missing flag fails the test)."""
    return cmd[cmd.index(name) + 1]


def test_pytest_command_selects_the_gpu_marker():
    cmd = C.pytest_cmd()
    assert cmd[1:5] == ["-m", "pytest", "-m", "gpu"] and cmd[-1] == "tests/" and "-rfE" in cmd


def test_resume_commands_stop_then_resume_the_same_run(tmp_path):
    cmds = C.resume_cmds(tmp_path)
    for cmd in cmds.values():
        assert cmd[1] == str(C.TRAIN) and flag(cmd, "--preset") == "micro"
        assert flag(cmd, "--root") == str(tmp_path) and flag(cmd, "--max_steps") == str(C.RESUME_STEPS)
        assert flag(cmd, "--save_steps") == str(C.RESUME_STOP) and flag(cmd, "--logging_steps") == "1"
    a, stop, again = cmds["uninterrupted"], cmds["stopped"], cmds["resumed"]
    assert flag(a, "--run_name_dir") == "a" and "--stop_after_steps" not in a and "--fresh" in a
    assert flag(stop, "--run_name_dir") == "b" and flag(stop, "--stop_after_steps") == str(C.RESUME_STOP)
    # the resume is the same command without the stop, and without --fresh (which starts over)
    assert flag(again, "--run_name_dir") == "b" and "--stop_after_steps" not in again and "--fresh" not in again
    # deterministic kernels, so that a GPU's run-to-run noise is not read as a resume error
    assert all(flag(cmd, "--full_determinism") == "true" for cmd in [*cmds.values(), *C.fsdp_muon_cmds(tmp_path).values()])


def test_fsdp_command_is_torchrun_with_one_process_and_fsdp(tmp_path):
    cmd = C.fsdp_cmd(tmp_path)
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and "--nproc_per_node=1" in cmd
    assert flag(cmd, "--fsdp") == "full_shard auto_wrap" and flag(cmd, "--preset") == "micro"
    assert cmd.index("--nproc_per_node=1") < cmd.index(str(C.TRAIN))  # torchrun's flag, not the script's
    assert "'full_shard auto_wrap'" in C.shown(cmd, tmp_path) and "ROOT" in C.shown(cmd, tmp_path)


def test_server_and_gguf_commands(tmp_path):
    cmd = C.server_cmd(tmp_path / "final", tmp_path / "w")
    assert cmd[1] == str(C.SERVER_BENCH) and flag(cmd, "--device") == "cuda"
    assert flag(cmd, "--model") == str(tmp_path / "final")
    assert cmd[cmd.index("--clients") + 1:cmd.index("--clients") + 4] == ["1", "8", "32"]
    assert "--timeline" in cmd  # a slow request's wait is located, not just counted
    g = C.gguf_cmd(tmp_path, "a", verify=False)
    assert g[1] == str(C.EXPORT) and flag(g, "--run_name") == "a" and flag(g, "--root") == str(tmp_path)
    assert "--verify" not in g and "--verify" in C.gguf_cmd(tmp_path, "a", verify=True)


def test_server_benchmark_takes_a_device():
    out = subprocess.run([sys.executable, str(C.SERVER_BENCH), "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "--device {cpu,cuda}" in out.stdout


# --------------------------------------------------------------------------- reports

def fake_results() -> dict:
    return {"command": "python benchmarks/gpu_acceptance.py --bench_md BENCHMARKS.md", "date": "2026-11-25",
            "machine": {"gpu": "NVIDIA H200", "gpu_memory_gib": 139.8, "driver": "570.86", "cuda": "12.8",
                        "torch": "2.9.0", "transformers": "5.24.0", "python": "3.11.7", "cpu": "Intel Xeon"},
            "steps": {
                "throughput": {"title": "GPT-2 Small training throughput and MFU", "status": "passed",
                               "seconds": 93.31, "summary": "512,345 tokens/s (torch.compile), MFU 44.3%",
                               "figures": {"flops_per_token": SMALL_FLOPS, "peak_flops_bf16": 989e12},
                               "rows": [{"variant": "eager", "tokens_per_s": 401234.5, "mfu": 0.347},
                                        {"variant": "torch.compile", "tokens_per_s": 512345.0, "mfu": 0.4431}]},
                "fsdp": {"title": "FSDP2 on one GPU", "status": "failed", "seconds": 4.0,
                         "error": "StepError: torchrun exit 1 | NCCL error"}}}


def test_report_json_and_markdown(tmp_path):
    paths = report.write_reports(fake_results(), tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["machine"]["gpu"] == "NVIDIA H200" and data["steps"]["fsdp"]["status"] == "failed"
    md = paths["md"].read_text()
    assert md.startswith("## GPU acceptance (NVIDIA H200, 2026-11-25)\n")
    assert "    python benchmarks/gpu_acceptance.py --bench_md BENCHMARKS.md" in md
    assert "driver 570.86, CUDA 12.8, torch 2.9.0, transformers 5.24.0" in md
    assert "| 1. throughput | passed | 93.3 | 512,345 tokens/s (torch.compile), MFU 44.3% |" in md
    assert "| 2. fsdp | failed | 4 | StepError: torchrun exit 1 \\| NCCL error |" in md  # a | escaped
    assert "| torch.compile | 512,345.0 | 0.4431 |" in md and "| flops_per_token | 855,383,040 |" in md
    assert "### 2. FSDP2 on one GPU — failed (4.0 s)" in md
    assert "bench_md" not in paths


def test_bench_md_section_appended_when_absent_then_replaced(tmp_path):
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n\nolder figures\n")
    report.write_reports(fake_results(), tmp_path / "out", bench)
    first = bench.read_text()
    assert first.startswith("# Benchmarks\n\nolder figures\n\n" + report.BEGIN + "\n## GPU acceptance (")
    assert first.rstrip().endswith(report.END)
    # a later run replaces the section in place: text after it stays, no second copy
    bench.write_text(first + "\n## Later section\n")
    later = fake_results()
    later["date"] = "2026-12-01"
    report.write_reports(later, tmp_path / "out", bench)
    text = bench.read_text()
    assert text.count(report.BEGIN) == text.count(report.END) == 1
    assert "2026-12-01" in text and "2026-11-25" not in text
    assert text.startswith("# Benchmarks\n\nolder figures\n\n") and text.endswith("\n## Later section\n")


def test_a_run_of_some_steps_keeps_what_other_runs_recorded(tmp_path):
    """H200, 2026-11-28: a `--steps throughput` run replaced the whole acceptance block of
    BENCHMARKS.md, erasing the earlier record of pytest, resume, fsdp ... probe. A run of only some
    steps now writes a block of its own, named by its steps."""
    full_steps = [s.name for s in runner.STEPS if s.in_all]
    assert report.part_name(full_steps, full_steps) is None
    assert report.part_name(["pytest", *full_steps, "race"], full_steps) is None  # every default step
    assert report.part_name(["throughput"], full_steps) == "throughput"
    assert report.part_name(["throughput", "memory"], full_steps) == "throughput-memory"
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n\nolder figures\n")
    full = fake_results()
    full["steps"]["pytest"] = {"title": "gpu-marked tests", "status": "passed", "seconds": 64.5,
                               "summary": "12 passed"}
    report.write_reports(full, tmp_path / "out", bench)  # the full run's block, as before
    bench.write_text(bench.read_text() + "\n## Later section\n")
    only = fake_results()
    only["date"] = "2026-11-28"
    only["steps"] = {"throughput": {**only["steps"]["throughput"], "summary": "600,000 tokens/s, MFU 50.0%"}}
    begin, end = report.markers("throughput")
    assert (begin, end) == ("<!-- gpu-acceptance-throughput:begin -->", "<!-- gpu-acceptance-throughput:end -->")
    paths = report.write_reports(only, tmp_path / "out", bench, "throughput")
    text = bench.read_text()
    assert text.count(report.BEGIN) == text.count(report.END) == 1
    main_block = text[text.index(report.BEGIN):text.index(report.END)]
    assert "12 passed" in main_block and "2026-11-25" in main_block and "600,000" not in main_block  # kept whole
    # its own block, right after the full run's, before what followed it
    assert text.index(report.END) < text.index(begin) < text.index(end) < text.index("## Later section")
    own = text[text.index(begin):text.index(end)]
    assert "## GPU acceptance, steps throughput (NVIDIA H200, 2026-11-28)" in own and "600,000" in own
    assert paths["md"].read_text().startswith("## GPU acceptance, steps throughput (")
    # the next throughput run replaces its own block in place; the full run's stays
    again = {**only, "date": "2026-12-02"}
    report.write_reports(again, tmp_path / "out", bench, "throughput")
    text = bench.read_text()
    assert text.count(begin) == text.count(end) == 1 and "2026-12-02" in text and "2026-11-28" not in text
    assert "12 passed" in text and text.endswith("\n## Later section\n")
    # another subset gets a block of its own beside it; a full run replaces only the full block
    report.write_reports({**only, "date": "2026-12-03"}, tmp_path / "out", bench, "memory")
    report.write_reports({**full, "date": "2026-12-04"}, tmp_path / "out", bench)
    text = bench.read_text()
    assert text.index(end) < text.index("<!-- gpu-acceptance-memory:begin -->") < text.index("## Later section")
    assert all(d in text for d in ("2026-12-02", "2026-12-03", "2026-12-04")) and "2026-11-25" not in text
    assert text.count(report.BEGIN) == 1


def test_main_writes_a_subset_runs_block_and_the_full_runs_own(tmp_path, monkeypatch):
    """gpu_acceptance.main over fake steps (CUDA pretended): --steps one writes the block
    gpu-acceptance-one, leaving the full run's; a run of every step writes the full block."""
    import gpu_acceptance
    import torch

    steps = [runner.Step("one", "first", lambda c: {"summary": "one ran"}, lambda c: []),
             runner.Step("two", "second", lambda c: {"summary": "two ran"}, lambda c: []),
             runner.Step("extra", "only when named", lambda c: {"summary": "extra ran"}, lambda c: [],
                         in_all=False)]
    monkeypatch.setattr(gpu_acceptance, "STEPS", steps)
    monkeypatch.setattr(gpu_acceptance, "BY_NAME", {s.name: s for s in steps})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(report, "machine_info", lambda: {"gpu": "Fake GPU"})
    bench = tmp_path / "B.md"
    common = ["--out", str(tmp_path / "out"), "--work", str(tmp_path / "w"), "--bench_md", str(bench)]
    assert gpu_acceptance.main(common) == 0
    assert gpu_acceptance.main([*common, "--steps", "one"]) == 0
    assert gpu_acceptance.main([*common, "--steps", "all,extra"]) == 0  # every default step: the full run
    text = bench.read_text()
    assert text.count(report.BEGIN) == 1 and text.count("<!-- gpu-acceptance-one:begin -->") == 1
    full_block = text[text.index(report.BEGIN):text.index(report.END)]
    assert "two ran" in full_block and "extra ran" in full_block
    assert "two ran" not in text[text.index("<!-- gpu-acceptance-one:begin -->"):]


def test_replace_section_edge_cases():
    assert report.replace_section("", "## S\n") == f"{report.BEGIN}\n## S\n{report.END}\n"
    with pytest.raises(ValueError):
        report.replace_section(f"x\n{report.BEGIN}\nno end marker\n", "## S")
    assert report.fmt(1234567.0) == "1,234,567.0" and report.fmt(0.43244) == "0.4324"
    assert report.fmt(None) == "–" and report.fmt(True) == "yes" and report.fmt([1, 2000]) == "1 / 2,000"


# --------------------------------------------------------------------------- the script

def run_script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          cwd="/", env=env)


def test_dry_run_lists_every_step_and_its_commands(tmp_path):
    r = run_script("--dry_run", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    for i, step in enumerate([s for s in runner.STEPS if s.in_all], 1):
        assert f"\n{i}. {step.name}: {step.title}\n" in r.stdout
    assert "gpu_race.py" not in r.stdout  # minutes long, on prepared data: only when named
    assert "-m pytest -m gpu" in r.stdout and "--stop_after_steps 6" in r.stdout
    assert "--nproc_per_node=1" in r.stdout and "--fsdp 'full_shard auto_wrap'" in r.stdout
    assert "--device cuda" in r.stdout and "export_gguf.py" in r.stdout and "torch.compile" in r.stdout
    assert not (tmp_path / "out").exists() and not (tmp_path / "w").exists()  # nothing ran


def test_dry_run_of_a_subset_and_unknown_steps():
    r = run_script("--dry_run", "--steps", "memory,resume", "--no_compile")
    assert r.returncode == 0 and "1. memory:" in r.stdout and "2. resume:" in r.stdout
    assert "throughput" not in r.stdout and "server" not in r.stdout
    bad = run_script("--dry_run", "--steps", "memory,warp")
    assert bad.returncode == 2 and "unknown step(s) warp" in bad.stderr


def test_without_cuda_one_error_line_and_exit_2(tmp_path):
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so this holds on a GPU machine too
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    r = run_script("--out", str(tmp_path / "out"), env=env)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no CUDA GPU here; "), r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()


def test_a_failing_step_is_recorded_and_the_next_still_runs(tmp_path, monkeypatch):
    """main() over two fake steps (CUDA pretended): the first raises, the second runs and
    passes; the reports hold both and the exit code says one failed."""
    import gpu_acceptance
    import torch

    def boom(ctx):
        raise RuntimeError("CUDA out of memory")

    steps = [runner.Step("one", "fails", boom, lambda c: []),
             runner.Step("two", "passes", lambda c: {"summary": "fine", "figures": {"x": 1}}, lambda c: [])]
    monkeypatch.setattr(gpu_acceptance, "STEPS", steps)
    monkeypatch.setattr(gpu_acceptance, "BY_NAME", {s.name: s for s in steps})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(report, "machine_info", lambda: {"gpu": "Fake GPU"})
    bench = tmp_path / "B.md"
    rc = gpu_acceptance.main(["--out", str(tmp_path / "out"), "--work", str(tmp_path / "w"),
                              "--bench_md", str(bench)])
    assert rc == 1
    data = json.loads((tmp_path / "out" / "gpu_acceptance.json").read_text())
    assert list(data["steps"]) == ["one", "two"]
    assert data["steps"]["one"]["status"] == "failed" and "CUDA out of memory" in data["steps"]["one"]["error"]
    assert data["steps"]["two"]["status"] == "passed" and data["steps"]["two"]["figures"] == {"x": 1}
    assert "RuntimeError" in (tmp_path / "out" / "logs" / "one_traceback.log").read_text()
    assert "## GPU acceptance (Fake GPU," in bench.read_text()


def test_run_step_marks_a_failed_check_failed(tmp_path):
    ctx = runner.Context(out=tmp_path, work=tmp_path)
    bad = runner.run_step(runner.Step("s", "t", lambda c: {"ok": False, "error": "loss differs"}, list), ctx)
    good = runner.run_step(runner.Step("s", "t", lambda c: {"ok": True, "summary": "x"}, list), ctx)
    assert (bad["status"], bad["error"], good["status"]) == ("failed", "loss differs", "passed")
    assert "ok" not in good and good["seconds"] >= 0 and good["title"] == "t"


@pytest.mark.parametrize("summary, code, status", [
    ("4 passed, 900 deselected in 20.1s", 0, "passed"),
    ("3 passed, 1 failed, 900 deselected in 20.1s", 1, "failed"),
    ("4 skipped, 900 deselected in 2.0s", 0, "failed"),   # nothing ran on the GPU
])
def test_pytest_step_reads_the_summary(tmp_path, monkeypatch, summary, code, status):
    from gpu import cli_steps

    def fake_run(cmd, log, timeout):
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("FAILED tests/test_gpu.py::test_a - boom\n" * (code != 0) + summary + "\n")
        if code:
            raise cli_steps.StepError(f"exit {code}")
        return log.read_text()

    monkeypatch.setattr(cli_steps, "run_logged", fake_run)
    r = runner.run_step(runner.BY_NAME["pytest"], runner.Context(out=tmp_path, work=tmp_path))
    assert r["status"] == status, r
    assert r["figures"]["passed"] == int(summary.split()[0]) * ("passed" in summary.split(",")[0])
    assert r["rows"] == ([{"failed test": "tests/test_gpu.py::test_a"}] if code else [])


def test_gguf_verify_output_judged_per_file():
    from gpu.cli_steps import verify_problems

    def line(name, agree=True, diff=0.01, prefix=5):
        return json.dumps({"gguf": f"/r/gguf/{name}", "steps": 16, "matching_prefix": prefix, "identical": prefix == 16,
                           "prompt_tokens_agree": agree, "max_first_logit_diff": diff})

    rows = [{"file": "a-f16.gguf"}, {"file": "a-q8_0.gguf"}]
    out = "gguf: wrote ...\nf16: 5/16 ...\n" + line("a-f16.gguf") + "\n" + line("a-q8_0.gguf", diff=0.3) + "\n"
    assert verify_problems(out, rows) == []  # q8_0's larger logit error and greedy drift are recorded only
    assert rows[0]["greedy_prefix"] == "5/16" and rows[1]["max_first_logit_diff"] == 0.3
    bad = line("a-f16.gguf", diff=0.2) + "\n" + line("a-q8_0.gguf", agree=False)
    problems = verify_problems(bad, [{"file": "a-f16.gguf"}, {"file": "a-q8_0.gguf"}])
    assert len(problems) == 2 and "first logits differ" in problems[0] and "tokenizes" in problems[1]
    assert verify_problems("no json here", [{"file": "a-f16.gguf"}])[0] == "no --verify result printed"


# --------------------------------------------------------------------------- the issue-43 steps

def test_fsdp_muon_commands_stop_then_resume_under_torchrun(tmp_path):
    cmds = C.fsdp_muon_cmds(tmp_path)
    for cmd in cmds.values():
        assert cmd[1:3] == ["-m", "torch.distributed.run"] and "--nproc_per_node=1" in cmd
        assert flag(cmd, "--fsdp") == C.FSDP_MODE and flag(cmd, "--optim") == "muon"
    assert flag(cmds["stopped"], "--stop_after_steps") == str(C.RESUME_STOP)
    again = cmds["resumed"]
    assert flag(again, "--run_name_dir") == "fsdp-muon-b" and "--fresh" not in again and "--stop_after_steps" not in again
    assert flag(cmds["uninterrupted"], "--run_name_dir") == "fsdp-muon-a"


def test_compile_fallback_commands_hide_the_compiler(tmp_path):
    cmds = C.compile_fallback_cmds(tmp_path)
    assert "--torch_compile" not in cmds["default"] and flag(cmds["asked"], "--torch_compile") == "true"
    assert C.NO_COMPILER["CC"].startswith("/nonexistent")


def test_run_logged_checks_the_expected_exit_code(tmp_path):
    from gpu.cli_steps import StepError, run_logged

    two = [sys.executable, "-c", "import os, sys; print(os.environ['X']); sys.exit(2)"]
    assert "seen" in run_logged(two, tmp_path / "a.log", 60, {"X": "seen"}, expect_rc=2)
    with pytest.raises(StepError, match=r"exit 2 \(expected 0\)"):
        run_logged(two, tmp_path / "b.log", 60, {"X": "x"})


def test_compile_fallback_step_judges_both_runs(tmp_path, monkeypatch):
    from gpu import cli_steps

    ctx = runner.Context(out=tmp_path / "out", work=tmp_path / "w")
    monkeypatch.setattr(runner.Context, "root", lambda self: tmp_path / "root")
    final = cli_steps.run_dir(tmp_path / "root", "no-compiler") / "final"
    final.mkdir(parents=True)
    (final / "model.safetensors").write_bytes(b"x")

    def fake(cmd, log, timeout, env_extra=None, expect_rc=0):
        assert env_extra == C.NO_COMPILER
        if "--torch_compile" in cmd:
            return "error: --torch_compile: torch.compile cannot build kernels here (no C compiler ...); " \
                   "install what it names, or pass --torch_compile false\n"
        return "torch.compile: off, training eager: it cannot build kernels here (no C compiler (CC=...))\n"

    monkeypatch.setattr(cli_steps, "run_logged", fake)
    assert runner.run_step(runner.BY_NAME["compile_fallback"], ctx)["status"] == "passed"
    monkeypatch.setattr(cli_steps, "run_logged", lambda cmd, *a, **k: "trained, compiled\n")
    assert runner.run_step(runner.BY_NAME["compile_fallback"], ctx)["status"] == "failed"


def test_profile_step_needs_gpu_kernel_time(tmp_path, monkeypatch):
    from gpu import cli_steps

    ctx = runner.Context(out=tmp_path / "out", work=tmp_path / "w")
    monkeypatch.setattr(runner.Context, "root", lambda self: tmp_path / "root")
    monkeypatch.setattr(cli_steps, "run_logged", lambda *a, **k: "")
    prof = cli_steps.run_dir(tmp_path / "root", "profiled") / "profile" / "profile.json"
    prof.parent.mkdir(parents=True)
    groups = [{"group": "GEMM", "ms_per_step": 1.0, "share": 0.5, "gpu_ms_per_step": 3.0}]
    by_name = {"steps": 3, "step_ms": 5.0, "gpu_busy_ms": 4.0, "gpu_idle_ms": 1.0, "gpu_busy_share": 0.8,
               "kernels_per_step": 2.0, "groups": [{"group": "GEMM", "ms_per_step": 3.0, "share_of_step": 0.6}],
               "top": [{"kernel": "nvjet_a", "group": "GEMM", "runs_per_step": 2.0, "ms_per_step": 3.0,
                        "share_of_step": 0.6}]}
    prof.write_text(json.dumps({"steps": 3, "step_ms": 5.0, "gpu_busy_share": 0.8, "groups": groups,
                                "kernels": by_name}))
    res = runner.run_step(runner.BY_NAME["profile"], ctx)
    assert res["status"] == "passed" and res["kernels"] == {"--profile_steps, kernels by name": by_name}
    assert "| `nvjet_a` | GEMM | 2 | 3.00 | 60.0% |" in "\n".join(report.step_section(1, "profile", res))
    prof.write_text(json.dumps({"steps": 3, "step_ms": 5.0, "groups": [{"group": "GEMM", "ms_per_step": 1.0,
                                                                          "share": 0.5}]}))
    assert runner.run_step(runner.BY_NAME["profile"], ctx)["status"] == "failed"  # a CPU-only profile


def test_dry_run_lists_the_gpu_readiness_steps():
    r = run_script("--dry_run", "--steps", "micro_batch,probe,fsdp_muon,compile_fallback,profile")
    assert r.returncode == 0, r.stderr
    assert "--optim muon" in r.stdout and "CC=/nonexistent/cc" in r.stdout and "--profile_steps 3" in r.stdout
    assert "fit_batch_to_memory" in r.stdout and "resolve_speed_settings on CUDA" in r.stdout


def test_race_step_runs_only_when_named_on_the_prepared_data(tmp_path):
    r = run_script("--dry_run", "--steps", "race,throughput", "--race_data", str(tmp_path / "d"),
                   "--race_seconds", "150", "--bench_md", str(tmp_path / "B.md"))
    assert r.returncode == 0, r.stderr
    assert "1. throughput:" in r.stdout and "2. race:" in r.stdout
    line = next(ln for ln in r.stdout.splitlines() if "gpu_race.py --data" in ln)
    assert f"--data {tmp_path / 'd'} --preset slm --seconds 150 --device cuda" in line
    assert f"--bench_md {tmp_path / 'B.md'}" in line


def test_race_step_reports_both_recipes_from_the_races_json(tmp_path, monkeypatch):
    res = {name: {"status": "ok", "steps": 10, "tokens": 1000, "train_seconds": 9.9, "tokens_per_s": 101.0,
                  "mfu": 0.3, "bpb": bpb} for name, bpb in (("ours", 2.5), ("seed_recipe", 2.9))}
    res["ours_lower"] = True
    ran = []

    def fake_run(cmd, log, timeout, **kw):
        ran.append(cmd)
        (tmp_path / "gpu_race.json").write_text(json.dumps(res))
        return ""

    monkeypatch.setattr(cli_steps, "run_logged", fake_run)
    ctx = runner.Context(out=tmp_path, work=tmp_path / "w", race=runner.RaceConfig(tmp_path / "d", "slm", 120.0))
    out = cli_steps.step_race(ctx)
    assert "--seconds" in ran[0] and ran[0][ran[0].index("--seconds") + 1] == "120"
    assert [row["recipe"] for row in out["rows"]] == ["ours", "seed_recipe"]
    assert out["rows"][0]["bpb"] == 2.5 and "ours 2.5, seed recipe 2.9" in out["summary"] and "lower" in out["summary"]


# --------------------------------------------------------------------------- the throughput step (levers)

def test_dry_run_of_the_throughput_step_lists_every_lever_variant():
    from gpu import levers

    r = run_script("--dry_run", "--steps", "throughput", "--throughput_seconds", "300")
    assert r.returncode == 0, r.stderr
    assert "1. throughput: MFU of GPT-2 Small and Medium" in r.stdout and "within 300 s" in r.stdout
    for i, v in enumerate(levers.PLAN, 1):
        assert f"     {i}. {v.name}: {v.model}, pad_vocab {'on' if v.pad_vocab else 'off'}" in r.stdout
    for lever in ("pad_vocab off", "fused loss", "compile eager", "max-autotune-no-cudagraphs", "micro-batch 16",
                  "muon-ns-compiled", "gc-frozen", "attention cudnn first", "attention flash first",
                  "attention in torch's order", "compile regional",
                  "medium, pad_vocab on, stock loss, compile default, 64 sequences a step"):
        assert lever in r.stdout, lever
    # every lever is measured on and off for both models where a compile fits the lease
    names = [v.name for v in levers.PLAN]
    for model in ("small", "medium"):
        assert any(v.model == model and not v.pad_vocab for v in levers.PLAN)
        assert any(v.model == model and v.fused_loss for v in levers.PLAN)
        # the eager step ours trains with under a short budget, with the stock loss and the fused one
        assert {v.fused_loss for v in levers.PLAN if v.model == model and v.compile == "eager"} == {False, True}
        assert {v.attention for v in levers.PLAN if v.model == model} == {"torch", "flash", "cudnn"}
    assert names[0].startswith("small: defaults") and names[1].startswith("medium: defaults")


def test_a_lease_like_the_last_reaches_both_models_flash_attention_before_remeasuring_known_levers():
    """With the H200's compile times of 2026-11-30 (Small 23.7 s, Medium 35.5 s) and that lease's
    170-s throughput budget, the plan measures both models' defaults and FlashAttention first (torch
    ran cuDNN's there, and flash was never measured) and the levers still unmeasured before it
    repeats any lever a lease measured (2026-11-28: Muon, the unpadded vocabulary, the fused loss
    compiled; 2026-11-30: cuDNN's attention first, regional compile, Medium at 64 sequences)."""
    from gpu import levers

    now, compile_s = [0.0], {"small": 23.7, "medium": 35.5}

    def measure(v):
        now[0] += (0 if v.compile == "eager" else compile_s[v.model]) + sum(levers.SUB_SECONDS[s] for s in v.subs)
        return [{"sub": s, "model": v.model, "first_step_s": compile_s[v.model], "mfu": 0.4} for s in v.subs]

    rows = levers.run_plan(levers.PLAN, measure, budget_s=170, clock=lambda: now[0])
    measured = [r["variant"] for r in rows if "mfu" in r]
    assert "small: FlashAttention first" in measured and "medium: FlashAttention first" in measured
    known = [i for i, v in enumerate(levers.PLAN)  # the fused loss was measured compiled only
             if (v.fused_loss and v.compile != "eager") or not v.pad_vocab or any(s.startswith("muon") for s in v.subs)
             or v.attention == "cudnn" or v.compile == "regional" or v.sequences]
    # the one unmeasured lever after them is the costliest compile (~4x a default one)
    unknown = [i for i, v in enumerate(levers.PLAN) if i not in known and "defaults" not in v.name
               and v.compile != "max-autotune-no-cudagraphs"]
    assert max(unknown) < min(known)


def test_throughput_plan_skips_what_would_overrun_the_budget_and_learns_compile_times():
    """A fake clock: each measured variant 'takes' its compile plus 5 s; once one model's compile
    is measured, later variants of it are estimated from it; a variant that would overrun is
    skipped with a row saying so, one that raises is an error row, and the plan goes on."""
    from gpu import levers

    now = [0.0]
    compile_s = {"small": 20.0, "medium": 50.0}

    def measure(v):
        if v.name == "boom":
            raise RuntimeError("out of memory")
        now[0] += (compile_s[v.model] if v.compile != "eager" else 0) + 5
        return [{"sub": s, "model": v.model, "first_step_s": compile_s[v.model], "mfu": 0.40 + 0.01 * i}
                for i, s in enumerate(v.subs)]

    plan = [levers.Variant("a", "small", subs=("adamw", "gc-frozen")),  # estimate 45 + 12 (guess)
            levers.Variant("boom", "small"),
            levers.Variant("b", "medium"),                               # 90 + 6
            levers.Variant("c", "small", pad_vocab=False),               # 20 + 6 (learned)
            levers.Variant("d", "small", compile="max-autotune-no-cudagraphs")]  # 80 + 6: over
    seen = []
    rows = levers.run_plan(plan, measure, budget_s=130, clock=lambda: now[0], progress=lambda rs: seen.append(len(rs)))
    by = {(r["variant"], r["sub"]): r for r in rows}
    assert [r["variant"] for r in rows] == ["a", "a", "boom", "b", "c", "d"]
    assert "out of memory" in by[("boom", "–")]["error"]
    assert "mfu" in by[("b", "adamw")] and "mfu" in by[("c", "adamw")]   # 25 + 55 + 25 = 105 s by then
    assert by[("d", "–")]["skipped"] == "needs ~86 s, 25 s left"
    assert seen == [2, 3, 4, 5, 6]  # written after each variant
    assert levers.best_mfu(rows, "small")["sub"] == "gc-frozen"
    said = levers.summary(rows)
    assert "small 41.0% (target 45%, not met; a, gc-frozen)" in said and "medium 40.0% (target 50%, not met" in said


def test_throughput_report_renders_from_a_result_json(tmp_path):
    """The step's JSON as gpu_acceptance.json holds it, rendered: one row per variant and sub,
    skipped ones said, the best MFU per model against its target in the summary."""
    from gpu import levers

    rows = [{"variant": "small: defaults (padded, stock loss, compiled)", "sub": "adamw", "model": "small",
             "micro_batch": "64 x 1", "rows": 30080, "tokens_per_s": 520000, "step_ms": 126.0,
             "first_step_s": 38.2, "loss": 10.31, "mfu": 0.4612},
            {"variant": "small: vocabulary unpadded", "sub": "adamw", "model": "small", "micro_batch": "64 x 1",
             "rows": 30000, "tokens_per_s": 480000, "step_ms": 136.5, "first_step_s": 36.0, "loss": 10.31,
             "mfu": 0.4257},
            {"variant": "medium: defaults (padded, stock loss, compiled)", "sub": "muon-ns-compiled",
             "model": "medium", "micro_batch": "32 x 1", "rows": 30080, "tokens_per_s": 190000, "step_ms": 172.4,
             "first_step_s": 71.0, "loss": 10.3, "mfu": 0.4988},
            {"variant": "small: max-autotune-no-cudagraphs", "sub": "–", "skipped": "needs ~160 s, 40 s left"}]
    res = {"title": "MFU of GPT-2 Small and Medium, each lever on and off (one lease)", "status": "passed",
           "seconds": 401.2, "summary": levers.summary(rows), "figures": {"budget_s": 420}, "rows": rows}
    results = {**fake_results(), "steps": {"throughput": res}}
    (tmp_path / "r.json").write_text(json.dumps(results))
    md = report.markdown(json.loads((tmp_path / "r.json").read_text()))
    assert ("| 1. throughput | passed | 401.2 | best MFU: small 46.1% (target 45%, met; small: defaults (padded, "
            "stock loss, compiled), adamw); medium 49.9% (target 50%, not met;") in md
    assert "| small: vocabulary unpadded | adamw | small | 64 x 1 | 30,000 | 480,000 | 136.5 | 36 | 10.31 | 0.4257 |" in md
    assert "| small: max-autotune-no-cudagraphs | – | – | – | – | – | – | – | – | – | needs ~160 s, 40 s left |" in md


def test_throughput_variant_measures_every_sub_on_one_model_on_the_cpu(monkeypatch):
    """The measuring code itself, run on the CPU at a tiny shape (the GPU lease is no place to
    find a typo): one row per sub, the padded rows, the loss finite, Python's GC back on after
    the frozen sub."""
    import gc

    from gpu import levers
    from londonlm.training.model import ModelShape

    monkeypatch.setattr(levers, "model_shape", lambda model, vocab: ModelShape(1, 2, 32, 16, 300))
    monkeypatch.setitem(levers.SEQUENCES, "small", 4)
    v = levers.Variant("tiny", "small", fused_loss=True, compile="eager", micro_batch=2,
                       subs=("adamw", "gc-frozen", "muon"))
    cfg = levers.ThroughputConfig(warmup=1, windows=2, steps_per_window=1)
    rows = levers.measure_variant(v, cfg, peak=1e6, device="cpu")
    assert [r["sub"] for r in rows] == ["adamw", "gc-frozen", "muon"]
    assert {r["attention"] for r in rows} == {"flash_attention"}  # the CPU's flash kernel
    assert all(r["rows"] == 384 and r["micro_batch"] == "2 x 2" and r["tokens_per_s"] > 0 and r["mfu"] > 0
               and r["loss"] == r["loss"] for r in rows)
    assert gc.isenabled()


def test_a_cudnn_first_variant_measures_under_that_kernel_order_and_restores_torchs(monkeypatch):
    """torch's own order puts cuDNN's attention last on most cards (a CPU's included; first on
    Hopper with cuDNN > 9.15); the lever's variant compiles and times its model with cuDNN first, the rest after it, and
    the order is torch's again afterwards, for the next variant."""
    from torch.nn.attention import SDPBackend, _cur_sdpa_kernel_backends

    from gpu import levers
    from londonlm.training.model import ModelShape
    from londonlm.training.speed import attention

    seen = []
    monkeypatch.setattr(levers, "model_shape", lambda model, vocab: ModelShape(1, 2, 32, 16, 300))
    monkeypatch.setattr(attention, "sdpa_kernel_for", lambda *a, **k: "cudnn_attention")
    monkeypatch.setattr(levers, "_measure_subs", lambda v, cfg, peak, device: seen.append(
        _cur_sdpa_kernel_backends(with_priority=True)) or [{"sub": "adamw"}])
    before = _cur_sdpa_kernel_backends(with_priority=True)
    assert before[0] != SDPBackend.CUDNN_ATTENTION
    cfg = levers.ThroughputConfig()
    rows = levers.measure_variant(levers.Variant("c", "small", attention="cudnn"), cfg, None, device="cpu")
    assert seen[0][0] == SDPBackend.CUDNN_ATTENTION and seen[0][1] == SDPBackend.FLASH_ATTENTION
    assert rows == [{"sub": "adamw", "attention": "cudnn_attention"}]
    assert _cur_sdpa_kernel_backends(with_priority=True) == before
    levers.measure_variant(levers.Variant("f", "small"), cfg, None, device="cpu")
    assert seen[1] == before


def test_a_regional_compile_compiles_each_block_and_shares_the_models_weights():
    """The regional lever compiles each repeated block (one trace serves them all) and the
    parts around them, and trains the same parameters the optimizer holds."""
    from torch._dynamo.eval_frame import OptimizedModule

    from gpu import levers
    from londonlm.training.model import ModelShape, build_model

    model = build_model(ModelShape(2, 2, 32, 16, 300), 0, 0, 0, seed=0)
    fwd = levers._compiled(model, "regional")
    assert not isinstance(fwd, OptimizedModule)  # the loss around the blocks stays eager
    assert all(isinstance(b, OptimizedModule) for b in fwd.transformer.h) and len(fwd.transformer.h) == 2
    assert {id(p) for p in fwd.parameters()} == {id(p) for p in model.parameters()}
    assert levers._compiled(model, "eager") is model
    assert isinstance(levers._compiled(model, "default"), OptimizedModule)


def test_a_variant_with_more_sequences_a_step_accumulates_the_rest(monkeypatch):
    from gpu import levers
    from londonlm.training.model import ModelShape

    monkeypatch.setattr(levers, "model_shape", lambda model, vocab: ModelShape(1, 2, 32, 16, 300))
    v = levers.Variant("more", "medium", compile="eager", micro_batch=2, sequences=8)
    rows = levers.measure_variant(v, levers.ThroughputConfig(warmup=1, windows=1, steps_per_window=1),
                                  peak=1e6, device="cpu")
    assert rows[0]["micro_batch"] == "2 x 4" and rows[0]["tokens_per_s"] > 0


# --------------------------------------------------------------------------- where the GPU time goes (kernels)

def test_the_kernels_sub_profiles_the_compiled_step_and_its_report_is_a_table_of_its_own(monkeypatch):
    """On the CPU the sub runs the profiler over the real step and finds no GPU kernel (said, not
    a crash); the step's result moves its profile out of the rows into tables of their own."""
    from gpu import kernels as kernels_sub, levers
    from londonlm.training.step import kernels
    from londonlm.training.model import ModelShape

    monkeypatch.setattr(levers, "model_shape", lambda model, vocab: ModelShape(1, 2, 32, 16, 300))
    v = levers.Variant("tiny", "small", compile="eager", micro_batch=2, subs=("adamw", "kernels"))
    rows = levers.measure_variant(v, levers.ThroughputConfig(warmup=1, windows=1, steps_per_window=2), 1e6, "cpu")
    assert [r["sub"] for r in rows] == ["adamw", "kernels"]
    prof = rows[1]["kernels"]
    assert prof["steps"] == 2 and prof["step_ms"] > 0 and "no GPU kernel" in prof["error"]
    assert "mfu" not in rows[1] and rows[1]["micro_batch"] == rows[0]["micro_batch"]

    def broken(*a):
        raise RuntimeError("CUPTI_ERROR_INSUFFICIENT_PRIVILEGES")

    monkeypatch.setattr(kernels_sub, "profile_kernels", broken)  # the variant's timed rows survive it
    rows = levers.measure_variant(v, levers.ThroughputConfig(warmup=1, windows=1, steps_per_window=2), 1e6, "cpu")
    assert rows[0]["tokens_per_s"] > 0 and "CUPTI_ERROR_INSUFFICIENT_PRIVILEGES" in rows[1]["kernels"]["error"]

    ks = [("nvjet_a", 0, 600), ("flash_fwd_kernel", 600, 800), ("triton_red_fused_1", 800, 900), ("k<a||b>", 900, 905)]
    res = {"title": "MFU", "status": "passed", "seconds": 9.0, "rows": [{"variant": "small: defaults", "sub": "kernels"}],
           "kernels": {"small: defaults": kernels.breakdown(ks, 1000.0, 1), "medium: defaults": prof}}
    md = "\n".join(report.step_section(1, "throughput", res))
    assert ("**small: defaults**: 1.0 ms a step under the profiler, the GPU busy 0.9 ms (90.5%) and idle "
            "0.1 ms; 4 kernels a step.") in md
    assert "| GEMM | 0.60 | 60.0% |\n| attention | 0.20 | 20.0% |\n| Inductor's fused kernels | 0.10 | 10.0% |" in md
    assert "| `nvjet_a` | GEMM | 1 | 0.60 | 60.0% |" in md and "| `k<a//b>` | other kernels | 1 | 0.01 | 0.5% |" in md
    assert "**medium: defaults**: the profile holds no GPU kernel" in md
