"""The one speed-settings object: the precision, attention kernel, LM-head loss and vocabulary
padding a run trains with. The same :class:`SpeedSettings` is what the command line fixed (fields left ``None`` are
not decided), a candidate the probe times and the cache files, the choice a run trains with,
and what a resumed run keeps. :class:`SpeedRequest` is what a training job asks of its speed
settings (the ``--autotune`` mode, what its flags fixed). The fixed rules, measured
on EPYC CPUs and used on GPUs, live here too.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import NamedTuple

PRECISIONS = ("fp32", "bf16", "fp16")
MODES = ("off", "on", "refresh")  # --autotune
ATTENTIONS = ("sdpa", "eager")
# What a run records of its speed settings (run_info.json), and a resumed run keeps
SPEED_RECORD_KEYS = ("precision", "attn_implementation", "fused_loss", "pad_vocab")


@dataclass(frozen=True)
class SpeedSettings:
    precision: str | None = None            # fp32 | bf16 | fp16
    attn_implementation: str | None = None  # sdpa | eager
    fused_loss: bool | None = None
    # the embedding padded to a multiple of 128 rows while training (..step.vocab_padding); never
    # probed: the fixed rules decide it (on for CUDA), or the command line
    pad_vocab: bool | None = None

    @property
    def complete(self) -> bool:
        return None not in (self.precision, self.attn_implementation, self.fused_loss, self.pad_vocab)

    @property
    def probed_given(self) -> bool:
        """Every setting the probe would time is decided (the padding is never timed)."""
        return None not in (self.precision, self.attn_implementation, self.fused_loss)

    def given(self) -> dict:
        """The decided fields (``SPEED_RECORD_KEYS`` names)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def over(self, base: "SpeedSettings") -> "SpeedSettings":
        """``base`` with this object's decided fields put over it."""
        return replace(base, **self.given())

    @property
    def label(self) -> str:
        """The probe's name for a candidate (its figures' key in the cache): a padded one is
        named apart, so figures of the unpadded model are never taken for it."""
        return (f"{self.precision}/{self.attn_implementation}/fused-{'on' if self.fused_loss else 'off'}"
                + ("/pad-128" if self.pad_vocab else ""))

    def describe(self) -> str:
        return (f"{self.precision}, {self.attn_implementation} attention, fused loss "
                f"{'on' if self.fused_loss else 'off'}"
                + ("" if self.pad_vocab is None else
                   f", vocabulary {'padded to x128' if self.pad_vocab else 'unpadded'}"))

    def record(self) -> dict:
        """run_info.json's entries (``SPEED_RECORD_KEYS``)."""
        return asdict(self)

    @classmethod
    def recorded(cls, info: dict) -> "SpeedSettings | None":
        """What a run recorded (its run_info.json), or None when it recorded no complete set. A
        run recorded before ``pad_vocab`` existed trained unpadded (its saved rows were all its own)."""
        out = {k: info[k] for k in SPEED_RECORD_KEYS if k in info}
        if len(out) < 3 or out["precision"] not in PRECISIONS:
            return None
        return cls(**{"pad_vocab": False, **out})

    @classmethod
    def from_flags(cls, precision: str | None = None, attn_implementation: str = "auto",
                   fused_loss: str = "auto", pad_vocab: str = "auto") -> "SpeedSettings":
        """What the command line fixed: ``auto`` decides nothing; ``--fused_loss on|off``,
        ``--pad_vocab on|off``."""
        return cls(precision, None if attn_implementation == "auto" else attn_implementation,
                   None if fused_loss == "auto" else fused_loss == "on",
                   None if pad_vocab == "auto" else pad_vocab == "on")


@dataclass(frozen=True)
class SpeedRequest:
    """What a training job asks of its speed settings, whatever it trains (pre-training, chat):
    the ``--autotune`` mode, the probe's time cap, and what its flags fixed."""

    autotune: str = "on"                   # off | on | refresh (see .probe)
    probe_seconds: float = 60.0            # cap on the probe's time
    given: SpeedSettings = field(default_factory=SpeedSettings)  # fixed on the command line
    sdpa_order: str = "torch"              # SDPA's kernel order while training (.attention)
    compile_regions: bool = False          # each repeated block compiled once (--compile_regions)


class MachineBf16(NamedTuple):
    """What this machine's bf16 is worth to the speed settings."""
    cpu_native: bool  # the CPU has bf16 instructions: the probe times bf16 beside fp32
    cpu_fast: bool    # and they outrun fp32 (core.cpu_has_fast_bf16): the fixed rules take bf16
    gpu: bool         # the GPU supports bf16


def candidate_space(dev: dict, bf16: MachineBf16) -> dict[str, list]:
    """The settings worth timing here: bf16 only where the CPU has it natively (emulated bf16
    is far slower, so timing it only costs probe time); on a GPU the half type it supports."""
    if dev["device"] == "cuda":
        precisions = ["bf16" if bf16.gpu else "fp16"]
    else:
        precisions = ["fp32", *(["bf16"] if bf16.cpu_native else [])]
    return {"precision": precisions, "attn_implementation": list(ATTENTIONS), "fused_loss": [False, True]}


def fixed_rules(dev: dict, bf16: MachineBf16, precision: str | None = None) -> SpeedSettings:
    """``--autotune off`` and every GPU: on CPUs, bf16 where it outruns fp32 (AMX, AMD's
    avx512_bf16; not Intel's avx512_bf16 alone: :func:`~londonlm.core.cpu_has_fast_bf16`), and
    in CPU bf16 eager attention and the fused loss (measured on two EPYC generations,
    BENCHMARKS.md); SDPA and the stock loss otherwise. ``precision`` (given by the user)
    replaces the first rule. The vocabulary padded on GPUs (tensor-core tiles), not on CPUs
    (not measured to help)."""
    if dev["device"] == "cuda":
        return SpeedSettings(precision or ("bf16" if bf16.gpu else "fp16"), "sdpa", False, True)
    precision = precision or ("bf16" if bf16.cpu_fast else "fp32")
    return (SpeedSettings(precision, "eager", True, False) if precision == "bf16"
            else SpeedSettings(precision, "sdpa", False, False))


def emulated_bf16_notice(settings: SpeedSettings, bf16: MachineBf16, cuda: bool) -> str | None:
    """A line for bf16 training (``--bf16 true``, or a resumed run's own, from a machine that had
    it) on a CPU without bf16 instructions, where torch emulates it: a 512x512 matmul took 90x
    fp32's on a 2-core Zen 3 EPYC (205 ms against 2.3 ms). The run keeps what it was given; the
    user learns why it crawls, and which flag makes it fast. None where bf16 is not emulated."""
    if cuda or settings.precision != "bf16" or bf16.cpu_native:
        return None
    return ("note: this CPU has no bf16 instructions (avx512_bf16, AMX): torch emulates bf16, "
            "each matmul tens of times slower than in fp32; --bf16 false trains in fp32, far faster here")


def machine_bf16(dev: dict) -> MachineBf16:
    """This machine's :class:`MachineBf16`."""
    import torch

    # read at call time: tests emulate another CPU by patching them
    from ...core import cpu_has_fast_bf16, cpu_has_native_bf16

    if dev["device"] == "cuda":
        return MachineBf16(False, False, torch.cuda.is_bf16_supported())
    return MachineBf16(cpu_has_native_bf16(), cpu_has_fast_bf16(), False)
