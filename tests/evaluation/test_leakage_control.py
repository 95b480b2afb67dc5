"""The positive control that proves the leakage probe works: post-cutoff facts planted in a
micro corpus. One collection; a model trained on all of it (the leak) and one trained on its
1750 cutoff view (the planted document is dated 1850, so the view leaves it out). The probe
must score the leaked model above the time-locked one after the cutoff, and flag only it. A
probe that cannot see a planted leak is not a probe."""
import json
import random
import shutil

import pytest

from conftest import micro_texts, train_exit_code
from londonlm.core import Layout
from londonlm.corpus import CollectionOptions, assign_split, build_corpus, cutoff_view, read_manifest
from londonlm.evaluation import LEAKAGE_FACTS, load_for_evaluation, run_leakage_probes
from londonlm.tokens import train_tokenizer_stage

CUTOFF = 1750
PLANTED = 40       # after-cutoff facts written into the planted document


def name_in_split(stem: str, split: str, percent: float) -> str:
    """``stem`` with the first suffix whose document id falls in ``split``."""
    for k in range(1000):
        name = f"{stem}v{k}"
        if assign_split(f"local_{name}", percent) == split:
            return name
    raise AssertionError("no name found")


def late_facts() -> list[dict]:
    facts = [json.loads(line) for line in LEAKAGE_FACTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [f for f in facts if f["year"] > 1800][:PLANTED]


def planted_text(facts: list[dict], lines: int = 15) -> str:
    """Each fact as a sentence (context + true answer); every line holds all of them in a new
    order, so no line repeats (the quality filter drops repeated lines)."""
    rng = random.Random(0)
    sentences = [f"{f['context']}{f['choices'][f['answer']]}." for f in facts]
    out = []
    for _ in range(lines):
        rng.shuffle(sentences)
        out.append(" ".join(sentences))
    return "\n\n".join(out) + "\n"


def train(root, *argv):
    assert train_exit_code(root, "--max_steps", "150", "--logging_steps", "50", "--save_steps", "1000",
                           "--eval_steps", "1000", *argv) == 0


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    root = tmp_path_factory.mktemp("control")
    layout = Layout(root)
    src = root / "src"
    src.mkdir()
    percent = 30.0
    for i, text in enumerate(micro_texts(6, 6000)):  # period prose dated 1720-1745
        split = "validation" if i < 2 else "train"
        (src / f"{name_in_split(f'prose{i}_', split, percent)}_{1720 + 5 * i}.txt").write_text(text, encoding="utf-8")
    facts = late_facts()
    (src / f"{name_in_split('news_', 'train', percent)}_1850.txt").write_text(planted_text(facts), encoding="utf-8")
    quiet = dict(log=lambda *_: None)
    build_corpus(layout.processed_dir, layout.metadata_dir,
                 options=CollectionOptions(validation_percent=percent, **quiet), source_dir=src)
    assert any(r["year"] == 1850 for r in read_manifest(layout.processed_dir)), "the planted document was filtered out"
    view = layout.cutoff_dir(CUTOFF)
    cutoff_view(layout.processed_dir, view, CUTOFF, **quiet)
    tok_args = dict(vocab_size=512, min_frequency=2, era_tokens=True, model_max_length=64, **quiet)
    leaked_tok, locked_tok = layout.tokenizer_dir("bpe"), layout.tokenizer_dir("bpe", CUTOFF)
    train_tokenizer_stage(layout.processed_dir, leaked_tok, **tok_args)
    train_tokenizer_stage(view, locked_tok, **tok_args)
    train(root, "--run_name_dir", "leaked", "--tokenizer_dir", str(leaked_tok))
    train(root, "--run_name_dir", "locked", "--tokenizer_dir", str(locked_tok), "--processed_dir", str(view),
          "--cutoff_year", str(CUTOFF))
    probe_file = root / "probe.jsonl"  # the planted facts, all after the cutoff
    probe_file.write_text("".join(json.dumps(f) + "\n" for f in facts), encoding="utf-8")
    scores = {}
    for name in ("leaked", "locked"):
        lm = load_for_evaluation(layout.run(name).final)
        scores[name] = run_leakage_probes(lm, CUTOFF, facts_path=probe_file)
    yield root, scores
    shutil.rmtree(root, ignore_errors=True)


def after(result):
    return result["facts"]["after"]["per_byte"]


def test_the_cutoff_view_left_the_planted_document_out(control):
    root, _ = control
    info = json.loads((Layout(root).run("locked").run_info).read_text())
    assert info["corpus_time"]["cutoff_year"] == CUTOFF and info["corpus_time"]["years"][1] <= CUTOFF
    leaked = json.loads((Layout(root).run("leaked").run_info).read_text())
    assert leaked["corpus_time"]["years"][1] == 1850


def test_the_probe_scores_the_planted_leak_above_the_time_locked_model(control):
    _, scores = control
    leaked, locked = after(scores["leaked"]), after(scores["locked"])
    print(f"planted-leak control: after-cutoff accuracy leaked {leaked['accuracy']:.3f} "
          f"(p={leaked['p_value']:.2g}) vs time-locked {locked['accuracy']:.3f} (p={locked['p_value']:.2g})")
    assert scores["leaked"]["facts"]["after"]["n"] == PLANTED
    assert leaked["accuracy"] > locked["accuracy"] + 0.2, (leaked, locked)
    # the leak is detected (after-cutoff accuracy significantly above chance) ...
    assert scores["leaked"]["flag"] and leaked["p_value"] < 0.05
    # ... and the time-locked model is not accused of it
    assert not scores["locked"]["flag"], locked
