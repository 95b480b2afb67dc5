"""Stage 03 and the token cache: the byte-level BPE tokenizer with era tokens, the stage that
trains it (``03_tokenizer/``), and the uint16 memmap token cache training reads.

- :mod:`.tokenizer`: training, loading, era tokens, ``plain_backend`` (text never becomes a
  control token), ``split_exact`` (long text in pieces that encode like the whole),
  ``tokenizer_identity`` (what decides token ids: a resume's check, the evaluation's comparison).
- :mod:`.stage`: :func:`train_tokenizer_stage` (skip when current, sidecar written last), and
  the refusals that keep the tokenizer scripts from writing over their own inputs.
- :mod:`.cache`: ``train.bin``/``val.bin`` built from the manifest, checked on load.
- :mod:`.chunks`: the per-chunk CRC-32 that the cache's reader verifies on first use.
- :mod:`.counts`: tokens per split, source and decade (``02_data_collection/count_tokens.py``).
"""
from .cache import (cached_split_tokens, ensure_cache, load_checked_tokens, read_metadata, refuse_unfinished_build,
                    share_built_cache, split_token_ceiling)
from .stage import train_tokenizer_stage
from .tokenizer import (EOT, ERA_WIDTH, TOKENIZER_FILES, era_token, era_token_for, era_tokens_of, era_width_of,
                        load_tokenizer, plain_backend, require_whole_save, same_tokenizer, split_exact,
                        tokenizer_file_problem,
                        tokenizer_identity, tokenizer_identity_sha256)

__all__ = [
    "cached_split_tokens", "ensure_cache", "EOT", "ERA_WIDTH", "era_token", "era_token_for", "era_tokens_of",
    "era_width_of", "load_checked_tokens", "load_tokenizer",
    "plain_backend", "read_metadata", "refuse_unfinished_build", "require_whole_save", "same_tokenizer", "share_built_cache", "split_exact", "split_token_ceiling", "TOKENIZER_FILES", "tokenizer_file_problem",
    "tokenizer_identity", "tokenizer_identity_sha256",
    "train_tokenizer_stage",
]
