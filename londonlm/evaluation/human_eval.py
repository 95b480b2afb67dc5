"""Blind human evaluation: export shuffled samples, import ratings, aggregate with CIs.

Export writes, into one folder:
- ``ratings_sheet.csv``: one row per item (item_id, prompt, text, empty rating columns) for
  raters who prefer a spreadsheet;
- ``rating_form.html``: a self-contained form (no network, no CDN) that shows the same items
  and downloads the filled ratings as CSV or JSON;
- ``blind_key.json``: item_id -> model/sample; keep it away from the raters.

Items are shuffled across models and get random ids, so neither order nor id tells a rater
which model wrote a text. Ratings are 1-5 on each criterion in :data:`CRITERIA`.

A model whose own evaluation left items in ``BROUGHT_SAMPLES`` brings them into the pack
(:func:`brought_samples`). The chat evaluation (``07_finetuning/evaluate_chat.py``, or the
pipeline's chat step) leaves its transcripts there: a chat model's answers
to held-out Old Bailey questions beside the printed answers, and its answers to the modern-bait
questions beside the base model's, all blind like every other item.
"""
from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import math
import random
import secrets
from importlib import resources
from pathlib import Path
from string import Template
from typing import Iterable, Mapping, Sequence

from ..core import LondonLMError, RunLayout, sheet_cell, write_bytes_atomic, write_json_atomic, write_text_atomic

# Items a model's own evaluation leaves for the pack, one JSON row each: label, prompt, text.
BROUGHT_SAMPLES = "human_eval_samples.jsonl"

CRITERIA = ("fluency", "period_authenticity", "coherence")
SCALE = (1, 5)
CRITERIA_HELP = {
    "fluency": "Is it grammatical, readable English (of any period)?",
    "period_authenticity": "Does it read like a text written in London between 1500 and 1900 "
                           "(vocabulary, spelling, subjects, no modern notions)?",
    "coherence": "Does it follow on from the prompt and hang together?",
}
# The raters' page: its HTML and script, with $title, $lo, $hi, $helptext, $items and $criteria to fill.
FORM_FILE = "data/human_eval_form.html"


class RatingsError(LondonLMError, ValueError):
    """Malformed ratings file or key; the message says what to fix."""


def brought_samples(model_dir: str | Path, name: str = "model",
                    eval_dir: str | Path | None = None) -> dict[str, list[dict]]:
    """The items a model's own evaluation left for the pack in ``BROUGHT_SAMPLES`` (in
    ``eval_dir``, default the model's evaluation folder), as ``{label: [{"prompt", "text"}]}``;
    ``{model}`` in a label becomes ``name``. ``{}`` when there are none. The chat evaluation
    writes its transcripts this way (chat answers, base answers, printed answers), so the pack
    takes them without this stage knowing what a chat model is."""
    model_dir = Path(model_dir)
    path = Path(eval_dir or RunLayout(model_dir.parent).evaluation_dir_for(model_dir)) / BROUGHT_SAMPLES
    if not (model_dir.is_dir() and path.is_file()):
        return {}
    out: dict[str, list[dict]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out.setdefault(row["label"].replace("{model}", name), []).append(
                {"prompt": row["prompt"], "text": row["text"]})
    return out


def with_brought_samples(samples: Mapping[str, Sequence[Mapping[str, str]]],
                         models: Mapping[str, Mapping] | None) -> dict:
    """``samples`` plus the items every model among ``models`` brought (:func:`brought_samples`)."""
    out = dict(samples)
    for name, info in (models or {}).items():
        if isinstance(info, Mapping) and info.get("path"):
            for label, rows in brought_samples(info["path"], name).items():
                out.setdefault(label, rows)
    return out


# the blind pack's files, in the evaluation's human_eval/ folder
PACK_FILES = {"sheet": "ratings_sheet.csv", "form": "rating_form.html", "key": "blind_key.json"}


def export_blind(samples: Mapping[str, Sequence[Mapping[str, str]]], out_dir: str | Path,
                 seed: int | None = None, title: str = "londonlm human evaluation",
                 models: Mapping[str, Mapping] | None = None, brought: bool = True) -> dict:
    """Write the blind sheet, form and key for ``samples`` = {model_name: [{"prompt", "text"}]}.
    ``models`` (name -> path, step, weights_sha256) goes into the key, so ratings imported
    later name the exact weights that wrote each text; with ``brought``, the items those models'
    evaluations left for the pack join it (:func:`with_brought_samples`).

    Returns the paths written and the number of items."""
    if brought:
        samples = with_brought_samples(samples, models)
    out = Path(out_dir)
    rng = random.Random(None if seed is None else _pack_seed(seed, samples))
    items, key = [], {}
    used: set[str] = set()
    for model, rows in samples.items():
        for i, r in enumerate(rows):
            while True:  # random ids leak nothing about model or order
                iid = (f"{rng.getrandbits(32):08x}" if seed is not None else secrets.token_hex(4))
                if iid not in used:
                    used.add(iid)
                    break
            items.append({"item_id": iid, "prompt": r.get("prompt", ""), "text": r["text"]})
            key[iid] = {"model": model, "index": i}
    if not items:
        raise RatingsError("no samples to export")
    rng.shuffle(items)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["item_id", "prompt", "text", *CRITERIA, "comment"])
    for it in items:
        w.writerow([it["item_id"], sheet_cell(it["prompt"]), sheet_cell(it["text"]), *[""] * len(CRITERIA), ""])
    paths = {k: out / name for k, name in PACK_FILES.items()}
    _keep_earlier_key(paths["key"], key)
    write_text_atomic(paths["sheet"], buf.getvalue())
    write_text_atomic(paths["form"], render_form(items, title))
    write_json_atomic(paths["key"], {"format_version": 1, "criteria": list(CRITERIA),
                                     "scale": list(SCALE), "models": dict(models or {}), "items": key})
    return {"items": len(items), **{k: str(v) for k, v in paths.items()}}


def _keep_earlier_key(path: Path, items: Mapping[str, Mapping]) -> Path | None:
    """The key already at ``path`` kept beside it as ``blind_key.<its sha256's first 8>.json``
    when it is another pack's (its items differ from ``items``): a re-evaluation or the chat
    evaluation into the same folder replaced it while raters were still filling in its form, and
    their ratings could then be joined to no models at all. The same pack again keeps nothing."""
    try:
        data = path.read_bytes()
        earlier = json.loads(data).get("items")
    except (OSError, ValueError, RecursionError, AttributeError):  # none, or no key: nothing to keep
        return None
    if earlier == items or not isinstance(earlier, dict):
        return None
    return write_bytes_atomic(path.with_name(f"{path.stem}.{hashlib.sha256(data).hexdigest()[:8]}.json"), data)


def _key_of(ids: set[str], key_path: Path) -> Path | None:
    """A key kept beside ``key_path`` (:func:`_keep_earlier_key`) that holds every id in ``ids``."""
    for other in sorted(key_path.parent.glob(f"{key_path.stem}.*.json")):
        try:
            if ids <= set(json.loads(other.read_bytes()).get("items", {})):
                return other
        except (OSError, ValueError, RecursionError, AttributeError, TypeError):
            continue
    return None


def _pack_seed(seed: int, samples: Mapping[str, Sequence[Mapping[str, str]]]) -> str:
    """The seed of a pack's ids and order: ``seed`` and the pack's texts. A seed alone gave every
    pack the same ids (only their models and texts differ), so ratings of one pack imported against
    another's key (a re-evaluation, or the chat evaluation, rewrites the key in the same folder)
    were joined to the wrong models without a word; now they are unknown ids. The same pack
    still gets the same ids."""
    texts = json.dumps({m: [[r.get("prompt", ""), r["text"]] for r in rows] for m, rows in samples.items()},
                       sort_keys=True, ensure_ascii=False)
    return f"{seed}:{hashlib.sha256(texts.encode('utf-8', 'surrogatepass')).hexdigest()}"


def render_form(items: Sequence[Mapping[str, str]], title: str) -> str:
    """A standalone HTML page: items, 1-5 radio buttons per criterion, CSV/JSON download."""
    # every < as \u003c (the same string to the script): besides </script>, a text holding
    # "<!--<script" (model output, an HTML page in the corpus) put the parser in the script's
    # "double escaped" state, where the page's own </script> no longer closed it: the whole
    # script failed and the form showed no item
    data = json.dumps(items, ensure_ascii=False).replace("<", "\\u003c")
    crit = json.dumps(list(CRITERIA))
    helptext = "".join(f"<li><b>{html.escape(c.replace('_', ' '))}</b>: "
                       f"{html.escape(CRITERIA_HELP[c])}</li>" for c in CRITERIA)
    lo, hi = SCALE
    form = Template(resources.files(__package__).joinpath(FORM_FILE).read_text(encoding="utf-8"))
    return form.substitute(title=html.escape(title), lo=lo, hi=hi, helptext=helptext, items=data, criteria=crit)


def _read_text(path: Path, what: str) -> str:
    """A ratings file or key as text. ``utf-8-sig``: a spreadsheet's "CSV UTF-8" starts with a
    byte-order mark, which otherwise became part of the first column's name (``item_id``)."""
    if not path.is_file():
        raise RatingsError(f"{what} {path} is a folder, not a file" if path.is_dir() else f"{what} not found: {path}")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise RatingsError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); save it "
                           f"as CSV UTF-8 (or JSON)") from None


def _read_rows(path: Path) -> list[dict]:
    """The rating rows of a CSV sheet or a JSON list (as the form downloads), each a dict."""
    text = _read_text(path, "ratings file")
    if path.suffix.lower() == ".json":
        try:
            rows = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            raise RatingsError(f"{path}: invalid JSON ({getattr(e, 'msg', 'nested too deep')})") from None
        if not isinstance(rows, list):
            raise RatingsError(f"{path}: expected a JSON list of rating rows")
        for n, row in enumerate(rows, 1):
            if not isinstance(row, dict):
                raise RatingsError(f"{path} row {n} is not an object of item_id and ratings: "
                                   f"{json.dumps(row)[:40]}")
        return rows
    try:
        return list(csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error as e:  # a field past the csv module's limit, say
        raise RatingsError(f"{path}: not a CSV ratings sheet ({e})") from None


def _read_key(key_path: Path) -> dict[str, dict]:
    """The blind key's items: item_id -> {"model": name, ...}; RatingsError when the file is no
    key the export wrote (another JSON, an item without a model name)."""
    hint = "use the blind_key.json written by the export"
    try:
        key = json.loads(_read_text(key_path, "blind key"))
    except (json.JSONDecodeError, RecursionError) as e:
        raise RatingsError(f"blind key {key_path} unreadable ({getattr(e, 'msg', 'nested too deep')}); "
                           f"{hint}") from None
    items = key.get("items") if isinstance(key, dict) else None
    if not isinstance(items, dict):
        raise RatingsError(f"blind key {key_path} holds no object of items by id; {hint}")
    for iid, item in items.items():
        if not (isinstance(item, dict) and isinstance(item.get("model"), str)):
            raise RatingsError(f"blind key {key_path}: item {iid!r} names no model; {hint}")
    return items


def _rating(value, where: str, criterion: str) -> float | None:
    """One cell: None when empty (not rated), else a number on the scale."""
    if value in ("", None):
        return None
    try:
        if isinstance(value, (bool, list, dict)):  # JSON true is no rating of 1
            raise TypeError
        fv = float(value)
    except (TypeError, ValueError):
        raise RatingsError(f"{where}: {criterion}={value!r} is not a number") from None
    if not (SCALE[0] <= fv <= SCALE[1]):  # NaN fails this too
        raise RatingsError(f"{where}: {criterion}={value!r} is outside {SCALE[0]}-{SCALE[1]}")
    return fv


def import_ratings(paths: Iterable[str | Path], key_path: str | Path) -> list[dict]:
    """Ratings rows joined with the blind key: {item_id, model, rater, <criterion>: float|None}.

    Empty cells are allowed (not rated); values outside the scale or unknown ids are
    errors naming the file and row, and so are files that hold no ratings at all."""
    key_path = Path(key_path)
    key = _read_key(key_path)
    out = []
    for p in map(Path, paths):
        for n, row in enumerate(_read_rows(p), 2 if p.suffix.lower() != ".json" else 1):
            iid = str(row.get("item_id", "")).strip()
            if iid not in key:
                raise _unknown_id(p, n, iid, key_path)
            rec = {"item_id": iid, "model": key[iid]["model"], "rater": str(row.get("rater") or p.stem)}
            rec.update({c: _rating(row.get(c, ""), f"{p} row {n}", c) for c in CRITERIA})
            out.append(rec)
    if not any(r[c] is not None for r in out for c in CRITERIA):
        raise RatingsError(f"no ratings in {', '.join(map(str, paths)) or 'no files'}: every "
                           f"{'/'.join(CRITERIA)} cell is empty; fill the sheet or the form first")
    return out


def _unknown_id(path: Path, n: int, iid: str, key_path: Path) -> RatingsError:
    """The error for an id the key does not hold, naming the kept key that holds the file's ids."""
    ids = {str(r.get("item_id", "")).strip() for r in _read_rows(path)}
    other = _key_of(ids, key_path)
    where = (f"; these ratings are of an earlier pack, whose key was kept as {other}: pass --key {other}"
             if other else "")
    return RatingsError(f"{path} row {n}: unknown item_id {iid!r} (not in {key_path.name}){where}")


def key_models(key_path: str | Path) -> dict:
    """The models a blind key was exported for (name -> path, step, weights_sha256)."""
    try:
        models = json.loads(Path(key_path).read_text(encoding="utf-8")).get("models")
    except (OSError, ValueError, RecursionError, AttributeError):  # (not UTF-8 is a ValueError)
        return {}
    return models if isinstance(models, dict) else {}


def mean_ci(values: Sequence[float], method: str = "bootstrap", confidence: float = 0.95,
            n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean with a confidence interval: percentile bootstrap or Student t."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "low": None, "high": None}
    m = sum(values) / n
    if n == 1:
        return {"n": 1, "mean": m, "low": None, "high": None}
    alpha = 1 - confidence
    if method == "t":
        sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
        try:
            from scipy.stats import t as _t

            q = float(_t.ppf(1 - alpha / 2, n - 1))
        except ImportError:  # normal approximation; fine for the n of a rating study
            from statistics import NormalDist

            q = NormalDist().inv_cdf(1 - alpha / 2)
        half = q * sd / math.sqrt(n)
        return {"n": n, "mean": m, "low": m - half, "high": m + half}
    if method != "bootstrap":
        raise ValueError(f"method must be 'bootstrap' or 't', got {method!r}")
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(n_boot))
    lo = means[int(alpha / 2 * n_boot)]
    hi = means[min(n_boot - 1, int((1 - alpha / 2) * n_boot))]
    return {"n": n, "mean": m, "low": lo, "high": hi}


def aggregate(rows: Sequence[Mapping], method: str = "bootstrap", confidence: float = 0.95,
              n_boot: int = 2000, seed: int = 0) -> dict:
    """{model: {criterion: {n, mean, low, high}}} over all raters' ratings."""
    models = sorted({r["model"] for r in rows})
    return {m: {c: mean_ci([r[c] for r in rows if r["model"] == m and r.get(c) is not None],
                           method, confidence, n_boot, seed)
                for c in CRITERIA}
            for m in models}
