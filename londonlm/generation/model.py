"""Loading a model with its tokenizer, and turning a user's prompt into token ids.

Prompt encoding mirrors pretokenization. Training documents are stored as
``[era token] + text tokens + <|endoftext|>`` and packed back to back, so inside the packed
stream every document is preceded by an ``<|endoftext|>`` (EOT). A prompt is therefore
encoded as ``[EOT] + [era token, when given] + text tokens``: the leading EOT (the tokenizer's
bos) reproduces the "start of a document" context the model learned from, and no EOT is ever
appended after the prompt (that would tell the model the document had ended).

Text never becomes a control token: the prompt's own characters are encoded as text even when
they spell ``<|endoftext|>`` or an era token, so only :func:`encode_prompt` (from explicit
arguments) places control ids. ``allow_control_tokens=True`` restores the old reading.
"""
from __future__ import annotations

import os
import pickle
import re
import weakref
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..core import (GenerationError, GenerationSettings, Layout, ModelNotFound, NativePanic, RunLayout,
                    defaults_from_generation_config, model_step, native_panics, usable_model, user_path)
from ..tokens import EOT, ERA_WIDTH, era_token, era_tokens_of, era_width_of, plain_backend, split_exact
from .checks import DamagedModel, check_finite, check_model_folder, check_tokenizer_fits


def padding_ids(model, tokenizer) -> list[int]:
    """The model's output ids past its tokenizer's last (a vocabulary padded past the tokenizer):
    no token's, so never chosen, as no prompt may hold them. Sampled, they were text of nothing,
    and fed back an embedding no training had shaped."""
    return list(range(len(tokenizer), model.config.vocab_size))


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    device: str
    model_id: str       # "run/final", "run/checkpoint-N" or a Hub id: never an absolute path
    path: str           # where it was loaded from (a folder, or the Hub id)
    step: int | None
    n_params: int
    context_length: int
    eras: list[str]
    defaults: GenerationSettings
    dtype: str = "float32"  # the weights' dtype: float32, bfloat16 or float16
    era_width: int = ERA_WIDTH  # the years each of ``eras`` covers (the tokenizer's)
    stamp: tuple | None = None  # the folder's files as read (:func:`model_stamp`); None for a Hub id

    def info(self) -> dict:
        """What a client may see (no filesystem paths)."""
        return {"model": self.model_id, "device": self.device, "dtype": self.dtype, "step": self.step,
                "params": self.n_params, "context_length": self.context_length, "eras": self.eras,
                "era_width": self.era_width,
                "defaults": asdict(self.defaults)}


# --------------------------------------------------------------------------- loading

# the weights' dtypes load_model takes ("auto": see pick_dtype); the CLIs offer exactly these
DTYPES = ("auto", "float32", "bfloat16", "float16")


def pick_device(device: str = "auto") -> str:
    """``auto`` (a GPU when there is one), ``cpu``, ``cuda`` or ``cuda:N``."""
    import torch

    if device != "auto" and device != "cpu" and not device.split(":")[0] == "cuda":
        raise GenerationError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GenerationError(f"--device {device} requested but no CUDA GPU is available; "
                              f"use --device cpu")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pick_dtype(dtype: str, device: str) -> str:
    """The weights' dtype on a resolved ``device``: ``auto`` is bfloat16 on a CUDA GPU that
    computes it natively, float16 on an older one (emulated bf16 is slower than fp32 there),
    float32 on CPU (where half precision is mostly slower and only worth it when asked for);
    an explicit ``float32``, ``bfloat16`` or ``float16`` is taken as it is, on any device."""
    import torch

    if dtype not in DTYPES:
        raise GenerationError(f"unknown dtype {dtype!r}; use {', '.join(DTYPES)}")
    if dtype != "auto":
        return dtype
    if not device.startswith("cuda"):
        return "float32"
    return "bfloat16" if torch.cuda.is_bf16_supported(including_emulation=False) else "float16"


def steady_attention(device: str) -> None:
    """On a GPU, take cuDNN's backend out of PyTorch's attention (SDPA) choices, for the whole
    process: a loaded model answers prompts of every length, and the server's batch changes its
    rows and key length at every step, but cuDNN's attention builds (NVRTC-compiles) a new plan
    for each shape it meets. On an H200 (torch 2.11, cuDNN 9) that was 64% of the batch worker's
    busy time: 8 clients' decode steps slowed from 3 ms to 0.2-0.5 s for seconds, p95 latency 5 s.
    FlashAttention and the memory-efficient kernels that remain are built ahead of time."""
    import torch

    if device.startswith("cuda"):
        torch.backends.cuda.enable_cudnn_sdp(False)


def resolve_model_dir(spec: str | None, layout: Layout | None = None,
                      run: str | RunLayout | None = None) -> Path:
    """A model spec to a local folder: an existing path; else, with ``layout``/``run``, what
    :meth:`Layout.resolve_model` / :meth:`RunLayout.resolve` name. Raises ModelNotFound."""
    if spec and user_path(spec).exists():
        return usable_model(user_path(spec))
    if spec and (Path(spec).is_absolute() or spec.startswith((".", "~"))):
        raise ModelNotFound(f"model folder {spec} does not exist")
    if layout is not None and run is not None:
        return layout.resolve_model(spec, run)
    if isinstance(run, RunLayout):
        return run.resolve(spec)
    if layout is not None and spec:
        head = spec.partition("/")[0]
        if (layout.checkpoints_dir / head).is_dir():
            return layout.resolve_model(spec, head)
    if not spec:
        raise ModelNotFound("no model given: pass a model folder (or a run with its layout)")
    raise ModelNotFound(f"model {spec!r} not found: not a folder"
                        + (f", nor a run under {layout.checkpoints_dir}" if layout else "")
                        + "; pass a model folder, or a run name")


def _tokenizer_source(path: Path) -> Path:
    """A checkpoint saved without its tokenizer borrows the run's final/ tokenizer."""
    if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file():
        return path
    final = RunLayout(path.parent).final
    return final if (final / "tokenizer.json").is_file() else path


def check_model_dir(path: Path) -> None:
    """What :func:`load_model` checks before it builds anything (see :mod:`.checks`), for a
    stage that reads a model folder without loading it (GGUF export), or before slow work."""
    check_model_folder(path, _tokenizer_source(Path(path)))


def load_model_tokenizer(source: str, **kwargs):
    """``AutoTokenizer.from_pretrained(source, **kwargs)`` for a model folder or Hub id: the one
    place a model's tokenizer is loaded. A ``tokenizer.json`` the Rust library panics on (a BPE
    subword prefix its merges do not carry) is one DamagedModel line: the panic was a traceback
    from inside transformers (pyo3's PanicException is no Exception), under the panic hook's own
    report of some sixty frames (:func:`~londonlm.core.native_panics`)."""
    from transformers import AutoTokenizer

    try:
        with native_panics():
            return AutoTokenizer.from_pretrained(source, **kwargs)
    except NativePanic as e:
        raise DamagedModel(f"the model at {source} cannot be loaded: {source}/tokenizer.json: the tokenizers "
                           f"library cannot build it ({e})") from None


def _sources(spec: str | None, layout: Layout | None,
             run: str | RunLayout | None) -> tuple[Path | None, str, str, str, str]:
    """(local folder, model source, tokenizer source, model id, why no local folder matched):
    a local folder when ``spec`` names one, else a Hub id (no folder), else GenerationError."""
    try:
        path = resolve_model_dir(spec, layout, run)
        return path, str(path), str(_tokenizer_source(path)), _local_id(path), ""
    except ModelNotFound as local_err:
        if not _looks_like_hub_id(spec):
            raise GenerationError(str(local_err)) from None
        return None, spec, spec, spec, str(local_err)


def model_stamp(folder: str | Path | None, tokenizer_folder: str | Path | None = None) -> tuple | None:
    """Which files a model folder (and the folder its tokenizer is read from) holds now, read from
    their inodes alone: each folder's identity and each file's name, inode, size and mtime. A training
    replaces final/ and best/ whole (a new folder renamed in, the old deleted) and rotates checkpoints
    away, so a reader whose stamp is the same after its reads as before them read the files of one
    save. None for no folder (a Hub id); a folder gone, or a file deleted under the listing, is
    ``("gone",)``, which never equals a stamp taken before. The model folder's part comes first."""
    if folder is None:
        return None
    stamps = []
    for d in dict.fromkeys(str(f) for f in (folder, tokenizer_folder or folder)):
        try:
            st = os.stat(d)
            files = sorted((e.name, s.st_ino, s.st_size, s.st_mtime_ns)
                           for e in os.scandir(d) if e.is_file() for s in (e.stat(),))
        except OSError:
            return ("gone",)
        stamps.append((st.st_dev, st.st_ino, tuple(files)))
    return tuple(stamps)


class ModelChanged(GenerationError):
    """A model folder replaced or removed while it was read (a training saved it again, or rotated
    the checkpoint away): what was read is not of one save."""


def model_changed(folder, doing: str = "loaded") -> ModelChanged:
    return ModelChanged(f"the model at {folder} was replaced or removed while it was {doing} (a training "
                        f"saved it again, rotated the checkpoint away, or moved the run aside), so what was "
                        f"read is not of one save; run the same command again (once that training is done, "
                        f"if it happens again)")


def load_model(spec_or_folder: str | Path | None, *, layout: Layout | None = None,
               run: str | RunLayout | None = None, device: str = "auto",
               dtype: str = "auto") -> LoadedModel:
    """Load a model with its tokenizer, in eval mode on ``device``, its weights in ``dtype``
    (see :func:`pick_device` and :func:`pick_dtype`).

    ``spec_or_folder``: a model folder (needs nothing else); with ``layout``/``run``, also
    ``final``/``best``/``latest``/``checkpoint-N``, a run name or ``RUN/checkpoint-N``; or a
    Hub id (``owner/name``) that is already in the local Hugging Face cache. A damaged local
    folder (config, weights, tokenizer, non-finite weights) is one DamagedModel line (:mod:`.checks`).

    The folder is read file by file (config, shapes, tokenizer, weights), so a training that
    replaces it meanwhile (final/ or best/ saved again, the checkpoint rotated away) gave the
    tokenizer or config of one save with the weights of another, or a traceback-worded line: a
    load whose folder changed under it (:func:`model_stamp`) is done once more, from the spec
    resolved again (``latest`` then names the newer checkpoint), and is ModelChanged the second time."""
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    spec = str(spec_or_folder) if spec_or_folder is not None else None
    path = None
    for again in (False, True):
        try:
            path, source, tok_source, model_id, hub_hint = _sources(spec, layout, run)
        except GenerationError:
            if again:  # it was there a moment ago
                raise model_changed(path) from None
            raise
        before = model_stamp(path, tok_source if path is not None else None)
        try:
            lm = _load_from(path, source, tok_source, model_id, hub_hint, spec, dev, dt)
        except GenerationError:
            if before == model_stamp(path, tok_source if path is not None else None):
                raise  # the folder as it is: said as it is
            continue
        if before == model_stamp(path, tok_source if path is not None else None):
            return replace(lm, stamp=before)
    raise model_changed(path)


def _load_from(path: Path | None, source: str, tok_source: str, model_id: str, hub_hint: str,
               spec: str | None, dev: str, dt: str) -> LoadedModel:
    """:func:`load_model`'s one reading of a resolved source (see :func:`_sources`)."""
    import torch
    from transformers import AutoModelForCausalLM

    gen_config = None
    if path is not None:
        check_model_dir(path)
        gen_config = read_generation_config(path)  # read once: its sampling defaults, below
    try:
        tokenizer = load_model_tokenizer(tok_source, local_files_only=True)
        with pickled_weights_refused(source):
            model = AutoModelForCausalLM.from_pretrained(source, local_files_only=True,
                                                         dtype=getattr(torch, dt))
    except DamagedModel:  # said as it is (a GenerationError is a ValueError)
        raise
    except (OSError, ValueError) as e:
        if path is not None:
            # transformers' messages run over several lines: one error line, its words kept
            raise GenerationError(f"cannot load model from {source}: {' '.join(str(e).split())}") from None
        raise GenerationError(
            f"{spec!r} is neither a local model ({hub_hint}) nor a Hub model in the local cache; "
            f"download it first with `huggingface-cli download {spec}`") from None
    except (TypeError, KeyError, AttributeError) as e:  # a file of the right JSON kind, the wrong
        # shape inside (a number where transformers iterates or calls a method): damaged, not a bug
        raise DamagedModel(f"the model at {source} cannot be loaded: {type(e).__name__}: "
                           f"{' '.join(str(e).split())}") from None
    except RecursionError:  # the model's own load reads generation_config.json, and did not catch this
        raise DamagedModel(f"the model at {source} cannot be loaded: a JSON file of it is nested past the "
                           f"parser's depth (generation_config.json, say)") from None
    check_tokenizer_fits(tokenizer, model, f"the tokenizer at {tok_source}")
    check_finite(model, source)
    if path is None:
        gen_config = _cached_generation_config(source)
    model.to(dev).eval()
    steady_attention(dev)
    return LoadedModel(
        model=model, tokenizer=tokenizer, device=dev, model_id=model_id, path=source,
        step=model_step(path) if path is not None else None,
        n_params=sum(p.numel() for p in model.parameters()),
        context_length=context_length_of(model), eras=era_tokens_of(tokenizer), era_width=era_width_of(tokenizer),
        defaults=defaults_from_generation_config(gen_config), dtype=dt)


def _cached_generation_config(source: str):
    """A Hub model's (in the local cache) GenerationConfig read as transformers reads it; None
    (the library's sampling defaults) where it has none that reads."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, TypeError, RecursionError):  # sampling defaults only
        return None


@contextmanager
def pickled_weights_refused(source):
    """Within, pickled weights (``pytorch_model.bin``, one file or shards) that hold more than
    tensors are one DamagedModel line. transformers reads them with torch's weights-only
    unpickler, which refuses any other object (a pickle can run code on load), but its refusal
    was a traceback that ended by advising ``weights_only=False``, the one thing not to do."""
    try:
        yield
    except pickle.UnpicklingError as e:
        # torch's reason, among its advice (two forms): the object the pickle would call
        named = re.search(r"GLOBAL ([\w.]+)", str(e))
        why = f"it would call {named.group(1)}" if named else type(e).__name__
        raise DamagedModel(f"the model at {source} cannot be loaded: its pickled weights (pytorch_model*.bin) "
                           f"hold objects that are not tensors, which are never unpickled, since a pickle can run "
                           f"code ({why}); load weights only from a source you trust, saved as safetensors") from None


def read_generation_config(folder: Path):
    """The folder's ``GenerationConfig``, or None where it has none or one that is no JSON at all
    (transformers passes over it, and the library's sampling defaults are used). DamagedModel,
    naming the file, where transformers' ``from_pretrained`` would fail on it: a list or a number
    ("TypeError: 'list' object is not a mapping", naming no file), a value it refuses
    (``max_new_tokens: -5``), JSON nested past the parser's depth."""
    from transformers import GenerationConfig

    name = "generation_config.json"
    if not (Path(folder) / name).is_file():
        return None
    try:
        return GenerationConfig.from_pretrained(str(folder), local_files_only=True)
    except OSError:  # not JSON: passed over by transformers too
        return None
    except RecursionError:
        why = "is JSON nested past the parser's depth"
    except (ValueError, TypeError, AttributeError, LookupError) as e:
        why = f"is not one transformers can read ({type(e).__name__}: {' '.join(str(e).split())[:120]})"
    raise DamagedModel(f"the model at {folder} cannot be loaded: its {name} {why}; restore it from the run "
                       f"that saved it, or delete it (it holds only the sampling defaults)")


def load_weights_to_train(folder: str | Path):
    """A model folder's ``AutoModelForCausalLM`` as a run that trains it starts from (chat
    fine-tuning's base): float32 weights whatever the ``dtype`` its config.json records (a base
    saved in bfloat16 or float16 was loaded so, and AdamW then stepped half-precision weights:
    updates below their precision lost, on a GPU the Trainer's fp16 scaler refusing them), and a
    generation_config.json transformers cannot read one line (:func:`read_generation_config`),
    not a traceback."""
    import torch
    from transformers import AutoModelForCausalLM

    read_generation_config(Path(folder))
    with pickled_weights_refused(folder):
        return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)


def _looks_like_hub_id(spec: str | None) -> bool:
    """``owner/name``: one slash between two non-empty parts, and not a path."""
    if not spec or spec.count("/") != 1 or spec.startswith((".", "~")) or Path(spec).is_absolute():
        return False
    owner, name = spec.split("/")
    return bool(owner and name) and not user_path(spec).exists()


def context_length_of(model) -> int:
    cfg = model.config
    return int(getattr(cfg, "n_positions", 0) or getattr(cfg, "max_position_embeddings", 1024))


def _local_id(path: Path) -> str:
    """``run/final``-style name: the folder and its parent, never the absolute path."""
    path = Path(path).resolve()
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


# --------------------------------------------------------------------------- prompts

def normalize_era(value: str | int | None, eras: list[str], width: int) -> str | None:
    """``"1660s"``, ``"1660"``, ``1666`` or ``"<|1650s|>"`` -> the era token ``"<|1650s|>"``
    (the era of ``width`` years, the tokenizer's, holding that year).
    Empty/``none`` -> None. Raises GenerationError when the tokenizer lacks that era."""
    if value is None or str(value).strip().lower() in ("", "none", "off"):
        return None
    text = str(value).strip()
    if text in eras:
        return text
    digits = text.strip("<|>").rstrip("s")
    if not digits.isdigit():
        raise GenerationError(f"era {value!r} is not a year or decade such as 1650s")
    token = era_token(int(digits), width)
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


# tokenizer -> (vocab size, a private copy of its Rust backend that reads special-token
# strings as text). A copy, because transformers' ``split_special_tokens=True`` flips a flag
# on the shared backend and leaves it flipped: with the server's threads, another encode
# could run in the wrong mode.
_PLAIN_BACKENDS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _plain_backend(tokenizer):
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_special_tokens"):
        return None
    size = backend.get_vocab_size(with_added_tokens=True)
    cached = _PLAIN_BACKENDS.get(tokenizer)
    if cached is None or cached[0] != size:
        cached = _PLAIN_BACKENDS[tokenizer] = (size, plain_backend(tokenizer))
    return cached[1]


def encode_text(tokenizer, text: str, *, allow_control_tokens: bool = False) -> list[int]:
    """Token ids of ``text`` alone (no bos/eos added), through the Rust backend exactly as
    pretokenization reads a document. Special-token strings in ``text`` (``<|endoftext|>``,
    ``<|1650s|>``) are encoded as the characters they are, unless ``allow_control_tokens``.

    A Rust encoding holds offsets and token strings beside the ids (~100 bytes a token), so a
    long text (a whole validation document) goes through in pieces (:func:`split_exact`) whose
    encodings concatenate to the whole's: peak memory follows the piece, not the text."""
    backend = getattr(tokenizer, "backend_tokenizer", None) if allow_control_tokens \
        else _plain_backend(tokenizer)
    if backend is not None:
        return [i for piece in split_exact(text)
                for i in backend.encode(piece, add_special_tokens=False).ids]
    if allow_control_tokens:
        return tokenizer.encode(text, add_special_tokens=False)
    if hasattr(tokenizer, "all_special_tokens"):  # a slow transformers tokenizer
        return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return tokenizer(text, add_special_tokens=False)["input_ids"]  # no special tokens to guard


def encode_prompt(tokenizer, text: str, era: str | None = None, *,
                  allow_control_tokens: bool = False) -> list[int]:
    """``[EOT] + [era] + text tokens``, matching the training stream (see module docstring).
    The EOT and era ids come only from here; the text is plain text (see :func:`encode_text`)."""
    ids = [_special_id(tokenizer, EOT, tokenizer.bos_token_id if tokenizer.bos_token_id is not None
                       else tokenizer.eos_token_id)]
    if era:
        ids.append(_special_id(tokenizer, era, None))
    return ids + encode_text(tokenizer, text, allow_control_tokens=allow_control_tokens)


def prompt_length(lm: LoadedModel, prompt: str, era: str | None = None, *,
                  allow_control_tokens: bool = False) -> int:
    """Tokens the model sees for ``prompt`` (EOT and era prefix included)."""
    return len(encode_prompt(lm.tokenizer, prompt, normalize_era(era, lm.eras, lm.era_width),
                             allow_control_tokens=allow_control_tokens))


def new_tokens_for_max_length(lm: LoadedModel, prompt: str, max_length: int,
                              era: str | None = None, *, allow_control_tokens: bool = False) -> int:
    """``max_length`` counts prompt + new tokens (Hugging Face's meaning); returns the
    number of new tokens that leaves, or raises when the prompt alone fills it."""
    n = prompt_length(lm, prompt, era, allow_control_tokens=allow_control_tokens)
    if max_length <= n:
        raise GenerationError(f"max_length {max_length} leaves no room for new tokens: the prompt "
                              f"is already {n} tokens; raise it or use max_new_tokens")
    return max_length - n
