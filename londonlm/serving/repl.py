"""The terminal front end of the model interface: print samples (streamed or whole), the
interactive prompt loop with ``/commands``, and the period-chat loop (``--chat``). Used by ``06_inference/inference_unified.py``
through :mod:`londonlm.serving.inference_cli`; the core (:mod:`londonlm.generation`) knows nothing of
terminals."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace
from dataclasses import field as dc_field
from typing import TYPE_CHECKING, Callable, TextIO

from ..core import GREEDY_BELOW, UsageError, utf8_problem
from ..generation import (GenerationError, GenerationSettings, LoadedModel, Sample, TextStream, generate,
                          new_tokens_for_max_length, normalize_era, sample_seed)

if TYPE_CHECKING:
    from ..chat import ChatSettings

# The longest line a redirected prompt file may hold: no context a model here reads takes a
# thousandth of it (a prompt past the context is cut to fit anyway).
MAX_LINE_CHARS = 1_000_000
REPL_HELP = """commands:
  /temp 0.7        temperature (0 = greedy)
  /top_p 0.9       nucleus sampling threshold
  /top_k 40        top-k (0 = off)
  /max 200         max new tokens
  /rep 1.2         repetition penalty
  /n 2             samples per prompt
  /seed 42         fixed seed (/seed none for random)
  /era 1660s       condition on an era (/era none to clear)
  /ngram 3         block repeated n-grams (0 = off)
  /settings        show the current settings
  /history         prompts entered so far
  /help            this text
  /quit            leave (Ctrl-D also works)"""

_COMMANDS = {"/temp": ("temperature", float), "/temperature": ("temperature", float),
             "/top_p": ("top_p", float), "/top_k": ("top_k", int), "/max": ("max_new_tokens", int),
             "/max_new_tokens": ("max_new_tokens", int), "/rep": ("repetition_penalty", float),
             "/n": ("num_samples", int), "/seed": ("seed", int), "/era": ("era", str),
             "/ngram": ("no_repeat_ngram_size", int)}

_KIND_NAMES = {int: "a whole number", float: "a number", str: "a value"}


def apply_command(settings: GenerationSettings, line: str, eras: list[str], era_width: int
                  ) -> tuple[GenerationSettings, str]:
    """Apply one REPL ``/command value`` line (``eras``: the model's era tokens, each of
    ``era_width`` years); returns (new settings, message to show).
    Raises GenerationError for unknown commands or bad values (settings unchanged)."""
    parts = line.strip().split(maxsplit=1)
    cmd, arg = parts[0].lower(), (parts[1].strip() if len(parts) > 1 else "")
    if cmd in ("/help", "/?"):
        return settings, REPL_HELP
    if cmd == "/settings":
        return settings, settings.describe()
    if cmd not in _COMMANDS:
        raise GenerationError(f"unknown command {cmd}; type /help for the list")
    name, kind = _COMMANDS[cmd]
    if not arg:
        return settings, f"{name} = {getattr(settings, name)}"
    if name == "era":
        value = normalize_era(arg, eras, era_width)
    elif name == "seed" and arg.lower() == "none":
        value = None
    else:
        try:
            value = kind(arg)
        except ValueError:
            raise GenerationError(f"{cmd} needs {_KIND_NAMES[kind]}, got {arg!r}") from None
    new = replace(settings, **{name: value}).validate()
    return new, f"{name} = {value}"


def _stats_line(s: Sample) -> str:
    rate = s.new_tokens / s.seconds if s.seconds > 0 else 0.0
    trimmed = " · prompt truncated to fit the context" if s.truncated_prompt else ""
    return f"[{s.new_tokens} tokens · {rate:.1f} tokens/s · {s.finish_reason} · seed {s.seed}{trimmed}]\n"


def _stream_one(lm, prompt, settings, i, out, allow_control_tokens) -> Sample:
    ts = TextStream(lm, prompt, settings, sample_index=i, allow_control_tokens=allow_control_tokens)
    _write_stream(ts, out)
    return ts.sample


def _write_stream(stream, out: TextIO) -> None:
    """Writes a generation's text pieces as they come; closing the stream on the way out
    (Ctrl-C mid-generation included) stops its generating thread too."""
    try:
        for chunk in stream:
            out.write(chunk)
            out.flush()
    finally:
        stream.close()


def print_generation(lm: LoadedModel, prompt: str, settings: GenerationSettings, out: TextIO, *,
                     info: TextIO | None = None, stream_tokens: bool = False,
                     max_length: int | None = None, allow_control_tokens: bool = False
                     ) -> list[Sample]:
    """Write ``prompt`` + each sample's continuation to ``out`` (with ``stream_tokens``, chunk by
    chunk as generated, flushed); one stats line per sample to ``info``. ``max_length`` (prompt +
    new tokens) overrides ``settings.max_new_tokens`` for this prompt."""
    if max_length is not None:
        settings = replace(settings, max_new_tokens=new_tokens_for_max_length(
            lm, prompt, max_length, settings.era, allow_control_tokens=allow_control_tokens))
    settings.validate()
    n = settings.num_samples
    samples: list[Sample] = []
    # each sample is written as soon as it is generated: many samples show from the first, and
    # Ctrl-C keeps every one finished. Sample i draws the seed generate() would give it.
    for i in range(n):
        if not stream_tokens:
            one = replace(settings, num_samples=1, seed=sample_seed(settings, i))
            got = generate(lm, prompt, one, allow_control_tokens=allow_control_tokens)
            if not got:
                break  # a time limit ended the request early
            samples.append(got[0])
        if n > 1:
            out.write(f"--- sample {i + 1}/{n} ---\n")
        out.write(prompt)
        if stream_tokens:
            samples.append(_stream_one(lm, prompt, settings, i, out, allow_control_tokens))
        else:
            out.write(samples[i].text)
        out.write("\n")
        out.flush()
        if info is not None:
            info.write(_stats_line(samples[i]))
            info.flush()
    return samples


def _banner(lm: LoadedModel) -> str:
    eras = f" · eras: {', '.join(e.strip('<|>') for e in lm.eras)}" if lm.eras else ""
    return (f"londonlm · {lm.model_id} · {lm.n_params:,} parameters · {lm.device}{eras}\n"
            f"type a prompt, /help for commands, Ctrl-D to quit\n")


def run_repl(lm: LoadedModel, settings: GenerationSettings, out: TextIO, *,
             read: Callable[[str], str] | None = None, stream_tokens: bool = True,
             max_length: int | None = None, allow_control_tokens: bool = False) -> int:
    """Interactive loop: prompts generate, ``/commands`` change settings (see REPL_HELP).
    Ctrl-D, /quit or Ctrl-C twice at the prompt (``typed_lines``) leaves with 0; Ctrl-C during a
    generation stops that generation only."""
    history: list[str] = []
    out.write(_banner(lm))
    out.flush()
    for line in typed_lines(read, "> ", out):
        text = line.strip()
        try:
            if text.lower() == "/history":
                out.write("\n".join(f"{i + 1:>3}  {h}" for i, h in enumerate(history)) or "(none yet)")
                out.write("\n")
            elif text.startswith("/"):
                settings, message = apply_command(settings, text, lm.eras, lm.era_width)
                if text.split()[0].lower() in ("/max", "/max_new_tokens") and max_length is not None:
                    max_length = None  # an explicit /max replaces --max_length
                out.write(message + "\n")
            else:
                history.append(line)
                print_generation(lm, line, settings, out, info=out, stream_tokens=stream_tokens,
                                 max_length=max_length, allow_control_tokens=allow_control_tokens)
        except GenerationError as e:
            out.write(f"error: {e}\n")
        except KeyboardInterrupt:
            out.write("\n[interrupted]\n")
        out.flush()
    return 0


# What a terminal acts on instead of showing: C0 controls but tab and newline (ESC starts the
# sequences that recolour, retitle, move the cursor, or on some terminals answer back as if
# typed; CR and BS write over text shown), DEL, and the C1 controls (U+009B is a CSI). A model
# writes them as readily as letters (byte-level BPE has every byte), so on a terminal they are
# shown as \xNN; a file or pipe gets the text as generated.
_SHOWN = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if chr(c) not in "\t\n"}


class TerminalText:
    """A text stream to a terminal that shows control characters (``_SHOWN``) instead of
    sending them: generated text cannot drive the user's terminal."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(text.translate(_SHOWN))

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return True


def for_terminal(stream: TextIO) -> TextIO:
    """``stream`` wrapped in :class:`TerminalText` when it is a terminal, else as it is."""
    return TerminalText(stream) if stream.isatty() else stream


def read_line(prompt: str) -> str:
    """``input(prompt)``, with stdin decoding bytes that are not UTF-8 into surrogate escapes
    instead of raising: a strict stdin raises UnicodeDecodeError mid-conversation (and may
    drop the lines read ahead with the bad one), where an escaped line can be refused alone
    (``typed_lines``). ``input`` decodes a terminal's line by ``sys.stdin.errors`` too.
    Redirected (not a terminal), a line is read as ``input`` reads it, up to MAX_LINE_CHARS:
    ``< /dev/zero``, or a file with no line breaks, grew one line without end (~40 MB/s) until the
    machine ran out of memory; past the cap it is one UsageError line, exit 2."""
    if getattr(sys.stdin, "errors", None) == "strict" and hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")
    if sys.stdin.isatty():
        return _tty_input(prompt)
    sys.stdout.write(prompt)
    sys.stdout.flush()
    line = sys.stdin.readline(MAX_LINE_CHARS + 1)
    if not line:
        raise EOFError
    if len(line) > MAX_LINE_CHARS:
        raise UsageError(f"standard input holds a line of over {MAX_LINE_CHARS:,} characters, which is no prompt: "
                         f"give a file of prompts, one a line")
    return line[:-1] if line.endswith("\n") else line


# A signal that only interrupts the main thread's wait (its handler does nothing; by default it
# is ignored, so one that comes after the read is harmless).
_POKE = getattr(signal, "SIGURG", None)


def _tty_input(prompt: str) -> str:
    """``input(prompt)`` on a terminal, where Ctrl-C is acted on at once. Python's readline waits
    for a key in ``select()`` with no timeout and looks at signals only when that wait is cut short:
    a SIGINT that came while it was still echoing a key or drawing the prompt, or that the kernel
    gave another thread (OpenBLAS's), waited for the next key. On a busy machine Ctrl-C at the
    prompt did nothing, and after two the REPL never left. A thread woken by the signal
    (``set_wakeup_fd``, which any thread's SIGINT writes to) interrupts the wait until it ends."""
    if _POKE is None or threading.current_thread() is not threading.main_thread():
        return input(prompt)  # (only the main thread takes Python's signals)
    r, w = os.pipe()
    os.set_blocking(w, False)
    done = threading.Event()
    earlier = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    was = signal.signal(_POKE, lambda *_: None)
    try:
        threading.Thread(target=_interrupt_on_sigint, args=(r, threading.get_ident(), done),
                         name="ctrl-c", daemon=True).start()
        return input(prompt)
    finally:
        done.set()
        signal.set_wakeup_fd(earlier)
        signal.signal(_POKE, was)
        os.close(w)  # the thread reads the end of the pipe, closes it and ends


def _interrupt_on_sigint(r: int, main: int, done: threading.Event) -> None:
    """:func:`_tty_input`'s thread: after a SIGINT (its number read from ``r``), send ``_POKE``
    to the main thread until its read is done; one landing before its ``select()`` is lost too."""
    with open(r, "rb", buffering=0) as wakeups:
        while got := wakeups.read(64):
            if signal.SIGINT in got:
                while not done.wait(0.02):
                    signal.pthread_kill(main, _POKE)


def typed_lines(read: Callable[[str], str] | None, prompt: str, out: TextIO):
    """Each non-blank line typed at ``prompt`` (default reader: :func:`read_line`), as typed (a
    prompt's leading space is part of the text the model continues); a line that is not valid
    UTF-8 is refused with an ``error:`` line and the loop goes on. Ends on Ctrl-D, /quit, or
    Ctrl-C twice at the prompt: one Ctrl-C drops the line typed and says how to leave, as
    Python's and node's prompts do. Leaving at the first ended the whole session (a chat's
    conversation with it) when Ctrl-C, pressed to stop a generation, came just after it ended."""
    read = read or read_line
    interrupted = False  # the last read ended in Ctrl-C
    while True:
        try:
            line = read(prompt)
        except (EOFError, KeyboardInterrupt) as e:
            out.write("\n")
            if isinstance(e, EOFError) or interrupted:
                out.flush()
                return
            interrupted = True
            out.write("(line dropped; Ctrl-C again, Ctrl-D or /quit to leave)\n")
            out.flush()
            continue
        interrupted = False
        problem = utf8_problem(line)
        if problem:
            out.write(f"error: {problem}; the line was not used\n")
            out.flush()
            continue
        text = line.strip()
        if text.lower() in ("/quit", "/exit", "/q"):
            return
        if text:
            yield line


# --------------------------------------------------------------------------- period chat

CHAT_HELP = """type a question and press Enter; the conversation so far goes with it. commands:
  /year 1790       the era: the system line becomes "Old Bailey, London, 1790." (1674-1913)
  /reset           forget the conversation (the year stays)
  /temp 0.7        temperature (0 = greedy)
  /max 60          max new tokens per answer
  /seed 42         fixed seed (/seed none for random)
  /history         the conversation so far
  /help            this text
  /quit            leave (Ctrl-D also works)"""
MAX_HISTORY = 62  # messages kept (31 exchanges): what validate_messages allows before the question


@dataclass
class ChatSession:
    """One conversation: its settings, the era asked for, and the exchanges so far."""

    settings: "ChatSettings"
    year: int | None = None
    history: list = dc_field(default_factory=list)
    cutoff: int | None = None  # a time-locked model's last era (chat.chat_cutoff): /year stops there
    forgotten: int = 0  # messages the history dropped past MAX_HISTORY

    def command(self, line: str) -> str:
        """Apply one ``/command``; returns the message to show. Raises ChatRequestError."""
        from ..chat import ChatRequestError, check_year

        parts = line.strip().split(maxsplit=1)
        cmd, arg = parts[0].lower(), (parts[1].strip() if len(parts) > 1 else "")
        if cmd in ("/help", "/?"):
            return CHAT_HELP
        if cmd == "/reset":
            self.history.clear()
            self.forgotten = 0
            return "conversation cleared"
        if cmd == "/history":
            return "\n".join(f"{m['role']:>9}: {m['content']}" for m in self.history) or "(none yet)"
        if cmd == "/year":
            if arg:
                if not arg.isdecimal():  # isdigit() passes "²", which int() refuses
                    raise ChatRequestError(f"/year needs a year such as 1790, got {arg!r}")
                self.year = check_year(int(arg), self.cutoff)
            return f"system line: {self.system_line()}"
        fields = {"/temp": ("temperature", float), "/max": ("max_new_tokens", int), "/seed": ("seed", int)}
        if cmd not in fields:
            raise ChatRequestError(f"unknown command {cmd}; type /help for the list")
        name, kind = fields[cmd]
        if not arg:
            return f"{name} = {getattr(self.settings, name)}"
        try:
            value = None if name == "seed" and arg.lower() == "none" else kind(arg)
        except ValueError:
            raise ChatRequestError(f"{cmd} needs {_KIND_NAMES[kind]}, got {arg!r}") from None
        if name == "max_new_tokens" and value < 1:  # (taken, it refused every later question)
            raise ChatRequestError(f"max_new_tokens must be at least 1, got {value}")
        if name == "temperature" and not 0 <= value <= 5:
            raise ChatRequestError(f"temperature must be between 0 (greedy) and 5, got {value}")
        # checked here, as the other REPL's /seed and --seed are: torch.manual_seed raised
        # "Overflow when unpacking long long" for /seed 10**23 at the next question, ending the chat
        if name == "seed" and value is not None and not 0 <= value < 2**32:
            raise ChatRequestError(f"seed must be an integer in [0, 2**32), got {value}")
        changes = {name: value, **({"do_sample": value >= GREEDY_BELOW} if name == "temperature" else {})}
        self.settings = replace(self.settings, **changes)
        return f"{name} = {value}"

    def system_line(self) -> str:
        from ..chat import with_era

        return with_era([{"role": "user", "content": "?"}], self.year, cutoff=self.cutoff)[0]["content"]

    def ask(self, lm: LoadedModel, question: str, out: TextIO, info: TextIO | None,
            stream_tokens: bool = True):
        """Answer ``question`` with the history, writing the answer (streamed when asked);
        the exchange joins the history once answered. Returns the ChatReply."""
        from ..chat import chat_reply, chat_stream

        messages = [*self.history, {"role": "user", "content": question}]
        kwargs = dict(year=self.year, settings=self.settings, cutoff=self.cutoff)
        started = time.monotonic()
        if stream_tokens:
            answer = chat_stream(lm.model, lm.tokenizer, messages, **kwargs)
            _write_stream(answer, out)
            reply = answer.reply
        else:
            reply = chat_reply(lm.model, lm.tokenizer, messages, **kwargs)
            out.write(reply.text)
        out.write("\n")
        out.flush()
        # the exchanges the model did not see: it answered as if they had not been said, while
        # /history still showed them, and nothing said so
        unseen = (self.forgotten + reply.left_out) // 2
        if reply.text:
            kept = [*messages, {"role": "assistant", "content": reply.text}]
            self.forgotten += max(0, len(kept) - MAX_HISTORY)
            self.history = kept[-MAX_HISTORY:]
        if info is not None:
            secs = time.monotonic() - started
            empty = " · no answer: not kept in the history" if not reply.text else ""
            if unseen:
                empty += f" · the first {unseen} exchange(s) no longer fit the model's context: not seen"
            info.write(f"[{reply.new_tokens} tokens · {reply.new_tokens / secs if secs else 0:.1f} tokens/s · "
                       f"{reply.finish_reason} · {self.system_line()}{empty}]\n")
            info.flush()
        return reply


def run_chat_repl(lm: LoadedModel, session: ChatSession, out: TextIO, *,
                  read: Callable[[str], str] | None = None, stream_tokens: bool = True) -> int:
    """The chat loop: each line is a question answered with the conversation so far;
    ``/commands`` (see CHAT_HELP) set the year, reset, show help. Ctrl-D, /quit or Ctrl-C twice
    at the prompt leave with 0; Ctrl-C during an answer stops that answer only."""
    from ..chat import ChatRequestError

    out.write(f"londonlm chat · {lm.model_id} · {lm.n_params:,} parameters · {lm.device}\n"
              f"{session.system_line()} · type a question, /help for commands, Ctrl-D to quit\n")
    out.flush()
    for line in typed_lines(read, "you> ", out):
        text = line.strip()
        try:
            if text.startswith("/"):
                out.write(session.command(text) + "\n")
            else:
                session.ask(lm, text, out, out, stream_tokens=stream_tokens)
        except ChatRequestError as e:
            out.write(f"error: {e}\n")
        except KeyboardInterrupt:
            out.write("\n[interrupted]\n")
        out.flush()
    return 0
