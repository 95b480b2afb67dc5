"""The Trainer a run trains with: ``transformers.Trainer`` plus what multi-process training
needs and the stock one does not do.

- Data order: the :class:`~.sampler.StreamSampler`, a function of (seed, blocks consumed), so a
  run resumes at the exact block at any world size. The Trainer's own skipping counts batches
  per rank (world-size dependent), so the job sets ``ignore_data_skip``; the sampler starts
  where the checkpoint says instead.
- RNG: the training DataLoader draws its worker seed from a generator of its own, not from the
  global RNG, so where a pass over the data begins (which moves with a resume) never shifts
  the dropout stream: a resumed run replays the uninterrupted one exactly.
- Preemption: DataLoader workers ignore SIGTERM/SIGINT. torchrun and Slurm signal the rank's
  whole process group; a worker that died of it would take the rank down before its stop
  handler could save. The rank alone decides (see ``callbacks.StopAndSaveCallback``).
- Checkpoints: every rank takes part in every save (``save_model`` is collective under FSDP)
  and trainer_state.json, which marks a checkpoint complete, follows every rank's RNG state.
- FSDP on CPU process groups: accelerate hands the FSDP plugin only to GPU-type groups and on a
  gloo CPU group silently trains plain DDP; torch's FSDP2 runs on gloo, so the plugin is
  handed to the accelerator state there. Any other case where ``--fsdp`` would be ignored is
  an error.
- Saved weights are the model's: a gathered state dict's keys lose torch.compile's
  ``_orig_mod.`` prefix (transformers 4.x saved FSDP1 + compile weights that way, and
  ``from_pretrained`` then loads random weights with only a warning), and keys that still do not
  match the model are refused before anything is written.
"""
from __future__ import annotations

import signal

from transformers import Trainer

from .base import TrainingError
from .ranks import barrier


class QuietWorker:
    """``worker_init_fn`` wrapper: the worker ignores SIGTERM and SIGINT (they are for the
    rank process), then runs the Trainer's own initialiser (its seeding)."""

    def __init__(self, inner=None):
        self.inner = inner

    def __call__(self, worker_id: int) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if self.inner is not None:
            self.inner(worker_id)


def _torch_loader(loader):
    """The ``torch`` DataLoader inside accelerate's wrapper (which forwards reads, not writes)."""
    return getattr(loader, "base_dataloader", loader)


def quiet_workers(loader):
    """The loader's worker processes (if any) ignore SIGTERM/SIGINT."""
    base = _torch_loader(loader)
    if base.num_workers > 0 and not isinstance(base.worker_init_fn, QuietWorker):
        base.worker_init_fn = QuietWorker(base.worker_init_fn)
    return loader


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


def sharded_checkpoints(args) -> None:
    """FSDP checkpoints keep the optimizer state sharded, each rank writing its part
    (``optimizer_0/``, torch.distributed.checkpoint), unless ``fsdp_config`` chose otherwise:
    gathering it on one rank is what FSDP exists to avoid."""
    if args is not None and args.fsdp and args.fsdp_plugin_args is not None \
            and "state_dict_type" not in (args.fsdp_config or {}):
        args.fsdp_plugin_args["state_dict_type"] = "SHARDED_STATE_DICT"


COMPILED_PREFIX = "_orig_mod."  # what torch.compile's wrapper adds to every parameter name


def matching_state_dict(state_dict: dict, model) -> dict:
    """``state_dict`` under ``model``'s own parameter names: torch.compile's prefix removed;
    any other difference (a missing or foreign tensor) refused, as a ``final/`` saved with it
    would load random weights. Tied weights (GPT-2's LM head) may appear once."""
    fixed = {k.replace(COMPILED_PREFIX, ""): v for k, v in state_dict.items()}
    own = model.state_dict(keep_vars=True)
    seen, tied = {}, set()
    for name, tensor in own.items():
        if id(tensor) in seen:
            tied.add(name)
        seen.setdefault(id(tensor), name)
    missing = sorted(set(own) - set(fixed) - tied)
    foreign = sorted(set(fixed) - set(own))
    if missing or foreign:
        raise TrainingError(
            f"refusing to save weights that do not match the model (they would load as random "
            f"weights): {len(missing)} missing ({', '.join(missing[:3])}), {len(foreign)} unknown "
            f"({', '.join(foreign[:3])}); pin the tested transformers/accelerate versions "
            f"(requirements.txt) or train without --torch_compile")
    return fixed


class RunTrainer(Trainer):
    """``Trainer`` with the stream sampler, signal-proof DataLoader workers, a DataLoader
    RNG of its own, FSDP on CPU groups, and an optional per-step hook (test hooks)."""

    def __init__(self, *args, stream=None, on_batch=None, **kwargs):
        self.stream = stream          # StreamSampler, or None for the Trainer's own sampler
        self.on_batch = on_batch      # called with each micro-batch before its forward pass
        sharded_checkpoints(kwargs.get("args"))
        super().__init__(*args, **kwargs)

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

    def _save_rng_state(self, output_dir) -> None:
        super()._save_rng_state(output_dir)
        # rank 0 writes trainer_state.json next, and that file marks a checkpoint complete: not
        # before every rank's RNG state is on disk (a rank killed mid-save leaves an invalid one)
        barrier()

    def training_step(self, model, inputs, *args, **kwargs):
        if self.on_batch is not None:
            self.on_batch(self, inputs)
        return super().training_step(model, inputs, *args, **kwargs)

    def _save(self, output_dir=None, state_dict=None):
        if state_dict and self.args.should_save:  # the writer checks what it writes
            state_dict = matching_state_dict(
                state_dict, self.accelerator.unwrap_model(self.model, keep_torch_compile=False))
        super()._save(output_dir, state_dict)

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
