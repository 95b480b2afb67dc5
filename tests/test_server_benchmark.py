"""benchmarks/server_throughput.py's timeline reading: where a slow request waited."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from server_throughput import stalls  # noqa: E402


def poll(t, steps, rows=1, pending=0, answer_s=0.002):
    return {"t": t, "answer_s": answer_s, "steps": steps, "rows": rows, "pending": pending}


def test_an_engine_that_stops_stepping_while_a_request_waits_is_found():
    polls = [poll(0.0, 0), poll(0.1, 10), poll(0.2, 20, rows=3, pending=2), poll(0.3, 20), poll(0.4, 20),
             poll(1.2, 20, answer_s=0.7), poll(1.3, 31), poll(1.4, 40)]
    got = stalls(polls, spans=[(0.05, 1.35), (0.0, 0.15)])
    assert got["no_step_seconds"] == 1.0 and got["no_step_from"] == 0.2
    assert got["rows_then"] == 3 and got["pending_then"] == 2
    assert got["slowest_health_s"] == 0.7 and got["slowest_health_at"] == 1.2


def test_an_idle_engine_with_nothing_in_flight_is_no_stall():
    polls = [poll(0.0, 5), poll(0.1, 9), poll(0.2, 9), poll(0.3, 9), poll(0.4, 9)]
    got = stalls(polls, spans=[(0.0, 0.12)])  # the only request ended before the engine went quiet
    assert got["no_step_seconds"] == 0.0 and got["no_step_from"] is None
    assert stalls([], [])["slowest_health_s"] is None


def test_an_engine_that_crawls_is_found_though_it_never_stops():
    # a step every 0.25 s from 0.2 s to 2.2 s (never 0.5 s without one), 100 steps/s around it
    polls = [poll(0.05 * i, 2 * i) for i in range(5)]
    polls += [poll(0.2 + 0.05 * i, 8 + i // 5) for i in range(1, 41)]
    polls += [poll(2.2 + 0.05 * i, 16 + 5 * i) for i in range(1, 6)]
    got = stalls(polls, spans=[(0.0, 2.5)])
    assert got["no_step_seconds"] < 0.5
    assert got["slowest_steps_per_s"] <= 4.0 and 0.2 <= got["slowest_rate_from"] <= 1.7
    fast = [poll(0.05 * i, 5 * i) for i in range(30)]
    assert stalls(fast, spans=[(0.0, 1.5)])["slowest_steps_per_s"] == 100.0
    assert stalls(fast, spans=[(0.0, 0.2)])["slowest_steps_per_s"] is None  # nothing in flight that long
