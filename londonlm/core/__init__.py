"""The shared core every stage may use, and which uses no stage.

- :mod:`.layout`: where every artifact lives (``Layout``, ``RunLayout``), how a model spec
  resolves, the checkpoint listing.
- :mod:`.checkpoints`: what a checkpoint is (name, step, usable or resumable, the run's best).
  These two spell every run-folder name; no other module does.
- :mod:`.artifacts`: hashes, atomic writes, sidecars, ``StageInputMissing``.
- :mod:`.errors`: ``LondonLMError`` (the base of every user-facing error), ``UsageError``,
  ``run_main`` (one ``error:`` line and exit 2).
- :mod:`.hardware`: device, precision, thread, free-memory and peak-FLOP facts of this machine,
  and the refusal to train on the CPU when torch cannot use the GPUs the machine shows.
- :mod:`.scratch`: ``ScratchTables``, a SQLite file for one job's rows that would not fit in
  memory at scale; ``sqlite_os_error``, the OSError a SQLite failure stands for (a full disk).
- :mod:`.tables`: the cells of the tables written for people (``md_cell`` for Markdown,
  ``sheet_cell`` for a CSV a spreadsheet opens), and ``distinct_tokenizers``, when rows of
  losses per token do not compare.
- :mod:`.processes`: a lock file that names its holder (``hold``), and workers that end with
  their parent (``die_with_parent``).
- :mod:`.lazy`: a package's exports loaded on first use (``lazy_exports``), so that a script
  parses its command line before the heavy code behind them is imported.
- :mod:`.console`: known third-party noise kept off the console, and native (Rust) panics
  made ordinary exceptions (``native_panics``).
- :mod:`.generation_settings`: the project's one set of sampling defaults, which training
  writes into every model folder and the model interface (:mod:`londonlm.generation`) applies.
"""
from .artifacts import (StageInputMissing, atomic_writer, current_or_make, give_open_mode, is_fd_link, is_stream,
                        link_or_copy, naming,
                        now_iso, read_json, read_json_object, read_unchanged, record_field, refuse_foreign_folder, refuse_output_over_inputs, require_input, sha256_file, sidecar_current, sidecar_intact, versions, write_bytes_atomic,
                        write_json_atomic, write_sidecar, write_text_atomic)
from .checkpoints import (BEST, BEST_INFO, WEIGHT_FILES, archives_without_crc, checkpoint_name, checkpoint_problem,
                          checkpoint_step, earlier_run, latest_valid_checkpoint, list_checkpoints, model_step,
                          tensor_files, weight_files, weights_sha256)
from .cli import (OneLineErrors, StageParser, check_ranges, existing_dir, existing_file, fraction, free_text,
                  non_negative_float, non_negative_int, number_in, port, positive_float, positive_int,
                  user_path, utf8_problem, writable_dir, writable_file, year)
from .console import NativePanic, native_panics
from .errors import LondonLMError, UsageError, nearest_existing, os_error_message, run_main, user_error_message
from .generation_settings import (CONFIG_FIELDS, GREEDY_BELOW, MIN_REPETITION_PENALTY, REQUEST_FIELDS, GenerationError, GenerationSettings,
                                  defaults_from_generation_config, generation_config_dict,
                                  to_generation_config)
from .hardware import (GpuUnusable, choose_precision, cpu_has_fast_bf16, cpu_has_native_bf16, device_name, free_memory_bytes,
                       hardware_summary, keep_freed_memory_in_heap, large_blocks_from_the_system, peak_flops,
                       require_usable_gpus, return_freed_memory, usable_cores, use_training_threads)
from .processes import Hold, die_with_parent, flock_holder, folder_lock, hold, holder_pid, lock_folder, make_exclusive
from .scratch import ScratchTables, sqlite_os_error
from .tables import distinct_tokenizers, md_cell, sheet_cell
from .lazy import lazy_exports
from .layout import (CHAT_EVAL, CHAT_INFO, CHAT_REJECTED, CHAT_STATS, CUTOFF_SUFFIX, FINAL, GGUF, LEAKAGE,
                     PIPELINE_SUMMARY, SIDECAR, TENSORBOARD, Layout, ModelNotFound, RunLayout, describe_checkpoints,
                     artifact_of, is_plain_name, model_run_info, plain_name, refuse_file_in_an_artifact,
                     refuse_foreign_run_folder, refuse_artifacts_folder, usable_model)

__all__ = [
    "archives_without_crc", "BEST", "BEST_INFO", "CHAT_EVAL", "CHAT_INFO", "CHAT_REJECTED", "CHAT_STATS", "check_ranges",
    "checkpoint_name", "checkpoint_problem", "checkpoint_step", "choose_precision", "CONFIG_FIELDS",
    "cpu_has_fast_bf16", "cpu_has_native_bf16", "current_or_make", "earlier_run", "CUTOFF_SUFFIX", "defaults_from_generation_config", "describe_checkpoints", "device_name", "die_with_parent",
    "existing_dir", "existing_file", "FINAL", "fraction", "free_text", "free_memory_bytes", "GpuUnusable", "generation_config_dict", "GenerationError",
    "GenerationSettings", "GGUF", "GREEDY_BELOW", "MIN_REPETITION_PENALTY", "give_open_mode", "hardware_summary", "Hold", "hold", "holder_pid", "flock_holder", "folder_lock", "lock_folder", "make_exclusive",
    "keep_freed_memory_in_heap",
    "lazy_exports",
    "large_blocks_from_the_system",
    "is_plain_name", "latest_valid_checkpoint", "Layout", "LEAKAGE", "link_or_copy", "list_checkpoints", "LondonLMError",
    "distinct_tokenizers", "md_cell", "model_run_info", "model_step", "ModelNotFound", "naming", "NativePanic", "native_panics", "non_negative_float", "non_negative_int", "now_iso", "number_in",
    "OneLineErrors", "peak_flops", "PIPELINE_SUMMARY", "plain_name", "port", "positive_float", "positive_int", "read_json", "read_json_object", "read_unchanged", "record_field", "refuse_file_in_an_artifact", "refuse_foreign_folder", "refuse_foreign_run_folder", "refuse_artifacts_folder", "artifact_of",
    "refuse_output_over_inputs",
    "REQUEST_FIELDS", "require_input", "require_usable_gpus", "return_freed_memory", "run_main", "RunLayout", "sha256_file", "SIDECAR",
    "ScratchTables", "sheet_cell", "sidecar_current", "sidecar_intact", "sqlite_os_error", "StageInputMissing", "StageParser", "TENSORBOARD", "to_generation_config",
    "usable_cores", "usable_model", "user_path", "UsageError", "use_training_threads", "utf8_problem", "versions", "WEIGHT_FILES", "tensor_files", "weight_files", "weights_sha256",
    "writable_dir", "atomic_writer", "is_fd_link", "is_stream", "nearest_existing", "os_error_message", "user_error_message", "write_bytes_atomic", "write_json_atomic", "write_sidecar", "write_text_atomic", "year",
]
