"""The dataset card (README.md) of the corpus published as a Hub dataset repo."""
from __future__ import annotations

from ...corpus import SPLITS
from .format import decade_table, source_table, split_count, year_span
from .licenses import dataset_license

PARQUET_DIR = "data"


def split_file(split: str) -> str:
    """Where a split's ``datasets`` table lives in the dataset repo."""
    return f"{PARQUET_DIR}/{split}.parquet"


def corpus_splits(corpus: dict) -> list[str]:
    """The splits that hold documents, in train, validation order."""
    return [s for s in SPLITS if split_count(corpus, s)]


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def time_lock_lines(corpus_time: dict | None) -> list[str]:
    """The dataset's cutoff (if any) and how each document was dated."""
    if not corpus_time:
        return []
    cutoff, years = corpus_time.get("cutoff_year"), corpus_time.get("years") or [None, None]
    lines = ["## Dates and cutoff", ""]
    if cutoff is not None:
        lines.append(f"**Cutoff: {cutoff}.** Every document's date evidence is {cutoff} or earlier "
                     f"(its latest dated trace decides), and undated documents were left out, so a "
                     f"model trained on this dataset saw no text written after {cutoff}.")
    else:
        lines.append("This corpus has no cutoff year: undated documents may be included.")
    lines += ["", f"Document years: {years[0]}–{years[1]}. Each manifest row records its `year`, the "
                  "`year_rule` that decided it and all `date_evidence` found (registry year, TEI "
                  "session date, MANIFEST.tsv, file name).", ""]
    return lines


def render_dataset_card(corpus: dict, repo_id: str, pretty_name: str = "London historical texts",
                        model_repo_id: str | None = None, corpus_time: dict | None = None) -> str:
    from huggingface_hub import DatasetCardData

    lic = dataset_license(corpus)
    data = DatasetCardData(
        language=["en"], license=lic, pretty_name=pretty_name,
        task_categories=["text-generation"], size_categories=[_size_category(corpus["documents"])],
        tags=["history", "historical-english", "london", "londonlm"],
        configs=[{"config_name": "default",
                  "data_files": [{"split": s, "path": split_file(s)} for s in corpus_splits(corpus)]}],
    )
    span = year_span(corpus["years"])
    parts = ["---", data.to_yaml().rstrip("\n"), "---", "", f"# {pretty_name}", "",
             f"Historical London texts ({span}) cleaned by the londonlm pipeline: "
             f"{corpus['documents']:,} documents, {corpus['words']:,} words, "
             f"{corpus['chars']:,} characters ({split_count(corpus, 'train'):,} train / "
             f"{split_count(corpus, 'validation'):,} validation).", ""]
    if model_repo_id:
        parts += [f"Used to train [{model_repo_id}](https://huggingface.co/{model_repo_id}).", ""]
    parts += ["## Files", "",
              f"- `{split_file('train')}`, `{split_file('validation')}`: one row per document "
              "with its `text` and the manifest's columns, what `load_dataset` reads.",
              "- `manifest.jsonl`: one JSON object per document: `id`, `source`, `source_kind`, "
              "`title`, `author`, `year` (with `year_rule` and `date_evidence`), `decade`, `license`, `url`, `sha256` (of the text), "
              "`chars`, `words`, `split` (train/validation, from a hash of the id), `path`, "
              "`london`.",
              "- `texts/<id>.txt`: the cleaned UTF-8 text of each document (`path` in the "
              "manifest), byte for byte the file whose `sha256` the manifest records.", "",
              "```python",
              "from datasets import load_dataset",
              "",
              f"corpus = load_dataset({repo_id!r})",
              "print(corpus[\"train\"][0][\"title\"], corpus[\"train\"][0][\"text\"][:200])",
              "```", "",
              "## Sources and licences", ""] + source_table(corpus) + [""]
    if lic == "other":
        parts += ["The sources carry different licences (see the table); check each source's "
                  "terms before redistribution.", ""]
    parts += ["## Period coverage", ""] + decade_table(corpus) + [""] + time_lock_lines(corpus_time)
    parts += ["## Processing", "",
              "Texts were decoded to UTF-8, cleaned of markup and boilerplate (e.g. Project "
              "Gutenberg headers), de-duplicated and filtered to the 1500–1900 period. Historical "
              "spelling is kept; OCR errors were not corrected.", "",
              "## Limitations and biases", "",
              "The texts reflect the attitudes of their time (racism, colonialism, misogyny, class "
              "and religious prejudice), contain OCR and transcription noise, and cover English "
              "and London only; the voices of people who did not write or were not recorded are "
              "missing.", ""]
    return "\n".join(parts)
