"""``06_inference/inference_unified.py``: the arguments and the run of terminal generation.

The script builds the parser here, parses, makes the project :class:`~londonlm.core.layout.Layout`
from ``--root`` and calls :func:`run`; this module never imports ``config.py``."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Literal, Optional

from ..core import GREEDY_BELOW, Layout, OneLineErrors, UsageError, free_text

# Flags whose value is free text: they take the project's ``free_text`` type (valid UTF-8).
TEXT_FLAGS = ("prompt",)


@dataclass
class InferenceArguments:
    model: Optional[str] = field(default=None, metadata={"help": (
        "A run name, final, latest, best, checkpoint-N, RUN/checkpoint-N, a model folder, or a Hub "
        "id already in the local Hugging Face cache (default: the run's final model, else its "
        "latest checkpoint).")})
    run_name: Optional[str] = field(default=None, metadata={
        "help": "Run folder under 09_models/checkpoints/ (default: the preset name)."})
    preset: Optional[str] = field(default=None, metadata={"help": "Preset naming the default run."})
    root: Optional[str] = field(default=None, metadata={
        "help": "Project root (default: $LONDONLM_ROOT or the repository)."})
    prompt: Optional[str] = field(default=None, metadata={
        "help": "Text to continue (default: a sample prompt from config.py)."})
    interactive: bool = field(default=False, metadata={
        "help": "Interactive prompt loop with history and /commands (/help lists them)."})
    num_samples: int = field(default=1, metadata={"help": "Samples per prompt."})
    max_new_tokens: Optional[int] = field(default=None, metadata={"help": "Tokens to generate."})
    max_length: Optional[int] = field(default=None, metadata={
        "help": "Alternative to --max_new_tokens: prompt + generated tokens in total."})
    temperature: Optional[float] = field(default=None, metadata={
        "help": "0 = greedy (so is any below 1e-5: sampling there is the argmax); up to 5."})
    top_p: Optional[float] = field(default=None, metadata={"help": "Nucleus sampling, in (0, 1]."})
    top_k: Optional[int] = field(default=None, metadata={"help": "Top-k sampling (0 = off)."})
    repetition_penalty: Optional[float] = field(default=None, metadata={"help": "1 = off; in [0.001, 10]."})
    no_repeat_ngram_size: Optional[int] = field(default=None, metadata={
        "help": "Never repeat an n-gram of this size (0 = off)."})
    seed: Optional[int] = field(default=None, metadata={
        "help": "Seed for reproducible samples (sample i uses seed + i); default random."})
    stream: bool = field(default=False, metadata={
        "help": "Print tokens as they are generated (--interactive on a terminal always does)."})
    era: Optional[str] = field(default=None, metadata={
        "help": "Condition on a period, e.g. 1660s (needs a tokenizer with era tokens)."})
    allow_control_tokens: bool = field(default=False, metadata={
        "help": "Read special-token strings typed in the prompt (<|endoftext|>, <|1650s|>) as "
                "control tokens; by default they are plain text."})
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata={"help": "Where to run."})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(default="auto", metadata={"help": (
        "The weights' dtype (auto: bfloat16 on a GPU that has it, else float16; float32 on CPU).")})
    chat: bool = field(default=False, metadata={"help": (
        "Talk to a chat model (default: the preset's <run>-chat): a conversation with history, "
        "/year 1790 sets the era, /reset, /help; with --prompt, answer that question once and exit.")})
    year: Optional[int] = field(default=None, metadata={
        "help": "With --chat: the year of the system line (\"Old Bailey, London, 1790.\"), 1674-1913."})

    def __post_init__(self):
        for name in ("num_samples", "max_new_tokens", "max_length"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name} must be >= 1, got {value}")
        if self.max_new_tokens is not None and self.max_length is not None:
            raise UsageError("give --max_new_tokens or --max_length, not both")
        if self.interactive and self.prompt is not None:
            raise UsageError("--prompt and --interactive exclude each other; type prompts in the loop")
        if self.prompt is not None and "\x00" in self.prompt:
            raise UsageError("--prompt contains a NUL character")
        self._check_chat()
        from ..generation import GenerationSettings

        # range checks before the (slow) model load; the library raises the same messages
        GenerationSettings().updated(**self.overrides())

    def _check_chat(self) -> None:
        if not self.chat:
            if self.year is not None:
                raise UsageError("--year sets a chat's era: use it with --chat (or --era for text)")
            return
        for name, bad in (("era", self.era is not None), ("num_samples", self.num_samples != 1),
                          ("max_length", self.max_length is not None),
                          ("no_repeat_ngram_size", self.no_repeat_ngram_size is not None),
                          ("allow_control_tokens", self.allow_control_tokens)):
            if bad:
                raise UsageError(f"--{name} does not apply to --chat" + (" (use --year)" if name == "era" else ""))
        if self.year is not None:
            from ..chat import ChatRequestError, check_year

            try:
                check_year(self.year)
            except ChatRequestError as e:
                raise UsageError(f"--year: {e}") from None

    def chat_settings(self):
        """The chat's sampling: the chat defaults (``ChatSettings``), flags override them."""
        from ..chat import ChatSettings

        changes = {k: getattr(self, k) for k in ("max_new_tokens", "temperature", "top_p", "top_k",
                                                 "repetition_penalty", "seed") if getattr(self, k) is not None}
        if "temperature" in changes:
            changes["do_sample"] = changes["temperature"] >= GREEDY_BELOW
        return ChatSettings(**changes)

    def overrides(self) -> dict:
        from ..generation import REQUEST_FIELDS

        return {k: getattr(self, k) for k in REQUEST_FIELDS}


def build_parser(default_preset: str, prog: str | None = None, description: str | None = None):
    """An ``HfArgumentParser`` over :class:`InferenceArguments`; parse with
    ``parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)``."""
    from transformers import HfArgumentParser

    parser = type("InferenceParser", (OneLineErrors, HfArgumentParser), {})(
        InferenceArguments, prog=prog, description=description, allow_abbrev=False)
    parser.set_defaults(preset=default_preset)
    # HfArgumentParser gives each flag its field's annotation (str) as its type; free text
    # takes the project's free_text type instead, which refuses what argv could not decode
    for action in parser._actions:
        if action.dest in TEXT_FLAGS:
            action.type = free_text
    return parser


def parse(parser, argv) -> InferenceArguments:
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    except UsageError:
        raise
    except (TypeError, ValueError) as e:  # e.g. values left over after the known flags
        raise UsageError(" ".join(str(e).split())) from None
    return args


def run(args: InferenceArguments, layout: Layout, default_prompt: str) -> int:
    """Load the model, then generate once (``--prompt``) or run the REPL (``--interactive``).
    Text goes to stdout, model and timing lines to stderr. A reader of stdout gone (``| head -1``)
    is left to ``run_main``: exit 141 as a shell tool's (this returned 0, as if every sample
    asked for had been written), here and in the chat."""
    from transformers.utils import logging as hf_logging

    from ..generation import load_model, normalize_era
    from .repl import for_terminal, print_generation, run_repl

    _require_streams(args.interactive or (args.chat and args.prompt is None))
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args.chat:
        return run_chat(args, layout)
    layout.check_run_name_used(args.run_name, args.model)
    lm = load_model(args.model, layout=layout, run=args.run_name or args.preset, device=args.device,
                    dtype=args.dtype)
    settings = lm.defaults.updated(**args.overrides())
    settings.era = normalize_era(args.era, lm.eras, lm.era_width)
    print(f"model {lm.model_id} · {lm.n_params:,} parameters · step {lm.step} · {lm.device} · {lm.dtype}",
          file=sys.stderr, flush=True)
    out = for_terminal(sys.stdout)  # the model's control characters shown, not sent to a terminal
    try:
        if args.interactive:
            if sys.stdin.isatty():
                import readline  # noqa: F401  (arrow-key editing and history for input())
            return run_repl(lm, settings, out, stream_tokens=args.stream or sys.stdin.isatty(),
                            max_length=args.max_length, allow_control_tokens=args.allow_control_tokens)
        prompt = args.prompt if args.prompt is not None else default_prompt
        print_generation(lm, prompt, settings, out, info=sys.stderr, stream_tokens=args.stream,
                         max_length=args.max_length, allow_control_tokens=args.allow_control_tokens)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0


def _require_streams(reads_stdin: bool) -> None:
    """One line, before the model loads, when a standard stream the run needs was closed (``>&-``,
    ``<&-``, a service started without them): Python then holds None there, and the first write of
    the text (or read of a prompt) was an AttributeError traceback after the load."""
    if sys.stdout is None:
        raise UsageError("standard output is closed, and the text goes there: redirect it to a file (> out.txt)")
    if reads_stdin and sys.stdin is None:
        raise UsageError("standard input is closed, and the prompts come from there: give --prompt, "
                         "or redirect a file of prompts (< prompts.txt)")


def load_chat_model(args: InferenceArguments, layout: Layout):
    """The chat model (default: the preset's ``<run>-chat``), refused with one line when its
    tokenizer has no chat template."""
    from ..chat import ChatFormatError, ChatIds
    from ..generation import load_model

    layout.check_run_name_used(args.run_name, args.model)
    run = args.run_name or (args.preset if args.model else layout.chat_run_name(args.preset))
    if not (args.model or args.run_name or layout.run(run).dir.is_dir()):
        raise UsageError(f"no chat model at {layout.run(run).dir}: make it with `python 07_finetuning/"
                         f"finetune_chat.py --preset {args.preset}`, or pass --model")
    lm = load_model(args.model, layout=layout, run=run, device=args.device, dtype=args.dtype)
    try:
        if not getattr(lm.tokenizer, "chat_template", None):
            raise ChatFormatError("its tokenizer has no chat template")
        ChatIds.of(lm.tokenizer)
    except ChatFormatError as e:
        raise UsageError(f"--chat needs a chat model, and {lm.model_id} is not one ({str(e).split(':')[0]}); "
                         f"fine-tune one with `python 07_finetuning/finetune_chat.py`, or drop --chat") from None
    return lm


def run_chat(args: InferenceArguments, layout: Layout) -> int:
    """``--chat``: one answer to ``--prompt``, else the chat loop. The answer goes to stdout,
    model and timing lines to stderr."""
    from ..chat import ChatRequestError, chat_cutoff, check_year
    from .repl import ChatSession, for_terminal, run_chat_repl

    lm = load_chat_model(args, layout)
    cutoff = chat_cutoff(lm.path)
    if args.year is not None:
        try:
            check_year(args.year, cutoff)  # (checked before the load against the Proceedings' span)
        except ChatRequestError as e:
            raise UsageError(f"--year: {e}") from None
    session = ChatSession(args.chat_settings(), year=args.year, cutoff=cutoff)
    print(f"chat model {lm.model_id} · {lm.n_params:,} parameters · step {lm.step} · {lm.device}",
          file=sys.stderr, flush=True)
    out = for_terminal(sys.stdout)  # the model's control characters shown, not sent to a terminal
    try:
        if args.prompt is not None:
            try:
                session.ask(lm, args.prompt, out, sys.stderr, stream_tokens=args.stream)
            except ChatRequestError as e:
                raise UsageError(str(e)) from None
            return 0
        if sys.stdin.isatty():
            import readline  # noqa: F401  (arrow-key editing and history for input())
        return run_chat_repl(lm, session, out, stream_tokens=args.stream or sys.stdin.isatty())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
