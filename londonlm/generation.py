"""Text generation from a trained londonlm model: loading, settings, prompts, sampling, streaming.

Prompt encoding mirrors pretokenization. Training documents are stored as
``[era token] + text tokens + <|endoftext|>`` and packed back to back, so inside the packed
stream every document is preceded by an ``<|endoftext|>`` (EOT). A prompt is therefore
encoded as ``[EOT] + [era token, when given] + tokenizer.encode(text, add_special_tokens=False)``:
the leading EOT (the tokenizer's bos) reproduces the "start of a document" context the model
learned from, and no EOT is ever appended after the prompt (that would tell the model the
document had ended).

Sampling is reproducible: each sample ``i`` of a request reseeds torch with ``seed + i``
right before ``generate()``, so streamed and non-streamed runs with the same seed give the
same text. (torch's RNG is process-global: the guarantee holds when one generation runs at
a time, which is the server's default ``max_concurrency=1``.)

Terminal front ends (``06_inference/inference_unified.py``) use :func:`print_generation` and the
REPL :func:`run_repl`; the HTTP server (``londonlm.serving``) uses :func:`generate` and
:class:`TextStream` directly.
"""
from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable, Iterator, TextIO

from .checkpoints import checkpoint_step, resolve_model_path
from .tokenizer import EOT, era_token, era_tokens_of

# Fallbacks when a model folder has no generation_config.json (same values training writes).
FALLBACK_DEFAULTS = dict(max_new_tokens=100, temperature=0.8, top_p=0.95, top_k=50,
                         repetition_penalty=1.1, no_repeat_ngram_size=0)


class GenerationError(ValueError):
    """A user-facing problem (bad setting, unknown era, missing model): one-line message."""


@dataclass
class GenerationSettings:
    """Sampling settings. ``temperature=0`` means greedy decoding; ``top_k=0`` disables top-k."""

    max_new_tokens: int = 100
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 50
    repetition_penalty: float = 1.1
    no_repeat_ngram_size: int = 0
    num_samples: int = 1
    seed: int | None = None
    era: str | None = None  # an era token such as "<|1650s|>" (see normalize_era)

    def validate(self) -> "GenerationSettings":
        checks = [
            (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1,
             f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}"),
            (_finite(self.temperature) and 0 <= self.temperature <= 5,
             f"temperature must be between 0 (greedy) and 5, got {self.temperature!r}"),
            (_finite(self.top_p) and 0 < self.top_p <= 1,
             f"top_p must be in (0, 1], got {self.top_p!r}"),
            (isinstance(self.top_k, int) and self.top_k >= 0,
             f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}"),
            (_finite(self.repetition_penalty) and 0 < self.repetition_penalty <= 10,
             f"repetition_penalty must be in (0, 10] (1 = off), got {self.repetition_penalty!r}"),
            (isinstance(self.no_repeat_ngram_size, int) and self.no_repeat_ngram_size >= 0,
             f"no_repeat_ngram_size must be an integer >= 0 (0 = off), got {self.no_repeat_ngram_size!r}"),
            (isinstance(self.num_samples, int) and self.num_samples >= 1,
             f"num_samples must be an integer >= 1, got {self.num_samples!r}"),
            (self.seed is None or (isinstance(self.seed, int) and 0 <= self.seed < 2**32),
             f"seed must be an integer in [0, 2**32), got {self.seed!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise GenerationError(message)
        return self

    def updated(self, **changes) -> "GenerationSettings":
        """A validated copy with some fields changed (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None}).validate()


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    device: str
    model_id: str
    path: str
    step: int | None
    n_params: int
    context_length: int
    eras: list[str]
    defaults: GenerationSettings

    def info(self) -> dict:
        return {"model": self.model_id, "path": self.path, "device": self.device, "step": self.step,
                "params": self.n_params, "context_length": self.context_length, "eras": self.eras,
                "defaults": asdict(self.defaults)}


@dataclass
class Sample:
    text: str
    prompt_tokens: int
    new_tokens: int
    finish_reason: str  # "eos", "length", "time_limit" or "cancelled"
    seed: int
    seconds: float
    truncated_prompt: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- loading

def pick_device(device: str = "auto") -> str:
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise GenerationError(f"unknown device {device!r}; use auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise GenerationError("--device cuda requested but no CUDA GPU is available; use --device cpu")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _step_of(path: Path) -> int | None:
    """Training step of a model folder: checkpoint-N name, trainer_state.json, or run_info.json."""
    step = checkpoint_step(path)
    if step is not None:
        return step
    state = _read_json(path / "trainer_state.json")
    if isinstance(state.get("global_step"), int):
        return state["global_step"]
    info = _read_json(path.parent / "run_info.json")
    if path.name == "best" and info.get("best_checkpoint"):
        return checkpoint_step(Path(info["best_checkpoint"]))
    return info.get("global_step") if isinstance(info.get("global_step"), int) else None


def defaults_from_generation_config(gen_config) -> GenerationSettings:
    """Sampling defaults from a model's generation_config.json.

    Only values the file actually sets count (``to_diff_dict``): a config derived from
    config.json (``_from_model_config``) sets none, and library-wide defaults (temperature 1.0,
    do_sample False) must not silently turn a London model greedy. Unset values fall back to
    what training writes; ``do_sample: false`` in the file means greedy."""
    d = dict(FALLBACK_DEFAULTS)
    explicit = {}
    if gen_config is not None:
        explicit = gen_config.to_diff_dict() if hasattr(gen_config, "to_diff_dict") else vars(gen_config)
        for key in d:
            if explicit.get(key) is not None:
                d[key] = explicit[key]
        if explicit.get("do_sample") is False:
            d["temperature"] = 0.0
    try:
        return GenerationSettings(**d).validate()
    except (GenerationError, TypeError):  # an odd Hub config: keep what validates, per field
        base = GenerationSettings(**FALLBACK_DEFAULTS)
        for key, value in d.items():
            try:
                base = replace(base, **{key: value}).validate()
            except (GenerationError, TypeError):
                base = replace(base, **{key: FALLBACK_DEFAULTS[key]})
        return base


def load_model(spec: str | None, *, run_dir: str | Path | None = None,
               runs_root: str | Path | None = None, device: str = "auto") -> LoadedModel:
    """Load a model spec (path, ``final``/``best``/``checkpoint-N``, run name, or a Hub id that is
    already in the local Hugging Face cache) with its tokenizer, in eval mode on ``device``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    dev = pick_device(device)
    try:
        path = resolve_model_path(spec, run_dir=run_dir, runs_root=runs_root)
        source, model_id, local = str(path), _local_id(path), True
    except FileNotFoundError as local_err:
        if not spec or spec.count("/") != 1 or Path(spec).expanduser().exists():
            raise GenerationError(str(local_err)) from None
        source, model_id, local, path = spec, spec, False, None
        hub_hint = str(local_err)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as e:
        if local:
            raise GenerationError(f"cannot load model from {source}: {e}") from None
        raise GenerationError(
            f"{spec!r} is neither a local model ({hub_hint}) nor a Hub model in the local cache; "
            f"download it first with `huggingface-cli download {spec}`") from None
    try:
        gen_config = GenerationConfig.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError):
        gen_config = None
    model.to(dev).eval()
    if local and path is not None:
        step = _step_of(path)
    else:
        step = None
    return LoadedModel(
        model=model, tokenizer=tokenizer, device=dev, model_id=model_id, path=source, step=step,
        n_params=sum(p.numel() for p in model.parameters()),
        context_length=int(getattr(model.config, "n_positions", 0) or
                           getattr(model.config, "max_position_embeddings", 1024)),
        eras=era_tokens_of(tokenizer), defaults=defaults_from_generation_config(gen_config))


def _local_id(path: Path) -> str:
    path = Path(path).resolve()
    return f"{path.parent.name}/{path.name}"


# --------------------------------------------------------------------------- prompts

def normalize_era(value: str | int | None, eras: list[str]) -> str | None:
    """``"1660s"``, ``"1660"``, ``1666`` or ``"<|1650s|>"`` -> the era token ``"<|1650s|>"``.
    Empty/``none`` -> None. Raises GenerationError when the tokenizer lacks that era."""
    if value is None or str(value).strip().lower() in ("", "none", "off"):
        return None
    text = str(value).strip()
    if text in eras:
        return text
    digits = text.strip("<|>").rstrip("s")
    if not digits.isdigit():
        raise GenerationError(f"era {value!r} is not a year or decade such as 1650s")
    token = era_token(int(digits))
    if token not in eras:
        hint = ", ".join(e.strip("<|>") for e in eras) or "none (this model was trained without era tokens)"
        raise GenerationError(f"era {value!r} ({token}) is not in this model's tokenizer; available: {hint}")
    return token


def _special_id(tokenizer, token: str, fallback: int | None) -> int:
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or (tid == tokenizer.unk_token_id and tokenizer.unk_token != token):
        if fallback is None:
            raise GenerationError(f"the tokenizer has no {token} token")
        return fallback
    return tid


def encode_prompt(tokenizer, text: str, era: str | None = None) -> list[int]:
    """``[EOT] + [era] + text tokens``, matching the training stream (see module docstring).

    The text goes through the Rust backend exactly as pretokenization does
    (``add_special_tokens=False``: no bos/eos added by a post-processor)."""
    ids = [_special_id(tokenizer, EOT, tokenizer.bos_token_id if tokenizer.bos_token_id is not None
                       else tokenizer.eos_token_id)]
    if era:
        ids.append(_special_id(tokenizer, era, None))
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return ids + backend.encode(text, add_special_tokens=False).ids
    return ids + tokenizer.encode(text, add_special_tokens=False)


def prompt_length(lm: "LoadedModel", prompt: str, era: str | None = None) -> int:
    """Tokens the model sees for ``prompt`` (EOT and era prefix included)."""
    return len(encode_prompt(lm.tokenizer, prompt, normalize_era(era, lm.eras)))


def new_tokens_for_max_length(lm: "LoadedModel", prompt: str, max_length: int,
                              era: str | None = None) -> int:
    """``max_length`` counts prompt + new tokens (Hugging Face's meaning); returns the
    number of new tokens that leaves, or raises when the prompt alone fills it."""
    n = prompt_length(lm, prompt, era)
    if max_length <= n:
        raise GenerationError(f"max_length {max_length} leaves no room for new tokens: the prompt "
                              f"is already {n} tokens; raise it or use max_new_tokens")
    return max_length - n


def fit_to_context(ids: list[int], max_new_tokens: int, context_length: int,
                   keep_prefix: int) -> tuple[list[int], int, bool]:
    """Trim a prompt from the left (keeping the EOT/era prefix) so prompt + new tokens fit the
    model's positions; returns (ids, max_new_tokens, truncated)."""
    room_for_prompt = max(context_length - max_new_tokens, context_length // 2)
    truncated = len(ids) > room_for_prompt
    if truncated:
        ids = ids[:keep_prefix] + ids[len(ids) - (room_for_prompt - keep_prefix):]
    return ids, max(1, min(max_new_tokens, context_length - len(ids))), truncated


# --------------------------------------------------------------------------- generation

class _StopWhen:
    """Stopping criterion: a cancel event (client gone) or a wall-clock deadline."""

    def __init__(self, cancel: threading.Event | None, deadline: float | None):
        self.cancel, self.deadline, self.reason = cancel, deadline, None

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        if self.cancel is not None and self.cancel.is_set():
            self.reason = "cancelled"
        elif self.deadline is not None and time.monotonic() > self.deadline:
            self.reason = "time_limit"
        return torch.full((input_ids.shape[0],), self.reason is not None,
                          device=input_ids.device, dtype=torch.bool)


def _prepare(lm: LoadedModel, prompt: str, settings: GenerationSettings):
    settings.validate()
    era = normalize_era(settings.era, lm.eras)
    ids = encode_prompt(lm.tokenizer, prompt, era)
    return fit_to_context(ids, settings.max_new_tokens, lm.context_length, 1 + (era is not None))


def _generate_kwargs(lm: LoadedModel, settings: GenerationSettings, max_new_tokens: int, stop):
    from transformers import GenerationConfig, StoppingCriteriaList

    tok = lm.tokenizer
    sampling = settings.temperature > 0
    cfg = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=sampling, use_cache=True,
        temperature=settings.temperature if sampling else None,
        top_p=settings.top_p if sampling else None,
        top_k=settings.top_k if sampling else None,
        repetition_penalty=settings.repetition_penalty,
        no_repeat_ngram_size=settings.no_repeat_ngram_size,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    return dict(generation_config=cfg, stopping_criteria=StoppingCriteriaList([stop]))


def _seed_for(settings: GenerationSettings, i: int) -> int:
    base = settings.seed if settings.seed is not None else random.SystemRandom().randrange(2**31)
    return (base + i) % 2**32


def _finish(lm, out_ids, prompt_len, max_new, stop, seed, started, truncated, text=None) -> Sample:
    new = out_ids[prompt_len:]
    eos = lm.tokenizer.eos_token_id
    if stop.reason:
        reason = stop.reason
    elif new and new[-1] == eos:
        reason = "eos"
    else:
        reason = "length"
    if text is None:
        text = lm.tokenizer.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return Sample(text=text, prompt_tokens=prompt_len, new_tokens=len(new), finish_reason=reason,
                  seed=seed, seconds=round(time.monotonic() - started, 4), truncated_prompt=truncated)


def generate(lm: LoadedModel, prompt: str, settings: GenerationSettings, *,
             cancel: threading.Event | None = None, deadline: float | None = None) -> list[Sample]:
    """``settings.num_samples`` continuations of ``prompt`` (text after the prompt only)."""
    import torch

    ids, max_new, truncated = _prepare(lm, prompt, settings)
    samples = []
    for i in range(settings.num_samples):
        seed = _seed_for(settings, i)
        stop = _StopWhen(cancel, deadline)
        started = time.monotonic()
        with torch.inference_mode():
            torch.manual_seed(seed)
            inp = torch.tensor([ids], device=lm.device)
            out = lm.model.generate(inp, attention_mask=torch.ones_like(inp),
                                    **_generate_kwargs(lm, settings, max_new, stop))
        samples.append(_finish(lm, out[0].tolist(), len(ids), max_new, stop, seed, started, truncated))
        if stop.reason:
            break
    return samples


class TextStream:
    """Iterate text chunks as one sample is generated; ``.sample`` is set once exhausted.

    generate() runs in a background thread feeding a ``TextIteratorStreamer``; closing the
    stream early (``close()``) sets the cancel event so the thread stops at the next token."""

    def __init__(self, lm: LoadedModel, prompt: str, settings: GenerationSettings, *,
                 sample_index: int = 0, cancel: threading.Event | None = None,
                 deadline: float | None = None, poll_timeout_s: float = 600.0):
        import torch
        from transformers import TextIteratorStreamer

        self.lm, self.sample = lm, None
        self.cancel = cancel or threading.Event()
        self._ids, self._max_new, self._truncated = _prepare(lm, prompt, settings)
        self._seed = _seed_for(settings, sample_index)
        self._stop = _StopWhen(self.cancel, deadline)
        self._streamer = TextIteratorStreamer(lm.tokenizer, skip_prompt=True, timeout=poll_timeout_s,
                                              skip_special_tokens=True,
                                              clean_up_tokenization_spaces=False)
        self._out, self._error, self._chunks = None, None, []
        kwargs = _generate_kwargs(lm, settings, self._max_new, self._stop)
        self._started = time.monotonic()

        def run():
            try:
                with torch.inference_mode():
                    torch.manual_seed(self._seed)
                    inp = torch.tensor([self._ids], device=lm.device)
                    self._out = lm.model.generate(inp, attention_mask=torch.ones_like(inp),
                                                  streamer=self._streamer, **kwargs)[0].tolist()
            except BaseException as e:  # surfaced to the consumer instead of dying silently
                self._error = e
                self._streamer.end()

        self._thread = threading.Thread(target=run, name="londonlm-generate", daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[str]:
        try:
            for chunk in self._streamer:
                if chunk:
                    self._chunks.append(chunk)
                    yield chunk
        finally:
            if self._out is None and self._error is None:
                self.cancel.set()
            self._thread.join()
        if self._error is not None:
            raise self._error
        self.sample = _finish(self.lm, self._out, len(self._ids), self._max_new, self._stop,
                              self._seed, self._started, self._truncated)

    def close(self) -> None:
        self.cancel.set()


def stream(lm: LoadedModel, prompt: str, settings: GenerationSettings, **kwargs) -> Iterator[str]:
    """Text chunks of sample 0 as they are generated (see :class:`TextStream`)."""
    return iter(TextStream(lm, prompt, settings, **kwargs))


# --------------------------------------------------------------------------- REPL commands

REPL_HELP = """commands:
  /temp 0.7        temperature (0 = greedy)
  /top_p 0.9       nucleus sampling threshold
  /top_k 40        top-k (0 = off)
  /max 200         max new tokens
  /rep 1.2         repetition penalty
  /n 2             samples per prompt
  /seed 42         fixed seed (/seed none for random)
  /era 1660s       condition on an era (/era none to clear)
  /ngram 3         block repeated n-grams (0 = off)
  /settings        show the current settings
  /history         prompts entered so far
  /help            this text
  /quit            leave (Ctrl-D also works)"""

_COMMANDS = {"/temp": ("temperature", float), "/temperature": ("temperature", float),
             "/top_p": ("top_p", float), "/top_k": ("top_k", int), "/max": ("max_new_tokens", int),
             "/max_new_tokens": ("max_new_tokens", int), "/rep": ("repetition_penalty", float),
             "/n": ("num_samples", int), "/seed": ("seed", int), "/era": ("era", str),
             "/ngram": ("no_repeat_ngram_size", int)}


def apply_command(settings: GenerationSettings, line: str, eras: list[str]
                  ) -> tuple[GenerationSettings, str]:
    """Apply one REPL ``/command value`` line; returns (new settings, message to show).
    Raises GenerationError for unknown commands or bad values (settings unchanged)."""
    parts = line.strip().split(maxsplit=1)
    cmd, arg = parts[0].lower(), (parts[1].strip() if len(parts) > 1 else "")
    if cmd in ("/help", "/?"):
        return settings, REPL_HELP
    if cmd == "/settings":
        return settings, describe_settings(settings)
    if cmd not in _COMMANDS:
        raise GenerationError(f"unknown command {cmd}; type /help for the list")
    name, kind = _COMMANDS[cmd]
    if not arg:
        return settings, f"{name} = {getattr(settings, name)}"
    if name == "era":
        value = normalize_era(arg, eras)
    elif name == "seed" and arg.lower() == "none":
        value = None
    else:
        try:
            value = kind(arg)
        except ValueError:
            raise GenerationError(f"{cmd} needs a {kind.__name__}, got {arg!r}") from None
    new = replace(settings, **{name: value}).validate()
    return new, f"{name} = {value}"


def describe_settings(settings: GenerationSettings) -> str:
    return "  ".join(f"{f.name}={getattr(settings, f.name)}" for f in fields(settings))


# --------------------------------------------------------------------------- terminal output

def print_generation(lm: LoadedModel, prompt: str, settings: GenerationSettings, out: TextIO, *,
                     info: TextIO | None = None, stream_tokens: bool = False,
                     max_length: int | None = None) -> list[Sample]:
    """Write ``prompt`` + each sample's continuation to ``out`` (with ``stream_tokens``, chunk by
    chunk as generated, flushed); one stats line per sample to ``info``. ``max_length`` (prompt +
    new tokens) overrides ``settings.max_new_tokens`` for this prompt."""
    if max_length is not None:
        settings = replace(settings, max_new_tokens=new_tokens_for_max_length(
            lm, prompt, max_length, settings.era))
    settings.validate()
    n = settings.num_samples
    samples: list[Sample] = []
    if not stream_tokens:
        samples = generate(lm, prompt, settings)
    for i in range(n):
        if n > 1:
            out.write(f"--- sample {i + 1}/{n} ---\n")
        out.write(prompt)
        if stream_tokens:
            ts = TextStream(lm, prompt, settings, sample_index=i)
            try:
                for chunk in ts:
                    out.write(chunk)
                    out.flush()
            finally:
                ts.close()  # Ctrl-C mid-sample: stop the generating thread too
            samples.append(ts.sample)
        elif i < len(samples):
            out.write(samples[i].text)
        else:
            break
        out.write("\n")
        out.flush()
        s = samples[i]
        if info is not None:
            rate = s.new_tokens / s.seconds if s.seconds > 0 else 0.0
            info.write(f"[{s.new_tokens} tokens · {rate:.1f} tokens/s · {s.finish_reason} · "
                       f"seed {s.seed}{' · prompt truncated to fit the context' if s.truncated_prompt else ''}]\n")
            info.flush()
    return samples


def run_repl(lm: LoadedModel, settings: GenerationSettings, out: TextIO, *,
             read: Callable[[str], str] = input, stream_tokens: bool = True,
             max_length: int | None = None) -> int:
    """Interactive loop: prompts generate, ``/commands`` change settings (see REPL_HELP).
    Ctrl-D or Ctrl-C at the prompt (or /quit) leaves with 0; Ctrl-C during a generation
    stops that generation only."""
    history: list[str] = []
    out.write(f"londonlm · {lm.model_id} · {lm.n_params:,} parameters · {lm.device}"
              f"{' · eras: ' + ', '.join(e.strip('<|>') for e in lm.eras) if lm.eras else ''}\n"
              f"type a prompt, /help for commands, Ctrl-D to quit\n")
    out.flush()
    while True:
        try:
            line = read("> ")
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            out.flush()
            return 0
        text = line.strip()
        if not text:
            continue
        if text.lower() in ("/quit", "/exit", "/q"):
            return 0
        try:
            if text.lower() == "/history":
                out.write("\n".join(f"{i + 1:>3}  {h}" for i, h in enumerate(history)) or "(none yet)")
                out.write("\n")
            elif text.startswith("/"):
                settings, message = apply_command(settings, text, lm.eras)
                if text.split()[0].lower() in ("/max", "/max_new_tokens") and max_length is not None:
                    max_length = None  # an explicit /max replaces --max_length
                out.write(message + "\n")
            else:
                history.append(line)
                print_generation(lm, line, settings, out, info=out, stream_tokens=stream_tokens,
                                 max_length=max_length)
        except GenerationError as e:
            out.write(f"error: {e}\n")
        except KeyboardInterrupt:
            out.write("\n[interrupted]\n")
        out.flush()
