"""The model interface: load a londonlm model, encode a prompt, sample with the project's one
set of defaults, stream. Used by the CLI, the server, evaluation, the pipeline's samples,
publishing's verification and the model card.

- :class:`GenerationSettings` (its field defaults are THE sampling defaults), validation, and
  conversion to/from ``generation_config.json`` / ``GenerationConfig``: defined in
  :mod:`londonlm.core.generation_settings`, because training writes those defaults into every
  model folder and training may not import this package; re-exported here.
- :mod:`.model`: :func:`load_model` (a folder, a spec resolved by :mod:`londonlm.core.layout`, or a
  cached Hub id; ``auto`` device and dtype: bf16 weights on a GPU, fp32 on CPU) and prompt
  encoding (:func:`encode_prompt`: text never becomes a control token).
- :mod:`.sampling`: :func:`generate`, :func:`stream` / :class:`TextStream`, :class:`Sample`.
- :mod:`.scoring`: :func:`score_tokens`, per-token log-probabilities (the server's ``logprobs``);
  :func:`continuation_logprobs` and :class:`ContinuationScorer`, continuations scored in batches
  (the OCR repair's judge, ``repair_ocr.py --lm``).

The terminal front end (REPL, printing) lives in :mod:`londonlm.serving.repl`, outside this core.
"""
from ..core import (CONFIG_FIELDS, GREEDY_BELOW, REQUEST_FIELDS, GenerationError, GenerationSettings,
                    defaults_from_generation_config, generation_config_dict, to_generation_config)
from .checks import DamagedModel, check_finite, check_token_ids, check_tokenizer_fits, read_config
from .model import (DTYPES, LoadedModel, ModelChanged, check_model_dir, model_changed, model_stamp, context_length_of, encode_prompt, encode_text, load_model,
                    load_model_tokenizer, load_weights_to_train, pickled_weights_refused,
                    new_tokens_for_max_length, normalize_era, padding_ids, pick_device, pick_dtype, prompt_length,
                    resolve_model_dir)
from .sampling import Sample, TextStream, fit_to_context, generate, sample_seed, stream
from .scoring import (MAX_TOP, ContinuationScorer, TokenScores, continuation_logprobs, fit_pieces, score_tokens,
                      text_pieces)

__all__ = [
    "check_finite", "check_model_dir", "check_token_ids", "check_tokenizer_fits", "DamagedModel", "read_config",
    "MAX_TOP", "CONFIG_FIELDS", "ContinuationScorer", "continuation_logprobs", "context_length_of", "DTYPES", "defaults_from_generation_config", "encode_prompt",
    "encode_text", "fit_to_context", "generate", "generation_config_dict", "GenerationError",
    "GenerationSettings", "GREEDY_BELOW", "load_model", "ModelChanged", "model_changed", "model_stamp", "load_model_tokenizer", "load_weights_to_train", "LoadedModel", "new_tokens_for_max_length", "normalize_era",
    "padding_ids", "pickled_weights_refused", "pick_device", "pick_dtype", "prompt_length", "REQUEST_FIELDS", "resolve_model_dir", "Sample", "sample_seed", "score_tokens",
    "stream", "text_pieces", "TextStream", "to_generation_config", "TokenScores", "fit_pieces",
]
