"""What publishing writes besides the weights: the model card, the dataset card and LICENSE.

- :mod:`.model_card`: :class:`CardInputs`, :func:`render_model_card`, :func:`usage_snippet`.
- :mod:`.sections`: the card's measured sections (data, training, evaluation, samples).
- :mod:`.metrics`: headline numbers and the model-index results.
- :mod:`.dataset_card`: :func:`render_dataset_card`.
- :mod:`.licenses`: :data:`LICENSES`, :func:`license_text`, :func:`dataset_license`.
- :mod:`.samples`: :func:`read_samples` (the evaluation's ``samples.jsonl``).
- :mod:`.format`: numbers, durations, Markdown cells, the corpus tables.

The corpus figures are ``londonlm.corpus.manifest.summarize``'s, the one corpus summary.
"""
from .dataset_card import render_dataset_card
from .format import fmt_num, fmt_seconds
from .licenses import LICENSES, dataset_license, license_text
from .metrics import headline_results, model_index_results
from .model_card import DEFAULT_PROMPT, CardInputs, render_model_card, usage_snippet
from .samples import read_samples

__all__ = ["DEFAULT_PROMPT", "LICENSES", "CardInputs", "dataset_license", "fmt_num", "fmt_seconds",
           "headline_results", "license_text", "model_index_results", "read_samples", "render_dataset_card",
           "render_model_card", "usage_snippet"]
