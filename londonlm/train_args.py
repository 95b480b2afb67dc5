"""Dataclass arguments for the training scripts (parsed with ``HfArgumentParser`` next to
``transformers.TrainingArguments``, so every Trainer flag works too).

Fields left at ``None`` are filled from the chosen preset by the script."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class ModelArguments:
    preset: Optional[str] = field(default=None, metadata={
        "help": "Model/training preset: micro, tiny, slm (GPT-2 Small), regular (GPT-2 Medium)."})
    n_layer: Optional[int] = field(default=None, metadata={"help": "Override the preset's layer count."})
    n_head: Optional[int] = field(default=None, metadata={"help": "Override the preset's head count."})
    n_embd: Optional[int] = field(default=None, metadata={"help": "Override the preset's width."})
    max_length: Optional[int] = field(default=None, metadata={
        "help": "Context length (tokens per training block); overrides the preset."})
    vocab_size: Optional[int] = field(default=None, metadata={
        "help": "Tokenizer vocabulary size; must equal the trained tokenizer's."})
    dropout: Optional[float] = field(default=None, metadata={"help": "Dropout probability."})
    init_from: Optional[str] = field(default=None, metadata={
        "help": "Start a new run from these weights with a fresh optimizer and schedule (continued "
                "pre-training, not resume): a model folder (checkpoint-N, final/, best/, a local HF "
                "model), a run name, or RUN/final|best|latest|checkpoint-N. The shape comes from "
                "the weights; a different tokenizer is refused unless --resize_embeddings. The "
                "parent is recorded in run_info.json."})
    resize_embeddings: bool = field(default=False, metadata={
        "help": "With --init_from: accept a tokenizer that differs from the weights' and resize the "
                "embeddings to it."})
    attn_implementation: str = field(default="auto", metadata={
        "help": "Attention kernel: auto (eager on CPU in bf16, where it measured faster than "
                "PyTorch's CPU flash kernel; sdpa otherwise), sdpa (PyTorch scaled-dot-product / "
                "flash), eager."})
    fused_loss: str = field(default="auto", metadata={
        "help": "Fused LM-head + cross-entropy that never keeps the full logits (auto: on for CPU "
                "training in bf16, where it measured faster; off in CPU fp32, where it did not, and "
                "on GPU until measured there), on, off."})

    def __post_init__(self):
        for k in ("n_layer", "n_head", "n_embd", "max_length", "vocab_size"):
            v = getattr(self, k)
            if v is not None and v <= 0:
                raise ValueError(f"--{k} must be positive, got {v}")
        if self.n_head and self.n_embd and self.n_embd % self.n_head:
            raise ValueError(f"--n_embd {self.n_embd} is not divisible by --n_head {self.n_head}")
        if self.attn_implementation not in ("auto", "sdpa", "eager"):
            raise ValueError(f"--attn_implementation must be auto, sdpa or eager, got "
                             f"{self.attn_implementation!r}")
        if self.fused_loss not in ("auto", "on", "off"):
            raise ValueError(f"--fused_loss must be auto, on or off, got {self.fused_loss!r}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")


@dataclass
class DataArguments:
    run_name_dir: Optional[str] = field(default=None, metadata={
        "help": "Run folder name under 09_models/checkpoints/ (default: --run_name, else the preset)."})
    root: Optional[str] = field(default=None, metadata={
        "help": "Project root holding data/ and 09_models/ (default: $LONDONLM_ROOT or the repo)."})
    tokenizer_dir: Optional[str] = field(default=None, metadata={
        "help": "Tokenizer folder (default: 09_models/tokenizers/london_historical_bpe)."})
    processed_dir: Optional[str] = field(default=None, metadata={
        "help": "Processed corpus folder with manifest.jsonl (default: data/london_historical/processed)."})
    use_pretokenized: bool = field(default=False, metadata={
        "help": "Require a compatible pretokenized cache; fail if it is absent or incompatible."})
    no_pretokenized: bool = field(default=False, metadata={
        "help": "Rebuild the pretokenized cache even if a compatible one exists."})
    verify_cache: bool = field(default=False, metadata={
        "help": "Verify the cache's full sha256 before training (reads every byte)."})
    era_tokens: Optional[bool] = field(default=None, metadata={
        "help": "Prepend each document's era token (e.g. <|1650s|>) in the cache (default: when the "
                "tokenizer has era tokens)."})
    batch_size: Optional[int] = field(default=None, metadata={
        "help": "Per-device batch size (alias of --per_device_train_batch_size)."})
    eval_max_batches: Optional[int] = field(default=None, metadata={
        "help": "Evaluate on at most this many validation batches (0 = the whole split)."})
    fresh: bool = field(default=False, metadata={
        "help": "Start over: move existing checkpoints aside (never deleted) and train from scratch."})
    save_best: bool = field(default=False, metadata={
        "help": "Save a checkpoint whenever the validation loss improves and keep a copy of the "
                "best one in best/ (with best_info.json), beside the last --save_total_limit."})
    early_stopping_patience: int = field(default=0, metadata={
        "help": "Stop after this many evaluations without validation-loss improvement (0 = off)."})
    max_seconds: float = field(default=0.0, metadata={
        "help": "Stop (with a checkpoint) after this much training time (0 = no limit)."})
    stop_after_steps: int = field(default=0, metadata={
        "help": "Stop with a checkpoint once this invocation reaches this global step, keeping the "
                "--max_steps schedule (for preemptible machines and chunked runs; 0 = off)."})
    list_checkpoints: bool = field(default=False, metadata={
        "help": "List this run's checkpoints (step, loss, time, validity) and exit."})

    def __post_init__(self):
        if self.use_pretokenized and self.no_pretokenized:
            raise ValueError("--use_pretokenized and --no_pretokenized contradict each other")
        if self.batch_size is not None and self.batch_size <= 0:
            raise ValueError(f"--batch_size must be positive, got {self.batch_size}")
        if self.max_seconds < 0:
            raise ValueError("--max_seconds must be >= 0")

    @property
    def cache_mode(self) -> str:
        return "require" if self.use_pretokenized else "rebuild" if self.no_pretokenized else "auto"
