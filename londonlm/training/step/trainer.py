"""The Trainer every training job trains with, and the call that trains: ``transformers.Trainer``
plus what our runs need and the stock one does not do.

- Optimizer and schedule: ``--optim muon`` (:mod:`.optim`) and a budget-fitted or custom
  learning-rate schedule (:mod:`.schedules`) are built by this class's ``create_optimizer`` /
  ``create_scheduler``, when the Trainer would build its own (after the model is on its device,
  before a checkpoint's optimizer and scheduler states are loaded into them).
- Data order: the :class:`~..data.StreamSampler`, a function of (seed, blocks consumed), so a
  run resumes at the exact block at any world size. The Trainer's own skipping counts batches
  per rank (world-size dependent), so the job sets ``ignore_data_skip``; the sampler starts
  where the checkpoint says instead.
- RNG: the training DataLoader draws its worker seed from a generator of its own, not from the
  global RNG, so where a pass over the data begins (which moves with a resume) never shifts
  the dropout stream: a resumed run replays the uninterrupted one exactly.
- Preemption: DataLoader workers ignore SIGTERM/SIGINT, from their fork on. torchrun and Slurm
  signal the rank's whole process group; a worker that died of it would take the rank down
  before its stop handler could save. The rank alone decides (see :class:`.callbacks.StopAndSaveCallback`).
- Checkpoints: every rank takes part in every save (``save_model`` is collective under FSDP)
  and trainer_state.json, which marks a checkpoint complete, follows every rank's RNG state.
- Callbacks: in the one order :func:`.callbacks.step_callbacks` states, the Trainer's own among
  them (:func:`in_order`).
- FSDP on CPU process groups: accelerate hands the FSDP plugin only to GPU-type groups and on a
  gloo CPU group silently trains plain DDP; torch's FSDP2 runs on gloo, so the plugin is
  handed to the accelerator state there. Any other case where ``--fsdp`` would be ignored is
  an error.
- Saved weights are the model's, at its real vocabulary size (a ``--pad_vocab`` model's padded
  rows are cut off: :mod:`.vocab_padding`), and a checkpoint's embedding moments are fitted to
  the rows the resumed run trains with. A gathered state dict's keys lose torch.compile's
  ``_orig_mod.`` prefix (transformers 4.x saved FSDP1 + compile weights that way, and
  ``from_pretrained`` then loads random weights with only a warning), and keys that still do not
  match the model are refused before anything is written.
"""
from __future__ import annotations

import atexit
import multiprocessing
import pickle
import re
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from multiprocessing.context import ForkContext, ForkProcess
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Callable

import torch
from transformers import Trainer
from transformers.trainer_callback import ProgressCallback

from ...core import archives_without_crc, give_open_mode
from ..data import Position, StreamSampler
from ..dist import TrainingError, barrier, log
from ..speed.attention import sdpa_kernel_for, sdpa_order
from .callbacks import TRAINER_OWN, ThroughputCallback
from .optim import MuonAdamW, optimizer_factory
from .schedules import WarmupStableDecay, budget_schedule, make_lr_scheduler
from .vocab_padding import fit_optimizer_rows, real_rows, unpadded_state_dict

if TYPE_CHECKING:  # (the annotation only: the job's tree is built before any trainer)
    from ..job import TrainingConfig


QUIET = (signal.SIGTERM, signal.SIGINT)  # for the rank process: it decides, then saves


class QuietWorker:
    """``worker_init_fn`` wrapper: the worker ignores SIGTERM and SIGINT (they are for the
    rank process), then runs the Trainer's own initialiser (its seeding). It was started with
    them blocked (:class:`QuietForkProcess`): unblocked only now, one that came meanwhile is
    dropped unseen."""

    def __init__(self, inner=None):
        self.inner = inner

    def __call__(self, worker_id: int) -> None:
        for sig in QUIET:
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, QUIET)
        if self.inner is not None:
            self.inner(worker_id)


class QuietForkProcess(ForkProcess):
    """A DataLoader worker forked with SIGTERM and SIGINT blocked (the mask a fork inherits).
    Between its fork and :class:`QuietWorker`, torch's worker loop imports and seeds, and sets
    a SIGTERM handler of its own that dies of any SIGTERM not sent by the rank; a process group's
    SIGTERM (torchrun's, Slurm's) arriving then killed the worker, and the rank with it ("is
    killed by signal: Terminated") instead of saving. A rank's loaders fork workers anew at every
    pass over the data and every evaluation, so that window came round all run. The rank's own
    mask is restored as soon as the fork is done: a signal meant for it waits no longer."""

    def start(self) -> None:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, QUIET)
        try:
            super().start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


class QuietForkContext(ForkContext):
    """The fork start method, its processes :class:`QuietForkProcess`."""
    Process = QuietForkProcess


def _torch_loader(loader):
    """The ``torch`` DataLoader inside accelerate's wrapper (which forwards reads, not writes)."""
    return getattr(loader, "base_dataloader", loader)


def quiet_workers(loader):
    """The loader's worker processes (if any) ignore SIGTERM/SIGINT from their fork on (the
    default fork start method: :class:`QuietForkProcess`), and are killed when this process
    exits (:func:`kill_daemon_children`)."""
    base = _torch_loader(loader)
    if base.num_workers > 0 and not isinstance(base.worker_init_fn, QuietWorker):
        base.worker_init_fn = QuietWorker(base.worker_init_fn)
        if forked(base.multiprocessing_context):  # (the others start no copy of this process)
            base.multiprocessing_context = QuietForkContext()
        atexit.unregister(kill_daemon_children)  # (once, however many loaders)
        atexit.register(kill_daemon_children)
    return loader


def forked(context) -> bool:
    """Whether a loader of this ``multiprocessing_context`` (None: the default) forks its workers."""
    if context is not None:
        return context.get_start_method() == "fork"
    # (allow_none: asking must not fix the default, as a plain get_start_method() would)
    return (multiprocessing.get_start_method(allow_none=True)
            or multiprocessing.get_all_start_methods()[0]) == "fork"


def kill_daemon_children() -> None:
    """At exit, multiprocessing ends its daemonic children (a DataLoader's workers) with SIGTERM
    and then waits for them; a quiet worker ignores SIGTERM, so a rank whose loader was not shut
    down first (a run stopped mid-epoch by a signal, its iterator still referenced) waited for
    ever, its checkpoint already written. Registered after multiprocessing's own exit hook, this
    runs before it and ends them with SIGKILL: what multiprocessing meant, in a form a worker
    cannot ignore (a worker only reads the token cache: nothing of it is lost)."""
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()


def enable_fsdp_on_cpu(trainer) -> None:
    """Give a CPU (gloo) process group the FSDP plugin accelerate dropped; refuse ``--fsdp``
    wherever it would otherwise be ignored."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    args, state = trainer.args, trainer.accelerator.state
    if not args.fsdp or trainer.is_fsdp_enabled:
        return
    plugin_args = args.fsdp_plugin_args or {}
    if state.distributed_type == DistributedType.MULTI_CPU and plugin_args.get("fsdp_version") == 2:
        # both shared states: AcceleratorState() copies PartialState's type whenever built again
        state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
        state.fsdp_plugin = FullyShardedDataParallelPlugin(**plugin_args)
        trainer.is_fsdp_enabled = True
        return
    why = ("FSDP1 does not run on CPU process groups; use FSDP2 (drop fsdp_config version 1)"
           if state.distributed_type == DistributedType.MULTI_CPU else
           "FSDP shards the model across processes: launch with torchrun "
           "(e.g. NPROC_PER_NODE=2 ./launch_training.sh ...)")
    raise TrainingError(f"--fsdp was given but accelerate would train without it "
                        f"({state.distributed_type}): {why}")


COMPILED_PREFIX = "_orig_mod."  # what torch.compile's wrapper adds to every parameter name


def matching_state_dict(state_dict: dict, model) -> dict:
    """``state_dict`` under ``model``'s own parameter names: torch.compile's prefix removed;
    any other difference (a missing or foreign tensor) refused, as a ``final/`` saved with it
    would load random weights. Tied weights (GPT-2's LM head) may appear once."""
    fixed = {k.replace(COMPILED_PREFIX, ""): v for k, v in state_dict.items()}
    own = model.state_dict(keep_vars=True)
    missing = sorted(set(own) - set(fixed) - tied_names(model))
    foreign = sorted(set(fixed) - set(own))
    if missing or foreign:
        raise TrainingError(
            f"refusing to save weights that do not match the model (they would load as random "
            f"weights): {len(missing)} missing ({', '.join(missing[:3])}), {len(foreign)} unknown "
            f"({', '.join(foreign[:3])}); pin the tested transformers/accelerate versions "
            f"(requirements.txt) or train without --torch_compile")
    return fixed


def tied_names(model) -> set[str]:
    """The names of ``model``'s tensors that are another's, named before them (GPT-2's LM head is
    its token embedding): saved once, and loaded with it."""
    seen, tied = set(), set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            tied.add(name)
        seen.add(id(tensor))
    return tied


class RunTrainer(Trainer):
    """``Trainer`` with our optimizer and schedule, the stream sampler, signal-proof DataLoader
    workers, a DataLoader RNG of its own, FSDP on CPU groups, weights checked as saved, and
    SDPA's kernel order (``--sdpa_order``) around everything it trains and evaluates."""

    def __init__(self, *args, stream=None, optimizer_builder: Callable | None = None,
                 schedule: WarmupStableDecay | Callable[[int], float] | None = None, callbacks=(),
                 sdpa: str = "torch", compile_regions: bool = False, **kwargs):
        self.stream = stream                        # StreamSampler, or None for the Trainer's own
        self.optimizer_builder = optimizer_builder  # model -> optimizer (None: args.optim's AdamW)
        self.schedule = schedule                    # step -> LR factor (None: args' scheduler)
        self.sdpa = sdpa                            # SDPA's kernel order (..speed.attention)
        self.compile_regions = compile_regions      # --compile_regions (with args.torch_compile)
        super().__init__(*args, **kwargs)
        handler = self.callback_handler
        handler.callbacks = in_order(list(callbacks), handler.callbacks)

    def train(self, *args, **kwargs):
        # torch.compile takes the kernel it finds when it traces: the order is set before it does
        with sdpa_order(self.sdpa):
            return super().train(*args, **kwargs)

    def evaluate(self, *args, **kwargs):  # the final evaluations too, after train() returned
        with sdpa_order(self.sdpa):
            return super().evaluate(*args, **kwargs)

    def create_optimizer(self, model=None):
        new = self.optimizer is None
        if new and self.optimizer_builder is not None:
            self.optimizer = self.optimizer_builder(self.model if model is None else model)
        optimizer = super().create_optimizer(model)
        if new:  # a checkpoint's embedding moments fit the rows this run trains with (--pad_vocab)
            for inner in (getattr(optimizer, "adamw", None), getattr(optimizer, "muon", None)) \
                    if isinstance(optimizer, MuonAdamW) else (optimizer,):
                fit_optimizer_rows(inner, self.model if model is None else model)
        return optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None and self.schedule is not None:
            self.lr_scheduler = make_lr_scheduler(optimizer or self.optimizer, self.schedule)
            self._created_lr_scheduler = True  # rebuilt (from the same schedule) on a re-train
        return super().create_scheduler(num_training_steps, optimizer)

    def _build_accelerator_args(self, **kwargs) -> dict:
        args = super()._build_accelerator_args(**kwargs)
        plugin = args.get("dynamo_plugin")
        if self.compile_regions and plugin is not None:
            # built so, before the Accelerator: its prepare_model then compiles each repeated
            # block (GPT2Block) once and the rest apart, not the whole model as one graph
            args["dynamo_plugin"] = replace(plugin, use_regional_compilation=True)
        return args

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        enable_fsdp_on_cpu(self)

    def _get_train_sampler(self, train_dataset=None):
        if self.stream is not None:
            return self.stream
        return super()._get_train_sampler(train_dataset)

    def get_train_dataloader(self):
        import torch

        loader = quiet_workers(super().get_train_dataloader())
        _torch_loader(loader).generator = torch.Generator().manual_seed(self.args.seed)
        return loader

    def get_eval_dataloader(self, eval_dataset=None):
        return quiet_workers(super().get_eval_dataloader(eval_dataset))

    def _load_optimizer_and_scheduler(self, checkpoint) -> None:
        with state_that_fits(checkpoint, "optimizer and scheduler state (optimizer.pt, scheduler.pt)"):
            super()._load_optimizer_and_scheduler(checkpoint)

    def _load_rng_state(self, checkpoint) -> None:
        with state_that_fits(checkpoint, "RNG state (rng_state*.pth)"):
            super()._load_rng_state(checkpoint)

    def _save_checkpoint(self, model, trial) -> None:
        # its torch archives without CRC-32s, which nothing reads (core.archives_without_crc):
        # every evaluation of slm's and regular's runs writes a checkpoint, in a budget's seconds
        with archives_without_crc():
            super()._save_checkpoint(model, trial)

    def _save_rng_state(self, output_dir) -> None:
        super()._save_rng_state(output_dir)
        # rank 0 writes trainer_state.json next, and that file marks a checkpoint complete: not
        # before every rank's RNG state is on disk (a rank killed mid-save leaves an invalid one)
        barrier()

    def _save(self, output_dir=None, state_dict=None):
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if state_dict is None and real_rows(model) is not None:
            state_dict = model.state_dict()  # to save the vocabulary unpadded
        if state_dict and self.args.should_save:  # the writer checks what it writes
            state_dict = unpadded_state_dict(model, matching_state_dict(state_dict, model))
        super()._save(output_dir, state_dict)
        if self.args.should_save:  # checkpoints and final/ alike: readable as any file we write
            give_open_mode(Path(output_dir or self.args.output_dir).glob("*.safetensors"))

    def _run_epoch(self, *args, **kwargs):
        # The Trainer asks whether to stop only after a step: resumed from a checkpoint at the
        # run's last step (a run killed while it evaluated or saved final/, or whose final/ was
        # lost), it trained one step past max_steps and saved that as the run's final model.
        # With nothing left to train it ends here: final/ is the checkpoint's model.
        if 0 < self.state.max_steps <= self.state.global_step:
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)

    def _finalize_training(self, *args, **kwargs):
        # Under --save_total_limit 1 the Trainer ends train() by deleting every checkpoint but
        # the best evaluation's: a stopped run's resume point (and a finished run's last
        # optimizer state) with it, whenever an earlier evaluation was best. Rotation already
        # keeps the best beside the last; so the best is loaded here, where asked, and hidden
        # from that clean-up (trainer_state.json on disk still names it).
        best = self.state.best_model_checkpoint
        if best is None or self.args.save_total_limit != 1:
            return super()._finalize_training(*args, **kwargs)
        if self.args.load_best_model_at_end:
            self._load_best_model()
        self.state.best_model_checkpoint = None
        try:
            return super()._finalize_training(*args, **kwargs)
        finally:
            self.state.best_model_checkpoint = best

    def _issue_warnings_after_load(self, load_result) -> None:
        # the best evaluation's weights, loaded at the end: a tied LM head is saved once, under
        # the embedding, and loads with it; the Trainer (transformers 5) called it missing
        # ("There were missing keys in the checkpoint model loaded: ['lm_head.weight']") in every
        # run that keeps the best evaluation, where nothing was missing
        tied = tied_names(self.model)
        missing = [k for k in load_result.missing_keys if k.replace(COMPILED_PREFIX, "") not in tied]
        super()._issue_warnings_after_load(SimpleNamespace(missing_keys=missing,
                                                           unexpected_keys=load_result.unexpected_keys))

    def save_model(self, output_dir=None, _internal_call=False):
        """Every rank calls this (checkpoints, final/). Under FSDP the full weights are gathered
        to rank 0 (a collective) and written as a plain save_pretrained folder whatever the
        checkpoint's state dict type: a checkpoint's sharded model and optimizer state beside
        them are for resuming, model.safetensors for everything else (best/, evaluation)."""
        if self.is_fsdp_enabled:
            self._save(output_dir or self.args.output_dir,
                       state_dict=self.accelerator.get_state_dict(self.model))
            return
        super().save_model(output_dir, _internal_call)


@contextmanager
def state_that_fits(checkpoint, what: str):
    """A checkpoint's saved state loaded into this run's optimizer, scheduler or RNGs: whole
    archives (checked before) that hold another model's optimizer (another count of parameters
    or groups), one file's content in another's place, or another kind of state failed here
    with torch's ValueError/KeyError/UnpicklingError traceback mid-resume. One line instead; the
    run's checkpoints, final/ and record are untouched (nothing is saved before a step)."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError, pickle.UnpicklingError) as e:
        first = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(e)).split())[:200]  # (torch's has colours)
        raise TrainingError(
            f"{checkpoint}: its saved {what} does not fit this run's ({type(e).__name__}: {first}): it is "
            f"another model's, or damaged. Resume an earlier checkpoint (--resume_from_checkpoint "
            f"checkpoint-N), start over with --fresh, or continue its weights in a new run: "
            f"--init_from {checkpoint} --run_name NEW") from None


def in_order(callbacks: list, trainer_own: list) -> list:
    """``callbacks`` (:func:`.callbacks.step_callbacks`, in their order) with the Trainer's own
    at the place marked :data:`~.callbacks.TRAINER_OWN` (at the end when unmarked), its progress
    bar one that follows a fitted step count."""
    own = [FittedProgress() if type(cb) is ProgressCallback else cb for cb in trainer_own]
    if TRAINER_OWN not in callbacks:
        return [*callbacks, *own]
    i = callbacks.index(TRAINER_OWN)
    return [*callbacks[:i], *own, *callbacks[i + 1:]]


class FittedProgress(ProgressCallback):
    """The progress bar, its total following ``state.max_steps`` when the time-budget fitter
    (which runs before it) changes it, instead of the cap the run started with."""

    def on_step_end(self, args, state, control, **kwargs):
        bar = getattr(self, "training_bar", None)
        if bar is not None and bar.total != state.max_steps:
            bar.total = state.max_steps
            bar.refresh()
        super().on_step_end(args, state, control, **kwargs)


def build_trainer(model, args, config: TrainingConfig, *, train, eval_dataset, collator, callbacks: list,
                  stream: StreamSampler, processing_class=None,
                  schedule: Callable[[int], float] | None = None) -> RunTrainer:
    """The ``Trainer`` of every job: :class:`RunTrainer` (stream sampler, exact resume, FSDP on
    CPU groups, signal-proof workers, ``callbacks`` in their order) with what the job's tree
    (``config``, whose ``args`` these are) says: its optimizer (``optim.optimizer``: adamw, or
    muon), a schedule fitted to its time budget (its warm-up ``optim.warmup_share`` of the steps
    the budget holds, where set) or ``schedule`` (step -> learning-rate factor, e.g. the LR
    finder's ramp), SDPA's kernel order (``speed.request.sdpa_order``) and, where it compiles,
    whether by regions (``speed.request.compile_regions``). The model comes ready to train
    (:func:`~..model.prepare_for_training`)."""
    optim = config.optim
    return RunTrainer(model=model, args=args, eval_dataset=eval_dataset, train_dataset=train,
                      data_collator=collator, processing_class=processing_class, callbacks=callbacks,
                      stream=stream, optimizer_builder=optimizer_factory(optim.optimizer, args, log=log),
                      schedule=schedule or budget_schedule(config.control.time_budget, args, optim.warmup_share),
                      sdpa=config.speed.request.sdpa_order, compile_regions=config.speed.request.compile_regions)


def compile_failure(error: BaseException) -> bool:
    """An error raised by torch.compile's tracer or code generator (not by the model)."""
    return type(error).__module__.startswith(("torch._dynamo", "torch._inductor", "triton"))


@dataclass
class Outcome:
    """What ``Trainer.train`` left: its state, the mean loss, the wall time, and why it
    stopped early (None when it ran to max_steps)."""
    state: object
    train_loss_mean: float | None
    wall_seconds: float
    interrupted: str | None
    tokens_seen: int | None = None  # tokens actually consumed, all invocations and world sizes
    pauses: dict | None = None      # this invocation's evaluations and checkpoints (Pauses.record)


def sdpa_kernel_note(trainer: RunTrainer, context: int) -> str:
    """What the trainer's ``--sdpa_order`` does for its model here: the kernel SDPA picks."""
    import torch

    cfg, args, order = trainer.model.config, trainer.args, trainer.sdpa
    if getattr(cfg, "_attn_implementation", "sdpa") != "sdpa":
        return f"--sdpa_order {order}: no effect (the model's attention is {cfg._attn_implementation}, not SDPA)"
    dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else torch.float32
    with sdpa_order(order):
        kernel = sdpa_kernel_for(cfg.n_head, cfg.n_embd // cfg.n_head, context, args.device.type, dtype,
                                 getattr(cfg, "attn_pdrop", 0.0))
    return f"--sdpa_order {order}: SDPA runs {kernel} for this model's attention"


def train(trainer: RunTrainer, resume, stopper, position: Position, tokens_per_sample: int) -> Outcome:
    """``Trainer.train``, resuming from ``resume`` when given; a GPU out of memory becomes
    advice."""
    import torch

    # always: torch's own order differs by card and cuDNN, so even the default's kernel is news
    log(sdpa_kernel_note(trainer, tokens_per_sample))
    t0 = time.time()
    try:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except torch.cuda.OutOfMemoryError as e:  # pragma: no cover - GPU only
        bs = trainer.args.per_device_train_batch_size
        raise TrainingError(
            f"CUDA out of memory at batch size {bs}: lower --batch_size and raise "
            f"--gradient_accumulation_steps to keep the same tokens per step, or add "
            f"--gradient_checkpointing ({' '.join(str(e).split())[:300]})") from None
    except Exception as e:
        if not (trainer.args.torch_compile and compile_failure(e)):
            raise
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise TrainingError(f"torch.compile failed ({type(e).__name__}: {first}); train eager with "
                            f"--torch_compile false (checkpoints resume either way)") from None
    state, wall = trainer.state, time.time() - t0
    stopped = stopper.reason is not None and state.global_step < state.max_steps
    clock = next((c for c in trainer.callback_handler.callbacks if isinstance(c, ThroughputCallback)), None)
    if clock is not None:
        log(f"trained {wall:.1f} s, of which {clock.pauses.describe()}")
    # (a resume with nothing left to train took no step: no mean loss, where the Trainer says 0)
    trained = state.global_step > getattr(trainer, "_initial_global_step", 0)
    return Outcome(state, result.training_loss if trained else None, wall, stopper.reason if stopped else None,
                   tokens_seen=position.consumed(state.global_step) * tokens_per_sample,
                   pauses=clock.pauses.record() if clock is not None else None)

