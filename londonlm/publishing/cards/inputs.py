"""What a model card is made from: the facts publishing gathered about a run (the card's
sections and front matter read them; nothing here renders)."""
from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_PROMPT = "It was a cold morning in Cheapside, and"


@dataclass
class CardInputs:
    """Facts for a model card. Only ``model_name`` and ``model_facts`` are required."""

    model_name: str
    model_facts: dict                      # from the verified folder: shape, parameters, special ids
    repo_id: str | None = None
    license: str = "mit"
    checkpoint: str = "final"              # which folder of the run was published
    run_info: dict | None = None
    trainer_state: dict | None = None
    trainer_state_source: str | None = None  # e.g. "checkpoint-600/trainer_state.json"
    metrics: dict | None = None
    samples: list[dict] = field(default_factory=list)  # {"prompt", "text", "settings"}
    samples_source: str = ""
    corpus: dict | None = None             # londonlm.corpus.manifest.summarize(...)
    corpus_note: str = ""                  # e.g. manifest changed since training
    usage_prompt: str = DEFAULT_PROMPT
    dataset_repo_id: str | None = None    # the corpus published alongside, if any
    leakage: dict | None = None            # the leakage probes on these weights, if run
