"""Hostile round 17b, the evaluation's outputs: a path where an output goes that no file can replace
(a folder at report.md, a file at human_eval/) was refused only when written, after the measuring; a
``|`` or line break in a text file's, model's or run's name broke report.md's (and compare_runs'
comparison.md's) tables; a run folder named as a formula was one in comparison.csv; the report's
comparison showed losses per token of models of other tokenizers with no note; an integer flag of
309 digits or more was a traceback."""
from __future__ import annotations

import csv
import os
import shutil

import pytest

from conftest import SAMPLE_TEXTS, evaluation_exit_code
from evaluation.test_hostile_round15_evaluation import one_error_line, write_corpus
from evaluation.test_hostile_round17_evaluation import other_tokenizer_model  # noqa: F401 (a fixture)
from test_hostile_round17_runs import write_run
from training.test_compare_refusals import compare

TEXTS = ["".join(SAMPLE_TEXTS) * 2, "".join(reversed(SAMPLE_TEXTS)) * 2]


def table_cells(line: str) -> list[str]:
    """A Markdown table row's cells as GFM splits them: ``\\`` escapes the next character."""
    cells, cell, i = [], "", 0
    while i < len(line):
        if line[i] == "\\":
            cell, i = cell + line[i:i + 2], i + 2
            continue
        if line[i] == "|":
            cells.append(cell)
            cell = ""
        else:
            cell += line[i]
        i += 1
    return cells[1:]  # the row opens with "|"


def rows_of(lines: list[str], header: str) -> list[list[str]]:
    """The cells of each row of the table whose header line starts with ``header``."""
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    out = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        out.append(table_cells(line))
    return out


@pytest.fixture
def no_loading(monkeypatch):
    """The refusals come before the model loads: loading it means the work has started."""
    from londonlm.evaluation import run as evaluation

    def load(*_a, **_k):
        raise AssertionError("the model was loaded before the request was refused")
    monkeypatch.setattr(evaluation, "load_for_evaluation", load)


@pytest.mark.parametrize("name, kind, mode", [
    ("report.md", "folder", "quick"), ("metrics.json", "folder", "quick"), ("samples.jsonl", "folder", "quick"),
    ("probes_london.png", "pipe", "quick"), ("human_eval", "file", "comprehensive"),
    ("human_eval/blind_key.json", "folder", "comprehensive")])
def test_a_path_no_output_can_replace_is_refused_before_the_model_loads(tmp_path, no_loading, name, kind, mode):
    """A folder where report.md goes was refused only when report.md was written: after the
    measuring (minutes), with samples.jsonl, probe_items.jsonl and the plots already beside it.
    A file at human_eval/ said "cannot make human_eval/ratings_sheet.csv: already there" after the
    whole comprehensive run; a pipe at a plot's path waited 10 s for a reader, then failed."""
    from londonlm.evaluation.run import EvaluationError, EvaluationSettings, run_evaluation

    out = tmp_path / "out"
    obstacle = out / name
    obstacle.parent.mkdir(parents=True)
    {"folder": obstacle.mkdir, "pipe": lambda: os.mkfifo(obstacle),
     "file": lambda: obstacle.write_text("mine")}[kind]()
    with pytest.raises(EvaluationError, match="nothing was written") as e:
        run_evaluation(tmp_path, out, EvaluationSettings(mode=mode, device="cpu"), val_texts=TEXTS)
    assert str(obstacle) in str(e.value)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == \
        sorted({name, *(["human_eval"] if "/" in name else [])})


def test_the_command_refuses_a_folder_where_report_md_goes_in_one_line(tiny_model_dir, tmp_path, capsys, no_loading):
    root = tmp_path / "root"
    write_corpus(root)
    shutil.copytree(tiny_model_dir, root / "09_models" / "checkpoints" / "micro" / "final")
    (tmp_path / "out" / "report.md").mkdir(parents=True)
    assert evaluation_exit_code(["--root", str(root), "--out_dir", str(tmp_path / "out")]) == 2
    one_error_line(capsys.readouterr().err, "report.md", "folder", "nothing was written")


def test_outputs_that_are_files_or_absent_are_let_through(tmp_path):
    """Only what no file can replace is refused: files of an earlier evaluation, a link to a file."""
    from londonlm.evaluation.run import EvaluationSettings, refuse_unwritable_outputs

    out = tmp_path / "out"
    (out / "human_eval").mkdir(parents=True)
    (out / "report.md").write_text("old")
    (tmp_path / "elsewhere.json").write_text("{}")
    (out / "metrics.json").symlink_to(tmp_path / "elsewhere.json")
    refuse_unwritable_outputs(out, EvaluationSettings(mode="comprehensive"), ["london"])
    refuse_unwritable_outputs(tmp_path / "new", EvaluationSettings(), ["london"])


NAMES = ["a|b.txt", "two\nlines.txt", "back\\|slash.txt", "<b>bold</b>.txt"]


def test_a_pipe_or_line_break_in_a_name_stays_in_its_table_cell():
    """``--text_files 'a|b.txt'`` (or a model folder so named, an MC file's category) put a cell
    boundary inside its cell: its row had nine cells under a header of eight, its figures under
    the wrong headings; a line break ended the row mid-way."""
    from londonlm.evaluation import report

    r = {"documents": 1, "tokens": 10, "bytes": 40, "loss": 5.0, "perplexity": 148.4, "bits_per_byte": 2.5}
    lines = report._lm_section({f"file:{n}": r for n in NAMES})
    rows = rows_of(lines, "| text |")
    assert len(rows) == len(NAMES) and all(len(c) == 8 for c in rows), lines
    assert all(c[6].strip() == "2.5000" for c in rows)
    assert "<b>" not in "\n".join(lines)
    compare = [{"name": n, "step": 2, "loss": 5.0, "bits_per_byte": 2.5, "probe_accuracy": 0.5} for n in NAMES]
    rows = rows_of(report._compare_section(compare, {}), "| model |")
    assert len(rows) == len(NAMES) and all(len(c) == 5 and c[3].strip() == "2.5000" for c in rows)
    probes = {"n": 2, "chance": 0.5, "accuracy": {"sum": 1.0, "per_token": 1.0, "per_byte": 1.0},
              "by_category": {n: {"n": 1, "chance": 0.5, "sum": 1.0, "per_token": 1.0, "per_byte": 1.0} for n in NAMES}}
    lines = report._probe_section("x|y\nz", probes, {})
    assert lines[0] == "## Multiple-choice probes: x\\|y z"
    assert all(len(c) == 6 for c in rows_of(lines, "| category |"))


def test_the_report_notes_when_compared_models_have_other_tokenizers(tiny_model_dir, other_tokenizer_model, tmp_path):
    """The comparison table showed the loss per token of a model of near-byte tokens beside the
    evaluated model's, lower for the same text, with no word that losses do not compare across
    tokenizers. Each row now records its tokenizer's hash, and the table says so when they differ."""
    from londonlm.evaluation.run import EvaluationSettings, run_evaluation

    same = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, same)
    settings = EvaluationSettings(compare=(same,), device="cpu", leakage_limit=4, max_eval_tokens=100)
    m = run_evaluation(tiny_model_dir, tmp_path / "one", settings, val_texts=TEXTS, log=lambda *_: None)
    assert len({r["tokenizer_sha256"] for r in m["compare"]}) == 1
    assert "different tokenizers" not in (tmp_path / "one" / "report.md").read_text(encoding="utf-8")
    settings = EvaluationSettings(compare=(other_tokenizer_model,), device="cpu", leakage_limit=4, max_eval_tokens=100)
    m = run_evaluation(tiny_model_dir, tmp_path / "two", settings, val_texts=TEXTS, log=lambda *_: None)
    assert len({r["tokenizer_sha256"] for r in m["compare"]}) == 2
    assert "2 different tokenizers, so their losses (nats per token) are not comparable" in \
        (tmp_path / "two" / "report.md").read_text(encoding="utf-8")


def test_a_tokenizers_hash_is_of_its_ids_not_its_file(tiny_tokenizer_dir, tmp_path):
    """Saved again with other settings (another length, padding side) it is the same tokenizer."""
    from transformers import AutoTokenizer

    from londonlm.tokens import tokenizer_identity_sha256

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    tok.model_max_length, tok.padding_side = 1024, "left"
    tok.save_pretrained(str(tmp_path))
    assert (tmp_path / "tokenizer_config.json").read_bytes() != (tiny_tokenizer_dir / "tokenizer_config.json").read_bytes()
    assert tokenizer_identity_sha256(tmp_path) == tokenizer_identity_sha256(tiny_tokenizer_dir) is not None


FORMULA_RUN = '=HYPERLINK("evil.example","x")'


def test_a_run_named_as_a_formula_is_text_in_comparison_csv_and_a_pipe_stays_in_its_cell(tmp_path, capsys):
    """compare_runs' comparison.csv wrote a run folder named ``=HYPERLINK(...)`` as it was: a live
    link in the spreadsheet that opens the table; a run named ``a|b`` broke comparison.md's row."""
    runs = tmp_path / "root" / "09_models" / "checkpoints"
    runs.mkdir(parents=True)
    for name, loss in ((FORMULA_RUN, 2.0), ("a|b", 3.0), ("-plain", 4.0)):
        write_run(runs, name, [[2, loss]])
    out = tmp_path / "out"
    assert compare("--root", str(runs.parents[1]), "--out_dir", str(out)) == 0
    rows = list(csv.DictReader((out / "comparison.csv").open(encoding="utf-8")))
    assert {r["run"] for r in rows} == {"'" + FORMULA_RUN, "a|b", "'-plain"}
    assert not [v for r in rows for v in r.values() if v[:1] in ("=", "+", "-", "@")]
    lines = (out / "comparison.md").read_text(encoding="utf-8").splitlines()
    header = table_cells(lines[0])
    assert all(len(table_cells(line)) == len(header) for line in lines if line.startswith("|"))


def test_an_integer_flag_of_hundreds_of_digits_is_one_line(capsys):
    """``--max_eval_tokens 10**400`` (any integer flag): ``OverflowError: int too large to convert
    to float`` traceback from the parser's finiteness check."""
    assert evaluation_exit_code(["--max_eval_tokens", str(10**400)]) == 2
    one_error_line(capsys.readouterr().err, "--max_eval_tokens", "at most")
