"""Checks that a model folder's files make one working model, each failing in one line that
names the folder and the problem (a :class:`DamagedModel`), never a traceback from deep inside
transformers or from the first generation.

Run before anything is built (:func:`check_model_folder`): config.json is a JSON object that
transformers can read; the tensor shapes the config implies (a model built on the ``meta``
device, which allocates nothing) are the shapes in the safetensors header; a tokenizer is
there and every id it can produce has a row in the embedding. The config check comes before the
build because a config that disagrees with its weights (another architecture, larger sizes)
would otherwise build a model of the config's size first: a "llama" config.json beside
a small GPT-2's weights once allocated ~23 GB. After the build :func:`check_finite` looks at
every weight once, since NaN weights only show later as "probability tensor contains nan".
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from ..core import GenerationError, tensor_files

CONFIG = "config.json"
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model")
# the JSON files of a tokenizer folder, each an object when present
TOKENIZER_JSON = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                  "vocab.json")
# a safetensors header is JSON; anything longer than this is no header
MAX_HEADER_BYTES = 100_000_000


class DamagedModel(GenerationError):
    """A model folder whose files cannot make a working model (config, weights, tokenizer)."""


def _json_object(path: Path, folder: Path) -> dict:
    """A JSON file that must hold an object; DamagedModel (naming ``folder``) otherwise."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise DamagedModel(f"the model at {folder} cannot be loaded: {Path(path).name} "
                           f"unreadable ({_first_line(e)})") from None
    if not isinstance(obj, dict):
        raise DamagedModel(f"the model at {folder} cannot be loaded: {Path(path).name} holds a "
                           f"{type(obj).__name__}, not a JSON object")
    return obj


def read_config(folder: Path) -> dict:
    """config.json as a dict; DamagedModel when it is unreadable or not a JSON object."""
    return _json_object(Path(folder) / CONFIG, folder)


def _header(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from a safetensors file's header alone (no tensor is read)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        size = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        if not 0 < size <= MAX_HEADER_BYTES:
            raise DamagedModel(f"{path} is not a safetensors file (its header is damaged)")
        try:
            header = json.loads(f.read(size))
            return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):  # not the format's JSON
            raise DamagedModel(f"{path} is not a safetensors file (its header is damaged)") from None


def stored_shapes(folder: Path) -> dict[str, tuple[int, ...]] | None:
    """Every stored tensor's shape (safetensors, one file or shards); None for other formats."""
    tensors = tensor_files(folder)
    if not tensors or any(f.suffix != ".safetensors" for f in tensors):  # (a pickle is read by loading it)
        return None
    return {k: s for f in tensors for k, s in _header(f).items()}


def expected_shapes(folder: Path) -> tuple[dict[str, tuple[int, ...]], str]:
    """(parameter name -> shape, base-model prefix) of the model config.json describes, built
    on the meta device: no memory, whatever sizes the config names. Tied weights appear once."""
    import torch
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig, AutoModelForCausalLM

    read_config(folder)
    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    # (StrictDataclassError: a config field of the wrong type; IndexError: a "dtype" of another
    # kind, which transformers' own repr of the config, made even unlogged, splits at a dot)
    except (OSError, ValueError, TypeError, LookupError, RuntimeError, AttributeError,
            ArithmeticError, StrictDataclassError) as e:
        raise DamagedModel(f"the model at {folder} cannot be loaded: its {CONFIG} does not describe "
                           f"a model transformers can build ({_first_line(e)})") from None
    return ({name: tuple(p.shape) for name, p in model.named_parameters()},
            getattr(model, "base_model_prefix", ""))


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _stored_name(name: str, stored: dict, prefix: str) -> str | None:
    """Where parameter ``name`` is in the file (saved with or without the base-model prefix)."""
    if name in stored:
        return name
    bare = name[len(prefix) + 1:] if prefix and name.startswith(prefix + ".") else None
    return bare if bare in stored else None


def shape_problems(expected: dict, stored: dict, prefix: str) -> list[str]:
    """The parameters the weights file lacks, or holds in another shape."""
    problems = []
    for name, shape in expected.items():
        where = _stored_name(name, stored, prefix)
        if where is None:
            problems.append(f"{name} missing")
        elif stored[where] != shape:
            problems.append(f"{name} is {list(stored[where])} in the weights but "
                            f"{list(shape)} by {CONFIG}")
    return problems


def check_weights_match(folder: Path) -> None:
    """DamagedModel when the safetensors weights are not the tensors config.json describes."""
    stored = stored_shapes(folder)
    if stored is None:
        return  # pytorch_model.bin: no header to read without loading it
    expected, prefix = expected_shapes(folder)
    problems = shape_problems(expected, stored, prefix)
    if problems and all(p.endswith(" missing") for p in problems) and len(problems) == len(expected):
        raise DamagedModel(f"the model at {folder} cannot be loaded: {CONFIG} describes a "
                           f"{read_config(folder).get('model_type')!r} model but none of its "
                           f"{len(expected)} weights is in the folder's weights file (they are "
                           f"another model's); restore the folder's {CONFIG} from the run that saved it")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise DamagedModel(f"the model at {folder} cannot be loaded: {CONFIG} and the weights "
                           f"differ: {'; '.join(problems[:3])}{more}; restore the folder's "
                           f"{CONFIG} (or its weights) from the run that saved it")


def check_tokenizer_present(folder: Path) -> None:
    """DamagedModel when ``folder`` has no tokenizer files to load, or one of the JSON files
    transformers reads for it is no JSON object (it indexes into them: a list in
    tokenizer_config.json was an AttributeError, in tokenizer.json a TypeError)."""
    if not any((Path(folder) / f).is_file() for f in TOKENIZER_FILES):
        raise DamagedModel(f"the model at {folder} has no tokenizer ({TOKENIZER_FILES[0]} "
                           f"missing); copy the run's tokenizer files (tokenizer.json, "
                           f"tokenizer_config.json, special_tokens_map.json) into it")
    for name in TOKENIZER_JSON:
        if (Path(folder) / name).is_file():
            _json_object(Path(folder) / name, folder)


def check_token_ids(max_id: int, n_rows: int, where) -> None:
    """DamagedModel when the tokenizer can produce an id past the model's embedding."""
    if max_id >= n_rows:
        raise DamagedModel(f"{where} has token id {max_id} but the model's embedding has only "
                           f"{n_rows} rows: tokenizer and model differ")


def check_tokenizer_fits(tokenizer, model, where) -> None:
    """:func:`check_token_ids` for a loaded tokenizer and model."""
    vocab = tokenizer.get_vocab()
    if not vocab:
        raise DamagedModel(f"{where} is empty (no tokens); copy the run's tokenizer files into it")
    check_token_ids(max(vocab.values()), model.get_input_embeddings().num_embeddings, where)


def check_finite(model, folder) -> None:
    """DamagedModel when a weight holds NaN or infinity (one pass over the weights)."""
    import torch

    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise DamagedModel(f"the model at {folder} cannot be used: its weight {name} holds "
                               f"NaN or infinite values (the run diverged, or the file is "
                               f"damaged); use an earlier checkpoint")


def check_model_folder(folder: Path, tokenizer_folder: Path | None = None) -> None:
    """Everything that can be checked before the model is built (see the module docstring)."""
    folder = Path(folder)
    read_config(folder)
    check_weights_match(folder)
    check_tokenizer_present(tokenizer_folder or folder)
