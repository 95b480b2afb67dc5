"""Publishing a trained run (and optionally its corpus) to the Hugging Face Hub.

- :mod:`.access`: :class:`HubTarget` (repo, branch, privacy, dry run), repo-id checks, the
  token (``HF_TOKEN`` or the saved login, masked in every message), the endpoint, :class:`PublishError`.
- :mod:`.staging`: the staging folder and what goes in it.
- :mod:`.verify`: offline verification of a staged folder through ``londonlm.generation``.
- :mod:`.facts`: what the run recorded (run_info, metrics, trainer state, corpus summary).
- :mod:`.upload`: the ``huggingface_hub`` upload (another project's repo refused, what an earlier
  upload left that this one replaces deleted), and the commit read back against the staged files.
- :mod:`.hub_http`: the library's HTTP client bounded (a timeout, no hour-long retry waits, the
  token sent to the Hub's own address only) and a failed exchange with the Hub worded as one line.
- :mod:`.publish`: :func:`publish_model`; :mod:`.dataset`: :func:`publish_dataset`.

The cards and LICENSE it writes come from :mod:`londonlm.publishing.cards`.
"""
from ..core import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "access": ("HubTarget", "PublishError", "hub_endpoint", "mask_secret", "resolve_token", "validate_repo_id"),
    "dataset": ("DATASET_COMMIT_MESSAGE", "publish_dataset", "stage_dataset"),
    "publish": ("CardOptions", "PublishResult", "publish_model"),
    "staging": ("describe_files", "list_folder"),
    "upload": ("refuse_another_projects_repo",),
    "verify": ("VerificationReport", "verify_model_folder"),
})
