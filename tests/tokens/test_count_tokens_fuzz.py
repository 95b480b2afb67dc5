"""The token count (``02_data_collection/count_tokens.py``) past its argument parsing:
hypothesis draws flags from the script's own parser (:mod:`flags_fuzz`) together with a
processed corpus it writes itself (texts empty, not UTF-8, with a byte-order mark, NULs,
control-token strings, one huge line, or missing; manifest rows whose fields are of another
kind or shape, lines cut, not UTF-8, nested past any parser, blank; the manifest or the texts
folder gone), a damaged tokenizer folder (files missing, cut, not JSON, JSON of another shape,
fields changed, two tokens on one id, a tokenizer of another kind), an ``--output`` that
cannot take the report (a folder, a name ending in a slash, a path under a file, /dev/full,
an input file or folder) and a file system that refuses writes past a drawn size. Each run
exits 0 with a JSON report whose counts are non-negative whole numbers that add up per split,
source and decade to the totals (and the totals to the corpus as written), or exits 2 with one
``error:`` line ending stderr and every file exactly as it was (a previous report kept, no
temporary file); never a traceback, another code or a hang.

The runs are in this process (:func:`script_fuzz.run_in_process`, ~20 ms a run), in a
temporary working folder, so a drawn relative path lands there and never in the repository.
The cases the net found follow as plain tests."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import REPO, SAMPLE_TEXTS, tree_digest
from flags_fuzz import drawn_argv, flag_strategy, script_actions
from script_fuzz import (ODD, changed_files, damage_folder, file_damages, json_values, one_error_line, outcome,
                         run_in_process, tokenizer_damages)

# examples per run (~15 ms each); LONDONLM_FUZZ_EXAMPLES=5000 searches longer (~1.5 min)
EXAMPLES = int(os.environ.get("LONDONLM_FUZZ_EXAMPLES", 500))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
SCRIPT = REPO / "02_data_collection" / "count_tokens.py"
# the net sets the project root itself, and draws --output with the damages below
SKIP = {"root", "output"}
TOKENIZER = "london_historical_bpe"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")
SPLITS = ("train", "validation")
COUNTS = ("documents", "tokens", "chars", "bytes")
PREVIOUS = b'{"documents": 1, "note": "the report of an earlier count"}\n'


# ---------------------------------------------------------------- the corpus, drawn as plain data

TEXT_BYTES = st.one_of(
    st.sampled_from(SAMPLE_TEXTS).map(str.encode),
    # (a lone surrogate makes bytes that are no UTF-8)
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b"\xef\xbb\xbfUp betimes, and to the Office", "café".encode("latin-1"), b"\xff\xfe\x00a",
                     b"a\x00b", b"<|endoftext|> <|1650s|> <|pad|> plain text", b"a\r\nb\rc\x85d\u2028",
                     ("Thames ran black. " * 20_000).encode(), b"a" * 100_000]))
documents = st.lists(st.tuples(
    st.sampled_from(["train", "train", "validation"]),
    st.sampled_from(["local", "oldbailey", "ü", "", 5, None, ["a"], {"a": 1}, True, 1.5]),   # source
    st.sampled_from([1720, 1650, "1720", None, -10, 1.5, [1], {"d": 1}]),                    # decade
    st.sampled_from([1722, 1655, None, -5]),                                                 # year
    st.one_of(*[TEXT_BYTES] * 4, st.none())), max_size=5)                                  # None: missing
ROW_KEYS = ("id", "path", "split", "chars", "year", "decade", "source", "title")
ROW_VALUES = st.one_of(st.sampled_from(ODD), json_values,
                       st.sampled_from(["../x", "/etc/passwd", "texts/../../x", "texts/", "test", "validation"]))
manifest_damages = st.lists(st.one_of(
    st.tuples(st.just("row_field"), st.integers(0, 4), st.sampled_from(ROW_KEYS), ROW_VALUES),
    st.tuples(st.just("row_drop"), st.integers(0, 4), st.sampled_from(ROW_KEYS)),
    st.tuples(st.just("duplicate"), st.integers(0, 4)),
    st.tuples(st.just("line"), st.integers(0, 5), st.one_of(
        st.sampled_from([b"\xff\xfe", b"   ", b"[" * 100_000, b'{"id": "x"', b"\x00"]),
        json_values.map(lambda v: json.dumps(v).encode()))),
    st.tuples(st.just("cut_last"), st.floats(0, 1)),
    st.tuples(st.just("manifest"), st.one_of(st.sampled_from([None, b""]), st.binary(max_size=30))),
    st.tuples(st.just("texts"), st.sampled_from(["delete", "file"]))), max_size=2)
# half the tokenizers whole, half with one or two damages
tokenizer_folder_damages = st.one_of(st.just([]), st.lists(
    st.one_of(file_damages(TOKENIZER_FILES), tokenizer_damages()), min_size=1, max_size=2))
WRITABLE = ("default", "fresh", "relative", "existing", "dev_null")
OUTPUTS = WRITABLE + ("folder", "slash", "under_file", "dev_full", "empty", "manifest", "text", "tokenizer_json",
                      "processed", "tokenizer_dir", "link_to_input", "link_to_full")
outputs = st.one_of(st.sampled_from(WRITABLE), st.sampled_from(OUTPUTS))


def _rows(docs: list[tuple]) -> list[dict]:
    return [{"id": f"local_d{i}", "path": f"texts/local_d{i}.txt", "split": split, "source": source,
             "decade": decade, "year": year, "chars": len(text.decode("utf-8", "replace")) if text else 0}
            for i, (split, source, decade, year, text) in enumerate(docs)]


def _damage_rows(rows: list[dict], damage: tuple) -> None:
    kind, *args = damage
    if not rows or kind not in ("row_field", "row_drop", "duplicate"):
        return
    row = rows[args[0] % len(rows)]
    if kind == "row_field":
        row[args[1]] = args[2]
    elif kind == "row_drop":
        row.pop(args[1], None)
    else:
        rows.append(dict(row))


def _damage_lines(lines: list[bytes], damage: tuple) -> list[bytes]:
    kind, *args = damage
    if kind == "line":
        lines.insert(args[0] % (len(lines) + 1), args[1])
    elif kind == "cut_last" and lines:
        lines[-1] = lines[-1][:int(len(lines[-1]) * args[0])]
    return lines


def write_corpus(processed: Path, docs: list[tuple], damages: list[tuple]) -> None:
    """texts/ and manifest.jsonl as the collection writes them, then the drawn damages."""
    (processed / "texts").mkdir(parents=True)
    for i, doc in enumerate(docs):
        if doc[4] is not None:
            (processed / "texts" / f"local_d{i}.txt").write_bytes(doc[4])
    rows = _rows(docs)
    for damage in damages:
        _damage_rows(rows, damage)
    lines = [json.dumps(r).encode() for r in rows]
    for damage in damages:
        lines = _damage_lines(lines, damage)
    (processed / "manifest.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    for kind, arg in (d for d in damages if d[0] in ("manifest", "texts")):
        if kind == "manifest" and arg is None:
            (processed / "manifest.jsonl").unlink(missing_ok=True)
        elif kind == "manifest":
            (processed / "manifest.jsonl").write_bytes(arg)
        else:  # (a second such damage finds the first's)
            if (processed / "texts").is_dir():
                shutil.rmtree(processed / "texts")
            (processed / "texts").unlink(missing_ok=True)
            if arg == "file":
                (processed / "texts").write_text("a file where the texts folder was")
    finished(processed)


def finished(processed: Path) -> None:
    """The sidecar the collection writes last, vouching for the corpus as it is now (the damages
    drawn here are to the rows and texts the readers check, not to the collection's record)."""
    from londonlm.core import SIDECAR, write_sidecar
    from londonlm.corpus.manifest import CORPUS_OUTPUTS

    if processed.is_dir():
        write_sidecar(processed / SIDECAR, "corpus", {}, {}, libraries=(), outputs=CORPUS_OUTPUTS)


# ---------------------------------------------------------------- the project, the output, the run

def make_project(tmp: Path, tiny_tokenizer_dir: Path, docs, corpus_damages, tok_damages) -> tuple[Path, Path, Path]:
    """(root, processed corpus, tokenizer folder) under ``tmp``, damaged as drawn."""
    root = tmp / "root"
    processed, tok = root / "data" / "london_historical" / "processed", root / "09_models" / "tokenizers" / TOKENIZER
    write_corpus(processed, docs, corpus_damages)
    shutil.copytree(tiny_tokenizer_dir, tok)
    for damage in tok_damages:
        damage_folder(tok, damage)
    return root, processed, tok


def make_output(kind: str, tmp: Path, root: Path, processed: Path, tok: Path,
                previous: bool) -> tuple[list[str], Path | None]:
    """The ``--output`` words for ``kind`` and the file the report goes in (None: a device, or none)."""
    (tmp / "file.txt").write_text("a file the user keeps")
    texts = sorted((processed / "texts").glob("*.txt")) if (processed / "texts").is_dir() else []
    default = root / "data" / "london_historical" / "metadata" / "token_counts.json"
    target = {"default": default, "empty": default, "fresh": tmp / "out" / "counts.json",
              "relative": tmp / "cwd" / "counts.json", "existing": tmp / "counts.json"}.get(kind)
    words = {"default": None, "empty": "", "relative": "counts.json", "dev_null": "/dev/null",
             "dev_full": "/dev/full", "folder": str(tmp), "slash": f"{tmp / 'new'}/",
             "under_file": str(tmp / "file.txt" / "x.json"), "manifest": str(processed / "manifest.jsonl"),
             "text": str(texts[0] if texts else processed / "texts" / "gone.txt"),
             "tokenizer_json": str(tok / "tokenizer.json"), "processed": str(processed),
             "tokenizer_dir": str(tok)}.get(kind, str(target))
    if kind.startswith("link_to"):  # a link the user made, leading to an input or a full disk
        (tmp / "link.json").symlink_to(processed / "manifest.jsonl" if kind == "link_to_input" else "/dev/full")
        words = str(tmp / "link.json")
    if target is not None and (previous or kind == "existing"):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(PREVIOUS)
    return ([] if words is None else ["--output", words]), target


def expected_totals(processed: Path) -> dict[str, int]:
    """documents, chars and bytes of the corpus as the net left it: every non-blank manifest
    line a document (a run that exits 0 found them all valid), its text read whole."""
    totals = {"documents": 0, "chars": 0, "bytes": 0}
    for line in (processed / "manifest.jsonl").read_bytes().splitlines():
        if line.strip():
            text = (processed / json.loads(line)["path"]).read_text(encoding="utf-8")
            totals["documents"] += 1
            totals["chars"] += len(text)
            totals["bytes"] += len(text.encode("utf-8"))
    return totals


def check_counts(counts: dict, totals: dict[str, int]) -> None:
    """Whole non-negative counts; each table adds up to the totals; the totals are the corpus's."""
    for name, table in [("total", counts)] + [(f"{t}/{k}", v) for t in ("by_split", "by_source", "by_decade")
                                              for k, v in counts[t].items()]:
        assert all(type(table[k]) is int and table[k] >= 0 for k in COUNTS), (name, table)
        assert table["tokens"] <= table["bytes"] and (table["tokens"] > 0) == (table["bytes"] > 0), (name, table)
        assert table["bytes_per_token"] == round(table["bytes"] / max(table["tokens"], 1), 4), (name, table)
    for t in ("by_split", "by_source", "by_decade"):
        assert {k: sum(v[k] for v in counts[t].values()) for k in COUNTS} == {k: counts[k] for k in COUNTS}, t
    assert set(counts["by_split"]) <= set(SPLITS), counts["by_split"]
    assert {k: counts[k] for k in totals} == totals, (counts, totals)


# ---------------------------------------------------------------- the net

@pytest.mark.slow  # a net, ~21 s on 2 cores
@given(data=st.data(), docs=documents, corpus_damages=st.one_of(st.just([]), manifest_damages),
       tok_damages=tokenizer_folder_damages, output=outputs, previous=st.booleans(),
       limit=st.one_of(st.none(), st.none(), st.none(), st.integers(0, 4000)))
@FUZZ
def test_any_flags_corpus_and_tokenizer_count_whole_or_one_line(data, docs, corpus_damages, tok_damages, output,
                                                                previous, limit, tiny_tokenizer_dir):
    # half the runs without flags: the script's three (--tokenizer, --name, --processed_dir)
    # name inputs, which a drawn value almost always misses, and a few examples cover them all
    flags = data.draw(st.one_of(st.just([]), st.lists(flag_strategy(script_actions(SCRIPT, SKIP)), min_size=1,
                                                      max_size=2, unique_by=lambda fv: fv[0])), label="flags")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "cwd").mkdir()
        root, processed, tok = make_project(tmp, tiny_tokenizer_dir, docs, corpus_damages, tok_damages)
        out_words, target = make_output(output, tmp, root, processed, tok, previous)
        argv = ["--root", str(root), *out_words, *drawn_argv(flags)]
        before = tree_digest(tmp)
        code, _, err = run_in_process(SCRIPT, argv, tmp / "cwd", {"LONDONLM_ROOT": str(root)}, limit)
        after = tree_digest(tmp)
        one_error_line(code, err, argv)
        event(outcome(code, err))
        if code == 2:  # refused or failed: every file as it was, no half-written or temporary one
            assert after == before, (argv, changed_files(before, after))
            return
        changed = changed_files(before, after)
        assert changed == ([] if target is None else [str(target.relative_to(tmp))]), (argv, changed)
        if target is not None:
            counts = json.loads(target.read_text(encoding="utf-8"))
            check_counts(counts, expected_totals(tmp / "cwd" / flags_value(flags, "--processed_dir", processed)))


def flags_value(flags: list[tuple[str, list[str]]], name: str, default):
    """The value a drawn flag gave, else ``default`` (an empty value too: the script reads
    ``args.processed_dir or <the root's>``)."""
    words = dict(flags).get(name)
    return words[0] if words and words[0] else default


# ---------------------------------------------------------------- what the net found, as plain cases

PROSE = SAMPLE_TEXTS[0].encode()


def count_once(tmp: Path, tiny_tokenizer_dir: Path, docs: list[tuple], tok_damages=(), limit: int | None = None):
    """The script over a drawn-like project, default output: (code, stderr, the report or None,
    the files before, after)."""
    (tmp / "cwd").mkdir()
    root, _, _ = make_project(tmp, tiny_tokenizer_dir, docs, [], list(tok_damages))
    before = tree_digest(tmp)
    code, _, err = run_in_process(SCRIPT, ["--root", str(root)], tmp / "cwd", {"LONDONLM_ROOT": str(root)}, limit)
    report = root / "data" / "london_historical" / "metadata" / "token_counts.json"
    return code, err, json.loads(report.read_text()) if report.is_file() else None, before, tree_digest(tmp)


@pytest.mark.parametrize("sources", [(5,), (["a"],), (5, "local")], ids=["number", "list", "number_and_text"])
def test_a_source_of_another_kind_is_counted_under_its_text(tiny_tokenizer_dir, tmp_path, sources):
    """Was a traceback: a source 5 wrote the report, then failed printing it (exit 1); ["a"] was
    no table key; 5 beside "local" could not be sorted. Named as the corpus statistics name it."""
    docs = [("train", source, 1720, 1722, PROSE) for source in sources]
    code, err, report, _, _ = count_once(tmp_path, tiny_tokenizer_dir, docs)
    assert code == 0 and "Traceback" not in err, err
    assert sorted(report["by_source"]) == sorted(str(s) for s in sources)
    check_counts(report, {"documents": len(docs), "chars": len(SAMPLE_TEXTS[0]) * len(docs)})


@pytest.mark.parametrize("damage", [("set", "tokenizer_config.json", "added_tokens_decoder", 0),
                                    ("set", "tokenizer_config.json", "tokenizer_class", -1),
                                    ("token_id", "vocab", 0, 458)],
                         ids=["added_tokens_decoder", "tokenizer_class", "two_tokens_one_id"])
def test_a_damaged_tokenizer_is_one_line(tiny_tokenizer_dir, tmp_path, damage):
    """Was a traceback: AttributeError from inside transformers, or the tokenizers library's
    Exception when the private copy of a vocabulary with two tokens on one id was parsed."""
    code, err, report, before, after = count_once(tmp_path, tiny_tokenizer_dir, [("train", "local", 1720, 1722, PROSE)],
                                                  [damage])
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: cannot read the tokenizer in "), err
    assert report is None and after == before


def test_a_report_the_file_system_cannot_hold_is_one_line(tiny_tokenizer_dir, tmp_path):
    """Was a traceback: EFBIG (a file past the file system's size, or `ulimit -f`) was no user error."""
    code, err, report, before, after = count_once(tmp_path, tiny_tokenizer_dir, [("train", "local", 1720, 1722, PROSE)],
                                                  limit=0)
    assert code == 2 and err.count("\n") == 1 and "file too large for its file system" in err, err
    assert report is None and after == before
