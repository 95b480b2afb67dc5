"""--sdpa_order (londonlm.training.speed.attention): the order PyTorch's SDPA tries its kernels in
while a job trains. torch's own (the default) differs by card: cuDNN's fused attention last on
most, first on Hopper with a recent cuDNN; ``flash`` and ``cudnn`` put their kernel first for the
whole Trainer.train call (a compiled graph takes the kernel it finds when it traces), and torch's
order is back afterwards."""
import json

import pytest
import torch
from torch.nn.attention import SDPBackend, _cur_sdpa_kernel_backends

from conftest import train_exit_code
from londonlm.training.speed.attention import SDPA_ORDERS, sdpa_kernel_for, sdpa_order


def first_kernel():
    return _cur_sdpa_kernel_backends(with_priority=True)[0]


def test_cudnn_first_puts_cudnn_ahead_of_the_rest_and_restores_torchs_order():
    before = _cur_sdpa_kernel_backends(with_priority=True)
    assert before[0] != SDPBackend.CUDNN_ATTENTION  # torch's own order: why the flag exists
    with sdpa_order("cudnn"):
        order = _cur_sdpa_kernel_backends(with_priority=True)
        assert order[:2] == [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION]
        assert set(order) >= {SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH}  # fallbacks kept
        # a CPU has no cuDNN: SDPA falls back to its next kernel, as on a card cuDNN cannot serve
        assert sdpa_kernel_for(2, 32, 64, "cpu") == "flash_attention"
    assert _cur_sdpa_kernel_backends(with_priority=True) == before
    with sdpa_order("torch"):
        assert _cur_sdpa_kernel_backends(with_priority=True) == before
    assert set(SDPA_ORDERS) == {"torch", "flash", "cudnn"}


def test_flash_first_puts_flash_ahead_whatever_torchs_own_order_is():
    """On an H200 with cuDNN 9.19 torch's own order ran cuDNN's attention: ``flash`` must put
    FlashAttention first from any order, here one that starts with cuDNN's."""
    cudnn_first = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                   SDPBackend.MATH]
    with sdpa_order("cudnn"):
        assert _cur_sdpa_kernel_backends(with_priority=True)[:4] == cudnn_first
        with sdpa_order("flash"):
            order = _cur_sdpa_kernel_backends(with_priority=True)
            assert order[:2] == [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
            assert set(order) >= {SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH}  # fallbacks kept
            assert sdpa_kernel_for(2, 32, 64, "cpu") == "flash_attention"
        assert _cur_sdpa_kernel_backends(with_priority=True)[:4] == cudnn_first


@pytest.fixture
def sdpa_calls(monkeypatch):
    """The first kernel of SDPA's order at every attention call of the model."""
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(*a, **k):
        seen.append(first_kernel())
        return real(*a, **k)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    return seen


@pytest.mark.parametrize("order,first", [("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION),
                                         (None, SDPBackend.FLASH_ATTENTION)])
def test_a_run_trains_and_evaluates_under_the_order_it_asked_for(micro_root_copy, capsys, sdpa_calls, order, first):
    argv = ["--max_steps", "2", "--eval_steps", "1", "--save_steps", "2", "--attn_implementation", "sdpa"]
    assert train_exit_code(micro_root_copy, *argv, *(["--sdpa_order", order] if order else [])) == 0
    assert sdpa_calls and set(sdpa_calls) == {first}  # every step's and evaluation's attention
    assert first_kernel() != SDPBackend.CUDNN_ATTENTION  # torch's order again after the run
    out = capsys.readouterr().out
    # said for the default too (torch's own order differs by card); no cuDNN on a CPU: the
    # kernel that runs is named, not the one asked for
    assert f"--sdpa_order {order or 'torch'}: SDPA runs flash_attention for this model's attention" in out
    run = micro_root_copy / "09_models" / "checkpoints" / "micro"
    recorded = json.loads((run / "training_config.json").read_text())["speed"]["request"]["sdpa_order"]
    assert recorded == (order or "torch")


def test_an_eager_attention_model_is_told_the_order_changes_nothing(micro_root_copy, capsys):
    assert train_exit_code(micro_root_copy, "--max_steps", "1", "--eval_steps", "100",
                           "--attn_implementation", "eager", "--sdpa_order", "cudnn") == 0
    assert "--sdpa_order cudnn: no effect (the model's attention is eager, not SDPA)" in capsys.readouterr().out


def test_an_unknown_order_is_one_error_line(micro_root_copy, capsys):
    assert train_exit_code(micro_root_copy, "--max_steps", "1", "--sdpa_order", "fast") == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "--sdpa_order: must be torch, flash or cudnn, got 'fast'" in err


def test_chat_fine_tuning_takes_the_flag_too():
    from londonlm.training import JobRequest, RunControlArguments, SpeedArguments

    req = JobRequest.from_flags(SpeedArguments(sdpa_order="cudnn"), RunControlArguments())
    assert req.speed.sdpa_order == "cudnn"
    assert JobRequest.from_flags(SpeedArguments(), RunControlArguments()).speed.sdpa_order == "torch"


def test_the_note_names_the_kernel_the_models_attention_dropout_gets(micro_root_copy, capsys):
    """SDPA chooses by the dropout too: a CPU's flash kernel has none, so with dropout the note
    must say math, not what a dropout-free attention of that shape would get."""
    assert sdpa_kernel_for(2, 32, 64, "cpu", dropout=0.1) == "math"
    assert train_exit_code(micro_root_copy, "--max_steps", "1", "--eval_steps", "100", "--attn_implementation",
                           "sdpa", "--dropout", "0.1", "--sdpa_order", "cudnn") == 0
    assert "--sdpa_order cudnn: SDPA runs math for this model's attention" in capsys.readouterr().out
