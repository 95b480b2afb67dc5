"""Multiple-choice probes scored by the model's log-likelihood of each continuation.

Item schema (one JSON object per line of a ``.jsonl`` file), native form::

    {"id": "fire-1", "category": "events", "context": "The Great Fire of 1666 began in",
     "choices": ["Pudding Lane", "Fleet Street", "Cheapside", "the Strand"], "answer": 0,
     "source_note": "..."}

MMLU form (user-supplied files): ``{"question", "choices", "answer"}`` with ``answer`` an
index or a letter A-D and an optional ``subject`` used as the category. Such items are
posed lm-eval-harness style: ``"<question>\\nAnswer:"`` followed by `` <choice>``.

Scoring: the context is tokenized once (after an optional BOS/EOT token, as documents
begin in the training stream) and each continuation separately, then
``log P(continuation | context)`` is summed over the continuation's tokens. Three choice
rules are reported: ``sum`` (raw log-likelihood, favours short choices), ``per_token``
(mean per token) and ``per_byte`` (per UTF-8 byte of the continuation, the
tokenizer-independent one, lm-eval's ``acc_norm``). Accuracy is reported beside the chance
level (mean of 1/number of choices).
"""
from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from ...core import LondonLMError
from ...core import utf8_problem
from ...generation import encode_text
from .lm import model_context_length

RULES = ("sum", "per_token", "per_byte")
NATIVE_REQUIRED = ("id", "category", "context", "choices", "answer")


class ProbeFormatError(LondonLMError, ValueError):
    """A malformed probe file; the message names the file and line."""


@dataclass
class MCItem:
    id: str
    category: str
    context: str
    choices: list[str]
    answer: int
    source_note: str = ""
    continuations: list[str] = field(default_factory=list)  # what is actually scored


def join_continuation(context: str, choice: str) -> str:
    """The text appended to ``context``: a separating space unless the context already
    ends in whitespace or the choice starts with whitespace/punctuation."""
    if not context or context[-1].isspace() or not choice or choice[0].isspace() \
            or choice[0] in ",.;:!?)":
        return choice
    return " " + choice


def _answer_index(raw, n_choices: int, where: str) -> int:
    if isinstance(raw, str) and len(raw) == 1 and raw.upper() in "ABCDEFGHIJ":
        raw = "ABCDEFGHIJ".index(raw.upper())
    elif isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw.strip())
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ProbeFormatError(f"{where}: 'answer' must be an index (int) or a letter, got {raw!r}")
    if not 0 <= raw < n_choices:
        raise ProbeFormatError(f"{where}: 'answer' {raw} is out of range for {n_choices} choices")
    return raw


def parse_item(obj, where: str, min_choices: int = 2) -> MCItem:
    """One validated item from a decoded JSON object (native or MMLU form)."""
    if not isinstance(obj, dict):
        raise ProbeFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    choices = obj.get("choices")
    if not isinstance(choices, list) or len(choices) < min_choices or \
            not all(isinstance(c, str) and c.strip() for c in choices):
        raise ProbeFormatError(
            f"{where}: 'choices' must be a list of at least {min_choices} non-empty strings")
    if len(set(choices)) != len(choices):
        raise ProbeFormatError(f"{where}: 'choices' contains duplicates")
    if "context" in obj:
        require_keys(obj, NATIVE_REQUIRED, ("id", "category", "context"), where, ProbeFormatError)
        ans = _answer_index(obj["answer"], len(choices), where)
        item = MCItem(obj["id"], obj["category"], obj["context"], list(choices), ans,
                      str(obj.get("source_note", "")))
        item.continuations = [join_continuation(item.context, c) for c in choices]
        return item
    if "question" in obj:
        if "answer" not in obj:
            raise ProbeFormatError(f"{where}: missing key 'answer'")
        q = obj["question"]
        if not isinstance(q, str) or not q.strip():
            raise ProbeFormatError(f"{where}: 'question' must be a non-empty string")
        ans = _answer_index(obj["answer"], len(choices), where)
        item = MCItem(str(obj.get("id", where)), str(obj.get("subject") or obj.get("category")
                                                     or "mmlu"),
                      q.strip() + "\nAnswer:", list(choices), ans, str(obj.get("source_note", "")))
        item.continuations = [" " + c.strip() for c in choices]
        return item
    raise ProbeFormatError(f"{where}: an item needs 'context' (native form) or 'question' "
                           f"(MMLU form)")


def require_keys(obj: dict, required: Sequence[str], strings: Sequence[str], where: str,
                 error: type[Exception] = ProbeFormatError) -> None:
    """Raise ``error`` naming the first problem: a key of ``required`` absent, or one of
    ``strings`` not a non-empty string (probe and leakage files share these rules)."""
    missing = [k for k in required if k not in obj]
    if missing:
        raise error(f"{where}: missing key(s) {', '.join(missing)}")
    for k in strings:
        if not isinstance(obj[k], str) or not obj[k].strip():
            raise error(f"{where}: '{k}' must be a non-empty string")


def jsonl_objects(path: Path, error: type[Exception] = ProbeFormatError, what: str = "probe file"):
    """(``path:line``, decoded JSON object) for every non-blank line of a JSONL file; a missing
    file, a line that is not UTF-8, bad JSON, a ``"\\ud800"`` escape (text no tokenizer takes)
    or a non-object line raises ``error`` naming ``path:line``."""
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    # bytes that are not UTF-8 are read as surrogate escapes and refused line by line, so the
    # message names the line (a strict decoder fails somewhere in a block, naming no line)
    with path.open(encoding="utf-8", errors="surrogateescape") as f:
        for n, line in enumerate(f, 1):
            where = f"{path}:{n}"
            problem = utf8_problem(line)
            if problem:
                raise error(f"{where}: {problem}")
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            except RecursionError:  # `[[[[...` past the parser's depth
                raise error(f"{where}: invalid JSON (nested too deeply)") from None
            if not isinstance(obj, dict):
                raise error(f"{where}: expected a JSON object, got {type(obj).__name__}")
            if utf8_problem(json.dumps(obj, ensure_ascii=False)):
                raise error(f"{where}: a string holds a lone surrogate escape (such as \\ud800), "
                            f"which is not text")
            yield where, obj


def load_mc_jsonl(path: str | Path, min_choices: int = 2) -> list[MCItem]:
    """Read and validate a multiple-choice JSONL file; errors name ``path:line``."""
    path = Path(path)
    items, seen = [], set()
    for where, obj in jsonl_objects(path):
        item = parse_item(obj, where, min_choices)
        if item.id in seen:
            raise ProbeFormatError(f"{where}: duplicate id {item.id!r}")
        seen.add(item.id)
        items.append(item)
    if not items:
        raise ProbeFormatError(f"{path}: no items")
    return items


def default_probes_path() -> Path:
    return Path(__file__).resolve().parents[1] / "data" / "probes.jsonl"  # evaluation/data/


def continuation_logprobs(model, tokenizer, pairs: Sequence[tuple[str, str]], *,
                          batch_size: int = 32, device: str = "cpu",
                          prefix_bos: bool = True) -> list[tuple[float, int]]:
    """(sum of log P, number of tokens) of each continuation given its context.

    Context and continuation are tokenized separately so the continuation's tokens are
    exactly its own; when the pair exceeds the model's window the context is cut from the
    left."""
    ctx_len = model_context_length(model)
    bos = getattr(tokenizer, "bos_token_id", None)
    eos = getattr(tokenizer, "eos_token_id", None)
    pad = eos if eos is not None else (bos or 0)  # right pads are never attended to or scored
    cache: dict[str, list[int]] = {}
    seqs: list[tuple[list[int], int]] = []  # (ids, index of the first continuation token)
    for context, cont in pairs:
        if context not in cache:
            pre = [bos] if (prefix_bos and bos is not None) else []
            cache[context] = pre + encode_text(tokenizer, context)
        c_ids = cache[context]
        k_ids = encode_text(tokenizer, cont)
        if not k_ids:
            raise ValueError(f"continuation {cont!r} has no tokens")
        if not c_ids:
            raise ValueError("an empty context needs prefix_bos=True and a tokenizer BOS token")
        ids = c_ids + k_ids
        if len(ids) > ctx_len:
            ids = ids[len(ids) - ctx_len:]
        seqs.append((ids, len(ids) - len(k_ids)))
    was_training = getattr(model, "training", False)
    model.eval()
    model.to(device)
    out: list[tuple[float, int]] = []
    # longest first keeps padding waste small within a batch
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i][0]))
    results: dict[int, tuple[float, int]] = {}
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            width = max(len(seqs[i][0]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, :len(seqs[i][0])] = torch.tensor(seqs[i][0])
            # right padding needs no attention mask in a causal model: a real position never
            # attends to the pads after it (and building the mask costs more than the pads)
            ids = ids.to(device)
            logp = F.log_softmax(model(input_ids=ids).logits[:, :-1].float(), -1)
            tgt = logp.gather(2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            for r, i in enumerate(idx):
                start, n = seqs[i][1], len(seqs[i][0])
                # target position t-1 predicts token t
                results[i] = (float(tgt[r, start - 1:n - 1].sum()), n - start)
    if was_training:
        model.train()
    out = [results[i] for i in range(len(seqs))]
    return out


def score_items(model, tokenizer, items: Sequence[MCItem], *, batch_size: int = 32,
                device: str = "cpu", prefix_bos: bool = True) -> dict:
    """Accuracy of each choice rule, chance level, per-category breakdown and per-item
    predictions for ``items``."""
    pairs = [(it.context, c) for it in items for c in it.continuations]
    scores = continuation_logprobs(model, tokenizer, pairs, batch_size=batch_size,
                                   device=device, prefix_bos=prefix_bos)
    per_item, k = [], 0
    for it in items:
        rows = []
        for c in it.continuations:
            lp, nt = scores[k]
            k += 1
            nb = max(1, len(c.encode("utf-8")))
            rows.append({"sum": lp, "per_token": lp / nt, "per_byte": lp / nb, "tokens": nt})
        pred = {r: max(range(len(rows)), key=lambda j: rows[j][r]) for r in RULES}
        per_item.append({"id": it.id, "category": it.category, "answer": it.answer,
                         "pred": pred, "correct": {r: pred[r] == it.answer for r in RULES},
                         "logprob_sum": [round(x["sum"], 4) for x in rows]})
    return summarize(per_item, items)


def summarize(per_item: list[dict], items: Sequence[MCItem]) -> dict:
    n = len(per_item)
    chance = sum(1 / len(it.choices) for it in items) / n if n else float("nan")
    acc = {r: sum(p["correct"][r] for p in per_item) / n if n else float("nan") for r in RULES}
    cats: dict[str, list] = defaultdict(list)
    chance_by: dict[str, list] = defaultdict(list)
    for p, it in zip(per_item, items):
        cats[p["category"]].append(p)
        chance_by[p["category"]].append(1 / len(it.choices))
    by_cat = {c: {"n": len(v), "chance": sum(chance_by[c]) / len(v),
                  **{r: sum(p["correct"][r] for p in v) / len(v) for r in RULES}}
              for c, v in sorted(cats.items())}
    return {"n": n, "chance": chance, "accuracy": acc, "by_category": by_cat,
            "answer_position_counts": _position_counts(items), "items": per_item}


def _position_counts(items: Iterable[MCItem]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for it in items:
        counts[str(it.answer)] += 1
    return dict(sorted(counts.items()))


def shuffled_items(items: Sequence[MCItem], seed: int = 0) -> list[MCItem]:
    """Copies of ``items`` with choices permuted (answer index follows); lets a caller
    check that accuracy is not an artefact of answer position."""
    rng = random.Random(seed)
    out = []
    for it in items:
        perm = list(range(len(it.choices)))
        rng.shuffle(perm)
        new = MCItem(**{**asdict(it), "choices": [it.choices[j] for j in perm],
                        "continuations": [it.continuations[j] for j in perm],
                        "answer": perm.index(it.answer)})
        out.append(new)
    return out
