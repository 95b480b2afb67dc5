"""Any file a user hands the evaluation, not only the ones a test thought of: hypothesis writes
multiple-choice JSONL (``--probes``, ``--mc_files``) and rating sheets with their blind key
(``--import_ratings RATINGS --key KEY``) from valid items, the same items with a field
dropped or given another JSON kind, other JSON values, deep nesting, cut lines, random bytes,
other encodings and a spreadsheet's byte-order mark. Each read either gives validated items
(and, for ratings, an aggregate whose means sit on the scale) or stops with one
LondonLMError naming the file; any other exception is a defect. The cases the search found go
through the evaluation script itself, which must exit 0 or print one ``error:`` line and exit 2."""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from londonlm.core import LondonLMError
from londonlm.core.errors import run_main
from londonlm.evaluation.human_eval import CRITERIA, SCALE, aggregate, import_ratings
from londonlm.evaluation.metrics.probes import load_mc_jsonl

# examples per run; LONDONLM_FUZZ_EXAMPLES=500 searches longer
EXAMPLES = int(os.environ.get("LONDONLM_FUZZ_EXAMPLES", 40))
REPO = Path(__file__).resolve().parents[2]
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)
NATIVE = {"id": "p1", "category": "events", "context": "The Great Fire of London began in",
          "choices": ["Pudding Lane", "Fleet Street", "the Strand"], "answer": 0}
MMLU = {"question": "Who wrote the diary of 1666?", "choices": ["Pepys", "Evelyn", "Defoe", "Swift"],
        "answer": "A", "subject": "history"}


@st.composite
def mc_line(draw) -> bytes:
    """One line of a multiple-choice file: an item, an item with one field changed or dropped,
    another JSON value, nesting past any parser's depth, or bytes."""
    kind = draw(st.sampled_from(["item", "item", "changed", "dropped", "value", "deep", "bytes", "blank"]))
    item = dict(draw(st.sampled_from([NATIVE, MMLU])))
    item["id"] = f"i{draw(st.integers(0, 5))}"
    if kind == "changed":
        item[draw(st.sampled_from(sorted(item) + ["choices", "answer"]))] = draw(json_values)
    elif kind == "dropped":
        item.pop(draw(st.sampled_from(sorted(item))))
    if kind == "value":
        return json.dumps(draw(json_values)).encode()
    if kind == "deep":
        n = draw(st.integers(10, 100_000))
        return b"[" * n + b"]" * draw(st.integers(0, n))
    if kind == "bytes":
        return draw(st.binary(max_size=60)).replace(b"\n", b" ")
    if kind == "blank":
        return b"   "
    line = json.dumps(item, ensure_ascii=draw(st.booleans())).encode()
    return line[: draw(st.integers(0, len(line)))] if draw(st.integers(0, 9)) == 0 else line


@given(lines=st.lists(mc_line(), max_size=6), bom=st.booleans())
@FUZZ
def test_any_multiple_choice_file_is_items_or_one_error(lines, bom):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "mc.jsonl"
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines))
        try:
            items = load_mc_jsonl(path)
        except LondonLMError as e:
            assert "\n" not in str(e) and str(path) in str(e)
            return
        for item in items:
            assert 0 <= item.answer < len(item.choices) == len(item.continuations)
            assert all(isinstance(c, str) and c.strip() for c in item.choices)


# --- ratings and their blind key ------------------------------------------------------------

KEY = {"format_version": 1, "criteria": list(CRITERIA), "scale": list(SCALE), "models": {},
       "items": {"a1": {"model": "A", "index": 0}, "b1": {"model": "B", "index": 0}}}
cells = st.one_of(st.sampled_from(["", "1", "3", "5", "4.5", " 2 ", "0", "6", "nan", "inf", "x"]),
                  st.integers(-1, 7), json_values)


@st.composite
def rating_row(draw) -> dict:
    row = {"item_id": draw(st.sampled_from(["a1", "b1", "a1", "zz", " b1 ", ""])), "rater": draw(json_values)}
    for c in CRITERIA:
        if draw(st.integers(0, 5)):
            row[c] = draw(cells)
    return row


@st.composite
def key_file(draw) -> bytes:
    kind = draw(st.sampled_from(["key", "key", "key", "items changed", "value", "bytes"]))
    if kind == "items changed":
        items = dict(KEY["items"])
        items[draw(st.sampled_from(["a1", "b1"]))] = draw(json_values)
        return json.dumps({**KEY, "items": draw(st.sampled_from([items, draw(json_values)]))}).encode()
    if kind == "value":
        return json.dumps(draw(json_values)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=80))
    return json.dumps(KEY).encode()


@st.composite
def ratings_file(draw) -> tuple[str, bytes]:
    rows = draw(st.lists(rating_row(), max_size=5))
    form = draw(st.sampled_from(["csv", "csv-bom", "json", "json-value", "bytes", "latin-1"]))
    if form == "json":
        return ".json", json.dumps(rows).encode()
    if form == "json-value":
        return ".json", json.dumps(draw(json_values)).encode()
    if form == "bytes":
        return draw(st.sampled_from([".csv", ".json"])), draw(st.binary(max_size=80))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["item_id", "rater", *CRITERIA], extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()} for r in rows)
    text = buf.getvalue() + ("Ætat. £5" if form == "latin-1" else "")
    return ".csv", (b"\xef\xbb\xbf" if form == "csv-bom" else b"") + text.encode(
        "latin-1" if form == "latin-1" else "utf-8", errors="replace")


def _import(tmp: Path, key: bytes, sheets: list[tuple[str, bytes]]):
    (tmp / "blind_key.json").write_bytes(key)
    paths = []
    for i, (suffix, content) in enumerate(sheets):
        paths.append(tmp / f"rater{i}{suffix}")
        paths[-1].write_bytes(content)
    return paths


@given(key=key_file(), sheets=st.lists(ratings_file(), min_size=1, max_size=3))
@FUZZ
def test_any_ratings_and_key_are_an_aggregate_or_one_error(key, sheets):
    with tempfile.TemporaryDirectory() as d:
        paths = _import(Path(d), key, sheets)
        try:
            rows = import_ratings(paths, Path(d) / "blind_key.json")
        except LondonLMError as e:
            assert "\n" not in str(e)
            return
        assert rows and all(r["model"] in ("A", "B") and isinstance(r["rater"], str) for r in rows)
        for model, by_criterion in aggregate(rows, n_boot=50).items():
            for stats in by_criterion.values():
                assert stats["mean"] is None or SCALE[0] <= stats["mean"] <= SCALE[1]


SCRIPT_CASES = [  # (key, sheet suffix, sheet, exit code): what the search above found, as the user meets it
    (b"[1, 2]", ".csv", b"item_id,fluency\na1,3\n", 2),
    (json.dumps({**KEY, "items": {"a1": 5}}).encode(), ".csv", b"item_id,fluency\na1,3\n", 2),
    (json.dumps(KEY).encode(), ".json", b"[1]", 2),
    (json.dumps(KEY).encode(), ".csv", "item_id,fluency\na1,3 \u00a3\n".encode("latin-1"), 2),
    (json.dumps(KEY).encode(), ".csv", b"item_id,fluency\na1,\n", 2),
    (json.dumps(KEY).encode(), ".csv", b"\xef\xbb\xbfitem_id,fluency\na1,3\nb1,2\n", 0),
]


@pytest.mark.parametrize("key,suffix,sheet,code", SCRIPT_CASES)
def test_the_script_exits_0_or_says_one_line(tmp_path, capsys, key, suffix, sheet, code):
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_evaluation_fuzz", REPO / "05_evaluation" / "run_evaluation.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    paths = _import(tmp_path, key, [(suffix, sheet)])
    with pytest.raises(SystemExit) as done:
        run_main(script.main, ["--import_ratings", *map(str, paths), "--key", str(tmp_path / "blind_key.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == code, err
    assert code == 0 or (len(err) == 1 and err[0].startswith("error:")), err
    assert (tmp_path / "human_eval_results.json").exists() == (code == 0)
