"""Pieces of ``benchmarks/gpu_acceptance.py`` (the GPU acceptance run in one command):
``arith`` (pure arithmetic, tested on CPU), ``commands`` (the subprocess command lines),
``cuda_steps`` (in-process GPU measurements), ``cli_steps`` (the project's own scripts run as
subprocesses), ``report`` (JSON, Markdown and the BENCHMARKS.md section) and ``runner``."""
