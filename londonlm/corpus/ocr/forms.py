"""A text as the OCR repair searches it, whatever its Unicode form: composed (NFC), with the
invisible format characters (zero-width space and joiners, soft hyphen, byte-order mark,
direction marks) left out, and the way back to the text as it came.

``café`` written decomposed (``cafe`` + U+0301) is ``café`` to the search, not the word ``caf``
beside a stray mark (which the repair took for a misreading: ``café`` -> ``caré``); ``Tl\\u200bie``
is the one word ``Tlie`` (not ``Tl`` and ``ie``). Only what the repair changes is written anew
(composed, an invisible character inside the changed word gone); every other character comes
out as it came in, decomposed or not, so a repair is the same whatever the normalisation of its
input. A text already composed with no invisible character (nearly all) is searched as it is.
"""
from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, replace
from typing import Sequence

# Unicode's format characters (category Cf; tests/corpus/ocr/test_forms.py checks the list)
INVISIBLE = ("\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e"
             "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f"
             "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f")
_INVISIBLE = re.compile(f"[{INVISIBLE}]")
# what may be a mark or an invisible character: nothing below U+0300 but the soft hyphen
_MAYBE_MARK = re.compile(r"[^\x00-\u00ac\u00ae-\u02ff]")


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "M" or _INVISIBLE.match(ch) is not None


@dataclass
class SearchText:
    """``text`` (what the search reads) of ``original``. Characters with marks or invisible
    characters after them (a *cluster*) are written composed, without the invisible ones;
    every other character is itself. ``view_at[i]`` is where cluster ``i`` begins in ``text``,
    ``clusters[i]`` its length there, where it begins and ends in the original, and where its
    last visible character ends (an invisible one after a word stays when the word changes)."""

    original: str
    text: str
    view_at: list[int]
    clusters: list[tuple[int, int, int, int]]

    @classmethod
    def of(cls, original: str) -> "SearchText | None":
        """The search's text of ``original``; None when that is ``original`` itself."""
        if unicodedata.is_normalized("NFC", original) and _INVISIBLE.search(original) is None:
            return None
        parts: list[str] = []
        view_at: list[int] = []
        clusters: list[tuple[int, int, int, int]] = []
        pos = size = 0  # (the original read up to pos; the search's text is size long)
        for m in _MAYBE_MARK.finditer(original):
            i = m.start()
            if i < pos or not _is_mark(original[i]):
                continue
            j = i + 1
            while j < len(original) and _is_mark(original[j]):
                j += 1
            base = i - 1 if i > pos else i
            size += _plain(original[pos:base], parts, view_at, clusters, pos, size)
            size += _cluster(original, base, j, parts, view_at, clusters, size)
            pos = j
        _plain(original[pos:], parts, view_at, clusters, pos, size)
        return cls(original, "".join(parts), view_at, clusters)

    def _start(self, k: int) -> int | None:
        """Where in the original a change starting at ``text[k]`` starts (None: inside a cluster)."""
        i = bisect_right(self.view_at, k) - 1
        if i < 0:
            return k
        vk, (vlen, ostart, oend, _) = self.view_at[i], self.clusters[i]
        if k == vk and vlen:
            return ostart
        return None if k < vk + vlen else oend + k - vk - vlen

    def _end(self, k: int) -> int | None:
        """Where in the original a change ending before ``text[k]`` ends (None: inside a cluster)."""
        i = bisect_left(self.view_at, k) - 1
        if i < 0:
            return k
        vk, (vlen, _, oend, visible_end) = self.view_at[i], self.clusters[i]
        if k < vk + vlen:
            return None
        return visible_end if k == vk + vlen else oend + k - vk - vlen

    def restore(self, changes: Sequence) -> tuple[str, list]:
        """(the original with ``changes`` made, the changes as the original reads them): each
        change's place and what it replaced in the original."""
        out, moved, pos = [], [], 0
        for c in changes:
            a, b = c.start, c.start + len(c.before)
            while self._start(a) is None:  # (a change begun inside a cluster takes all of it)
                a -= 1
            while self._end(b) is None:
                b += 1
            after = self.text[a:c.start] + c.after + self.text[c.start + len(c.before):b]
            start, end = self._start(a), self._end(b)
            out += [self.original[pos:start], after]
            moved.append(replace(c, start=start, before=self.original[start:end], after=after))
            pos = end
        out.append(self.original[pos:])
        return "".join(out), moved


def _plain(seg: str, parts: list[str], view_at: list[int], clusters: list, pos: int, size: int) -> int:
    """Characters with no mark after them: themselves (one NFC writes otherwise, U+212B the
    Angstrom sign, a cluster of its own); the length they add to the search's text."""
    if unicodedata.is_normalized("NFC", seg):
        parts.append(seg)
        return len(seg)
    added = 0
    for i in range(len(seg)):
        added += _cluster(seg, i, i + 1, parts, view_at, clusters, size + added, pos)
    return added


def _cluster(text: str, start: int, end: int, parts: list[str], view_at: list[int], clusters: list,
             size: int, offset: int = 0) -> int:
    """``text[start:end]`` (at ``offset + start`` in the original) composed, invisible
    characters left out; the length it adds to the search's text."""
    seg = text[start:end]
    view = unicodedata.normalize("NFC", _INVISIBLE.sub("", seg))
    visible = [k for k, ch in enumerate(seg) if not _INVISIBLE.match(ch)]
    parts.append(view)
    view_at.append(size)
    o = offset + start
    clusters.append((len(view), o, o + len(seg), o + (visible[-1] + 1 if visible else 0)))
    return len(view)
