"""Hostile round 15, evaluation: a text to score that is one token scored nothing and said "-"
with exit 0; an input the evaluation writes over (``--text_files out/report.md``) was replaced by
the report. Each is one `error:` line, exit 2, before any measuring."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import SAMPLE_TEXTS, evaluation_exit_code


def write_corpus(root: Path) -> Path:
    """A processed corpus of four documents (two held out) under ``root``."""
    proc = root / "data" / "london_historical" / "processed"
    (proc / "texts").mkdir(parents=True)
    rows = []
    for i in range(4):
        text = "".join(SAMPLE_TEXTS) * 2
        (proc / "texts" / f"doc{i}.txt").write_text(text, encoding="utf-8")
        rows.append({"id": f"doc{i}", "source": "sample", "source_kind": "sample", "title": f"doc{i}",
                     "author": "", "year": 1650, "license": "pd", "sha256": "", "chars": len(text),
                     "words": len(text.split()), "split": "validation" if i % 2 else "train",
                     "path": f"texts/doc{i}.txt"})
    (proc / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return proc


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir):
    """A project root with a small processed corpus and a run whose final/ is the tiny model."""
    root = tmp_path_factory.mktemp("r15eval")
    write_corpus(root)
    shutil.copytree(tiny_model_dir, root / "09_models" / "checkpoints" / "micro" / "final")
    return root


def one_error_line(err: str, *words) -> None:
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("error:") and err.count("error:") == 1 and "Traceback" not in err, err
    assert all(w in last for w in words), err


@pytest.fixture
def no_measuring(monkeypatch):
    """The refusals come before any measuring: scoring a text means the work has started."""
    from londonlm.evaluation import run as evaluation

    def score(*_a, **_k):
        raise AssertionError("the model was measured before the request was refused")
    monkeypatch.setattr(evaluation, "evaluate_lm", score)


@pytest.mark.parametrize("text", ["a", "London", " the"])
def test_a_text_file_of_one_token_is_refused_before_measuring(project, tmp_path, capsys, no_measuring, text):
    """Its first token is not predicted: it scored 0 tokens, its row "-", exit 0."""
    f = tmp_path / "short.txt"
    f.write_text(text, encoding="utf-8")
    code = evaluation_exit_code(["--root", str(project), "--text_files", str(f), "--out_dir", str(tmp_path / "o")])
    assert code == 2
    one_error_line(capsys.readouterr().err, str(f), "one token", "nothing would be scored")
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_a_text_of_two_tokens_is_let_through(tiny_model_dir, tmp_path):
    """The refusal is the one-token text's only (two tokens score one), a long text's too."""
    from transformers import AutoTokenizer

    from londonlm.evaluation.run import scorable_text_file

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    for text in ("London town", "".join(SAMPLE_TEXTS) * 40):
        f = tmp_path / "t.txt"
        f.write_text(text, encoding="utf-8")
        assert scorable_text_file(tok, f) == text


@pytest.mark.parametrize("flag, name", [("--text_files", "report.md"), ("--text_files", "samples.jsonl"),
                                        ("--probes", "probe_items.jsonl"), ("--text_files", "human_eval/ratings_sheet.csv"),
                                        ("--trainer_state", "metrics.json")])
def test_an_input_the_evaluation_writes_over_is_refused(project, tmp_path, capsys, no_measuring, flag, name):
    """``--text_files out/report.md --out_dir out`` was scored, then replaced by the report:
    the user's text lost, exit 0. Through a symlink to the folder too."""
    out = tmp_path / "out"
    f = out / name
    f.parent.mkdir(parents=True)
    body = json.dumps({"log_history": []}) if name == "metrics.json" else "".join(SAMPLE_TEXTS)
    if flag == "--probes":
        body = json.dumps({"question": "q", "choices": ["a", "b"], "answer": 0, "category": "c"}) + "\n"
    f.write_text(body, encoding="utf-8")
    (tmp_path / "link").symlink_to(out)
    for where in (out, tmp_path / "link"):
        code = evaluation_exit_code(["--root", str(project), flag, str(f), "--out_dir", str(where)])
        assert code == 2
        one_error_line(capsys.readouterr().err, "is read by this evaluation", "nothing was written")
        assert f.read_text(encoding="utf-8") == body
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == \
            sorted({name, *(["human_eval"] if "/" in name else [])})
