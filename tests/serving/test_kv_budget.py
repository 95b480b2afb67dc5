"""The server's KV-cache budget: ``--kv_cache_mb auto`` (the default) is a share of the GPU memory
free once the model is loaded, 1024 MB on CPU; a number still works; the server says what it
chose and how many full-context rows that holds. CUDA is faked (``torch.cuda.mem_get_info``)."""
from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from londonlm.core.errors import run_main
from londonlm.generation import load_model
from londonlm.serving.batching import (CPU_KV_CACHE_MB, CUDA_FREE_FRACTION, MAX_AUTO_BATCH, auto_kv_cache_mb,
                                       full_context_rows, kv_bytes_per_row, rows_for_memory)
from londonlm.serving.cli import build_parser
from londonlm.serving.service import ServerLimits

REPO = Path(__file__).resolve().parents[2]
GIB = 2**30


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture
def gpu_free(monkeypatch) -> list:
    """``mem_get_info`` answers 40 GiB free of 80 and records the device it was asked about."""
    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (asked.append(device), (40 * GIB, 80 * GIB))[1])
    return asked


def test_the_auto_budget_is_a_share_of_free_gpu_memory_and_fixed_on_cpu():
    assert CUDA_FREE_FRACTION == 0.5
    assert auto_kv_cache_mb("cuda", 40 * GIB) == 20 * 1024
    assert auto_kv_cache_mb("cuda:1", 3 * GIB) == 1.5 * 1024
    assert auto_kv_cache_mb("cpu", None) == auto_kv_cache_mb("cpu", 40 * GIB) == CPU_KV_CACHE_MB == 1024


def test_auto_limits_on_a_gpu_measure_free_memory_after_loading(lm, gpu_free):
    on_gpu = replace(lm, device="cuda")
    limits = ServerLimits().resolved(on_gpu)
    assert ServerLimits().kv_cache_mb == "auto" and [str(d) for d in gpu_free] == ["cuda"]
    assert limits.kv_cache_mb == 20 * 1024
    assert limits.max_concurrency == rows_for_memory(on_gpu, 20 * 1024) == MAX_AUTO_BATCH
    line = limits.describe_budget(on_gpu, "auto")
    rows = 20 * 2**30 // kv_bytes_per_row(lm)
    assert f"KV cache budget 20,480 MB (auto: 50% of the GPU memory free after loading): holds {rows} " \
           f"full-context ({lm.context_length}-token) rows; batch of up to 64" == line


def test_auto_limits_on_cpu_keep_1024_mb_and_a_number_still_works(lm, gpu_free):
    limits = ServerLimits().resolved(lm)
    assert gpu_free == [] and limits.kv_cache_mb == 1024
    assert limits.max_concurrency == rows_for_memory(lm, 1024)
    assert "(auto: the CPU default)" in limits.describe_budget(lm, "auto")
    per_row_mb = kv_bytes_per_row(lm) / 2**20
    small = ServerLimits(kv_cache_mb=3 * per_row_mb).resolved(replace(lm, device="cuda"))
    assert gpu_free == [] and small.max_concurrency == 3 == full_context_rows(lm, small.kv_cache_mb)
    assert "(--kv_cache_mb)" in small.describe_budget(lm, 3 * per_row_mb)
    for bad in (0, -5.0, "lots"):
        with pytest.raises(Exception, match="invalid server limits"):
            ServerLimits(kv_cache_mb=bad).validate()


def test_the_flag_takes_auto_or_a_number(capsys):
    parser = build_parser("micro", prog="serve.py")
    assert parser.parse_args([]).kv_cache_mb == "auto" and parser.parse_args([]).dtype == "auto"
    assert parser.parse_args(["--kv_cache_mb", "AUTO"]).kv_cache_mb == "auto"
    assert parser.parse_args(["--kv_cache_mb", "512"]).kv_cache_mb == 512.0
    assert parser.parse_args(["--dtype", "float16"]).dtype == "float16"
    for argv in (["--kv_cache_mb", "lots"], ["--kv_cache_mb", "0"], ["--dtype", "fp8"]):
        with pytest.raises(SystemExit) as e:
            parser.parse_args(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error:") and "Traceback" not in err, argv
    help_text = " ".join(parser.format_help().split())
    assert "auto: 50% of the GPU memory free once the model is loaded; 1024 on CPU" in help_text


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_serve_script_logs_the_budget_and_loads_the_dtype(tiny_model_dir, monkeypatch, capsys):
    import uvicorn

    calls = []

    def fake_run(server, sockets=None):
        calls.append(server.config.app)
        server.started = True
        sockets[0].close()

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    spec = importlib.util.spec_from_file_location("londonlm_test_serve_budget", REPO / "06_inference" / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    assert serve.main(["--model", str(tiny_model_dir), "--device", "cpu", "--dtype", "bfloat16",
                       "--port", str(_free_port())]) == 0
    app, = calls
    lm = app.state.lm
    assert lm.dtype == "bfloat16" and next(lm.model.parameters()).dtype == torch.bfloat16
    out = capsys.readouterr().out
    rows = 1024 * 2**20 // kv_bytes_per_row(lm)  # bf16: twice the rows fp32 would hold
    assert f"KV cache budget 1,024 MB (auto: the CPU default): holds {rows} full-context" in out
    assert "cpu, bfloat16)" in out
    assert app.state.limits.kv_cache_mb == 1024 and app.state.service.health()["dtype"] == "bfloat16"
    with pytest.raises(SystemExit) as e:
        run_main(serve.main, ["--model", str(tiny_model_dir), "--kv_cache_mb", "many"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error:") and "auto or a number of MB" in err


@pytest.mark.gpu
def test_the_auto_budget_on_a_gpu_is_half_of_what_the_model_left_free(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), device="cuda")
    limits = ServerLimits().resolved(lm)
    free_mb = torch.cuda.mem_get_info()[0] / 2**20
    assert limits.kv_cache_mb == pytest.approx(CUDA_FREE_FRACTION * free_mb, rel=0.05)
    assert limits.max_concurrency == rows_for_memory(lm, limits.kv_cache_mb)
