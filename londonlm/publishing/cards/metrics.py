"""The measured headline numbers of a model: rows of the card's Evaluation section and the
``model-index`` results in its YAML metadata. Only numbers that were measured: a missing or
non-finite value is left out, never filled in."""
from __future__ import annotations

from .format import finite, lookup

# Metrics given their own rows (and model-index entries) when the evaluation wrote them.
# Paths follow londonlm.evaluation.run_evaluation: ``lm.validation.*`` and ``probes.<set>.*``.
HEADLINE_METRICS: tuple[tuple[str, str, str], ...] = (
    # (dotted key in metrics.json, model-index metric type, human name)
    ("lm.validation.loss", "loss", "Validation loss (nats/token)"),
    ("lm.validation.perplexity", "perplexity", "Validation perplexity"),
    ("lm.validation.bits_per_byte", "bits_per_byte", "Validation bits per byte"),
)
PROBE_RULE = "per_byte"  # the choice rule the evaluation report leads with


def headline_results(metrics: dict | None) -> list[tuple[str, float, str]]:
    """(model-index metric type, value, human name) for every measured headline number:
    held-out loss / perplexity / bits per byte, and each probe set's accuracy per rule."""
    out: list[tuple[str, float, str]] = []
    for key, mtype, name in HEADLINE_METRICS:
        v = lookup(metrics or {}, key)
        if finite(v):
            out.append((mtype, float(v), name))
    probes = (metrics or {}).get("probes")
    for set_name, res in (probes.items() if isinstance(probes, dict) else ()):
        acc = res.get("accuracy") if isinstance(res, dict) else None
        if not isinstance(acc, dict):
            continue
        rules = sorted(acc, key=lambda r: (r != PROBE_RULE, r))
        for rule in rules:
            if finite(acc[rule]):
                out.append((f"accuracy_{rule}" if rule != PROBE_RULE else "accuracy",
                            float(acc[rule]), f"Probe accuracy ({set_name}, {rule})"))
        if finite(res.get("chance")):
            out.append(("accuracy_chance", float(res["chance"]), f"Probe chance level ({set_name})"))
    return out


def model_index_results(metrics: dict | None, run_info: dict | None) -> list:
    """``EvalResult`` entries for the measured headline metrics; falls back to the trainer's
    own validation loss when no evaluation was run (still a measured number)."""
    from huggingface_hub import EvalResult

    def result(mtype: str, value: float, name: str, source: str) -> EvalResult:
        # no source_name: the Hub requires a source_url with it, and there is none to give
        return EvalResult(task_type="text-generation", task_name="Text Generation",
                          dataset_type="london_historical",
                          dataset_name="London historical corpus (held-out validation split)",
                          dataset_split="validation", metric_type=mtype,
                          metric_value=round(float(value), 6), metric_name=f"{name} [{source}]")

    out = [result(t, v, n, "londonlm evaluation") for t, v, n in headline_results(metrics)
           if t != "accuracy_chance"]
    if not out and run_info:
        for key, mtype, name in (("final_eval_loss", "loss", "Validation loss (trainer)"),
                                 ("final_eval_perplexity", "perplexity", "Validation perplexity (trainer)")):
            if finite(run_info.get(key)):
                out.append(result(mtype, run_info[key], name, "londonlm training"))
    return out
