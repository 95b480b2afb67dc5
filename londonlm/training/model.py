"""The model a run trains: GPT-2's shape with its size, FLOP and memory arithmetic, the model
built fresh or loaded from weights (explicit values in, a ``GPT2LMHeadModel`` out), the speed
settings put on it, and torch's process-wide settings for training on this machine."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core import keep_freed_memory_in_heap, use_training_threads
from .speed.settings import SpeedSettings
from .step.causal_mask import skip_causal_mask_for_full_windows
from .step.fused_loss import enable_fused_loss
from .step.vocab_padding import pad_vocabulary, padded_vocab  # noqa: F401  (padded_vocab: the package's)


@dataclass
class ModelShape:
    n_layer: int
    n_head: int
    n_embd: int
    n_positions: int
    vocab_size: int

    def validate(self) -> None:
        for k in ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size"):
            if getattr(self, k) <= 0:
                raise ValueError(f"{k} must be positive, got {getattr(self, k)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                             f"pick a width that is a multiple of the head count")
        if self.vocab_size >= 65536:
            raise ValueError(f"vocab_size={self.vocab_size} does not fit the uint16 token cache (< 65,536)")

    @property
    def n_params(self) -> int:
        """Parameters of GPT2LMHeadModel with tied input/output embeddings."""
        d, L = self.n_embd, self.n_layer
        emb = self.vocab_size * d + self.n_positions * d
        per_layer = 12 * d * d + 13 * d  # attn qkv+proj, mlp 4d, 2 layernorms, biases
        return emb + L * per_layer + 2 * d

    @property
    def n_params_non_embedding(self) -> int:
        return self.n_params - self.vocab_size * self.n_embd - self.n_positions * self.n_embd

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token: 6N (forward+backward matmuls) + 12·L·H·Q·T attention
        (PaLM appendix B; N excludes embeddings but includes the LM head)."""
        T = seq_len or self.n_positions
        N = self.n_params_non_embedding + self.vocab_size * self.n_embd
        head_dim = self.n_embd // self.n_head
        return 6 * N + 12 * self.n_layer * self.n_head * head_dim * T

    def training_memory(self, batch_size: int, seq_len: int | None = None, *, attention: str = "sdpa",
                        precision: str = "bf16", fused_loss: bool = False, optimizer: str = "adamw",
                        dropout: float = 0.0, shards: int = 1) -> "TrainingMemory":
        """Peak memory of one eager training step, by part. ``attention``: "sdpa" (flash or
        memory-efficient kernels: no T x T scores stored) or "eager"; ``precision``: "bf16"/"fp16"
        autocast over fp32 weights, or "fp32"; ``shards``: FSDP ranks the weight, gradient and
        optimizer state is split over. Checked against measured peaks: tests/training/
        test_modeling.py on CPU, benchmarks/gpu_acceptance.py on a GPU."""
        T, d, L = seq_len or self.n_positions, self.n_embd, self.n_layer
        tokens = batch_size * T
        half = precision in ("bf16", "fp16")
        matrices = self.n_layer * 12 * d * d                 # the blocks' weight matrices
        # fp32 weights and gradients, AdamW's two moments; Muon keeps one momentum per matrix
        moments = 8 * self.n_params - (4 * matrices if optimizer == "muon" else 0)
        state = (8 * self.n_params + moments) / max(1, shards)
        # autocast keeps each matrix's half-precision copy for the backward of its matmul
        copies = 2 * matrices if half else 0
        # saved for backward per token and layer, counted op by op for HF GPT-2: the fp32
        # residual stream twice, the half-precision casts of both layer norms' outputs, q/k/v,
        # the attention output and its merged copy, the MLP's 4d input and GELU output; in fp32
        # the casts vanish and every tensor doubles. Dropout adds a one-byte mask per dropout.
        per_token = (38 if half else 68) * d + (2 * d if dropout else 0)
        activations = L * tokens * per_token
        # eager attention stores its T x T scores and softmax per head (measured ~8 B each, both
        # precisions); SDPA's flash/memory-efficient kernels store none
        scores = 8 * L * tokens * self.n_head * T if attention == "eager" else 0
        # the LM head: the stock loss keeps half logits, their fp32 copy and log-softmax (~10 B
        # per logit, measured in both precisions); the fused loss only its gradient
        logits = tokens * self.vocab_size * ((2 if half else 4) if fused_loss else 10)
        return TrainingMemory(state, copies, activations, scores, logits)

    def memory_estimate_gb(self, batch_size: int, seq_len: int | None = None, **kernels) -> float:
        """:meth:`training_memory` in GB (10^9 bytes)."""
        return self.training_memory(batch_size, seq_len, **kernels).total / 1e9


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes of a training step's peak, by what holds them."""
    state: float          # weights, gradients, optimizer moments (per FSDP shard)
    weight_copies: float  # autocast's half-precision weight copies
    activations: float    # saved for backward, attention scores excepted
    scores: float         # eager attention's T x T scores
    logits: float         # the LM head and loss

    @property
    def total(self) -> float:
        return self.state + self.weight_copies + self.activations + self.scores + self.logits

    def per_sequence(self, batch_size: int) -> float:
        """Bytes each sequence of the micro-batch adds."""
        return (self.activations + self.scores + self.logits) / batch_size


def build_model(shape: ModelShape, bos_token_id: int, eos_token_id: int, pad_token_id: int,
                dropout: float = 0.0, attn_implementation: str = "sdpa", seed: int | None = None):
    """A freshly initialised ``GPT2LMHeadModel`` whose special ids come from the tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    shape.validate()
    cfg = GPT2Config(
        vocab_size=shape.vocab_size, n_positions=shape.n_positions, n_embd=shape.n_embd,
        n_layer=shape.n_layer, n_head=shape.n_head,
        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
        tie_word_embeddings=True,
        # Exact (erf) GELU rather than GPT-2's tanh approximation (the two differ by < 5e-4):
        # PyTorch's CPU erf kernel is far cheaper than its tanh one, measured on 2 cores in bf16
        # (32x128x1024 activations, forward + backward: 1.6 ms vs 6.1 ms; the whole tiny-shape
        # step ~7% faster, BENCHMARKS.md); on GPUs both are one fused element-wise kernel. A
        # standard transformers activation name, so every loader reads it.
        activation_function="gelu",
    )
    cfg._attn_implementation = attn_implementation
    skip_causal_mask_for_full_windows()  # flash attention when it trains compiled (causal_mask.py)
    if seed is not None:
        torch.manual_seed(seed)
    return with_causal_lm_loss(GPT2LMHeadModel(cfg))


# transformers picks a model's loss from its class name, finds none in "GPT2LMHeadModel", and then
# calls its warn-once logger on every forward with labels: under torch.compile a graph break in
# every training step. Naming the loss it falls back to anyway removes the call.
CAUSAL_LM_LOSS = "ForCausalLM"


def with_causal_lm_loss(model):
    """``model`` with its loss named (the causal-LM cross-entropy it computes either way)."""
    model.loss_type = CAUSAL_LM_LOSS
    return model


def without_generation_cache(model):
    """``model`` building no generation cache in its forwards, as the Trainer has it
    (``TrainingArguments.use_cache`` False): a GPT-2 config's default copies every layer's keys
    and values into a cache nothing reads while training. Set on the config once the model is
    built, as the Trainer does: built into the config, it would become the model's
    ``generation_config`` too, and ``generate()`` on the saved model would run without one."""
    model.config.use_cache = False
    return model


def load_weights(path: Path, tokenizer, resize_rows: int | None = None, seed: int = 0):
    """A model from saved weights (a checkpoint, a ``--init_from`` parent) with ``tokenizer``'s
    special ids; its embeddings resized to ``resize_rows`` when given (``--resize_embeddings``),
    the new rows drawn from ``seed``.
    Loaded in float32 whatever dtype its config.json records: a parent saved in bfloat16 was
    loaded so, and AdamW then stepped half-precision master weights (updates under their
    precision lost without a word; mixed precision is the Trainer's ``--bf16``, not the weights')."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    if resize_rows:
        # the new rows are drawn around the old ones' mean (transformers' mean_resizing) from torch's
        # global generator, in whatever state this process had left it: two identical commands
        # trained different models. Drawn from the run's seed, as a fresh model's weights are.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model.resize_token_embeddings(resize_rows)
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.config, k, getattr(tokenizer, k))
    return with_causal_lm_loss(model)


def prepare_for_training(model, settings: SpeedSettings):
    """Every patch a model gets before it trains, in one place, whatever built or loaded it
    (a fresh model, a resumed checkpoint, an ``--init_from`` parent, a chat base): its loss
    named (no per-step warning, a graph break under torch.compile), the attention kernel of
    ``settings``, the causal mask skipped for full windows (:mod:`.step.causal_mask`,
    process-wide), the embedding padded to a multiple of 128 rows when ``settings`` asks for
    it (:mod:`.step.vocab_padding`: the padded rows never predicted, never saved) and the fused
    LM-head loss when it asks for that, and no generation cache (:func:`without_generation_cache`:
    the Trainer's rule made the model's before any Trainer, for the throughput benchmarks that
    step models outside one). The weights and ``save_pretrained`` output stay an ordinary GPT-2
    at the model's own vocabulary size. Returns the model."""
    with_causal_lm_loss(model)
    without_generation_cache(model)
    model.set_attn_implementation(settings.attn_implementation)
    skip_causal_mask_for_full_windows()
    if settings.pad_vocab:
        pad_vocabulary(model)
    if settings.fused_loss:
        enable_fused_loss(model)
    return model


def configure_torch() -> None:
    """CPU: threads from OMP_NUM_THREADS, else the usable physical cores shared among this
    node's ranks (hardware.training_threads), and freed memory kept in the heap; GPU: TF32."""
    import torch

    if not torch.cuda.is_available():
        use_training_threads()
        keep_freed_memory_in_heap()
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
