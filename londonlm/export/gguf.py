"""GGUF export of a GPT-2 ``save_pretrained`` folder, for llama.cpp and the tools built on it.

The file follows llama.cpp's own converter for ``GPT2LMHeadModel`` (architecture ``gpt2``):

- tensors ``token_embd``, ``position_embd``, ``blk.N.{attn_norm,attn_qkv,attn_output,ffn_norm,
  ffn_up,ffn_down}``, ``output_norm`` and ``output`` (the tied embedding written again, so
  every llama.cpp version finds it). Transformers' GPT-2 keeps its projections as ``Conv1D``
  with weights stored ``(in, out)``, the transpose of ``nn.Linear``; GGUF wants ``(out, in)``
  rows, so those four weights are transposed here;
- norms, biases and the position embedding stay F32 (llama.cpp reads them as F32); the other
  2-D weights become F16, or Q8_0 (blocks of 32 with one scale) where the row length allows;
- tokenizer ``gpt2`` (byte-level BPE) with pre-tokenizer ``gpt-2``: the GPT-2 split regex,
  which is what our ``ByteLevel(use_regex=True, add_prefix_space=False)`` pre-tokenizer runs.
  Special tokens (``<|endoftext|>``, ``<|pad|>``, era tokens like ``<|1650s|>``) are CONTROL
  tokens, so llama.cpp never makes them from text; embedding rows past the tokenizer (models
  saved before saving dropped the training padding have them) get UNUSED ``[PADn]`` tokens. ``add_bos_token``
  is on with bos = ``<|endoftext|>``: our prompts start with it, as documents do in training.
  The bos, eos and pad ids are the tokenizer's, as our generation uses them (never config.json's,
  which may name ids the tokenizer does not have: a GGUF without a valid eos makes llama.cpp
  take its GPT-2 default, token 11, as end of text). A chat model also gets its template and its
  end of turn (``<|end|>``, from its generation config) as ``eot_token_id``.

Our models use the exact (erf) GELU; llama.cpp's GPT-2 graph uses the tanh approximation.
The two differ by < 5e-4, which can flip a near-tied greedy choice: :mod:`.gguf_check`
measures the agreement.
"""
from __future__ import annotations

import contextlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..core import (FINAL, GGUF, GenerationError, checkpoint_problem, LondonLMError, RunLayout, SIDECAR, folder_lock,
                    naming, read_json, read_json_object, read_unchanged, record_field, refuse_artifacts_folder, refuse_foreign_folder,
                    sha256_file, sidecar_current, tensor_files, versions, WEIGHT_FILES, weight_files, write_sidecar)
from ..generation import (check_model_dir, check_token_ids, encode_prompt, model_changed, model_stamp,
                          pickled_weights_refused, read_config)
from ..tokens import load_tokenizer, tokenizer_file_problem

STAGE = "export_gguf"
EXPORT_FORMAT = 5                      # bump when the written files change for the same inputs (3: F32 past F16;
                                       # 4: the chat template; 5: a chat model's end of turn as eot)
QUANT_TYPES = ("f16", "q8_0")
WEIGHTS = WEIGHT_FILES[0]             # model.safetensors, named when a folder has no weights
TOKENIZER = "tokenizer.json"
MODEL_CONFIG = "config.json"
# bos, eos and pad ids; the chat template (transformers 5 keeps it in chat_template.jinja, 4.4x in
# chat_template.json, older ones in tokenizer_config.json)
TOKENIZER_EXTRAS = ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "chat_template.json",
                    "generation_config.json")  # a chat model's end of turn (end_of_turn_id)
TRAIN_CMD = "python 04_training/train_model_slm.py"
# llama.cpp's name for the GPT-2 split regex (its converter finds it by hashing a probe text)
PRE_TOKENIZER = "gpt-2"
# activations llama.cpp's GPT-2 graph can stand in for: it always runs the tanh GELU
GELU_NAMES = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast")


class GGUFExportError(LondonLMError, ValueError):
    """A model folder that cannot be written as a llama.cpp GPT-2 GGUF file."""


@dataclass(frozen=True)
class GGUFOptions:
    types: tuple[str, ...] = QUANT_TYPES   # one file per type
    stem: str | None = None                # file name stem (default: the model folder's name)
    overwrite: bool = False


@dataclass
class GGUFExport:
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)   # type -> file
    skipped: bool = False


def gguf_version() -> str:
    """The installed ``gguf`` package's version; a clear error when it is missing."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gguf")
    except PackageNotFoundError:
        raise GGUFExportError("the GGUF export needs the gguf package: "
                              "pip install -r requirements.txt") from None


# --------------------------------------------------------------------------- model hyperparameters

def read_gpt2_config(model_dir: Path) -> dict:
    """config.json of a GPT-2 model, checked against what llama.cpp's GPT-2 graph computes."""
    cfg = read_config(model_dir)
    if cfg.get("model_type") != "gpt2":
        raise GGUFExportError(f"{model_dir} holds a {cfg.get('model_type')!r} model; the GGUF "
                              f"export writes GPT-2 models only")
    problems = [f"{k} is {cfg.get(k)!r:.40}, not a positive whole number"  # the header's sizes
                for k in ("n_embd", "n_layer", "n_head", "n_positions")
                if type(cfg.get(k)) is not int or cfg[k] <= 0]
    if cfg.get("activation_function", "gelu_new") not in GELU_NAMES:
        problems.append(f"activation {cfg['activation_function']!r} (llama.cpp runs GELU)")
    if cfg.get("scale_attn_by_inverse_layer_idx") or cfg.get("scale_attn_weights") is False:
        problems.append("non-standard attention scaling")
    if cfg.get("add_cross_attention"):
        problems.append("cross-attention")
    if problems:
        raise GGUFExportError(f"{model_dir}: llama.cpp's GPT-2 cannot run this model: "
                              + "; ".join(problems))
    return cfg


def _add_hparams(writer, cfg: dict) -> None:
    d = cfg["n_embd"]
    writer.add_context_length(cfg["n_positions"])
    writer.add_embedding_length(d)
    writer.add_feed_forward_length(cfg.get("n_inner") or 4 * d)
    writer.add_block_count(cfg["n_layer"])
    writer.add_head_count(cfg["n_head"])
    writer.add_layer_norm_eps(cfg.get("layer_norm_epsilon", 1e-5))


# --------------------------------------------------------------------------- tokenizer

@dataclass
class GGUFVocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    special: dict[str, int | None] = field(default_factory=dict)   # bos/eos/pad (and a chat model's eot) -> id
    chat_template: str | list[dict] | None = None                   # a chat model's, as transformers has it


# BPE options transformers' tokenizer honours and llama.cpp's 'gpt-2' BPE has no counterpart
# for: with any of them set, the two would split the same text into different tokens
BPE_OPTIONS_LLAMA_CPP_LACKS = ("dropout", "continuing_subword_prefix", "end_of_word_suffix")


def _check_pre_tokenizer(tok: dict, where: Path) -> None:
    pre, model = tok.get("pre_tokenizer") or {}, tok.get("model") or {}
    ok = (model.get("type") == "BPE" and tok.get("normalizer") is None
          and pre.get("type") == "ByteLevel" and pre.get("use_regex", True)
          and not pre.get("add_prefix_space", False))
    if not ok:
        raise GGUFExportError(
            f"{where}: llama.cpp's 'gpt-2' tokenizer needs a byte-level BPE with the GPT-2 split "
            f"regex, no normalizer and no prefix space; this tokenizer has model "
            f"{model.get('type')!r}, pre-tokenizer {pre or None}, "
            f"normalizer {tok.get('normalizer')}")


def _check_bpe_options(where: Path) -> None:
    """Refuse BPE options llama.cpp lacks; read from the JSON before the Rust parser sees the
    file (one of them, a subword prefix the merges do not carry, makes it panic)."""
    # not a tokenizer's JSON: {}, and tokenizer_file_problem says what is wrong with it
    model = record_field(read_json_object(where), "model", kind=dict) or {}
    extra = {k: model[k] for k in BPE_OPTIONS_LLAMA_CPP_LACKS if model.get(k)}
    if extra:
        raise GGUFExportError(
            f"{where}: its BPE sets {', '.join(f'{k}={v!r}' for k, v in extra.items())}, which "
            f"llama.cpp's 'gpt-2' tokenizer does not apply: it would split text into other tokens "
            f"than the model was trained on; export a model saved with the project's tokenizer")


def chat_template_of(tokenizer) -> str | list[dict] | None:
    """A chat model's template as llama.cpp's converter writes it (``tokenizer.chat_template``):
    the one template, or named ones as ``[{name, template}]``. Left out, llama.cpp, Ollama and
    LM Studio talked to a chat model in their default template (ChatML's ``<|im_start|>``, which
    this vocabulary spells as plain text), never in the role tokens it was tuned on."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        return [{"name": k, "template": v} for k, v in template.items() if isinstance(v, str)] or None
    return template if isinstance(template, str) and template else None


def special_token_ids(tokenizer_dir: Path, tok=None) -> dict[str, int | None]:
    """bos, eos and pad ids as our generation uses them: bos the id every prompt starts with
    (:func:`encode_prompt`: ``<|endoftext|>``, else the tokenizer's bos, else its eos), eos the
    id sampling stops at (for a tokenizer naming none, the bos: ``<|endoftext|>`` ends every
    training document; left out, llama.cpp would end text at its default, token 11), pad the
    tokenizer's (None when it has none). ``tok``: the folder's tokenizer, when already loaded."""
    tok = tok if tok is not None else load_tokenizer(tokenizer_dir)
    try:
        bos = encode_prompt(tok, "")[0]
    except GenerationError as e:  # (its words name no folder)
        raise GGUFExportError(f"{tokenizer_dir}: {e}, nor a bos or eos token to start and end text "
                              f"with; copy the run's tokenizer files into it") from None
    eos = tok.eos_token_id if tok.eos_token_id is not None else bos
    return {"bos": bos, "eos": eos, "pad": tok.pad_token_id}


def end_of_turn_id(model_dir: Path, tok, template) -> int | None:
    """A chat model's end of turn, for ``tokenizer.ggml.eot_token_id``: the first of the end ids
    its generation_config.json lists (the chat format's own, ``<|end|>``, before ``<|endoftext|>``)
    when it is not the eos and is a control token the chat template writes; else None. Left out,
    llama.cpp picks its eot by text among tokens it knows (``<|end|>`` and ``<|endoftext|>`` alike,
    in no set order), and versions that stop only at eos and eot ran past the turn's end into a
    question of the model's own; llama.cpp's converter names eot by hand for such models (Gemma,
    ChatGLM)."""
    ends = record_field(read_json_object(model_dir / "generation_config.json"), "eos_token_id", kind=list)
    first = ends[0] if ends else None
    if not template or not isinstance(first, int) or isinstance(first, bool) or first == tok.eos_token_id:
        return None
    token = tok.added_tokens_decoder.get(first)
    texts = [t["template"] for t in template] if isinstance(template, list) else [template]
    return first if token is not None and token.special and any(token.content in t for t in texts) else None


def read_vocab(tokenizer_json: Path, n_rows: int) -> GGUFVocab:
    """Tokens (byte-level strings, as llama.cpp's gpt2 vocabulary expects), their types and
    the merges, for an embedding of ``n_rows`` rows."""
    _check_bpe_options(tokenizer_json)
    problem = tokenizer_file_problem(tokenizer_json)  # the shape read below: a vocabulary map, token objects
    if problem:
        raise GGUFExportError(f"cannot read the tokenizer: {problem}; copy the run's tokenizer folder into "
                              f"{tokenizer_json.parent}")
    tok = read_json(tokenizer_json)
    _check_pre_tokenizer(tok, tokenizer_json)
    import gguf

    by_id = {i: t for t, i in tok["model"]["vocab"].items()}
    added = {a["id"]: a for a in tok.get("added_tokens", [])}
    by_id.update({i: a["content"] for i, a in added.items()})
    check_token_ids(max(by_id), n_rows, tokenizer_json)
    tokens, types = [], []
    for i in range(n_rows):
        if i not in by_id:   # padding rows: never produced, never targets
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        text = by_id[i]
        tokens.append(text)
        if i in added:
            special = added[i].get("special") or (text.startswith("<|") and text.endswith("|>"))
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"].get("merges", [])]
    loaded = load_tokenizer(tokenizer_json.parent)
    template = chat_template_of(loaded)
    special = {**special_token_ids(tokenizer_json.parent, loaded),
               "eot": end_of_turn_id(tokenizer_json.parent, loaded, template)}
    return GGUFVocab(tokens, [int(t) for t in types], merges, special, template)


def _add_tokenizer(writer, vocab: GGUFVocab) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(PRE_TOKENIZER)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    for key, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                     ("pad", writer.add_pad_token_id), ("eot", writer.add_eot_token_id)):
        if vocab.special.get(key) is not None:
            add(vocab.special[key])
    # prompts start with <|endoftext|> (the bos), as every document did in training
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)


# --------------------------------------------------------------------------- tensors

def _tensor_table(n_layer: int) -> dict[str, tuple[str, bool]]:
    """HF name (without ``transformer.``) -> (GGUF name without suffix, transpose)."""
    import gguf

    T, names = gguf.MODEL_TENSOR, gguf.TENSOR_NAMES
    table = {"wte": (names[T.TOKEN_EMBD], False), "wpe": (names[T.POS_EMBD], False),
             "ln_f": (names[T.OUTPUT_NORM], False), "lm_head": (names[T.OUTPUT], False)}
    per_layer = {"ln_1": (T.ATTN_NORM, False), "attn.c_attn": (T.ATTN_QKV, True),
                 "attn.c_proj": (T.ATTN_OUT, True), "ln_2": (T.FFN_NORM, False),
                 "mlp.c_fc": (T.FFN_UP, True), "mlp.c_proj": (T.FFN_DOWN, True)}
    for i in range(n_layer):
        for hf, (key, transpose) in per_layer.items():
            table[f"h.{i}.{hf}"] = (names[key].format(bid=i), transpose)
    return table


def gguf_tensors(weights: Path | list[Path], n_layer: int) -> Iterator[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array in GGUF row order) for every tensor of a GPT-2 safetensors
    file, or of every shard of a sharded set (``weights`` a list: one model's tensors across
    files); ``output.weight`` is the token embedding when the head is tied."""
    table = _tensor_table(n_layer)
    seen: dict[str, np.ndarray] = {}
    for file in (weights if isinstance(weights, list) else [weights]):
        seen.update(_file_tensors(file, table))
    output = table["lm_head"][0] + ".weight"
    if output not in seen and table["wte"][0] + ".weight" in seen:
        seen[output] = seen[table["wte"][0] + ".weight"]
    missing = sorted({f"{n}.weight" for n, _ in table.values()} - set(seen))
    if missing:
        where = weights if isinstance(weights, Path) else weights[0].parent
        raise GGUFExportError(f"{where}: tensors missing for a {n_layer}-layer GPT-2: "
                              f"{', '.join(missing[:6])}")
    yield from seen.items()


@contextlib.contextmanager
def _weights_reader(weights: Path):
    """A mapping of a weights file's tensors: safetensors, or a pickled ``pytorch_model*.bin``
    (one file or a shard) read by torch's weights-only unpickler, as transformers reads it (a
    pickle holding anything but tensors is one line, never run), memory-mapped when a zip."""
    if weights.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            yield {key: f.get_tensor for key in f.keys()}
        return
    import torch

    with pickled_weights_refused(weights.parent):
        state = torch.load(str(weights), map_location="cpu", weights_only=True,
                           mmap=zipfile.is_zipfile(weights))
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GGUFExportError(f"{weights}: not a state dict of tensors")
    yield {key: state.__getitem__ for key in state}


def _file_tensors(weights: Path, table: dict) -> dict[str, np.ndarray]:
    """GGUF name -> float32 array for the tensors of one weights file."""
    import torch

    seen: dict[str, np.ndarray] = {}
    with _weights_reader(weights) as f:
        for key, get_tensor in f.items():
            base = key.removeprefix("transformer.")
            if base.endswith((".attn.bias", ".attn.masked_bias")):
                continue   # causal-mask buffers of old transformers versions, not weights
            stem, _, suffix = base.rpartition(".")
            if stem not in table or suffix not in ("weight", "bias"):
                raise GGUFExportError(f"{weights}: unexpected tensor {key!r} for a GPT-2 model")
            name, transpose = table[stem]
            data = get_tensor(key).to(torch.float32)
            if not bool(torch.isfinite(data).all()):   # a diverged run: the file would be junk
                raise GGUFExportError(f"{weights}: tensor {key!r} holds NaN or infinite values; "
                                      f"export an earlier checkpoint")
            data = (data.T if transpose and suffix == "weight" else data).contiguous().numpy()
            seen[f"{name}.{suffix}"] = data
    return seen


F16_MAX = float(np.finfo(np.float16).max)   # 65504: past it a float16 is infinite
Q8_0_MAX = 127 * F16_MAX                       # a Q8_0 block's scale (its largest / 127) is a float16


def _encode(name: str, data: np.ndarray, qtype: str):
    """(array, GGML type) to store: F32 for vectors, norms and the position table (llama.cpp
    reads those as F32), else F16 or Q8_0; Q8_0 falls back to F16 when a row is not a whole
    number of 32-value blocks. A weight past what the type holds stays F32: cast, it was
    written as infinity (F16), or as NaN for its whole block (Q8_0's scale), with only numpy's
    overflow warning, and llama.cpp then generated from a broken model."""
    import gguf

    Q = gguf.GGMLQuantizationType
    keep_f32 = (data.ndim < 2 or name.endswith("_norm.weight") or not name.endswith(".weight")
                or name.startswith(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.POS_EMBD]))
    largest = float(np.abs(data).max()) if data.size else 0.0
    if keep_f32 or largest > F16_MAX and (qtype != "q8_0" or largest > Q8_0_MAX):
        return data.astype(np.float32), Q.F32
    if qtype == "q8_0":
        try:
            return gguf.quants.quantize(data, Q.Q8_0), Q.Q8_0
        except gguf.QuantError:
            if largest > F16_MAX:  # (rows of no whole block, values past F16)
                return data.astype(np.float32), Q.F32
    return data.astype(np.float16), Q.F16


# --------------------------------------------------------------------------- one file

def _write_gguf_temp(model_dir: Path, out_path: Path, qtype: str, name: str | None) -> Path:
    """Write ``model_dir`` as a GGUF file of type ``qtype`` into a temporary file beside
    ``out_path`` and return it; nothing else is touched (on failure the temporary file goes)."""
    import gguf

    if qtype not in QUANT_TYPES:
        raise GGUFExportError(f"unknown GGUF type {qtype!r}; choose from {', '.join(QUANT_TYPES)}")
    cfg = read_gpt2_config(model_dir)
    file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
    writer = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GPT2])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name or model_dir.name)
    _add_hparams(writer, cfg)
    writer.add_file_type(file_type[qtype])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    n_rows = None
    for tname, data in gguf_tensors(tensor_files(model_dir), cfg["n_layer"]):
        if tname.startswith(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.TOKEN_EMBD]):
            n_rows = data.shape[0]
        stored, ggml_type = _encode(tname, data, qtype)
        writer.add_tensor(tname, stored, raw_dtype=ggml_type)
    _add_tokenizer(writer, read_vocab(model_dir / TOKENIZER, n_rows))

    tmp = out_path.with_name(f".{out_path.name}.tmp")
    with naming(out_path):  # an unwritable folder or a full disk names the file asked for
        try:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            writer.write_header_to_file(path=tmp)
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
        except BaseException as e:
            # close() flushes what the writer still buffers: on a full disk that fails again,
            # and the temporary file must go all the same (it was left, hidden, on the very
            # disk that had no room); the first error is the one to report
            with contextlib.suppress(OSError):
                writer.close()
            tmp.unlink(missing_ok=True)
            if isinstance(e, OSError) and e.errno is None:
                raise _short_write(out_path, e) from None
            raise
    return tmp


def _short_write(out_path: Path, e: OSError) -> GGUFExportError:
    """The tensors are written by numpy's ``tofile``, which reports a write the disk cut short
    (full, or a file larger than the file system holds) as ``OSError('N requested and M
    written')`` with no errno: run_main would show it as a traceback."""
    return GGUFExportError(f"cannot write {out_path}: the disk took only part of it ({e}); it is full, or "
                           f"the file is larger than its file system holds: free space there or write "
                           f"somewhere else (--out_dir); nothing was written")


def write_gguf(model_dir: str | os.PathLike, out_path: str | os.PathLike, qtype: str = "f16",
               name: str | None = None) -> Path:
    """Write ``model_dir`` (config.json, model.safetensors, tokenizer.json) as one GGUF file of
    type ``qtype`` (``f16`` or ``q8_0``); the file appears whole or not at all."""
    out_path = Path(out_path)
    tmp = _write_gguf_temp(Path(model_dir), out_path, qtype, name)
    _commit({tmp: out_path})
    return out_path


def _commit(renames: dict[Path, Path]) -> None:
    """Rename each finished temporary file onto its output; on failure every temporary file
    still there is removed (an output already renamed is complete)."""
    try:
        for tmp, out in renames.items():
            with naming(out):
                os.replace(tmp, out)
    finally:
        for tmp in renames:
            tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the export stage

def default_output(run: RunLayout | None, model_dir: Path) -> tuple[Path, str]:
    """(output folder, file stem) for ``model_dir``: the run's GGUF folder for it
    (``RunLayout.gguf_dir_for``) with the run's name as stem (``<run>-<name>`` for a
    checkpoint), or ``<model>/gguf/`` and the folder's name for a model outside any run."""
    model_dir = Path(model_dir)
    if run is not None and run.contains(model_dir):
        stem = run.name if model_dir.name == FINAL else f"{run.name}-{model_dir.name}"
        return run.gguf_dir_for(model_dir), stem
    return model_dir / GGUF, model_dir.name


def _inputs(model_dir: Path) -> dict[str, str]:
    weights = [f.name for f in weight_files(model_dir)]
    for f, why in ((weights[0] if weights else WEIGHTS,
                    f"re-save it with save_pretrained (safetensors), or train with `{TRAIN_CMD}`"),
                   (TOKENIZER, "copy the run's tokenizer folder into it")):
        if not (model_dir / f).is_file():
            raise GGUFExportError(f"{model_dir / f} not found: the GGUF export needs a "
                                  f"save_pretrained GPT-2 folder with {f}; {why}")
    problem = checkpoint_problem(model_dir, need_training_state=False)
    if problem:  # a shard missing or cut short, weights that cannot be read: before any hash
        raise GGUFExportError(f"the model at {model_dir} cannot be exported: {problem}")
    # every file the written GGUF is made from: the weights (every shard and the index of a
    # sharded set), config.json (the header's sizes, norm epsilon), tokenizer.json (vocabulary,
    # merges) and the files the tokenizer's special ids come from; an edit to any of them must
    # rebuild the export, not skip it as current
    return {f: sha256_file(model_dir / f) for f in (*weights, MODEL_CONFIG, TOKENIZER, *TOKENIZER_EXTRAS)
            if f in (*weights, TOKENIZER) or (model_dir / f).is_file()}


def _planned_files(model_dir: Path, out_dir: Path, options: GGUFOptions, stem: str) -> dict[str, Path]:
    """The file of each type asked for, after the refusals that read no weights: no model, an
    unknown type, a folder that is another stage's, a folder where a file goes."""
    gguf_version()
    if not (model_dir / "config.json").is_file():
        raise GGUFExportError(f"no model at {model_dir} (config.json missing); train one with "
                              f"`{TRAIN_CMD}` or pass a save_pretrained folder")
    bad = [t for t in options.types if t not in QUANT_TYPES]
    if bad or not options.types:
        raise GGUFExportError(f"GGUF types {bad or '(none)'} not supported; choose from "
                              f"{', '.join(QUANT_TYPES)}")
    files = {t: out_dir / f"{stem}-{t}.gguf" for t in options.types}
    # a folder another stage writes (a tokenizer, a corpus): its sidecar.json, which that
    # stage's skips and checks read, would be replaced by this one's
    refuse_foreign_folder(out_dir / SIDECAR, STAGE, "--out_dir")
    # a model's folder (its own or another's), a run's folder (default: <run>/gguf): the files
    # would mix with theirs, and the export's sidecar in a run's folder refused its next training
    refuse_artifacts_folder("--out_dir", out_dir, own_stage=STAGE)
    taken = [p for p in files.values() if p.is_dir()]
    if taken:  # found before any work, not after the first file has replaced its old one
        raise GGUFExportError(f"cannot write {taken[0]}: it is a folder where the GGUF file goes; move it "
                              f"aside or name another --out_dir; nothing was written")
    return files


def _write_temps(model_dir: Path, files: dict[str, Path], stem: str) -> dict[Path, Path]:
    """Every file made in full as a temporary file beside it (temporary -> output): a folder the
    user may not write in, a full disk or a bad model leaves the old files and their sidecar
    exactly as they were."""
    temps: dict[Path, Path] = {}
    try:
        for qtype, path in files.items():
            temps[_write_gguf_temp(model_dir, path, qtype, stem)] = path
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    return temps


def export_gguf(model_dir: str | os.PathLike, out_dir: str | os.PathLike,
                options: GGUFOptions = GGUFOptions(),
                log: Callable[[str], None] = print,
                then: Callable[[GGUFExport], None] | None = None) -> GGUFExport:
    """Write one GGUF file per type in ``options.types`` into ``out_dir``, then its sidecar
    (inputs' hashes, settings, sizes, versions) last; skip when the sidecar says the files
    are current, unless ``options.overwrite``. ``then(export)`` runs still under the folder's
    lock (a publish links the files there: no other export replaces them meanwhile)."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    stem = options.stem or model_dir.name
    files = _planned_files(model_dir, out_dir, options, stem)
    # from before the hashes to the files written: the GGUF files must be of the files hashed (a
    # training that saved the folder again meanwhile gave files of other weights than the sidecar's
    # hashes, or one type of each save; a file gone under the read was a traceback)
    with read_unchanged(lambda: model_stamp(model_dir), lambda: model_changed(model_dir, "exported")) as unchanged:
        inputs = _inputs(model_dir)
        read_gpt2_config(model_dir)  # a model llama.cpp's GPT-2 can run, said before the slower checks
        # BPE options llama.cpp lacks, before the checks below build the tokenizer: one of them
        # (a subword prefix) can make that build fail, whose words say nothing of llama.cpp
        _check_bpe_options(model_dir / TOKENIZER)
        check_model_dir(model_dir)   # the model interface's checks: config, shapes, tokenizer
        settings = {"format": EXPORT_FORMAT, "types": list(options.types), "stem": stem}
        with _export_lock(out_dir, next(iter(files.values()))):
            result = _export_locked(model_dir, out_dir, files, (inputs, unchanged), settings, options, log)
            if then is not None:
                then(result)
            return result


@contextlib.contextmanager
def _export_lock(out_dir: Path, first_file: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``out_dir`` itself (no file is made in it) while one export
    writes there. Two exports at once into one folder wrote the same temporary files: one renamed
    the other's half-written file into place, the other's rename then failed (a traceback) after
    it had deleted the first's sidecar. A folder that cannot be made names the first file (the
    one the user asked for, as a failed write does)."""
    busy = lambda who: GGUFExportError(f"{out_dir} is being written by another GGUF export ({who}); "
                                       f"wait for it to finish, or name another --out_dir; nothing was written")
    with folder_lock(out_dir, busy, named=first_file):
        yield


def _export_locked(model_dir: Path, out_dir: Path, files: dict[str, Path],
                   read: tuple[dict[str, str], Callable[[], None]], settings: dict, options: GGUFOptions,
                   log: Callable[[str], None]) -> GGUFExport:
    """:func:`export_gguf`'s skip or write, under the folder's lock. ``read``: the inputs' hashes and
    the check that the model folder is still the one they are of (:func:`~londonlm.core.read_unchanged`):
    files written from a folder that changed are not kept."""
    inputs, unchanged = read
    current, why = sidecar_current(out_dir / SIDECAR, inputs, settings)
    if current and not all(p.is_file() for p in files.values()):
        current, why = False, "a GGUF file is missing"
    if current and not options.overwrite:
        log(f"gguf: outputs are current ({out_dir}); skipping (use --overwrite to rebuild)")
        return GGUFExport(out_dir, files, skipped=True)
    temps = _write_temps(model_dir, files, settings["stem"])
    try:
        unchanged()
    except LondonLMError:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    if (out_dir / SIDECAR).exists():
        log(f"gguf: rebuilding ({'--overwrite' if options.overwrite else why})")
        with naming(out_dir / SIDECAR):
            (out_dir / SIDECAR).unlink()
    _commit(temps)
    for path in files.values():
        log(f"gguf: wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    write_sidecar(out_dir / SIDECAR, STAGE, inputs, settings,
                  counts={p.name: p.stat().st_size for p in files.values()},
                  extra={"model_dir": str(model_dir),
                         "versions": {**versions(), "gguf": gguf_version()},
                         "files": {t: {"name": p.name, "sha256": sha256_file(p)}
                                   for t, p in files.items()}})
    return GGUFExport(out_dir, files)
