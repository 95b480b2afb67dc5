"""What a rerun of a run folder may and may not do: never start over on top of an earlier run it
cannot resume, never resume a checkpoint whose training state is damaged or whose optimizer and
schedule settings changed, never save a diverged model, and refuse data too small for one block
before the speed probe runs. Each refusal is one `error:` line and exit 2, with nothing written."""
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from conftest import train_exit_code
from londonlm.core.checkpoints import archives_without_crc, checkpoint_problem, earlier_run

COMMON = ["--save_steps", "2", "--eval_steps", "100", "--logging_steps", "1"]
SCRIPT = Path(__file__).resolve().parents[2] / "04_training" / "train_model_slm.py"


@pytest.fixture
def root(micro_root_copy):
    return micro_root_copy


def run_dir(root, name="micro"):
    return root / "09_models" / "checkpoints" / name


def snapshot(rd):
    """Bytes of the files a refused rerun must leave alone."""
    files = ["final/model.safetensors", "run_info.json", "training_config.json"]
    return {f: (rd / f).read_bytes() for f in files if (rd / f).exists()}


def one_error_line(err: str, *words) -> None:
    """One `error:` line, last on stderr (progress bars of the token cache may come before it)."""
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("error:") and err.count("error:") == 1 and "Traceback" not in err, err
    assert all(w in last for w in words), err


# --------------------------------------------------------------------------- 1. nothing resumable

def test_an_earlier_run_with_nothing_resumable_is_refused_not_replaced(root, capsys):
    """(Asked to go on: a finished run asked for as it was is skipped, resumable or not.)"""
    assert train_exit_code(root, "--max_steps", "2", *COMMON) == 0
    rd = run_dir(root)
    before = snapshot(rd)
    w = rd / "checkpoint-2" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    capsys.readouterr()
    assert train_exit_code(root, "--max_steps", "3", *COMMON) == 2
    one_error_line(capsys.readouterr().err, "final/", "run_info.json", "--fresh", "run name")
    assert snapshot(rd) == before
    shutil.rmtree(rd / "checkpoint-2")  # no checkpoint at all: the finished final/ is still there
    assert train_exit_code(root, "--max_steps", "3", *COMMON) == 2
    one_error_line(capsys.readouterr().err, "final/", "--fresh")
    assert snapshot(rd) == before
    assert train_exit_code(root, "--max_steps", "2", *COMMON) == 0  # as it was: skipped
    assert snapshot(rd) == before
    assert train_exit_code(root, "--max_steps", "3", *COMMON, "--fresh") == 0  # the way out
    assert list(run_dir(root).parent.glob("micro.previous-*"))


def test_a_run_folder_that_is_another_artifacts_is_refused_before_anything_is_written(root, tiny_model_dir,
                                                                                     tmp_path, capsys):
    """Was: `--output_dir <the tokenizer folder>` trained there, its checkpoints, final/, token
    cache and run_info.json among the tokenizer's files, exit 0; the same in the corpus folder
    and in another run's final/ (final/final)."""
    from conftest import tree_digest

    tok = root / "09_models" / "tokenizers" / "london_historical_bpe"
    corpus = root / "data" / "london_historical" / "processed"
    model = tmp_path / "final"
    shutil.copytree(tiny_model_dir, model)
    for out, words in [(tok, ("holds the outputs of the 'tokenizer' stage",)),
                       (corpus, ("holds the outputs of the 'corpus' stage",)),
                       (corpus / "run", ("lies inside the corpus folder",)),
                       (tok / "run", ("lies inside the tokenizer folder",)),
                       (model, ("is a model's folder", "--init_from"))]:
        before = tree_digest(root), tree_digest(model)
        capsys.readouterr()
        assert train_exit_code(root, "--max_steps", "2", *COMMON, "--output_dir", str(out)) == 2
        one_error_line(capsys.readouterr().err, f"--output_dir {out}", *words, "nothing was written")
        assert (tree_digest(root), tree_digest(model)) == before and not (tok / "run").exists()


def test_earlier_run_names_what_a_new_run_would_replace(tmp_path):
    assert earlier_run(tmp_path / "none") == [] and earlier_run(tmp_path) == []
    (tmp_path / "training_config.json").write_text("{}")  # written as a run starts: no run yet
    (tmp_path / "pretokenized_data").mkdir()
    assert earlier_run(tmp_path) == []
    (tmp_path / "run_info.json").write_text('{"status": "running"}')  # a start's record: it made nothing
    assert earlier_run(tmp_path) == []
    (tmp_path / "run_info.json").unlink()
    (tmp_path / "checkpoint-3").mkdir()
    (tmp_path / "final").mkdir()
    assert earlier_run(tmp_path) == ["final/", "1 checkpoint(s) (checkpoint-3)"]


# --------------------------------------------------------------------------- 3, 4. damaged training state

def _valid_checkpoint(tmp_path, crc=True):
    import torch
    from safetensors.torch import save_file

    ck = tmp_path / "checkpoint-4"
    ck.mkdir()
    (ck / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    save_file({"w": torch.zeros(2)}, str(ck / "model.safetensors"))
    (ck / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    with contextlib.nullcontext() if crc else archives_without_crc():
        for f in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
            torch.save({"state": torch.zeros(64)}, ck / f)
    assert checkpoint_problem(ck) is None
    return ck


def data_crcs(archive: Path) -> set[int]:
    with zipfile.ZipFile(archive) as z:
        return {i.CRC for i in z.infolist() if "/data/" in i.filename}


@pytest.mark.parametrize("crc", [True, False], ids=["crc", "no-crc"])
@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng_state.pth"])
def test_a_torch_archive_cut_short_is_a_damaged_checkpoint(tmp_path, name, crc):
    # the trainer writes its archives without CRC-32s: the end-of-archive check does not need them
    ck = _valid_checkpoint(tmp_path, crc)
    assert (data_crcs(ck / name) == {0}) != crc
    f = ck / name
    assert zipfile.is_zipfile(f)
    f.write_bytes(f.read_bytes()[:100])
    assert name in checkpoint_problem(ck) and "damaged" in checkpoint_problem(ck)
    f.write_bytes(b"")
    assert checkpoint_problem(ck) == f"{name} empty"


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng_state.pth"])
def test_a_file_that_is_no_torch_archive_is_a_damaged_checkpoint(tmp_path, name):
    """Neither a zip nor torch's legacy format (garbage, a text file, a pickle of something else):
    passed as "legacy" before, torch.load then failed mid-resume with a traceback."""
    ck = _valid_checkpoint(tmp_path)
    for content in (bytes(range(7, 200)) * 20, b"not a checkpoint\n", b"\x80\x04\x95\x05" + b"\x00" * 40):
        (ck / name).write_bytes(content)
        assert checkpoint_problem(ck) == f"{name} damaged (not a torch archive)"


@pytest.mark.parametrize("protocol", [2, 3])  # 4 and 5: torch.load(weights_only=True) refuses them
def test_torch_legacy_archives_still_pass(tmp_path, protocol):
    import torch

    from londonlm.core.checkpoints import LEGACY_MAGIC

    assert LEGACY_MAGIC == torch.serialization.MAGIC_NUMBER
    ck = _valid_checkpoint(tmp_path)
    torch.save({"state": torch.zeros(4)}, ck / "optimizer.pt", _use_new_zipfile_serialization=False,
               pickle_protocol=protocol)
    assert checkpoint_problem(ck) is None
    assert torch.load(ck / "optimizer.pt", weights_only=True)["state"].shape == (4,)


@pytest.mark.parametrize("state", ['{"global_step": "abc"}', "[]", "{}", '{"global_step": -1}',
                                   '{"global_step": true}', '{"global_step": 2.5}'])
def test_trainer_state_of_the_wrong_shape_is_a_damaged_checkpoint(tmp_path, state):
    ck = _valid_checkpoint(tmp_path)
    (ck / "trainer_state.json").write_text(state)
    assert "trainer_state.json" in checkpoint_problem(ck)


def test_a_run_writes_its_torch_archives_without_crc_and_resumes_from_them(root):
    """torch.load never checks an archive's CRC-32s, and computing them was most of the time
    torch.save took for AdamW's state (benchmarks/checkpoint_save.py): the trainer leaves them
    out, and puts torch's own setting back after each checkpoint."""
    import torch

    assert torch.serialization.get_crc32_options()
    assert train_exit_code(root, "--max_steps", "4", *COMMON) == 0
    ck = run_dir(root) / "checkpoint-4"
    assert data_crcs(ck / "optimizer.pt") == {0} and data_crcs(ck / "rng_state.pth") == {0}
    assert torch.serialization.get_crc32_options()  # the process's own torch.save unchanged
    assert train_exit_code(root, "--max_steps", "6", *COMMON, "--resume_from_checkpoint", "checkpoint-4") == 0
    assert json.loads((run_dir(root) / "checkpoint-6" / "trainer_state.json").read_text())["global_step"] == 6


def test_damaged_optimizer_state_is_skipped_or_refused_before_anything_is_written(root, capsys):
    assert train_exit_code(root, "--max_steps", "4", *COMMON) == 0
    rd = run_dir(root)
    opt = rd / "checkpoint-4" / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[:100])
    before = snapshot(rd)
    capsys.readouterr()
    assert train_exit_code(root, "--max_steps", "6", *COMMON, "--resume_from_checkpoint", "checkpoint-4") == 2
    one_error_line(capsys.readouterr().err, "checkpoint-4", "optimizer.pt")
    assert snapshot(rd) == before  # training_config.json included
    (rd / "checkpoint-2" / "trainer_state.json").write_text("[]")
    assert train_exit_code(root, "--max_steps", "6", *COMMON, "--resume_from_checkpoint", "checkpoint-2") == 2
    one_error_line(capsys.readouterr().err, "checkpoint-2", "trainer_state.json")
    (rd / "checkpoint-2" / "trainer_state.json").write_text((rd / "checkpoint-4" / "trainer_state.json")
                                                           .read_text().replace('"global_step": 4', '"global_step": 2'))
    assert train_exit_code(root, "--max_steps", "6", *COMMON) == 0  # auto: the older valid one
    out = capsys.readouterr().out
    assert "skipping incomplete or corrupt checkpoint" in out and "resuming from" in out
    assert json.loads((rd / "run_info.json").read_text())["resumed_from"].endswith("checkpoint-2")


def _edit_state(ck: Path, edit) -> None:
    state = json.loads((ck / "trainer_state.json").read_text())
    edit(state)
    (ck / "trainer_state.json").write_text(json.dumps(state))


def _position(st):
    return st["stateful_callbacks"]["DataPosition"]["attributes"]


# each was a traceback mid-resume (TypeError, AttributeError, KeyError, ValueError), or, for a step
# other than the folder's, a resume at step 2's position from checkpoint-4's weights, whose next
# save replaced checkpoint-4
STATE_DAMAGES = {
    "a field the Trainer does not know": lambda st: st.update(foo=1),
    "log_history not a list": lambda st: st.update(log_history=5),
    "stateful_callbacks a list": lambda st: st.update(stateful_callbacks=[]),
    "a position that is no count": lambda st: _position(st).update(consumed_samples="x"),
    "a negative position": lambda st: _position(st).update(consumed_samples=-50),
    "a block count that is no number": lambda st: _position(st).update(blocks="x"),
    "a position without its count": lambda st: _position(st).pop("consumed_samples"),
    "another step than the folder's": lambda st: st.update(global_step=2),
}


def test_a_trainer_state_the_trainer_cannot_read_back_is_a_damaged_checkpoint(root, capsys):
    """Named, one line and nothing written; by default, skipped for the previous checkpoint."""
    assert train_exit_code(root, "--max_steps", "4", *COMMON) == 0
    rd, ck = run_dir(root), run_dir(root) / "checkpoint-4"
    whole = (ck / "trainer_state.json").read_bytes()
    before = snapshot(rd)
    for why, damage in STATE_DAMAGES.items():
        _edit_state(ck, damage)
        capsys.readouterr()
        assert train_exit_code(root, "--max_steps", "6", *COMMON, "--resume_from_checkpoint", "checkpoint-4") == 2, why
        one_error_line(capsys.readouterr().err, "checkpoint-4 cannot be resumed: trainer_state.json")
        assert snapshot(rd) == before and not (rd / "checkpoint-6").exists(), why
        (ck / "trainer_state.json").write_bytes(whole)
    _edit_state(ck, STATE_DAMAGES["a position that is no count"])
    assert train_exit_code(root, "--max_steps", "6", *COMMON) == 0
    assert "skipping incomplete or corrupt checkpoint" in capsys.readouterr().out
    assert json.loads((rd / "run_info.json").read_text())["resumed_from"].endswith("checkpoint-2")


def test_training_state_of_another_model_or_file_is_one_line_not_a_traceback(root, capsys):
    """Whole archives holding what does not load into this run: another model's optimizer (other
    parameter groups), the scheduler's state in the optimizer's file, the scheduler's in the RNG
    state's. Each was torch's ValueError / KeyError traceback mid-resume."""
    import torch

    assert train_exit_code(root, "--max_steps", "4", *COMMON) == 0
    rd = run_dir(root)
    ck = rd / "checkpoint-4"
    other = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))])
    other.step()
    own = {f: (ck / f).read_bytes() for f in ("optimizer.pt", "rng_state.pth")}
    # (found as the Trainer loads them, after the run's configuration was logged: training_config.json,
    # the run's record of its settings, was rewritten with the refused command's --max_steps 6)
    before = snapshot(rd)
    assert "training_config.json" in before
    for file, put in (("optimizer.pt", lambda f: torch.save(other.state_dict(), f)),
                      ("optimizer.pt", lambda f: shutil.copy(ck / "scheduler.pt", f)),
                      ("rng_state.pth", lambda f: shutil.copy(ck / "scheduler.pt", f))):
        put(ck / file)
        capsys.readouterr()
        assert train_exit_code(root, "--max_steps", "6", *COMMON) == 2, file
        one_error_line(capsys.readouterr().err, "checkpoint-4: its saved", "does not fit this run's", "--fresh")
        assert snapshot(rd) == before
        assert not (rd / "checkpoint-6").exists() and [p.name for p in rd.glob("checkpoint-*")] != []
        (ck / file).write_bytes(own[file])
    assert train_exit_code(root, "--max_steps", "6", *COMMON) == 0
    assert json.loads((rd / "training_config.json").read_text())["optim"]["max_steps"] == 6  # once it trains


@pytest.mark.parametrize("spec", ["final", ".", "checkpoint-4/.."])
def test_resuming_a_folder_that_is_no_checkpoint_is_one_line(root, capsys, spec):
    """final/ (weights without the training state) passed as a model, then the Trainer's
    TypeError traceback; '.' and '..' were taken for another run's checkpoint."""
    assert train_exit_code(root, "--max_steps", "4", *COMMON) == 0
    before = snapshot(run_dir(root))
    capsys.readouterr()
    assert train_exit_code(root, "--max_steps", "6", *COMMON, "--resume_from_checkpoint", spec) == 2
    one_error_line(capsys.readouterr().err, "is no checkpoint-N folder")
    assert snapshot(run_dir(root)) == before


def test_a_run_record_with_fields_of_another_kind_says_nothing_of_them(root, capsys):
    """The record in a checkpoint (or run_info.json) with "settings": [1], "cache": 5: an
    AttributeError traceback mid-resume. The other record's value decides."""
    assert train_exit_code(root, "--max_steps", "4", *COMMON) == 0
    record = lambda st: st["stateful_callbacks"]["RunRecord"]["attributes"]["record"]  # noqa: E731
    _edit_state(run_dir(root) / "checkpoint-4", lambda st: record(st).update(settings=[1], cache=5,
                                                                             tokens_per_step="x"))
    assert train_exit_code(root, "--max_steps", "6", *COMMON, "--learning_rate", "0.5") == 2
    one_error_line(capsys.readouterr().err, "--learning_rate 0.5 (trained with 0.003)")  # run_info.json's
    info = json.loads((run_dir(root) / "run_info.json").read_text())
    (run_dir(root) / "run_info.json").write_text(json.dumps({**info, "settings": [2], "cache": "x"}))
    assert train_exit_code(root, "--max_steps", "6", *COMMON) == 0
    assert json.loads((run_dir(root) / "run_info.json").read_text())["global_step"] == 6


# --------------------------------------------------------------------------- 2. optimizer settings kept

@pytest.mark.parametrize("flag,value", [("--learning_rate", "0.1"), ("--weight_decay", "0.5"),
                                        ("--warmup_steps", "3"), ("--adam_beta2", "0.9"),
                                        ("--lr_scheduler_type", "constant")])
def test_changed_optimizer_settings_are_refused_on_resume(root, capsys, flag, value):
    assert train_exit_code(root, "--max_steps", "2", *COMMON) == 0
    rd = run_dir(root)
    before = snapshot(rd)
    capsys.readouterr()
    assert train_exit_code(root, "--max_steps", "4", *COMMON, flag, value) == 2
    one_error_line(capsys.readouterr().err, f"{flag} {value} (trained with", "--fresh", "--init_from")
    assert snapshot(rd) == before


def test_the_batch_and_max_steps_may_change_on_resume(root, capsys):
    """Going on with another batch (the README's launch_training.sh after the pipeline) or more
    steps is a continuation, not another run."""
    from londonlm.training.resume import _changed_settings

    before = {"learning_rate": 0.003, "batch_size": 4, "gradient_accumulation_steps": 2, "optim": "adamw_torch"}
    assert _changed_settings(before, {**before, "batch_size": 8, "gradient_accumulation_steps": 4}) == []
    assert _changed_settings({}, before) == []  # a run that recorded nothing cannot be compared
    assert train_exit_code(root, "--max_steps", "2", *COMMON) == 0
    assert train_exit_code(root, "--max_steps", "4", "--batch_size", "2", "--gradient_accumulation_steps", "2",
                           *COMMON) == 0
    info = json.loads((run_dir(root) / "run_info.json").read_text())
    assert info["global_step"] == 4 and info["resumed_from"].endswith("checkpoint-2")


def test_a_finished_run_asked_for_again_is_skipped_not_trained_on(root, capsys):
    """The same command again (a launcher rerun, a notebook cell) resumed the finished run from
    its last checkpoint, and the Trainer took one step past max_steps: final/ and the record
    replaced by a model of 3 steps of 2. Now it is skipped; other settings still continue it."""
    assert train_exit_code(root, "--max_steps", "2", *COMMON) == 0
    rd = run_dir(root)
    before = snapshot(rd)
    capsys.readouterr()
    assert train_exit_code(root, "--max_steps", "2", *COMMON) == 0
    assert "finished earlier with this tokenizer, corpus and these settings; skipped" in capsys.readouterr().out
    assert snapshot(rd) == before and not (rd / "checkpoint-3").exists()
    assert train_exit_code(root, "--max_steps", "3", *COMMON) == 0  # more steps: a continuation
    assert json.loads((rd / "run_info.json").read_text())["global_step"] == 3


def test_a_run_resumed_at_its_last_step_takes_no_step_past_it(root, capsys):
    """A run killed while it wrote final/ (or whose final/ was damaged since) resumes from the
    checkpoint of its last step: final/ is that checkpoint's model, not one step more; so is a
    finished run resumed from that checkpoint by name."""
    assert train_exit_code(root, "--max_steps", "2", *COMMON) == 0
    rd = run_dir(root)
    last = (rd / "checkpoint-2" / "model.safetensors").read_bytes()
    weights = rd / "final" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    capsys.readouterr()
    assert train_exit_code(root, "--max_steps", "2", *COMMON) == 0
    assert "resuming from" in capsys.readouterr().out
    info = json.loads((rd / "run_info.json").read_text())
    assert weights.read_bytes() == last and not (rd / "checkpoint-3").exists()
    assert (info["global_step"], info["max_steps"], info["interrupted"]) == (2, 2, None)
    assert info["train_loss_mean"] is None  # no step taken, no mean loss (the Trainer said 0)
    assert train_exit_code(root, "--max_steps", "2", *COMMON, "--resume_from_checkpoint", "checkpoint-2") == 0
    assert weights.read_bytes() == last and not (rd / "checkpoint-3").exists()


def kill_after_checkpoint(root, *argv) -> int:
    """A training process killed outright (SIGKILL: out of memory, a lost node, a scheduler's
    hard limit) once it has saved a checkpoint; returns the last checkpoint's step."""
    rd = run_dir(root)
    cmd = [sys.executable, str(SCRIPT), "--preset", "micro", "--root", str(root), "--report_to", "none",
           "--disable_tqdm", "true", "--max_steps", "100000", *COMMON, *argv]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (rd / "checkpoint-4" / "trainer_state.json").exists():
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    from londonlm.core.checkpoints import latest_valid_checkpoint

    return int(latest_valid_checkpoint(rd, warn=lambda *_: None).name.split("-")[1])  # what a resume takes


def test_a_run_killed_outright_is_resumed_under_the_settings_it_trained_with(root, capsys):
    """Such a run leaves checkpoints but no run_info.json (written when a run ends or stops on a
    signal). Each checkpoint carries its run's record, so the resume is judged by it: a Muon run
    goes on as Muon (it was refused as "trained with adamw"), a changed learning rate is refused
    (it went through), and the run's data and speed settings are known."""
    step = kill_after_checkpoint(root, "--optimizer", "muon")
    rd = run_dir(root)
    assert not (rd / "run_info.json").exists()
    capsys.readouterr()
    assert train_exit_code(root, "--max_steps", str(step + 2), *COMMON, "--optimizer", "muon",
                           "--learning_rate", "0.5") == 2
    one_error_line(capsys.readouterr().err, "--learning_rate 0.5 (trained with 0.003)")
    assert not (rd / "run_info.json").exists()
    assert train_exit_code(root, "--max_steps", str(step + 2), *COMMON, "--optimizer", "muon") == 0
    info = json.loads((rd / "run_info.json").read_text())
    assert info["global_step"] == step + 2 and info["resumed_from"].endswith(f"checkpoint-{step}")
    assert info["settings"]["optimizer"] == "muon"


def test_a_checkpoint_carries_its_runs_record_and_a_resume_reads_it_first(root):
    """The record in a checkpoint is the one its own invocation wrote; run_info.json is the last
    invocation's to end, and fills in only what the checkpoint lacks."""
    from londonlm.core import RunLayout
    from londonlm.training.resume import recorded_run, resumed

    assert train_exit_code(root, "--max_steps", "2", *COMMON) == 0
    rd = run_dir(root)
    rec = recorded_run(rd / "checkpoint-2")
    info = json.loads((rd / "run_info.json").read_text())
    assert rec and rec["settings"] == info["settings"] and rec["cache"] == info["cache"]
    assert rec["precision"] == info["precision"] and rec["batch_size"] == info["batch_size"]
    info["settings"] = {**info["settings"], "learning_rate": 9.0}
    info["only_in_run_info"] = 1
    (rd / "run_info.json").write_text(json.dumps(info))
    got = resumed(RunLayout(rd), "checkpoint-2", fresh=False).info
    assert got["settings"]["learning_rate"] == rec["settings"]["learning_rate"] and got["only_in_run_info"] == 1
    assert recorded_run(rd / "no-such-checkpoint") == {}


# --------------------------------------------------------------------------- 7. divergence

def test_a_diverged_run_stops_with_one_line_and_no_final(root, capsys):
    rd = run_dir(root, "bigLR")
    rc = train_exit_code(root, "--run_name_dir", "bigLR", "--learning_rate", "1e30", "--warmup_steps", "0",
                         "--max_steps", "6", *COMMON)
    assert rc == 2
    one_error_line(capsys.readouterr().err, "diverged", "--learning_rate")
    assert not (rd / "final").exists() and not (rd / "run_info.json").exists()


def test_the_finite_loss_check_reads_the_logged_loss_only():
    from types import SimpleNamespace

    from londonlm.training.dist import TrainingError
    from londonlm.training.step.callbacks import FiniteLossCallback

    cb, args, state = FiniteLossCallback(), SimpleNamespace(learning_rate=1.0), SimpleNamespace(global_step=7)
    cb.on_log(args, state, None, logs={"loss": 2.5, "eval_loss": float("nan")})
    cb.on_log(args, state, None, logs=None)
    for logs in ({"loss": float("nan")}, {"train_loss": float("inf")}):
        with pytest.raises(TrainingError, match="step 7"):
            cb.on_log(args, state, None, logs=logs)


# --------------------------------------------------------------------------- 8. data before the probe

def test_a_split_smaller_than_one_block_is_refused_before_the_speed_probe(root, capsys, monkeypatch):
    import londonlm.training.run as run_module

    def probe(*a, **k):
        raise AssertionError("the speed probe ran before the data check")

    assert train_exit_code(root, "--max_steps", "2", *COMMON) == 0  # a token cache of this corpus
    shutil.copytree(run_dir(root) / "pretokenized_data", run_dir(root, "long") / "pretokenized_data")
    monkeypatch.setattr(run_module, "choose_speed", probe)
    assert train_exit_code(root, "--run_name_dir", "long", "--max_length", "100000", "--max_steps", "2",
                           "--autotune", "on") == 2
    one_error_line(capsys.readouterr().err, "fewer than one block of 100000")


def test_a_split_too_small_is_refused_before_the_probe_and_the_cache_build_without_a_cache(root, capsys,
                                                                                          monkeypatch):
    """A first run has no token cache to count from: the split's bytes bound its tokens (one
    byte at least a token, two more a document), so a context no split can fill is refused
    before minutes of probing and tokenizing, and nothing is written."""
    import londonlm.training.run as run_module
    from londonlm.tokens import split_token_ceiling

    monkeypatch.setattr(run_module, "choose_speed", lambda *a, **k: pytest.fail("the speed probe ran"))
    assert train_exit_code(root, "--max_length", "100000", "--max_steps", "2", "--autotune", "on") == 2
    ceiling = split_token_ceiling(root / "data" / "london_historical" / "processed")
    one_error_line(capsys.readouterr().err, f"the train split can hold at most {ceiling['train']} tokens",
                   "fewer than one block of 100000")
    assert not (run_dir(root) / "pretokenized_data").exists()


def test_a_resume_is_judged_by_the_runs_record_not_a_cache_rebuilt_since(root, capsys):
    """The token cache rebuilt meanwhile at another context (a sweep once did it): the checkpoint
    was trained at the run's recorded context, and resumes at it, not refused as 'trained with' the
    cache's."""
    assert train_exit_code(root, "--max_steps", "2", *COMMON) == 0
    meta_file = run_dir(root) / "pretokenized_data" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["context_length"] = 32
    meta_file.write_text(json.dumps(meta))
    capsys.readouterr()
    assert train_exit_code(root, "--max_steps", "4", *COMMON) == 0, capsys.readouterr().err
    assert "resuming from" in capsys.readouterr().out
