"""The model interface: load a londonlm model, encode a prompt, sample with the project's one
set of defaults, stream. Used by the CLI, the server, evaluation, the pipeline's samples,
publishing's verification and the model card.

- :mod:`.settings`: :class:`GenerationSettings` (its field defaults are THE sampling defaults),
  validation, and conversion to/from ``generation_config.json`` / ``GenerationConfig``.
- :mod:`.model`: :func:`load_model` (a folder, a spec resolved by :mod:`londonlm.layout`, or a
  cached Hub id) and prompt encoding (:func:`encode_prompt`: text never becomes a control token).
- :mod:`.sampling`: :func:`generate`, :func:`stream` / :class:`TextStream`, :class:`Sample`.

The terminal front end (REPL, printing) lives in :mod:`londonlm.repl`, outside this core.
"""
from .model import (LoadedModel, context_length_of, encode_prompt, encode_text, load_model,
                    new_tokens_for_max_length, normalize_era, pick_device, prompt_length,
                    resolve_model_dir)
from .sampling import Sample, TextStream, fit_to_context, generate, stream
from .settings import (CONFIG_FIELDS, REQUEST_FIELDS, GenerationError, GenerationSettings,
                       defaults_from_generation_config, generation_config_dict, to_generation_config)

__all__ = ["CONFIG_FIELDS", "REQUEST_FIELDS", "GenerationError", "GenerationSettings", "LoadedModel", "Sample", "TextStream",
           "context_length_of", "defaults_from_generation_config", "encode_prompt", "encode_text",
           "fit_to_context", "generate", "generation_config_dict", "load_model",
           "new_tokens_for_max_length", "normalize_era", "pick_device", "prompt_length",
           "resolve_model_dir", "stream", "to_generation_config"]
