"""londonlm.corpus.manifest: a malformed manifest row, or a text the manifest lists that is gone,
is one CorpusError naming the file (and line) and the rebuild, wherever it is read."""
import json
import re

import pytest

from londonlm.corpus.manifest import CorpusError, document_text, iter_manifest, iter_split_texts, read_manifest

GOOD = {"id": "a", "path": "texts/a.txt", "split": "train", "chars": 7, "year": 1666}
FIX = "historical_data_collector.py --overwrite"


def write_manifest(folder, *rows) -> None:
    (folder / "manifest.jsonl").write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("row, problem", [
    ({"id": "x"}, "no 'path'"),
    ({k: v for k, v in GOOD.items() if k != "split"}, "no 'split'"),
    ({**GOOD, "split": "test"}, "'split' is 'test'"),
    ({**GOOD, "id": 3}, "no 'id'"),
    ({**GOOD, "path": ""}, "no 'path'"),
    ({**GOOD, "path": "/etc/passwd"}, "'path' '/etc/passwd' leads outside the corpus folder"),
    ({**GOOD, "path": "texts/../../secret.txt"}, "'path' 'texts/../../secret.txt' leads outside"),
    ({**GOOD, "chars": "abc"}, "'chars' is 'abc'"),
    ({**GOOD, "chars": -1}, "'chars' is -1"),
    ({**GOOD, "chars": True}, "'chars' is True"),
    ({**GOOD, "year": "abc"}, "'year' is 'abc'"),
    ({**GOOD, "year": 1666.5}, "'year' is 1666.5"),
    ("[1, 2]\n", "a JSON list"),
    # once each stage's traceback (ValueError, UnicodeEncodeError) opening, hashing or printing it
    ({**GOOD, "path": "texts/a\x00.txt"}, "'path' 'texts/a\\x00.txt' holds a NUL character"),
    ({**GOOD, "id": "a\ud800"}, "a lone surrogate ('\\ud800') in this row"),
    ({**GOOD, "source": "\udc00"}, "a lone surrogate ('\\udc00') in this row"),
])
def test_a_malformed_row_names_the_manifest_line_and_the_rebuild(tmp_path, row, problem):
    write_manifest(tmp_path, GOOD, "\n", row)
    with pytest.raises(CorpusError, match=rf"manifest.jsonl:3: {re.escape(problem)}.*{FIX}"):
        read_manifest(tmp_path)
    with pytest.raises(CorpusError, match="manifest.jsonl:3"):
        list(iter_manifest(tmp_path, keys=("id",)))  # a reader keeping a few fields checks the whole row


def test_well_formed_rows_pass_and_a_reader_may_require_more(tmp_path):
    lean = {k: v for k, v in GOOD.items() if k not in ("chars", "year")}
    # a pair escaped whole (an emoji written with ensure_ascii) and an escaped backslash are text
    write_manifest(tmp_path, GOOD, {**GOOD, "id": "b", "year": None, "path": "texts/b..c.txt"}, lean,
                   {**GOOD, "id": "\U0001f600", "title": "\\ud800"})
    assert [r["id"] for r in read_manifest(tmp_path)] == ["a", "b", "a", "\U0001f600"]
    with pytest.raises(CorpusError, match="manifest.jsonl:3: no 'chars'"):
        read_manifest(tmp_path, require=("chars",))


def test_a_missing_text_names_itself_and_the_rebuild(tmp_path):
    write_manifest(tmp_path, GOOD)
    gone = tmp_path / "texts" / "a.txt"
    for read in (lambda: list(iter_split_texts(tmp_path, "train")), lambda: document_text(tmp_path, GOOD)):
        with pytest.raises(CorpusError, match=rf"text file missing: {re.escape(str(gone))}.*{FIX}"):
            read()
    gone.parent.mkdir()
    gone.write_bytes(b"\xffnot utf-8")
    with pytest.raises(CorpusError, match=rf"{re.escape(str(gone))} is not UTF-8 text.*{FIX}"):
        document_text(tmp_path, GOOD)
    gone.write_text("A text.")
    assert document_text(tmp_path, GOOD) == "A text."


def test_split_sizes_are_the_texts_bytes_and_documents_of_each_split(tmp_path):
    """The corpus's own sum of its splits (bits per byte's denominator, the token ceiling's
    bound); a text the manifest lists that is gone is one error naming it."""
    import json

    from londonlm.corpus import CorpusError, split_sizes

    (tmp_path / "texts").mkdir()
    rows = [("a", "train", "x" * 10), ("b", "train", "é" * 3), ("c", "validation", "yz")]
    for doc, _, text in rows:
        (tmp_path / "texts" / f"{doc}.txt").write_text(text, encoding="utf-8")
    (tmp_path / "manifest.jsonl").write_text("".join(
        json.dumps({"id": d, "path": f"texts/{d}.txt", "split": s}) + "\n" for d, s, _ in rows))
    assert split_sizes(tmp_path) == {"train": (16, 2), "validation": (2, 1)}
    (tmp_path / "texts" / "c.txt").unlink()
    with pytest.raises(CorpusError, match="c.txt"):
        split_sizes(tmp_path)
