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
- FSDP on CPU process groups: accelerate hands the FSDP plugin only to GPU-type groups and on a
  gloo CPU group silently trains plain DDP; torch's FSDP2 runs on gloo, so the plugin is
  handed to the accelerator state there. Any other case where ``--fsdp`` would be ignored is
  an error.
"""
from __future__ import annotations

import signal

from transformers import Trainer

from .base import TrainingError


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


def enable_fsdp_on_cpu(trainer) -> None:
    """Give a CPU (gloo) process group the FSDP plugin accelerate dropped; refuse ``--fsdp``
    wherever it would otherwise be ignored."""
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    args, state = trainer.args, trainer.accelerator.state
    if not args.fsdp or trainer.is_fsdp_enabled:
        return
    plugin_args = args.fsdp_plugin_args or {}
    if state.distributed_type == DistributedType.MULTI_CPU and plugin_args.get("fsdp_version") == 2:
        state.distributed_type = DistributedType.FSDP
        state.fsdp_plugin = FullyShardedDataParallelPlugin(**plugin_args)
        trainer.is_fsdp_enabled = True
        return
    why = ("FSDP1 does not run on CPU process groups; use FSDP2 (drop fsdp_config version 1)"
           if state.distributed_type == DistributedType.MULTI_CPU else
           "FSDP shards the model across processes: launch with torchrun "
           "(e.g. NPROC_PER_NODE=2 ./launch_training.sh ...)")
    raise TrainingError(f"--fsdp was given but accelerate would train without it "
                        f"({state.distributed_type}): {why}")


class RunTrainer(Trainer):
    """``Trainer`` with the stream sampler, signal-proof DataLoader workers, a DataLoader
    RNG of its own, FSDP on CPU groups, and an optional per-step hook (test hooks)."""

    def __init__(self, *args, stream=None, on_batch=None, **kwargs):
        self.stream = stream          # StreamSampler, or None for the Trainer's own sampler
        self.on_batch = on_batch      # called with each micro-batch before its forward pass
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

        loader = super().get_train_dataloader()
        loader.generator = torch.Generator().manual_seed(self.args.seed)
        if self.args.dataloader_num_workers > 0:
            loader.worker_init_fn = QuietWorker(loader.worker_init_fn)
        return loader

    def training_step(self, model, inputs, *args, **kwargs):
        if self.on_batch is not None:
            self.on_batch(self, inputs)
        return super().training_step(model, inputs, *args, **kwargs)
