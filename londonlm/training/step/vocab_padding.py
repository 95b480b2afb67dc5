"""The vocabulary padded for training (``--pad_vocab``): the model's embedding, and the LM head
tied to it, get zero rows up to a multiple of :data:`VOCAB_MULTIPLE`, so that the head's matmul
(the largest of a GPT-2 Small step at a 30,000-token vocabulary) runs on whole tiles of a GPU's
tensor cores. The padded rows are never predicted: the head's output is cut back to the real
vocabulary before any loss (the fused loss masks them: :mod:`.fused_loss`), so the loss, its
gradient and every logit are the unpadded model's, and the padded rows' gradient is exactly
zero. Zero rows with zero gradient stay zero under AdamW (decoupled decay of 0 is 0, and their
moments stay 0), so nothing about them needs saving:

- every folder the run writes (checkpoints, ``final/``, ``best/``) holds the unpadded weights,
  a plain GPT-2 at the model's own vocabulary size (:func:`unpadded_state_dict`, applied by the
  Trainer's ``_save``);
- loading those weights back into the padded model (a resume, the best model at the end) pads
  them with zeros again (a load-state-dict pre-hook), so a resumed run continues exactly;
- a checkpoint's optimizer state has the rows the run trained with; :func:`fit_optimizer_rows`
  cuts or zero-pads the embedding's moments when a run resumes with the other setting.

The model's ``config.vocab_size`` stays the real size throughout, so generation and the stock
loss see the real vocabulary only. Default ``auto``: on for CUDA, where tensor-core tiles are
what padding is for (nanoGPT's 50,257 -> 50,304); off on CPUs (not measured to help there; the
CPU presets' vocabularies, 512 and 4,096, are multiples already).
"""
from __future__ import annotations

import math

import torch

VOCAB_MULTIPLE = 128
REAL_ROWS = "_londonlm_real_vocab_rows"   # attribute on a padded model: its real vocabulary size
PADDED_NAMES = "_londonlm_padded_names"   # attribute: the state-dict names of the padded weights


def padded_vocab(n: int, multiple: int = VOCAB_MULTIPLE) -> int:
    """``n`` rounded up to a multiple of ``multiple``."""
    return int(math.ceil(n / multiple) * multiple) if multiple > 1 else n


def real_rows(model) -> int | None:
    """The real vocabulary size of a padded model, None when it is not padded."""
    return getattr(model, REAL_ROWS, None)


def pad_vocabulary(model, multiple: int = VOCAB_MULTIPLE):
    """Pad ``model``'s embedding (and its LM head, tied or not) with zero rows up to a multiple
    of ``multiple``; the head's output is cut back to the real rows and weights loaded later at
    the real size are zero-padded. Nothing happens when the rows are a multiple already or the
    model is padded already. Returns the model."""
    emb = model.get_input_embeddings()
    real = emb.weight.shape[0]
    rows = padded_vocab(real, multiple)
    if rows == real or real_rows(model) is not None:
        return model
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is emb.weight
    names = [n for n, p in model.named_parameters(remove_duplicate=False)
             if p is emb.weight or (head is not None and p is head.weight)]
    emb.weight = _padded_parameter(emb.weight, rows)
    emb.num_embeddings = rows
    if head is not None:
        head.weight = emb.weight if tied else _padded_parameter(head.weight, rows)
        head.out_features = rows
        head.register_forward_hook(_real_columns(real))
        head.register_load_state_dict_pre_hook(_zero_padded_on_load(real, rows))
    emb.register_load_state_dict_pre_hook(_zero_padded_on_load(real, rows))
    setattr(model, REAL_ROWS, real)
    setattr(model, PADDED_NAMES, tuple(names))
    return model


def _padded_parameter(weight: torch.nn.Parameter, rows: int) -> torch.nn.Parameter:
    with torch.no_grad():
        out = weight.new_zeros((rows, *weight.shape[1:]))
        out[:weight.shape[0]] = weight
    return torch.nn.Parameter(out, requires_grad=weight.requires_grad)


class _real_columns:
    """Forward hook of the LM head: its logits for the real vocabulary only."""

    def __init__(self, real: int):
        self.real = real

    def __call__(self, module, args, output):
        return output[..., :self.real]


class _zero_padded_on_load:
    """Load-state-dict pre-hook: a weight saved at the real size gets its zero rows back."""

    def __init__(self, real: int, rows: int):
        self.real, self.rows = real, rows

    def __call__(self, module, state_dict, prefix, *args):
        key = prefix + "weight"
        w = state_dict.get(key)
        if w is not None and w.shape[0] == self.real:
            state_dict[key] = torch.cat([w, w.new_zeros((self.rows - self.real, *w.shape[1:]))])


def unpadded_state_dict(model, state_dict: dict) -> dict:
    """``state_dict`` (of ``model``, under its own names) with the padded weights cut back to the
    real vocabulary: what a padded model saves. A model that is not padded: as it is."""
    real = real_rows(model)
    if real is None:
        return state_dict
    names, cut = set(getattr(model, PADDED_NAMES, ())), {}

    def unpadded(v):  # one copy per tensor: a tied head stays one tensor under two names
        key = (v.data_ptr(), tuple(v.shape))  # state_dict() detaches: one object per name
        if key not in cut:
            cut[key] = v[:real].clone()
        return cut[key]
    return {k: (unpadded(v) if k in names and v.shape[0] > real else v) for k, v in state_dict.items()}


def fit_optimizer_rows(optimizer, model) -> None:
    """Make a checkpoint's optimizer state fit ``model``'s embedding when the run resumes with
    the other ``--pad_vocab`` setting: the moments of the embedding (and an untied head) are cut
    to, or zero-padded to, the parameter's rows, exactly, as the padded rows' moments are zero.
    Installed as a load-state-dict pre-hook on ``optimizer``."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    targets = {id(emb)} | ({id(head.weight)} if head is not None else set())

    def hook(opt, state_dict):
        params = [p for g in opt.param_groups for p in g["params"]]
        keys = [k for g in state_dict.get("param_groups", []) for k in g["params"]]
        for key, p in zip(keys, params):
            if id(p) not in targets or key not in state_dict.get("state", {}):
                continue
            st = state_dict["state"][key]
            for name, t in list(st.items()):
                if torch.is_tensor(t) and t.ndim == p.ndim and t.shape[1:] == p.shape[1:] \
                        and t.shape[0] != p.shape[0]:
                    st[name] = (t[:p.shape[0]].clone() if t.shape[0] > p.shape[0] else
                                torch.cat([t, t.new_zeros((p.shape[0] - t.shape[0], *t.shape[1:]))]))
        return state_dict

    optimizer.register_load_state_dict_pre_hook(hook)
