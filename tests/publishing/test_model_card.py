"""londonlm.publishing.cards: the model card's YAML metadata and model-index, every section the issue asks
for, measured numbers only, a usage snippet that runs and samples with the project's defaults."""
from __future__ import annotations

import contextlib
import io
import json
import math
import re

import pytest

from card_fixtures import ROWS, front_matter
from londonlm.publishing.cards import (CardInputs, fmt_num, model_index_results, read_samples, render_model_card,
                            usage_snippet)
from londonlm.corpus.manifest import summarize

METRICS = {"format_version": 1, "mode": "quick",
           "lm": {"validation": {"loss": 3.25, "perplexity": 25.79, "bits_per_byte": 1.125,
                                 "tokens": 20000, "truncated": True}},
           "probes": {"london": {"n": 40, "chance": 0.27,
                                 "accuracy": {"sum": 0.45, "per_token": 0.5, "per_byte": 0.55},
                                 "items": [{"id": 1}]}}}
RUN_INFO = {"preset": "tiny", "parameters": 4_400_000, "global_step": 500, "max_steps": 500,
            "tokens_seen": 2_048_000, "tokens_per_step": 4096, "batch_size": 32,
            "gradient_accumulation_steps": 1, "learning_rate": 0.002, "precision": "fp32",
            "hardware": {"cpu_cores_physical": 2, "platform": "Linux-x86_64"},
            "train_wall_seconds": 754.2, "tokens_per_second": 2716.0, "final_train_loss": 3.4,
            "final_eval_loss": 3.3, "final_eval_perplexity": 27.1, "seed": 42,
            "cache": {"tokens_train": 1_000_000, "tokens_validation": 50_000, "era_tokens": True}}
FACTS = {"n_layer": 4, "n_head": 4, "n_embd": 256, "n_positions": 128, "vocab_size": 4096,
         "tokenizer_size": 4090, "parameters": 4_400_000, "eos_token_id": 0, "pad_token_id": 1,
         "era_tokens": ["<|1650s|>", "<|1700s|>"], "snippet_max_new_tokens": 20}


def _card(**kw) -> str:
    base = dict(model_name="londonlm-tiny", model_facts=FACTS, repo_id="me/londonlm-tiny",
                run_info=RUN_INFO, metrics=METRICS, corpus=summarize(ROWS),
                samples=[{"prompt": "Up betimes", "text": "Up betimes, and to the office",
                          "settings": "greedy"}],
                trainer_state={"global_step": 500, "max_steps": 500,
                               "log_history": [{"step": 25, "loss": 7.9}, {"step": 500, "loss": 3.4},
                                               {"step": 500, "eval_loss": 3.3}]})
    base.update(kw)
    return render_model_card(CardInputs(**base))


def test_metadata_parses_with_model_index():
    meta = front_matter(_card())
    assert meta["language"] == "en" and meta["license"] == "mit"
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert {"london", "history", "era-conditioning"} <= set(meta["tags"])
    (entry,) = meta["model-index"]
    assert entry["name"] == "londonlm-tiny"
    (res,) = entry["results"]
    assert res["task"]["type"] == "text-generation" and res["dataset"]["split"] == "validation"
    values = {m["type"]: m["value"] for m in res["metrics"]}
    assert values == {"loss": 3.25, "perplexity": 25.79, "bits_per_byte": 1.125, "accuracy": 0.55,
                      "accuracy_sum": 0.45, "accuracy_per_token": 0.5}


def test_card_sections_state_measured_facts():
    card = _card()
    for heading in ("## Model details", "## Training data", "### Sources", "### Period coverage",
                    "## Training procedure", "## Evaluation", "## Sample generations",
                    "## How to use", "## Intended use", "## Limitations and biases",
                    "## Licence", "## Citation"):
        assert heading in card, heading
    data = card[card.index("## Training data"):card.index("## Training procedure")]
    assert "**3 documents**" in data and "1674–1722" in data and "1,000,000 train" in data
    assert "| oldbailey |" in data and "cc-by-4.0" in data and "| 1670s | 1 | 100 |" in data
    assert "| undated | 1 | 10 |" in data
    training = card[card.index("## Training procedure"):card.index("## Evaluation")]
    for fact in ("tiny", "500 of 500", "2,048,000", "CPU only (2 physical cores", "12 min 34 s",
                 "| Final training loss | 3.4 |", "| Final validation loss | 3.3 |",
                 "7.9 at step 25 → 3.4 at step 500"):
        assert fact in training, fact
    evaluation = card[card.index("## Evaluation"):card.index("## Sample generations")]
    assert "| Validation perplexity | 25.79 |" in evaluation
    assert "| Probe accuracy (london, per_byte) | 0.55 |" in evaluation
    assert "20,000 validation tokens scored (capped" in evaluation
    limits = card[card.index("## Limitations and biases"):]
    assert "Period attitudes" in limits and "OCR" in limits and "London and English only" in limits
    assert "@misc{londonlm_tiny_" in card and "huggingface.co/me/londonlm-tiny" in card


def test_card_never_shows_local_paths():
    ri = dict(RUN_INFO, resumed_from="/home/alice/londonlm/09_models/checkpoints/tiny/checkpoint-200",
              parent={"path": "/home/alice/runs/base/final", "init_from": "/home/alice/runs/base/final"})
    st = {"global_step": 500, "max_steps": 500, "best_metric": 3.3,
          "best_model_checkpoint": "/home/alice/londonlm/09_models/checkpoints/tiny/checkpoint-500",
          "log_history": [{"step": 500, "loss": 3.4}]}
    card = _card(run_info=ri, trainer_state=st, trainer_state_source="checkpoint-500/trainer_state.json")
    assert "/home/alice" not in card and "`tiny/checkpoint-500`" in card
    assert "`tiny/checkpoint-200`" in card and "`base/final`" in card


def test_missing_inputs_are_said_not_invented():
    card = _card(run_info=None, metrics=None, corpus=None, trainer_state=None, samples=[])
    assert "model-index" not in front_matter(card)
    assert "training details were not recorded" in card
    assert "No `evaluation/metrics.json` was found" in card
    assert "corpus manifest was not available" in card and "No samples were recorded" in card
    # no evaluation, but the trainer's validation loss is still a measured number
    results = model_index_results(None, RUN_INFO)
    assert [(r.metric_type, r.metric_value) for r in results] == [("loss", 3.3), ("perplexity", 27.1)]
    # non-finite values never reach the model-index
    bad = {"lm": {"validation": {"loss": float("nan"), "perplexity": math.inf}}}
    assert model_index_results(bad, None) == []


def test_usage_snippet_runs_against_a_model_folder(tiny_model_dir):
    code = usage_snippet(str(tiny_model_dir), "It was a cold morning", "<|1650s|>", 5)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, "<snippet>", "exec"), {"__name__": "__snippet__"})
    assert buf.getvalue().startswith("<|1650s|>It was a cold morning")
    # the card carries the same code with the Hub id in place of the folder
    card = _card()
    shown = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert shown == usage_snippet("me/londonlm-tiny", "It was a cold morning in Cheapside, and",
                                  "<|1700s|>", 20)


def test_read_samples_understands_the_evaluation_format(tmp_path):
    p = tmp_path / "samples.jsonl"
    p.write_text("\n".join([
        json.dumps({"kind": "continuation", "mode": "greedy", "prompt": "The prisoner",
                    "reference": "was", "generated": "The prisoner at the bar"}),
        "not json", json.dumps(["a list"]), json.dumps({"prompt": "x"}), "[" * 100_000,
        json.dumps({"prompt": "Up", "generated_text": "Up betimes",
                    "settings": {"temperature": 0.8}})]) + "\n")
    # damaged lines cost themselves alone (were: RecursionError, UnicodeDecodeError tracebacks)
    p.write_bytes(p.read_bytes() + b'{"prompt": "caf\xe9", "generated": "x"}\n')
    rows = read_samples(p)
    assert rows == [{"prompt": "The prisoner", "text": "The prisoner at the bar",
                     "settings": "greedy decoding, evaluation stage"},
                    {"prompt": "Up", "text": "Up betimes", "settings": "temperature=0.8"}]


@pytest.mark.parametrize("value,text", [(1234567, "1,234,567"), (3.25, "3.25"), (0.0001234, "0.0001234"),
                                        (None, "None"), (2.5e7, "2.5e+07")])
def test_fmt_num(value, text):
    assert fmt_num(value) == text


def test_best_loss_names_where_it_was_measured():
    # run_info as train_model writes it: best_step, no best_checkpoint
    card = _card(run_info={**RUN_INFO, "best_eval_loss": 3.2, "best_step": 400})
    assert "| Best validation loss | 3.2 (step 400) |" in card and "None" not in card
    card = _card(run_info={**RUN_INFO, "best_eval_loss": 3.2,
                           "best_checkpoint": "/x/runs/tiny/checkpoint-400"})
    assert "| Best validation loss | 3.2 (`tiny/checkpoint-400`) |" in card


def test_final_weights_from_an_earlier_evaluation_are_named():
    # --load_best_model_at_end (micro's and tiny's default): final/ holds step 400's weights
    card = _card(run_info={**RUN_INFO, "best_eval_loss": 3.2, "best_step": 400, "final_weights_step": 400})
    assert "| Weights published | step 400: the lowest validation loss (training went on to step 500) |" in card
    assert "Weights published" not in _card(run_info={**RUN_INFO, "final_weights_step": 500})
    assert "Weights published" not in _card(run_info={**RUN_INFO, "final_weights_step": 400},
                                            checkpoint="checkpoint-500")


def test_usage_snippet_samples_with_the_project_defaults(monkeypatch):
    import dataclasses

    from londonlm.publishing.cards import model_card
    from londonlm.generation import GenerationSettings

    d = GenerationSettings()
    code = usage_snippet("me/m")
    assert f"temperature={d.temperature}, top_p={d.top_p}, repetition_penalty={d.repetition_penalty}" in code
    other = dataclasses.make_dataclass("Other", [("temperature", float, 0.6), ("top_p", float, 0.9),
                                                 ("repetition_penalty", float, 1.3)])
    monkeypatch.setattr(model_card, "GenerationSettings", other)  # the defaults change in one place
    assert "temperature=0.6, top_p=0.9, repetition_penalty=1.3" in usage_snippet("me/m")


def test_continuation_figures_carry_their_counts_and_the_weights_they_measured():
    """Continuation quality states how many texts each figure is a mean over (4 passages of
    one document are not 16 documents), and the card names the weights that were scored."""
    gen = {"passages": 4, "passages_requested": 4, "documents": 1, "prompt_tokens": 48,
           "continuation_tokens": 32,
           "greedy": {"texts": 4, "rougeL": 0.125, "repeated_3gram_rate": 0.25, "anachronism_rate": 0.0},
           "reference": {"texts": 4, "repeated_3gram_rate": 0.0, "anachronism_rate": 0.0}}
    metrics = dict(METRICS, generation=gen, model={"name": "tiny/final", "weights_sha256": "ab" * 32})
    evaluation = _card(metrics=metrics)
    evaluation = evaluation[evaluation.index("## Evaluation"):evaluation.index("## Sample generations")]
    assert "Continuation quality on 4 held-out passages from 1 validation document" in evaluation
    assert "| Metric | greedy (n=4) | reference (n=4) |" in evaluation
    assert "| ROUGE-L F1 vs the true continuation | 0.125 | – |" in evaluation
    assert f"weights sha256 `{'ab' * 32}`" in evaluation


LEAKAGE = {"cutoff_year": 1750, "rule": "per_byte", "flag": False, "p_value": 0.61, "informative": False,
           "verdict": "no sign of post-cutoff knowledge",
           "facts": {"file": "leakage_facts.jsonl", "n": 280,
                     "before": {"n": 143, "chance": 0.25,
                                "per_byte": {"correct": 40, "accuracy": 40 / 143, "ci95": [0.21, 0.36],
                                             "p_value": 0.2, "above_chance": False},
                                "sum": {"correct": 38, "accuracy": 38 / 143, "ci95": [0.2, 0.34],
                                        "p_value": 0.4, "above_chance": False}},
                     "after": {"n": 137, "chance": 0.25,
                               "per_byte": {"correct": 33, "accuracy": 33 / 137, "ci95": [0.18, 0.32],
                                            "p_value": 0.61, "above_chance": False},
                               "sum": {"correct": 30, "accuracy": 30 / 137, "ci95": [0.16, 0.3],
                                       "p_value": 0.8, "above_chance": False}},
                     "by_category": {}, "by_half_century": {}, "items": []},
           "words": {"file": "leakage_words.jsonl", "n": 0, "before": {"n": 0, "mean": None, "ci95": None},
                     "after": {"n": 0, "mean": None, "ci95": None}, "items": []}}


def test_what_this_model_could_not_know():
    ri = {**RUN_INFO, "corpus_time": {"cutoff_year": 1750, "years": [1598, 1741],
                                      "words_by_decade": {"1590": 270000, "1720": 250000, "1740": 8000}}}
    card = _card(run_info=ri, leakage=LEAKAGE)
    section = card[card.index("## What this model could not know"):]
    assert "**Cutoff: 1750.**" in section and "1598–1741" in section
    assert "| 1590s | 270,000 | ██████████████████████████████ |" in section  # the year histogram
    assert "| 1740s | 8,000 | █ |" in section
    assert "no sign of post-cutoff knowledge" in section and "1750" in section
    # a model trained without a cutoff says so, and that no probe was run
    plain = _card(run_info={**RUN_INFO, "corpus_time": {"cutoff_year": None, "years": [1598, 1891],
                                                        "words_by_decade": {"1890": 10}}})
    assert "trained without a cutoff year" in plain and "No leakage probes were run" in plain


def test_embedding_padding_is_named_only_where_the_saved_model_has_it():
    """Models saved since --pad_vocab have the tokenizer's rows: the card names no padding for
    them; an older save with more rows than the tokenizer still says so."""
    padded = _card()
    assert "4,090 tokens (embedding padded to 4,096 rows) |" in padded
    plain = _card(model_facts={**FACTS, "vocab_size": 4090})
    assert "| Tokenizer | byte-level BPE, 4,090 tokens |" in plain and "padded" not in plain.split("## Training data")[0]
