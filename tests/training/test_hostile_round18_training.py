"""Hostile round 18, the training job: a step whose micro-batches do not fit in memory."""
from __future__ import annotations

from pathlib import Path

from conftest import train_exit_code


def one_error_line(err: str, *words) -> str:
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("error:") and err.count("error:") == 1 and "Traceback" not in err, err
    assert all(w in last for w in words), err
    return last


def _run(root: Path) -> Path:
    return root / "09_models" / "checkpoints" / "r18"


def test_a_huge_gradient_accumulation_is_refused_before_any_work(micro_root_copy, capsys):
    """Was: `--gradient_accumulation_steps 1000000000000` trained: the Trainer fetches every
    micro-batch of a step before its first forward (`get_batch_samples`), so memory grew by
    gigabytes until the machine ran out, SIGTERM unheard. Now one line before the speed probe."""
    code = train_exit_code(micro_root_copy, "--run_name", "r18", "--max_steps", "1",
                           "--gradient_accumulation_steps", str(10 ** 12))
    assert code == 2
    one_error_line(capsys.readouterr().err, "--gradient_accumulation_steps", "micro-batches at once")
    assert not any(_run(micro_root_copy).glob("checkpoint-*"))
    assert not (_run(micro_root_copy) / "training_config.json").exists()


def test_a_step_past_half_the_free_memory_is_refused(micro_root_copy, capsys, monkeypatch):
    """The bound is the memory the step's batches take (16,384 sequences of 64 tokens as input_ids
    and labels: 16.8 MB) against the free memory (here 16 MB): past half of it, one line."""
    import londonlm.training.speed.choice as choice

    monkeypatch.setattr(choice, "free_memory_bytes", lambda device="cpu": 16 << 20)
    code = train_exit_code(micro_root_copy, "--run_name", "r18", "--max_steps", "1",
                           "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2048")
    assert code == 2
    one_error_line(capsys.readouterr().err, "2,048 micro-batches", "16,384 sequences of 64 tokens", "17 MB")

