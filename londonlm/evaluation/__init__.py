"""Evaluation stage: held-out LM metrics, knowledge and leakage probes, continuation quality,
human evaluation export, training curves and a report.

:func:`run_evaluation` (in :mod:`.run`) is the entry point used by ``05_evaluation/run_evaluation.py``
(through :mod:`.cli`) and by the pipeline. :mod:`.model` loads the model under evaluation, says
which weights it is and whether an evaluation folder describes it; :mod:`.metrics` holds the
measures (``lm``, ``probes``, ``generation_quality``, ``leakage``); :mod:`.report` writes what an
evaluation found (metrics.json, report.md, and the "what this model could not know" section the
model card shares).

Modes:

- ``quick`` (<= 2 min on 2 CPU cores for a ~10-30M-parameter model): validation LM metrics
  on at most ``max_eval_tokens`` scored tokens (default 20,000; recorded in metrics.json),
  the bundled probes, 4 greedy continuations, training curves, report.
- ``comprehensive``: the whole validation split (plus EOT-prefixed and era-conditioned
  variants when the tokenizer has era tokens), every ``text_files`` entry, bundled and extra
  multiple-choice files, greedy and sampled continuations of 16 passages, a blind
  human-evaluation pack, and every ``compare`` model on the same measures.

The model folders stay loadable by lm-eval-harness's Hugging Face backend::

    lm_eval --model hf --model_args pretrained=09_models/checkpoints/tiny/final,dtype=float32 \\
        --tasks lambada_openai,hellaswag,arc_easy --device cpu --batch_size 8
"""
from ..core import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "human_eval": ("BROUGHT_SAMPLES", "brought_samples"),
    "metrics.generation_quality": ("distinct_n", "load_wordlist", "repeated_ngram_rate", "words_of"),
    "metrics.leakage": ("LEAKAGE_FACTS", "LEAKAGE_WORDS", "LeakageError", "run_leakage_probes"),
    "metrics.lm": ("evaluate_lm",),
    "metrics.probes": ("ProbeFormatError", "load_mc_jsonl", "score_items"),
    "model": ("METRICS_FILE", "SAMPLES_FILE", "MissingInput", "load_for_evaluation", "load_model",
              "model_identity", "stale_evaluation"),
    "report": ("METRICS_FORMAT_VERSION", "could_not_know_section", "leakage_markdown", "leakage_summary"),
    "run": ("MODES", "QUICK_MAX_EVAL_TOKENS", "EvaluationError", "EvaluationSettings", "leakage_for_model",
            "run_evaluation"),
})
