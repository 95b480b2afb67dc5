"""The weights' dtype on the one model interface: ``load_model(dtype=...)``, ``auto`` meaning
bf16 on a CUDA GPU with native bf16, fp16 on an older one, fp32 on CPU (CUDA faked where needed),
and scores that stay float32 precision with half-precision weights."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import get_args, get_type_hints

import pytest
import torch

from londonlm.core.errors import run_main
from londonlm.generation import (DTYPES, GenerationError, GenerationSettings, generate, load_model,
                                 pick_dtype, score_tokens)
from londonlm.serving.inference_cli import InferenceArguments

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bf16(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu", dtype="bfloat16")


def fake_cuda(monkeypatch, *, bf16: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)


def recording_from_pretrained(monkeypatch) -> list[dict]:
    """from_pretrained loads on CPU as usual but records its keywords; the model's ``.to`` records
    the device it is sent to and stays where it is (there is no GPU here)."""
    from transformers import AutoModelForCausalLM

    calls, real = [], AutoModelForCausalLM.from_pretrained

    def fake(source, **kwargs):
        model = real(source, **kwargs)
        calls.append({**kwargs, "model": model})
        model.to = lambda device: (calls[-1].update(to=device), model)[1]
        return model

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fake)
    return calls


def test_auto_on_cpu_is_float32(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), device="cpu")
    assert lm.dtype == "float32" and lm.info()["dtype"] == "float32"
    assert {p.dtype for p in lm.model.parameters()} == {torch.float32}


def test_explicit_bfloat16_on_cpu_gives_bf16_weights_that_generate(bf16):
    assert bf16.dtype == "bfloat16" and bf16.info()["dtype"] == "bfloat16" and bf16.device == "cpu"
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    sample, = generate(bf16, "Up betimes, and", GenerationSettings(max_new_tokens=6, temperature=0.0))
    assert len(sample.token_ids) == 6


def test_float16_on_cpu_when_asked(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), device="cpu", dtype="float16")
    assert lm.dtype == "float16" and {p.dtype for p in lm.model.parameters()} == {torch.float16}


def test_an_unknown_dtype_names_the_choices(tiny_model_dir):
    with pytest.raises(GenerationError, match="float32, bfloat16, float16"):
        load_model(str(tiny_model_dir), device="cpu", dtype="fp8")
    with pytest.raises(GenerationError, match="unknown dtype 'half'"):
        pick_dtype("half", "cpu")


@pytest.mark.parametrize("native_bf16, expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_on_cuda_asks_for_half_precision(tiny_model_dir, monkeypatch, native_bf16, expected):
    fake_cuda(monkeypatch, bf16=native_bf16)
    calls = recording_from_pretrained(monkeypatch)
    lm = load_model(str(tiny_model_dir))  # device and dtype both auto
    call, = calls
    assert call["dtype"] == expected and call["to"] == "cuda"
    assert lm.device == "cuda" and lm.dtype == str(expected).removeprefix("torch.")
    assert pick_dtype("auto", "cuda:1") == lm.dtype and pick_dtype("auto", "cpu") == "float32"
    assert pick_dtype("float32", "cuda") == "float32"


@pytest.fixture
def cudnn_sdp_restored():
    before = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(True)
    yield
    torch.backends.cuda.enable_cudnn_sdp(before)


def test_a_model_loaded_on_a_gpu_never_uses_cudnn_attention(tiny_model_dir, monkeypatch, cudnn_sdp_restored):
    """cuDNN's attention compiles a plan for every new shape (0.1-0.5 s each on an H200); the
    server's batch meets a new shape at nearly every step, which made its steps 100x slower."""
    load_model(str(tiny_model_dir), device="cpu")
    assert torch.backends.cuda.cudnn_sdp_enabled()  # on CPU nothing changes
    fake_cuda(monkeypatch, bf16=True)
    recording_from_pretrained(monkeypatch)
    load_model(str(tiny_model_dir))
    assert not torch.backends.cuda.cudnn_sdp_enabled()
    assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()


def test_scores_from_bf16_weights_keep_float32_precision(bf16):
    """log_softmax in bf16 would put every log-probability on bf16's coarse grid (8 bits of
    mantissa); upcast first, they fall between its points."""
    from londonlm.evaluation import evaluate_lm
    from londonlm.evaluation.metrics.probes import continuation_logprobs
    from londonlm.generation import encode_prompt

    def off_grid(values):
        return any(torch.tensor(v).to(torch.bfloat16).item() != v for v in values)

    ids = encode_prompt(bf16.tokenizer, "It was the best of times, it was the worst of times")
    scores = score_tokens(bf16, ids, top=2)
    assert off_grid(scores.token_logprobs[1:])
    lm = evaluate_lm(bf16.model, bf16.tokenizer, ["Up betimes, and to the Office, where Sir W. Pen sat."] * 3,
                     return_per_document=True)
    assert off_grid([d["nll"] for d in lm["per_document"]])
    pairs = [("The prisoner was indicted for", " stealing a silver watch"), ("London", ", that great Wen")]
    assert off_grid([lp for lp, _ in continuation_logprobs(bf16.model, bf16.tokenizer, pairs)])


def test_inference_cli_takes_dtype(tiny_model_dir, capsys):
    assert get_args(get_type_hints(InferenceArguments)["dtype"]) == DTYPES
    spec = importlib.util.spec_from_file_location("londonlm_test_inference_dtype",
                                                  REPO / "06_inference" / "inference_unified.py")
    cli = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = cli  # dataclasses resolve annotations through sys.modules
    try:
        spec.loader.exec_module(cli)
        assert cli.main(["--model", str(tiny_model_dir), "--prompt", "Up", "--max_new_tokens", "3",
                         "--device", "cpu", "--dtype", "bfloat16"]) == 0
        assert "· cpu · bfloat16" in capsys.readouterr().err
        with pytest.raises(SystemExit) as e:
            run_main(cli.main, ["--model", str(tiny_model_dir), "--prompt", "Up", "--dtype", "fp8"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error:") and "Traceback" not in err
    finally:
        sys.modules.pop(spec.name, None)


@pytest.mark.gpu
def test_auto_on_a_gpu_loads_half_precision_weights_there(tiny_model_dir):
    lm = load_model(str(tiny_model_dir))
    want = torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    p = next(lm.model.parameters())
    assert lm.device == "cuda" and p.is_cuda and p.dtype == want and lm.info()["dtype"] == lm.dtype
    scores = score_tokens(lm, [0, 5, 9, 11], top=2)
    assert all(isinstance(v, float) for v in scores.token_logprobs[1:])
