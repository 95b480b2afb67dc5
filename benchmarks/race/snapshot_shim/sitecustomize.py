"""Benchmark-only shim for benchmarks/gpu_race.py: the same instrument on both recipes of the
race (the reference ../shared/bench/baseline_clm.py, which saves no intermediate checkpoints,
and our training CLI), added to any Hugging Face ``Trainer`` without changing the script.

Python imports ``sitecustomize`` at start-up from PYTHONPATH; the race puts this folder there
and sets LONDONLM_RACE_SNAPSHOTS (a folder) and LONDONLM_RACE_EVERY (seconds; 0 = the clock
only). Every Trainer then records, from its ``on_train_begin``, the seconds at the end of each
optimizer step (``clock.json``) and, each time another LONDONLM_RACE_EVERY seconds of training
have passed, a copy of the weights in host memory. The copies become ``snap-<step>/`` model
folders (``save_pretrained``) only when the process exits, so writing them costs neither
recipe training seconds. Each folder is a plain model at its ``config.vocab_size`` rows, as the
scorer's ``AutoModelForCausalLM`` loads it: where our trainer padded the vocabulary for training
(on CUDA, to a multiple of 128 rows: londonlm.training.step.vocab_padding), the padded rows are
cut off as the trainer's own saves do. Without LONDONLM_RACE_SNAPSHOTS it does nothing.
"""
import os

if os.environ.get("LONDONLM_RACE_SNAPSHOTS"):
    import atexit
    import json
    import math
    import time
    from pathlib import Path

    import transformers
    from transformers import TrainerCallback

    # taken out of the environment: the processes this one starts (torch.compile's compile
    # workers, spawned data-loader workers) must not import transformers and time themselves too
    _OUT = Path(os.environ.pop("LONDONLM_RACE_SNAPSHOTS"))
    _EVERY = float(os.environ.pop("LONDONLM_RACE_EVERY", None) or 0)
    _RECORDS = []  # one per Trainer that trained; the last one's is written

    class _RaceSnapshots(TrainerCallback):
        def __init__(self):
            self.model, self.t0, self.clock, self.copies = None, None, [], []
            self.next_mark = _EVERY

        def on_train_begin(self, args, state, control, model=None, **kw):
            # the Trainer hands callbacks its plain model; torch.compile's wrapper is unwrapped anyway
            self.model, self.t0 = getattr(model, "_orig_mod", model), time.perf_counter()
            self.clock, self.copies, self.next_mark = [], [], _EVERY
            if self not in _RECORDS:
                _RECORDS.append(self)

        def on_step_end(self, args, state, control, model=None, **kw):
            seconds = time.perf_counter() - self.t0
            self.clock.append((state.global_step, round(seconds, 4)))
            if _EVERY and seconds >= self.next_mark and args.process_index == 0:
                # .to("cpu") waits for the GPU's queued work: the copy is of this step's weights
                weights = {k.replace("_orig_mod.", ""): v.detach().to("cpu", copy=True)
                           for k, v in self.model.state_dict().items()}
                self.copies.append((state.global_step, round(seconds, 4), weights))
                # the next whole multiple of the interval: one sum, not a count up to it (a
                # count took minutes where the interval was tiny against a step)
                self.next_mark = (math.floor(seconds / _EVERY) + 1) * _EVERY

        def write(self):
            _OUT.mkdir(parents=True, exist_ok=True)
            (_OUT / "clock.json").write_text(json.dumps({"steps": self.clock}))
            for step, seconds, weights in self.copies:
                folder = _OUT / f"snap-{step:07d}"
                self.model.load_state_dict(weights)  # into the model: a tied head is one tensor again
                self.model.save_pretrained(folder, state_dict=_plain_state_dict(self.model))
                (folder / "snapshot.json").write_text(json.dumps({"step": step, "seconds": seconds}))

    def _plain_state_dict(model) -> dict:
        """``model``'s weights as a plain model of its ``config.vocab_size`` rows: a vocabulary
        our trainer padded (a marker only londonlm sets, so the reference recipe's model never
        imports it) cut back by londonlm's own rule, a tied head kept one tensor."""
        state = model.state_dict()
        if getattr(model, "_londonlm_real_vocab_rows", None) is None:
            return state
        from londonlm.training.step.vocab_padding import unpadded_state_dict

        return unpadded_state_dict(model, state)

    def _write_last():
        if _RECORDS:
            _RECORDS[-1].write()

    atexit.register(_write_last)
    _stock_init = transformers.Trainer.__init__

    def _init_with_snapshots(self, *args, **kwargs):
        _stock_init(self, *args, **kwargs)
        self.add_callback(_RaceSnapshots())

    transformers.Trainer.__init__ = _init_with_snapshots
