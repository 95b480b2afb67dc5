"""Cleaning and filters for question/answer exchanges, in the corpus stage's style: each
filter applies ONE rule and names a reason code when it rejects; the first failing rule is
the reason recorded (and counted in the dataset's statistics and ``rejected.jsonl``).

Order: cut_short, missing_question, missing_answer, stage_direction, reported_speech, ocr_noise,
question_too_long, answer_too_long. Duplicates (the same question and answer seen before in
the build) are rejected by the dataset builder as ``duplicate``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .extract import Exchange

# Characters the printed Proceedings never contain: their presence means OCR or markup debris.
_IMPOSSIBLE = re.compile(r"[|{}<>\\^~_■□�@#]")
_LETTER = re.compile(r"[^\W\d_]")
_ALNUM = re.compile(r"[^\W_]")
_STAGE = re.compile(r"^\s*[(\[][^)\]]*[)\]]\s*[.;,]?\s*$")
# Third-person summaries that the reporter wrote in place of the question asked.
_REPORTED = re.compile(r"\b(?:was asked|being asked|upon (?:his|her) cross-examination|"
                       r"on (?:his|her) cross-examination|the witness was)\b", re.I)


@dataclass(frozen=True)
class ExchangeRules:
    """Thresholds of the exchange filters (stored in the dataset's sidecar and card)."""
    max_question_chars: int = 400     # longer "questions" are speeches or misread paragraphs
    max_answer_chars: int = 1200      # longer answers are narrative evidence, not a reply
    min_letter_share: float = 0.7     # letters and digits among non-space characters (sums of
                                      # money "3l. 5s. 3d." pass); OCR and markup debris is lower
    min_chars: int = 2                # shorter than "No" is no turn at all


def clean_turn(text: str) -> str:
    """One turn's text as printed, minus the separators the extraction leaves: surrounding
    dashes ("- A." / "?—"), runs of spaces, a space before punctuation."""
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"^[-—–\s]+|[-—–\s]+$", "", text)
    text = re.sub(r"(?<=\w) +(?=[,.;:!?])", "", text)
    return text.strip()


def _cut_short(ex: Exchange, r: ExchangeRules) -> bool:
    """The file stops inside it (a truncated download, recovered): its turn ends mid-text."""
    return ex.cut_short


def _missing_question(ex: Exchange, r: ExchangeRules) -> bool:
    return len(ex.question) < r.min_chars or not _LETTER.search(ex.question)


def _missing_answer(ex: Exchange, r: ExchangeRules) -> bool:
    return len(ex.answer) < r.min_chars or not _LETTER.search(ex.answer)


def _stage_direction(ex: Exchange, r: ExchangeRules) -> bool:
    """The "answer" is the reporter's note "(The petticoat was produced.)", not speech."""
    return bool(_STAGE.match(ex.answer))


def _reported_speech(ex: Exchange, r: ExchangeRules) -> bool:
    return bool(_REPORTED.search(ex.question))


def letter_share(text: str) -> float:
    """Share of letters and digits among the non-space characters."""
    chars = [c for c in text if not c.isspace()]
    return sum(bool(_ALNUM.match(c)) for c in chars) / len(chars) if chars else 0.0


def _ocr_noise(ex: Exchange, r: ExchangeRules) -> bool:
    """Impossible characters anywhere; too little but punctuation in a turn long enough to
    judge (a bare "No." is 2 letters of 3 characters, and sound)."""
    text = f"{ex.question} {ex.answer}"
    return bool(_IMPOSSIBLE.search(text)) or any(
        len(t.replace(" ", "")) >= 20 and letter_share(t) < r.min_letter_share for t in (ex.question, ex.answer))


def _question_too_long(ex: Exchange, r: ExchangeRules) -> bool:
    return len(ex.question) > r.max_question_chars


def _answer_too_long(ex: Exchange, r: ExchangeRules) -> bool:
    return len(ex.answer) > r.max_answer_chars


FILTERS: list[tuple[str, Callable[[Exchange, ExchangeRules], bool]]] = [
    ("cut_short", _cut_short),
    ("missing_question", _missing_question),
    ("missing_answer", _missing_answer),
    ("stage_direction", _stage_direction),
    ("reported_speech", _reported_speech),
    ("ocr_noise", _ocr_noise),
    ("question_too_long", _question_too_long),
    ("answer_too_long", _answer_too_long),
]
REASONS = [name for name, _ in FILTERS] + ["duplicate"]


def rejection_reason(ex: Exchange, rules: ExchangeRules = ExchangeRules()) -> str | None:
    """The first rule ``ex`` fails, or None when it is kept (texts are cleaned in place first)."""
    ex.question, ex.answer = clean_turn(ex.question), clean_turn(ex.answer)
    for name, rule in FILTERS:
        if rule(ex, rules):
            return name
    return None
