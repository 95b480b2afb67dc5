"""Any source folder, not only the ones a test thought of: hypothesis fills a folder with a few
files (period prose, the same wrapped in a Gutenberg header or Old Bailey TEI, text cut at any
point, random bytes, other encodings, repeated lines, odd names) and collects it. The collection
either builds a corpus whose manifest and texts agree, or stops with one LondonLMError (nothing
to keep, say); any other exception is a defect."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import micro_texts
from londonlm.core import LondonLMError
from londonlm.corpus import CollectionOptions, build_corpus

# examples per run; LONDONLM_FUZZ_EXAMPLES=300 searches longer (minutes)
EXAMPLES = int(os.environ.get("LONDONLM_FUZZ_EXAMPLES", 25))
PROSE = micro_texts(4, 3000)
GUTENBERG = ("The Project Gutenberg eBook of {title}\n\nTitle: {title}\nAuthor: Daniel Defoe\nRelease date: 1995\n"
             "Language: English\n\n*** START OF THE PROJECT GUTENBERG EBOOK {title} ***\n\n{body}\n\n"
             "*** END OF THE PROJECT GUTENBERG EBOOK {title} ***\n\nSection 1. General Terms of Use\n")
TEI = ('<?xml version="1.0" encoding="UTF-8"?>\n<TEI.2><text><body><div0 type="sessionsPaper" id="{title}">'
       '<interp inst="{title}" type="date" value="{year}0115"/><p>{body}</p>'
       '<div1 type="trialAccount"><p>{body}</p></div1></div0></body></text></TEI.2>\n')

# prose most often, so that many folders get past the filters to the dedup, split and manifest
prose = st.sampled_from(PROSE)
text = st.one_of(prose, prose, prose, st.text(max_size=400),
                 st.builds(lambda p, n: p[:n], st.sampled_from(PROSE), st.integers(0, 3000)),
                 st.builds(lambda line, n: (line + "\n") * n, st.text(min_size=1, max_size=40), st.integers(1, 300)))
title = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=20)


@st.composite
def files(draw) -> tuple[str, bytes]:
    """(name, content) of one source file."""
    body = draw(text)
    kind = draw(st.sampled_from(["plain", "gutenberg", "tei", "bytes", "latin-1", "cut"]))
    year = draw(st.integers(1400, 2100))
    if kind == "gutenberg":
        content = GUTENBERG.format(title=draw(title), body=body).encode("utf-8")
    elif kind == "tei":
        content = TEI.format(title=draw(title).replace('"', ""), year=year, body=body).encode("utf-8")
    elif kind == "bytes":
        content = draw(st.binary(max_size=3000))
    elif kind == "latin-1":
        content = (body + " Æ£ ½ façade").encode("latin-1", errors="replace")
    else:
        content = body.encode("utf-8")
    if kind == "cut":
        content = content[: draw(st.integers(0, len(content)))]
    stem = draw(st.sampled_from(["plague", "oldbailey_proceedings", "diary", "x", "ordinarys_account", "é ü"]))
    suffix = ".xml" if kind == "tei" else draw(st.sampled_from([".txt", ".txt", ".xml", ".TXT"]))
    return f"{stem}_{draw(st.integers(0, 99))}_{year}{suffix}", content


def check_corpus(processed: Path) -> None:
    """What a finished collection promises: each manifest row's text is there, in UTF-8."""
    rows = [json.loads(line) for line in (processed / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows, "a corpus of no documents was written"
    for row in rows:
        assert (processed / row["path"]).read_text(encoding="utf-8"), row


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(folder=st.lists(files(), min_size=1, max_size=4))
def test_any_source_folder_builds_a_corpus_or_says_why_in_one_error(folder):
    with tempfile.TemporaryDirectory() as tmp:
        src, data = Path(tmp) / "src", Path(tmp) / "data"
        src.mkdir()
        for name, content in folder:
            (src / name).write_bytes(content)
        try:
            build_corpus(data / "processed", data / "metadata", source_dir=src,
                         options=CollectionOptions(validation_percent=20, log=lambda *_: None))
        except LondonLMError as e:
            assert "\n" not in str(e).strip() or "rejected" in str(e), str(e)
            return
        check_corpus(data / "processed")
