"""Pure arithmetic of the GPU acceptance run: throughput, MFU, medians, pytest's summary line.
No torch, no GPU: the tests check every figure the report prints against known numbers."""
from __future__ import annotations

import re
import statistics
from typing import Callable, Iterable

# GPT-2 Small at GPT-2's vocabulary as the throughput_gpt2 step measures it: 50,257 tokens padded
# to 50,304 rows (a multiple of 128), every row in the softmax (the public figures' setting)
SMALL = dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50304)


def tokens_per_step(batch_size: int, seq_len: int, grad_accum: int = 1) -> int:
    return batch_size * seq_len * grad_accum


def tokens_per_second(window_seconds: Iterable[float], steps_per_window: int, tokens_step: int) -> float:
    """Median over timed windows of the window's tokens / its seconds: one slow window (a
    clock boost ending, another process) moves a median less than a mean."""
    rates = [steps_per_window * tokens_step / s for s in window_seconds]
    if not rates:
        raise ValueError("no timed windows")
    return statistics.median(rates)


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over the device's dense bf16 peak; None
    for a device whose peak is unknown (never made up)."""
    if not peak_flops:
        return None
    return tokens_per_s * flops_per_token / peak_flops


def flop_terms(n_layer: int, n_head: int, n_embd: int, seq_len: int, n_matmul_params: int) -> dict:
    """The two terms of ``ModelShape.flops_per_token`` (6N + 12·L·H·Q·T, PaLM appendix B),
    spelled out so the report shows where the MFU's numerator comes from."""
    head_dim = n_embd // n_head
    dense, attn = 6 * n_matmul_params, 12 * n_layer * n_head * head_dim * seq_len
    return {"formula": "6*N + 12*L*H*Q*T (PaLM appendix B; N = non-embedding parameters + LM head, "
                       "L layers, H heads, Q head size, T context)",
            "N": n_matmul_params, "six_N": dense, "attention": attn, "flops_per_token": dense + attn}


def time_windows(step: Callable[[], object], sync: Callable[[], None], clock: Callable[[], float],
                 warmup: int, windows: int, steps_per_window: int) -> list[float]:
    """Seconds of each timed window of ``steps_per_window`` steps, after ``warmup`` untimed
    steps. ``sync`` (torch.cuda.synchronize) runs before each clock read: CUDA kernels are
    queued asynchronously, so an unsynchronised clock measures the launch, not the work."""
    for _ in range(warmup):
        step()
    out = []
    for _ in range(windows):
        sync()
        t0 = clock()
        for _ in range(steps_per_window):
            step()
        sync()
        out.append(clock() - t0)
    return out


def median_ms(seconds: Iterable[float]) -> float:
    return statistics.median(seconds) * 1e3


SUMMARY_WORDS = ("passed", "failed", "skipped", "deselected", "error", "errors", "xfailed", "xpassed")


def pytest_counts(output: str) -> dict[str, int]:
    """Counts from pytest's last summary line ("3 passed, 1 skipped, 80 deselected in 9.1s");
    "error" and "errors" both count as errors."""
    lines = [ln for ln in output.strip().splitlines() if re.search(r"\b(passed|failed|skipped|deselected|"
                                                                   r"errors?|no tests ran)\b", ln)]
    counts = {"passed": 0, "failed": 0, "skipped": 0, "deselected": 0, "errors": 0}
    if not lines:
        return counts
    for n, word in re.findall(r"(\d+) (" + "|".join(SUMMARY_WORDS) + r")\b", lines[-1]):
        key = "errors" if word.startswith("error") else word
        counts[key] = counts.get(key, 0) + int(n)
    return counts


def failed_tests(output: str) -> list[str]:
    """``FAILED``/``ERROR`` lines of pytest's short summary (``-rfE``), as the test ids."""
    return [m.group(2) for m in re.finditer(r"^(FAILED|ERROR) (\S+)", output, re.M)]


def max_abs_diff(a: Iterable[float], b: Iterable[float]) -> float:
    """Largest |a_i - b_i| of two equally long sequences (a length mismatch is an error,
    not a silently shorter comparison)."""
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"lengths differ: {len(a)} vs {len(b)}")
    return max((abs(x - y) for x, y in zip(a, b)), default=0.0)


def curve_diffs(a: list[tuple[int, float]], b: list[tuple[int, float]], stop: int) -> tuple[float, float]:
    """Largest |loss difference| of two logged curves ``[(step, loss)]`` up to and including
    ``stop`` and after it: a resume can only make the second differ; the first is the
    kernels' run-to-run noise."""
    if [s for s, _ in a] != [s for s, _ in b]:
        raise ValueError(f"logged steps differ: {[s for s, _ in a]} vs {[s for s, _ in b]}")
    before = max_abs_diff([x for s, x in a if s <= stop], [y for s, y in b if s <= stop])
    after = max_abs_diff([x for s, x in a if s > stop], [y for s, y in b if s > stop])
    return before, after
