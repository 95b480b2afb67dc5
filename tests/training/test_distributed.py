"""Multi-process training on CPU process groups (gloo): agreed stops, exact resume at any world
size, preemption with DataLoader workers, FSDP, multi-node rendezvous, threads, build-once cache.

The fast tests (default suite) check the pieces in-process or with two spawned gloo ranks; the
``slow`` ones run real torchrun jobs of the micro preset (~40 s per job on 2 cores)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import config
from conftest import precision_flags
from londonlm.core.errors import run_main
from londonlm.training.cli import TrainDefaults, main as train_main
from slow_dataset import SlowItems

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
SCRIPT = str(REPO / "04_training" / "train_model_slm.py")
# the same script with the test hooks wired in (the library has none): used when a test sets them
HOOKED = str(Path(__file__).resolve().parent / "hooked_train.py")


def script_for(env_extra) -> str:
    return HOOKED if any(k.startswith("LONDONLM_TEST_") for k in env_extra or {}) else SCRIPT
DEFAULTS = TrainDefaults(config.PRESETS, "micro", config.get_layout(), config.TOKENIZER.name,
                         config.TRAINING.seed, "londonlm-test")
COMMON = ["--preset", "micro", "--report_to", "none", "--disable_tqdm", "true", "--eval_steps", "100",
          "--logging_steps", "1", "--bf16", "false"]


@pytest.fixture
def root(micro_root, tmp_path):
    import shutil

    dst = tmp_path / "root"
    shutil.copytree(micro_root, dst)
    return dst


def run_dir(root, name="micro") -> Path:
    return root / "09_models" / "checkpoints" / name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job_env(root, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LONDONLM_TEST_")}
    env.update(LONDONLM_ROOT=str(root), WANDB_MODE="disabled", PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1", **extra)
    return env


def run_job(cmd, env, timeout):
    """Run a job; past ``timeout`` (a hang) stop it the way a scheduler would: SIGTERM to
    torchrun, which terminates its ranks (they run in sessions of their own), then SIGKILL."""
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd="/")
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out, err = stop(p)
        pytest.fail(f"hung for {timeout}s: {cmd}\n{out[-3000:]}{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def stop(p):
    """SIGTERM, and SIGKILL if that did not end it within 90 s; returns (stdout, stderr)."""
    p.send_signal(signal.SIGTERM)
    try:
        return p.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.communicate()


def torchrun(root, nproc, *argv, env_extra=None, timeout=400):
    """A torchrun job of the training script; returns the CompletedProcess."""
    cmd = [PY, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           f"--master_port={free_port()}", "--shutdown_timeout=30", script_for(env_extra), *COMMON,
           "--ddp_backend", "gloo", *argv]
    return run_job(cmd, job_env(root, **(env_extra or {})), timeout)


def single(root, *argv, env_extra=None, timeout=400):
    return run_job([PY, script_for(env_extra), *COMMON, *argv], job_env(root, **(env_extra or {})), timeout)


def ok(r) -> str:
    out = r.stdout[-4000:] + r.stderr[-4000:]
    assert r.returncode == 0, out
    return out


def losses(ckpt: Path) -> list[tuple[int, float]]:
    st = json.loads((ckpt / "trainer_state.json").read_text())
    return [(h["step"], h["loss"]) for h in st["log_history"] if "loss" in h]


def position(ckpt: Path) -> dict:
    from londonlm.training.resume import recorded_position

    return recorded_position(ckpt)


def train(root, *argv):
    """The training script in this process (run_main's exit code)."""
    with pytest.raises(SystemExit) as stop:
        run_main(lambda a: train_main(a, DEFAULTS), [*COMMON, "--root", str(root), *argv])
    return stop.value.code


# --------------------------------------------------------------------------- fast: pieces

def _shards(n_blocks, seed, start, batch, accum, world, steps):
    """Block indices each optimizer step reads, through accelerate's own round-robin sharding
    of the stream sampler's batches (what the Trainer does at this world size)."""
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler

    from londonlm.training.data import StreamSampler

    # every rank's loader iterates its own sampler (one pass each), dealt round-robin
    per_rank = [iter(BatchSamplerShard(BatchSampler(
        StreamSampler(n_blocks, seed, start, batch * accum * world), batch, False), world, r))
        for r in range(world)]
    out = []
    for _ in range(steps):
        step = []
        for _ in range(accum):
            for it in per_rank:
                step += next(it)
        out.append(step)
    return out


@pytest.mark.parametrize("before,after", [(2, 1), (1, 2), (3, 2), (2, 3)])
def test_stream_resumes_at_the_same_block_at_any_world_size(before, after):
    """Steps at one world size, then a resume at another from the consumed count: within the
    epoch no block is read twice and none is skipped."""
    from londonlm.training.data import stream_blocks

    n, seed, batch, accum = 100, 7, 2, 2
    first = _shards(n, seed, 0, batch, accum, before, 3)
    consumed = 3 * batch * accum * before
    second = _shards(n, seed, consumed, batch, accum, after, 4)
    read = [b for step in first + second for b in step]
    assert len(read) == len(set(read)) == consumed + 4 * batch * accum * after
    assert read == stream_blocks(n, seed, 0, len(read)).tolist()


def test_stream_passes_are_whole_steps_and_epochs_are_permutations():
    from londonlm.training.data import StreamSampler, stream_blocks

    s = StreamSampler(10, 3, 0, 4)
    assert len(s) == 8  # a pass never ends inside a step
    a, b = list(s), list(s)
    assert a + b == stream_blocks(10, 3, 0, 16).tolist()
    assert sorted(stream_blocks(10, 3, 0, 10)) == list(range(10))
    assert sorted(stream_blocks(10, 3, 10, 20)) == list(range(10))
    assert stream_blocks(10, 3, 0, 10).tolist() != stream_blocks(10, 3, 10, 20).tolist()
    assert len(StreamSampler(3, 0, 0, 8)) == 8  # fewer blocks than a step: wraps into the next epoch


class Peer:
    """A fake second rank for ``StopAndSaveCallback.agree``: its proposals join ours by MAX."""

    def __init__(self):
        self.wishes = None

    def __call__(self, values):
        theirs = self.wishes or [0] * len(values)
        return [max(a, b) for a, b in zip(values, theirs + [0] * (len(values) - len(theirs)))]


def _control():
    from transformers import TrainerControl

    return TrainerControl()


def _state(step):
    from transformers import TrainerState

    st = TrainerState()
    st.global_step = step
    return st


def test_stop_is_agreed_with_the_other_ranks():
    """Another rank's clock ran out (or it got the signal): this rank stops after the same step,
    saving, and records why; its own clock never said so."""
    from londonlm.training.step.callbacks import StopAndSaveCallback

    peer = Peer()
    cb = StopAndSaveCallback(max_seconds=3600, agree=peer)
    cb.on_train_begin(None, _state(0), _control())
    try:
        ctl = _control()
        cb.on_step_end(None, _state(1), ctl)
        assert not ctl.should_training_stop and not ctl.should_save
        peer.wishes = [0, 1, 0]  # the peer is out of time
        cb.on_step_end(None, _state(2), ctl)
        assert ctl.should_training_stop and ctl.should_save and "--stop_after_seconds" in cb.reason
        peer.wishes = [int(signal.SIGTERM), 0, 0, 1, 0, 0, 0]  # also: the peer wants to save
        cb2 = StopAndSaveCallback(agree=peer)
        cb2.on_train_begin(None, _state(0), _control())
        ctl = _control()
        cb2.on_step_end(None, _state(3), ctl)
        assert cb2.reason == "signal SIGTERM" and ctl.should_save
        cb2.on_train_end(None, None, None)
        # after an evaluation (early stopping, --save_best) the flags are agreed as well
        peer.wishes = [0, 0, 0, 1]
        ctl = _control()
        cb.on_evaluate(None, _state(3), ctl)
        assert ctl.should_training_stop
    finally:
        cb.on_train_end(None, None, None)


def test_repeated_signal_within_a_second_is_one_request():
    """Slurm signals every process, then torchrun forwards the signal: one request. Asked
    again later, give up at once."""
    from londonlm.training.step.callbacks import StopAndSaveCallback

    cb = StopAndSaveCallback()
    cb._handler(signal.SIGTERM, None)
    cb._handler(signal.SIGTERM, None)
    assert cb.signum == signal.SIGTERM
    cb._signalled_at -= 5
    with pytest.raises(KeyboardInterrupt):
        cb._handler(signal.SIGINT, None)


def test_omp_num_threads_is_obeyed_and_cores_are_shared_among_local_ranks(tmp_path, monkeypatch):
    from londonlm.core import hardware

    assert hardware.training_threads({"OMP_NUM_THREADS": "1"})[0] == 1
    monkeypatch.setattr(hardware, "usable_cores", lambda: 8)
    assert hardware.training_threads({"LOCAL_WORLD_SIZE": "2"}) == (4, "8 usable cores / 2 ranks")
    assert hardware.training_threads({"LOCAL_WORLD_SIZE": "16"})[0] == 1
    assert hardware.training_threads({"OMP_NUM_THREADS": "3", "LOCAL_WORLD_SIZE": "2"})[0] == 3
    # the affinity mask counts physical cores: hyper-thread siblings once
    info = tmp_path / "cpuinfo"
    info.write_text("".join(f"processor\t: {c}\nphysical id\t: 0\ncore id\t\t: {c % 4}\n\n"
                            for c in range(8)))
    assert hardware.physical_cores(cpus={0, 4}, cpuinfo=str(info)) == 1
    assert hardware.physical_cores(cpus={0, 1, 2}, cpuinfo=str(info)) == 3
    assert hardware.physical_cores(cpuinfo=str(info)) == 4
    # a cgroup quota caps it (v2 cpu.max and v1 cfs quota)
    cg = tmp_path / "cg"
    (cg / "job").mkdir(parents=True)
    (cg / "job" / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "self").write_text("0::/job\n")
    assert hardware.cgroup_cpu_limit(str(cg), str(tmp_path / "self")) == 1.5
    (cg / "job" / "cpu.max").write_text("max 100000\n")
    assert hardware.cgroup_cpu_limit(str(cg), str(tmp_path / "self")) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "self1").write_text("1:cpu,cpuacct:/\n")
    assert hardware.cgroup_cpu_limit(str(v1), str(tmp_path / "self1")) == 2.0


def test_dataloader_workers_ignore_sigterm():
    """torchrun and Slurm signal the rank's whole process group; the workers must not die of
    it (the rank decides, then saves)."""
    from torch.utils.data import DataLoader

    from londonlm.training.step.trainer import quiet_workers

    loader = quiet_workers(DataLoader(SlowItems(), batch_size=4, num_workers=2))
    it = iter(loader)
    next(it)
    for w in it._workers:
        os.kill(w.pid, signal.SIGTERM)
    time.sleep(0.5)
    assert sum(len(b) for b in it) == 396  # the rest of the epoch, no "worker killed" error



def sigterm_before_the_init_fn(original):
    """torch's worker-side signal set-up, then a SIGTERM to the worker itself: one that arrives
    after the fork and before the worker's ``worker_init_fn`` (a process group's, at a pass's
    or an evaluation's new workers)."""
    def set_handlers():
        original()
        os.kill(os.getpid(), signal.SIGTERM)
    return set_handlers


def test_a_sigterm_between_a_workers_fork_and_its_init_fn_is_ignored(monkeypatch):
    """The flake of the SIGTERM-to-torchrun test, made certain: a SIGTERM after a worker's fork
    and before QuietWorker ran killed it (torch's own handler re-raises any SIGTERM not sent by
    the rank) and the rank with it. Workers now start with it blocked until they ignore it, and
    the rank's signal mask is as it was."""
    from torch.utils.data import DataLoader
    from torch.utils.data._utils import signal_handling

    from londonlm.training.step.trainer import quiet_workers

    monkeypatch.setattr(signal_handling, "_set_worker_signal_handlers",
                        sigterm_before_the_init_fn(signal_handling._set_worker_signal_handlers))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert sum(len(b) for b in quiet_workers(DataLoader(SlowItems(), batch_size=4, num_workers=2))) == 400
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask


def test_quiet_workers_keep_a_loaders_own_start_method():
    """A loader started by spawn or forkserver starts no copy of the rank (nothing of its
    handlers to inherit): its context is left as asked, not made a fork."""
    from torch.utils.data import DataLoader

    from londonlm.training.step.trainer import QuietForkContext, quiet_workers

    spawned = quiet_workers(DataLoader(SlowItems(), batch_size=4, num_workers=1,
                                       multiprocessing_context="spawn"))
    assert spawned.multiprocessing_context.get_start_method() == "spawn"
    assert isinstance(quiet_workers(DataLoader(SlowItems(), num_workers=1)).multiprocessing_context,
                      QuietForkContext)


QUIET_LOADER_LEFT_OPEN = """
from torch.utils.data import DataLoader
from londonlm.training.step.trainer import quiet_workers
from slow_dataset import SlowItems

it = iter(quiet_workers(DataLoader(SlowItems(), batch_size=4, num_workers=2)))
next(it)
KEEP = it  # a run stopped mid-epoch by a signal: its iterator still referenced at exit
print("exiting", flush=True)
"""


def test_a_process_exits_with_quiet_workers_it_never_shut_down(tmp_path):
    """At exit multiprocessing ends a loader's workers with SIGTERM and waits for them; quiet
    ones ignore it, so a rank stopped by a signal mid-epoch saved its checkpoint and then
    waited for ever (the slow SIGTERM-to-torchrun test hung there, its ranks orphaned)."""
    here = Path(__file__).resolve().parent
    script = tmp_path / "left_open.py"
    script.write_text(QUIET_LOADER_LEFT_OPEN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parents[1]), str(here)])}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the process never exited: its quiet DataLoader workers outlived it")
    assert proc.returncode == 0 and "exiting" in out, out


def test_tokens_seen_count_what_was_consumed():
    from londonlm.training.step.callbacks import ThroughputCallback
    from londonlm.training.data import DataPosition, Position

    pos = Position(start=48, start_step=3, samples_per_step=8)  # 3 steps at 2 ranks, then 1
    cb = ThroughputCallback(8 * 64, 1.0, None, tokens_at=lambda s: pos.consumed(s) * 64)
    st = _state(5)
    cb.on_step_end(None, st, _control())
    assert cb.tokens_seen == (48 + 2 * 8) * 64
    dp = DataPosition(pos, 1, 164, 42)
    dp.on_step_end(None, st, _control())
    assert dp.state()["attributes"]["consumed_samples"] == 64 and st.epoch == 64 / 164



def test_throughput_leaves_evaluations_and_checkpoints_out_and_adds_them_up():
    """A log window with an evaluation and its checkpoint reads the steps' own speed (on the
    H200 such a window read half of it), and the pauses are added up by kind; the final
    evaluation, after training ended, is none of them."""
    from londonlm.training.step.callbacks import ThroughputCallback

    now = [0.0]
    cb = ThroughputCallback(1000, 1.0, None, clock=lambda: now[0])
    st, c = _state(0), _control()
    cb.on_train_begin(None, st, c)

    def steps(n, seconds):
        for _ in range(n):
            now[0] += seconds
            st.global_step += 1
            cb.on_step_end(None, st, c)

    def logged():
        logs = {"loss": 1.0}
        cb.on_log(None, st, c, logs=logs)
        return logs

    steps(10, 0.5)
    assert logged()["step_time_s"] == 0.5
    steps(10, 0.5)
    now[0] += 3.0
    cb.on_evaluate(None, st, c)  # 3 s evaluating
    now[0] += 1.0
    cb.on_save(None, st, c)      # then 1 s writing the checkpoint
    steps(10, 0.5)
    logs = logged()
    assert logs["step_time_s"] == 0.5 and logs["tokens_per_second"] == 2000.0
    assert logs["train_seconds"] == 19.0  # wall time, pauses included: time to quality
    steps(2, 0.5)
    now[0] += 0.25
    cb.on_save(None, st, c)      # a checkpoint without an evaluation, mid-window
    cb.on_train_end(None, st, c)
    now[0] += 5.0
    cb.on_evaluate(None, st, c)  # the final evaluation
    assert cb.pauses.record() == {"evaluating_seconds": 3.0, "evaluations": 1,
                                  "checkpoint_seconds": 1.25, "checkpoints": 2}
    assert cb.pauses.describe() == "1 evaluations 3 s (3 s each), 2 checkpoints 1.25 s (0.625 s each)"


def test_resume_starts_at_the_recorded_position_or_infers_an_old_one(tmp_path, capsys):
    """A checkpoint's recorded block count wins over global_step x today's step size; one
    saved before positions were recorded assumes the step size its run had."""
    from londonlm.training.data import StreamSampler
    from londonlm.training.resume import Resumed

    ck = tmp_path / "checkpoint-3"
    ck.mkdir()

    def record(position):
        state = {"global_step": 3}
        if position:
            state["stateful_callbacks"] = {"DataPosition": {"args": {}, "attributes": position}}
        (ck / "trainer_state.json").write_text(json.dumps(state))

    resume = Resumed(ck, {"tokens_per_step": 16 * 64})
    record({"consumed_samples": 48, "blocks": 164})
    pos = resume.start(8, 164, 64)
    stream = StreamSampler(164, 1, pos.start, pos.samples_per_step)
    assert (stream.start, pos.consumed(5)) == (48, 64) and len(stream) == 160
    record({"consumed_samples": 48, "blocks": 100})
    resume.start(8, 164, 64)
    assert "training data changed" in capsys.readouterr().out
    record(None)
    assert resume.start(8, 164, 64).start == 3 * 16 and "records no data position" in capsys.readouterr().out
    assert Resumed().start(8, 164, 64).start == 0  # a new run


def test_changed_tokenizer_refuses_to_resume(root, tmp_path, capsys):
    from conftest import write_micro_source
    from londonlm.corpus import CollectionOptions, build_corpus
    from londonlm.tokens.stage import train_tokenizer_stage

    assert train(root, "--max_steps", "2", "--save_steps", "2") == 0
    capsys.readouterr()
    # the tokenizer retrained at the same vocabulary size on other text: token ids renumbered
    other = tmp_path / "other"
    build_corpus(other / "processed", other / "metadata", options=CollectionOptions(log=lambda *_: None),
                 source_dir=write_micro_source(other / "src", n_docs=2, chars=4000))
    tok = root / "09_models" / "tokenizers" / "london_historical_bpe"
    train_tokenizer_stage(other / "processed", tok, vocab_size=512, min_frequency=2, era_tokens=True,
                          model_max_length=64, overwrite=True, log=lambda *_: None)
    assert train(root, "--max_steps", "4", "--save_steps", "2") == 2
    err = capsys.readouterr().err
    assert "different tokenizer" in err and "--fresh" in err and "--init_from" in err
    assert not (run_dir(root) / "checkpoint-4").exists()
    assert train(root, "--max_steps", "2", "--save_steps", "2", "--fresh") == 0


@pytest.mark.parametrize("env", [{"RANK": "x"}, {"WORLD_SIZE": "abc"}, {"LOCAL_RANK": "junk"},
                                 {"RANK": "1"}, {"RANK": "-1"}, {"RANK": "2", "WORLD_SIZE": "2"},
                                 {"WORLD_SIZE": "0"}])
def test_torchruns_variables_left_as_junk_outside_it_are_one_line_naming_them(root, capsys, monkeypatch, env):
    """RANK=x was an int() traceback at the first log line; a stale RANK=1 outside torchrun trained
    (the Trainer reads LOCAL_RANK and ran one process) with every rank-0 duty skipped here: no run
    lock, no log, exit 0. Now one line naming the variable, before any work."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert train(root, "--max_steps", "2") == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err and f"${next(iter(env))} is" in err, err
    assert not run_dir(root).exists()


def test_fsdp_without_torchrun_is_an_error_not_a_silent_single_process_run(root, capsys):
    assert train(root, "--max_steps", "2", "--fsdp", "full_shard auto_wrap") == 2
    err = capsys.readouterr().err
    assert "--fsdp" in err and "torchrun" in err
    assert not (run_dir(root) / "checkpoint-2").exists()


# ----------------------------------------------------- fast: two spawned gloo ranks, no Trainer

def _rank_worker(rank, init_file, root, out):
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    from transformers import AutoTokenizer

    import londonlm.tokens.cache as tc
    from londonlm.core.errors import LondonLMError
    from londonlm.training.dist import agree, rank0_first
    from londonlm.training.data import cached_tokens
    from londonlm.training.job import DataOptions

    out = Path(out)
    assert agree([rank, 5 - rank, 0]) == [1, 5, 0]
    real = tc.build_cache

    def counting(*a, **k):
        with open(out / "builds.txt", "a") as f:
            f.write(f"{rank}\n")
        return real(*a, **k)
    tc.build_cache = counting
    layout = DEFAULTS.at_root(root)
    tok_dir = layout.tokenizer_dir(config.TOKENIZER.name)
    data = DataOptions(tok_dir, layout.processed_dir, cache_mode="rebuild", progress=False)
    meta, _ = cached_tokens(layout.run("micro"), data, 64, AutoTokenizer.from_pretrained(str(tok_dir)))
    (out / f"created{rank}.txt").write_text(meta["created"])
    try:  # rank 0 failing: the others are told, not left waiting
        with rank0_first("testing"):
            if rank == 0:
                raise LondonLMError("rank 0 broke")
    except LondonLMError as e:
        (out / f"error{rank}.txt").write_text(str(e))
    dist.destroy_process_group()


def test_two_ranks_agree_and_build_the_cache_once(root, tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "out"
    out.mkdir()
    mp.start_processes(_rank_worker, args=(str(tmp_path / "init"), str(root), str(out)), nprocs=2,
                       start_method="spawn")
    assert (out / "builds.txt").read_text().split() == ["0"]  # rank 0 built, rank 1 waited
    assert (out / "created0.txt").read_text() == (out / "created1.txt").read_text()
    assert (out / "error0.txt").read_text() == "rank 0 broke"
    assert "rank 0 failed while testing" in (out / "error1.txt").read_text()


# --------------------------------------------------------------------------- slow: torchrun jobs

@pytest.mark.slow
@pytest.mark.parametrize("nproc, precision", [(2, "bf16"), (3, "fp32")])
def test_ddp_end_to_end(root, nproc, precision):
    r = torchrun(root, nproc, "--max_steps", "4", "--save_steps", "2", *precision_flags(precision))
    out = ok(r)
    rd = run_dir(root)
    info = json.loads((rd / "run_info.json").read_text())
    assert info["world_size"] == nproc and info["global_step"] == 4 and info["precision"] == precision
    assert info["tokens_seen"] == 4 * 8 * nproc * 64
    assert "1 threads" in out  # OMP_NUM_THREADS=1 obeyed by every rank
    assert [f"rng_state_{i}.pth" in os.listdir(rd / "checkpoint-4") for i in range(nproc)] == [True] * nproc
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(rd / "final"))


@pytest.mark.slow
def test_passes_count_every_rank_s_blocks(root):
    """--num_train_epochs under torchrun: a step reads micro-batch x ranks blocks, so two ranks
    train half the steps one would for the same passes, and both end there."""
    import math

    r = torchrun(root, 2, "--num_train_epochs", "0.5", "--save_steps", "100")
    ok(r)
    info = json.loads((run_dir(root) / "run_info.json").read_text())
    blocks = info["cache"]["tokens_train"] // 64
    assert info["world_size"] == 2 and info["global_step"] == math.ceil(math.ceil(0.5 * blocks) / (8 * 2))
    assert info["tokens_seen"] >= 0.5 * blocks * 64


@pytest.mark.slow
def test_decay_on_plateau_is_one_decision_of_every_rank(root):
    """The stall that begins a budget's decay is decided from the validation loss, gathered from
    every rank, and the end it sets travels in the total the ranks agree on at each step: both
    ranks end at the same step, well inside the budget (a rank that went on would hang the
    other in its next collective, and the job would time out)."""
    r = torchrun(root, 2, "--time_budget", "240", "--warmup_steps", "5", "--eval_steps", "10",
                 "--save_steps", "10", "--decay_on_plateau", "1", timeout=300)
    ok(r)
    info = json.loads((run_dir(root) / "run_info.json").read_text())
    end = info["time_budget"]["decay_on_plateau_end_step"]
    assert info["world_size"] == 2 and end is not None and info["global_step"] == end
    assert info["time_budget"]["train_seconds_in_budget"] < 240
    assert (r.stdout + r.stderr).count("(--decay_on_plateau)") == 1  # said once, by rank 0


@pytest.mark.slow
def test_two_agents_nnodes_2_on_localhost(root):
    port = str(free_port())
    procs = [subprocess.Popen(
        [PY, "-m", "torch.distributed.run", "--nproc_per_node=1", "--nnodes=2", f"--node_rank={i}",
         "--master_addr=127.0.0.1", f"--master_port={port}", SCRIPT, *COMMON, "--ddp_backend", "gloo",
         "--max_steps", "3", "--save_steps", "3"],
        env=job_env(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/")
        for i in range(2)]
    try:
        outs = [p.communicate(timeout=400)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                stop(p)
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    info = json.loads((run_dir(root) / "run_info.json").read_text())
    assert info["world_size"] == 2 and (run_dir(root) / "final" / "model.safetensors").exists()


EXACT = ["--max_steps", "12", "--save_steps", "4", "--batch_size", "4",
         "--gradient_accumulation_steps", "2", "--dropout", "0.1"]


@pytest.mark.slow
def test_kill_9_of_one_rank_then_the_same_command_resumes_exactly(root):
    """fp32, gradient accumulation 2, dropout 0.1: rank 1 dies (SIGKILL) after step 6; the same
    command resumes from checkpoint-4 and reproduces the uninterrupted run's losses, across a
    pass boundary (step 10) where the resumed run's passes begin elsewhere."""
    ok(torchrun(root, 2, *EXACT, "--run_name_dir", "a"))
    r = torchrun(root, 2, *EXACT, "--run_name_dir", "b", env_extra={"LONDONLM_TEST_KILL": "1:6"})
    assert r.returncode != 0
    b = run_dir(root, "b")
    assert not (b / "final").exists() and (b / "checkpoint-4").is_dir()
    out = ok(torchrun(root, 2, *EXACT, "--run_name_dir", "b"))
    assert "resuming from" in out and "checkpoint-4" in out
    la, lb = losses(run_dir(root, "a") / "checkpoint-12"), losses(b / "checkpoint-12")
    assert [s for s, _ in la] == [s for s, _ in lb] == list(range(1, 13))
    assert max(abs(x - y) for (_, x), (_, y) in zip(la, lb)) <= 1e-5, (la, lb)


@pytest.mark.slow
def test_sigterm_to_torchrun_with_dataloader_workers_saves_a_checkpoint(root):
    from londonlm.core.layout import checkpoint_problem

    rd = run_dir(root)
    cmd = [PY, "-m", "londonlm.training.launch", "--run_dir", str(rd), "--resume_hint", "AGAIN", "--",
           "--nproc_per_node=2", f"--master_port={free_port()}", "--shutdown_timeout=120", SCRIPT,
           *COMMON, "--ddp_backend", "gloo", "--max_steps", "100000", "--save_steps", "100000",
           "--eval_steps", "100000", "--dataloader_num_workers", "2"]
    p = subprocess.Popen(cmd, env=job_env(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, cwd=str(REPO))
    log = root / "04_training" / "model_training.log"
    deadline = time.time() + 300
    while time.time() < deadline and not (log.exists() and "step 3/" in log.read_text()):
        time.sleep(0.5)
    out, _ = stop(p)
    assert p.returncode == 128 + signal.SIGTERM, out[-4000:]
    assert "is killed by signal" not in out
    ckpts = list(rd.glob("checkpoint-*"))
    assert len(ckpts) == 1 and checkpoint_problem(ckpts[0]) is None, out[-4000:]
    assert f"checkpoint saved in {ckpts[0]}; resume with: AGAIN" in out
    assert "SIGTERM" in json.loads((rd / "run_info.json").read_text())["interrupted"]


@pytest.mark.slow
def test_stop_after_seconds_with_one_rank_clock_skewed_never_hangs(root):
    """Rank 1's clock says the budget is spent after step 1, rank 0's that hours are left: they
    agree to stop after step 1 together, with one checkpoint (no rank waits for the other)."""
    t0 = time.time()
    r = torchrun(root, 2, "--max_steps", "1000", "--save_steps", "1000", "--stop_after_seconds", "36000",
                 env_extra={"LONDONLM_TEST_CLOCK_SKEW": "1:100000"}, timeout=240)
    ok(r)
    rd = run_dir(root)
    assert [p.name for p in rd.glob("checkpoint-*")] == ["checkpoint-1"]
    assert "--stop_after_seconds" in json.loads((rd / "run_info.json").read_text())["interrupted"]
    assert time.time() - t0 < 240


@pytest.mark.slow
def test_a_time_budget_is_one_schedule_for_every_rank(root):
    """Two ranks train to --time_budget: the step time is agreed before any data work and rank
    0's fitted total is every rank's, so both stop at the same step with the schedule
    finished and final/ saved (a rank stopping alone would leave the other in a collective)."""
    r = torchrun(root, 2, "--time_budget", "25", "--warmup_steps", "1", "--save_steps", "100000",
                 timeout=300)
    ok(r)
    info = json.loads((run_dir(root) / "run_info.json").read_text())
    fit = info["time_budget"]
    assert info["world_size"] == 2 and info["interrupted"] is None
    assert info["global_step"] == fit["fitted_total_steps"] > 3
    assert (run_dir(root) / "final" / "model.safetensors").exists()
    assert "time budget 25 s: about" in r.stdout + r.stderr


@pytest.mark.slow
def test_a_time_budget_with_one_rank_clock_skewed_never_hangs(root):
    """Rank 1's clock says the budget is spent before the step time is even measured: it used to
    enter a broadcast alone while rank 0 went on to the next step (a hang). Every rank now
    agrees on the total at every step: both end after the same step with final/ saved."""
    t0 = time.time()
    r = torchrun(root, 2, "--time_budget", "3600", "--warmup_steps", "0", "--save_steps", "100000",
                 env_extra={"LONDONLM_TEST_CLOCK_SKEW": "1:100000"}, timeout=240)
    ok(r)
    info = json.loads((run_dir(root) / "run_info.json").read_text())
    assert info["global_step"] == info["time_budget"]["fitted_total_steps"] == 1
    assert (run_dir(root) / "final" / "model.safetensors").exists() and time.time() - t0 < 240


def _blocks_read(folder: Path) -> list[int]:
    return [int(b) for f in sorted(folder.glob("blocks-rank*.txt"))
            for line in f.read_text().splitlines() for b in line.split()[1:]]


@pytest.mark.slow
@pytest.mark.parametrize("before,after", [(2, 1), (1, 2)])
def test_world_size_change_reads_each_block_at_most_once(root, tmp_path, before, after):
    from londonlm.training.data import stream_blocks

    logs = tmp_path / "blocks"
    hook = {"LONDONLM_TEST_BLOCK_LOG": str(logs)}
    args = ["--max_steps", "10", "--save_steps", "100"]

    def job(nproc, *extra):
        return ok(torchrun(root, nproc, *args, *extra, env_extra=hook) if nproc > 1
                  else single(root, *args, *extra, env_extra=hook))
    job(before, "--stop_after_steps", "3")
    assert (run_dir(root) / "checkpoint-3").is_dir()
    job(after)
    rec = position(run_dir(root) / "checkpoint-10")
    consumed = 3 * 8 * before + 7 * 8 * after
    assert rec["consumed_samples"] == consumed and rec["world_size"] == after
    read = _blocks_read(logs)
    assert len(read) == len(set(read)) == consumed  # within the epoch: none twice, none skipped
    assert sorted(read) == sorted(stream_blocks(rec["blocks"], rec["seed"], 0, consumed).tolist())
    info = json.loads((run_dir(root) / "run_info.json").read_text())
    assert info["tokens_seen"] == consumed * 64


@pytest.mark.slow
def test_fsdp_on_cpu_process_group(root):
    """--fsdp trains with FSDP2 on gloo (not plain DDP): checkpoints hold the sharded optimizer
    state and plain weights, final/ is a save_pretrained folder, and the losses are DDP's."""
    args = ["--max_steps", "4", "--save_steps", "2"]
    ok(torchrun(root, 2, *args, "--run_name_dir", "ddp"))
    ok(torchrun(root, 2, *args, "--run_name_dir", "fsdp", "--fsdp", "full_shard auto_wrap"))
    ck = run_dir(root, "fsdp") / "checkpoint-2"
    assert (ck / "optimizer_0").is_dir() and len(list((ck / "optimizer_0").glob("*.distcp"))) == 2
    assert (ck / "model.safetensors").exists() and not (ck / "optimizer.pt").exists()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(run_dir(root, "fsdp") / "final"))
    ld, lf = losses(run_dir(root, "ddp") / "checkpoint-4"), losses(run_dir(root, "fsdp") / "checkpoint-4")
    assert max(abs(x - y) for (_, x), (_, y) in zip(ld, lf)) <= 1e-4, (ld, lf)


@pytest.mark.slow
def test_fsdp_run_stopped_then_resumed(root):
    args = ["--max_steps", "4", "--save_steps", "2", "--fsdp", "full_shard auto_wrap"]
    ok(torchrun(root, 2, *args, "--stop_after_steps", "2"))
    out = ok(torchrun(root, 2, *args))
    assert "resuming from" in out and "checkpoint-2" in out
    assert [s for s, _ in losses(run_dir(root) / "checkpoint-4")] == [1, 2, 3, 4]
    # the same command again: both ranks agree it finished and skip it; with final/ lost, both
    # resume at the last step and take no step past it (the Trainer took one)
    final = run_dir(root) / "final" / "model.safetensors"
    whole = final.read_bytes()
    assert "finished earlier" in ok(torchrun(root, 2, *args)) and final.read_bytes() == whole
    final.write_bytes(whole[:1000])
    ok(torchrun(root, 2, *args))
    from safetensors.torch import load_file

    last = load_file(str(run_dir(root) / "checkpoint-4" / "model.safetensors"))
    assert not (run_dir(root) / "checkpoint-5").exists()
    assert all(load_file(str(final))[k].equal(v) for k, v in last.items())


@pytest.mark.slow
def test_fsdp_in_bf16_on_cpu_process_group(root):
    """FSDP2 with bf16 autocast on gloo (emulated bf16 where the CPU lacks it) trains, saves
    and stops/resumes like fp32."""
    args = ["--max_steps", "4", "--save_steps", "2", "--fsdp", "full_shard auto_wrap", "--bf16", "true"]
    ok(torchrun(root, 2, *args, "--stop_after_steps", "2"))
    out = ok(torchrun(root, 2, *args))
    assert "resuming from" in out and "checkpoint-2" in out
    info = json.loads((run_dir(root) / "run_info.json").read_text())
    assert info["precision"] == "bf16" and info["global_step"] == 4
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(run_dir(root) / "final"))


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_chat_fine_tuning_under_torchrun_two_ranks(chat_root, tmp_path, precision):
    """Chat fine-tuning is a training-package job: torchrun ranks, agreed stops and the
    resume of a stopped run work as in pre-training."""
    import shutil

    root = tmp_path / "chat"
    shutil.copytree(chat_root, root)
    script = str(REPO / "07_finetuning" / "finetune_chat.py")
    cmd = [PY, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           script, "--preset", "micro", "--init_from", "base", "--run_name", "ddp-chat", "--root",
           str(root), "--max_steps", "4", "--save_steps", "2", "--ddp_backend", "gloo",
           *precision_flags(precision)]
    ok(run_job([*cmd, "--stop_after_steps", "2"], job_env(root), 400))
    out = ok(run_job(cmd, job_env(root), 400))
    assert "resuming from" in out
    info = json.loads((run_dir(root, "ddp-chat") / "run_info.json").read_text())
    assert (info["world_size"], info["global_step"], info["precision"]) == (2, 4, precision)
    assert info["status"] == "finished" and (run_dir(root, "ddp-chat") / "final" / "chat_info.json").exists()
