"""The text of a sequence as its tokens arrive: released in pieces that are safe to send, cut at
the first stop string.

A byte-level BPE token can end in the middle of a UTF-8 character, which decodes as one trailing
replacement character: the text before it is taken in (and matched against the stop strings) at
once, that last character only once it is complete or turns out to be no character; text is
decoded from one token before the unreleased ones (the offsets trick of incremental
detokenizers), so decoders that treat the start of a string specially still join up. While stop
strings are asked for, the last ``len(longest stop) - 1`` characters are held back: they may be
the start of a stop string, which is never sent. The pieces join up to the final text exactly.
"""
from __future__ import annotations

REPLACEMENT = "\ufffd"


def decoder_of(tokenizer):
    """``ids -> text`` as ``generate()``'s callers decode (special tokens skipped, no clean-up);
    the Rust backend directly when there is one (the same call, without the Python layers)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return lambda ids: backend.decode(ids, skip_special_tokens=True)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


class TextTracker:
    def __init__(self, decode, stop: tuple[str, ...] = ()):
        self.decode, self.stop = decode, tuple(s for s in stop if s)
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.ids: list[int] = []
        self.text = ""          # decoded so far (cut at a stop string once one appears)
        self.sent = 0           # characters of ``text`` already released
        self.stopped = False    # a stop string was found
        self._prefix = self._read = 0
        self._taken = 0         # characters past the decode of ids[_prefix:_read] already in ``text``

    def add(self, token: int) -> None:
        self.ids.append(token)
        if self.stopped:
            return
        before = self.decode(self.ids[self._prefix:self._read])
        now = self.decode(self.ids[self._prefix:])
        # Only a last U+FFFD can still change: the bytes of one character not yet complete
        # decode as one (UTF-8's lossy decoding is stable up to them). What comes before it is
        # final and taken in now, so a stop string is found as soon as it is whole (one holding
        # U+FFFD from bytes that are no character too), never inside a character still arriving.
        pending = now.endswith(REPLACEMENT)
        final = len(now) - pending
        if final > len(before) + self._taken:
            self._extend(now[len(before) + self._taken:final])
            self._taken = final - len(before)
        if len(now) > len(before) and not pending:
            self._prefix, self._read, self._taken = self._read, len(self.ids), 0

    def _extend(self, piece: str) -> None:
        start = max(0, len(self.text) - self.hold)
        self.text += piece
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        if hits:
            self.text, self.stopped = self.text[:min(hits)], True

    def finish(self) -> None:
        """The sequence ended: take in any text still pending (an incomplete last character
        decodes as the replacement character, as a whole decode would give it)."""
        if not self.stopped and self._read < len(self.ids):
            before = self.decode(self.ids[self._prefix:self._read])
            self._extend(self.decode(self.ids[self._prefix:])[len(before) + self._taken:])
            self._prefix = self._read = len(self.ids)
            self._taken = 0
        self.hold = 0

    def release(self) -> str:
        """Text not yet released that can no longer turn out to be part of a stop string."""
        end = len(self.text) if self.stopped else max(self.sent, len(self.text) - self.hold)
        piece, self.sent = self.text[self.sent:end], end
        return piece
