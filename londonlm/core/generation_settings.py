"""Sampling settings: THE sampling defaults of every londonlm model, in one place.

:class:`GenerationSettings`'s field defaults are the numbers training writes into
``generation_config.json``, publishing stages, the model card quotes, the pipeline samples with
and the CLI/server fall back on. Nothing else spells them: writers call
:func:`generation_config_dict` (or :func:`to_generation_config`), readers
:func:`defaults_from_generation_config`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

from .errors import LondonLMError

# The fields a generation_config.json carries, and those a request (CLI flags, API body) may set.
CONFIG_FIELDS = ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty",
                 "no_repeat_ngram_size")
REQUEST_FIELDS = CONFIG_FIELDS + ("num_samples", "seed")

# Temperatures below this decode greedily, as 0 does, everywhere (the server's batched sampler,
# generate(), the CLIs and chat). Sampling at temperature T gives a token whose logit is d below
# the best exp(-d/T) times the best's chance; float32 holds nothing below e^-103.3, so under 1e-5
# every token more than 1e-3 below the best already has chance exactly 0: sampling is the argmax
# for every gap wider than the model's own rounding (bf16 logits round at ~1e-2). Far below it,
# dividing float32 logits by T overflows: at 1e-39 every logit became -inf, the softmax NaN, and
# the server chose <|endoftext|> at -9.42 over "\n" at -3.12, while transformers' sampler raised
# "probability tensor contains either inf, nan or element < 0". vLLM draws the same line
# (_SAMPLING_EPS = 1e-5 in its sampling_params.py).
GREEDY_BELOW = 1e-5
# The smallest repetition penalty taken. A seen token's logit is divided by the penalty (multiplied
# when negative); below ~1e-38 float32 holds the penalty as 0 or a subnormal and the division is
# inf: `repetition_penalty: 1e-300` made the server answer "" with finish_reason "stop" (every
# seen token inf, <|endoftext|> the first of them) and the CLI, REPL and chat die in transformers'
# sampler ("probability tensor contains either inf, nan or element < 0"). At 1e-3 every division
# stays finite, temperature's 1e-5 after it included; 0.01 already makes each answer repeat its prompt.
MIN_REPETITION_PENALTY = 1e-3


class GenerationError(LondonLMError, ValueError):
    """A user-facing problem (bad setting, unknown era, missing model): one-line message."""


@dataclass
class GenerationSettings:
    """Sampling settings. ``temperature=0`` (or any below :data:`GREEDY_BELOW`) means greedy
    decoding; ``top_k=0`` disables top-k. The field defaults are the project's sampling defaults."""

    max_new_tokens: int = 100
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 50
    repetition_penalty: float = 1.1
    no_repeat_ngram_size: int = 0
    num_samples: int = 1
    seed: int | None = None
    era: str | None = None  # an era token such as "<|1650s|>" (see normalize_era)

    @property
    def sampling(self) -> bool:
        return self.temperature >= GREEDY_BELOW

    def validate(self) -> "GenerationSettings":
        for ok, message in self._checks():
            if not ok:
                raise GenerationError(message)
        return self

    def _checks(self):
        return [
            (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1,
             f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}"),
            (_finite(self.temperature) and 0 <= self.temperature <= 5,
             f"temperature must be between 0 (greedy) and 5, got {self.temperature!r}"),
            (_finite(self.top_p) and 0 < self.top_p <= 1,
             f"top_p must be in (0, 1], got {self.top_p!r}"),
            (isinstance(self.top_k, int) and self.top_k >= 0,
             f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}"),
            (_finite(self.repetition_penalty) and MIN_REPETITION_PENALTY <= self.repetition_penalty <= 10,
             f"repetition_penalty must be in [{MIN_REPETITION_PENALTY:g}, 10] (1 = off), "
             f"got {self.repetition_penalty!r}"),
            (isinstance(self.no_repeat_ngram_size, int) and self.no_repeat_ngram_size >= 0,
             f"no_repeat_ngram_size must be an integer >= 0 (0 = off), got {self.no_repeat_ngram_size!r}"),
            (isinstance(self.num_samples, int) and self.num_samples >= 1,
             f"num_samples must be an integer >= 1, got {self.num_samples!r}"),
            (self.seed is None or (isinstance(self.seed, int) and 0 <= self.seed < 2**32),
             f"seed must be an integer in [0, 2**32), got {self.seed!r}"),
        ]

    def updated(self, **changes) -> "GenerationSettings":
        """A validated copy with some fields changed (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None}).validate()

    def describe(self) -> str:
        return "  ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


def generation_config_dict(settings: GenerationSettings | None = None, **token_ids) -> dict:
    """The ``generation_config.json`` entries for ``settings`` (default: the project's
    defaults), plus any ``bos_token_id=``/``eos_token_id=``/``pad_token_id=`` given (None
    values are left out). Greedy settings write ``do_sample: false`` and no sampling knobs;
    ``no_repeat_ngram_size`` is written only when on."""
    s = (settings if settings is not None else GenerationSettings()).validate()
    out = {k: v for k, v in token_ids.items() if v is not None}
    out["do_sample"] = s.sampling
    if s.sampling:
        out.update(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
    out.update(repetition_penalty=s.repetition_penalty, max_new_tokens=s.max_new_tokens)
    if s.no_repeat_ngram_size:
        out["no_repeat_ngram_size"] = s.no_repeat_ngram_size
    return out


# what transformers takes as "not set" for the sampling knobs when it does not sample
GREEDY_NEUTRAL = {"temperature": 1.0, "top_p": 1.0, "top_k": 50}


def to_generation_config(settings: GenerationSettings | None = None, **extra):
    """A transformers ``GenerationConfig`` for ``settings`` (see :func:`generation_config_dict`);
    ``extra`` adds token ids or overrides (e.g. ``max_new_tokens``, ``use_cache``).

    ``no_repeat_ngram_size`` is always set: ``generate()`` fills every unset (None) field from
    the model folder's own generation_config.json, so an "off" left unset could come back on.
    For the same reason greedy settings set the sampling knobs to their neutral values: left
    unset, a folder's sampling ones (temperature 0.8, top_p 0.95) came back, unused, and
    transformers warned "The following generation flags are not valid and may be ignored:
    ['temperature', 'top_p']" on every greedy generation (the evaluation's, temperature 0)."""
    from transformers import GenerationConfig

    s = settings if settings is not None else GenerationSettings()
    ids = {k: extra.pop(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in extra}
    d = {**generation_config_dict(s, **ids), "no_repeat_ngram_size": s.no_repeat_ngram_size}
    if not d["do_sample"]:
        d.update(GREEDY_NEUTRAL)
    return GenerationConfig(**{**d, **extra})


def defaults_from_generation_config(gen_config) -> GenerationSettings:
    """Sampling defaults from a model's generation_config.json.

    Only values the file actually sets count (``to_diff_dict``): a config derived from
    config.json (``_from_model_config``) sets none, and library-wide defaults (temperature 1.0,
    do_sample False) must not silently turn a London model greedy. Unset values fall back to
    the project's defaults; ``do_sample: false`` in the file means greedy."""
    base = GenerationSettings()
    d = {k: getattr(base, k) for k in CONFIG_FIELDS}
    if gen_config is not None:
        explicit = gen_config.to_diff_dict() if hasattr(gen_config, "to_diff_dict") else vars(gen_config)
        d.update({k: explicit[k] for k in CONFIG_FIELDS if explicit.get(k) is not None})
        if explicit.get("do_sample") is False:
            d["temperature"] = 0.0
    try:
        return replace(base, **d).validate()
    except (GenerationError, TypeError):  # an odd Hub config: keep what validates, per field
        for key, value in d.items():
            try:
                base = replace(base, **{key: value}).validate()
            except (GenerationError, TypeError):
                pass
        return base
