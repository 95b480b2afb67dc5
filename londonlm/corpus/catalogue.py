"""Rules on a book's catalogue record (where it was printed, its languages, how well it was
OCR'd), each one rule with its reason code, in the style of :mod:`.filters`. A source with a
catalogue (the British Library's books on the Hub) applies them before it assembles a book's
pages, so a book printed in Edinburgh is rejected without its text ever being read.

- :class:`ImprintFilter`: the place of publication names London (the City, Westminster,
  Southwark and the parishes of the 1889 County of London, or the Latin ``Londini``);
  ``scope="britain"`` widens it to any place in England, Scotland or Wales.
- :class:`CatalogueLanguageFilter`: the catalogue's main language is an accepted one.
- :class:`OcrConfidenceFilter`: the book's mean OCR word confidence is at least a minimum.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from .filters import Filter, Verdict

# the metropolis an imprint may name: the City, Westminster, Southwark and the parishes and
# districts of the County of London (1889), with the imprint forms "Lond." and "Londini"
LONDON_PLACES = frozenset("""london lond londini londinum londres westminster southwark lambeth
    chelsea islington hackney greenwich kensington marylebone mary-le-bone clerkenwell holborn stepney
    bermondsey shoreditch whitechapel hammersmith paddington deptford woolwich camberwell battersea
    fulham hampstead highgate pimlico bloomsbury blackheath rotherhithe limehouse wapping poplar
    spitalfields soho strand cheapside fleet-street newington kennington brixton clapham
    st-pancras pancras finsbury walworth bow""".split())
# places in England, Scotland and Wales that printed books before 1900 (towns with presses,
# university and cathedral towns, county towns), and the countries themselves
BRITISH_PLACES = frozenset("""england scotland wales britain great-britain uk united-kingdom edinburgh glasgow
    aberdeen dundee perth stirling inverness paisley kilmarnock ayr dumfries greenock leith st-andrews
    oxford cambridge bristol bath birmingham manchester liverpool leeds sheffield york hull newcastle
    newcastle-upon-tyne norwich exeter plymouth salisbury winchester canterbury chester worcester
    gloucester hereford shrewsbury coventry leicester nottingham derby lincoln ipswich colchester
    reading brighton portsmouth southampton chichester lewes maidstone rochester durham carlisle
    kendal whitehaven lancaster preston bolton wigan halifax huddersfield bradford wakefield doncaster
    stockport macclesfield warrington lichfield stafford wolverhampton birmingham northampton
    bedford hertford st-albans windsor eton richmond kingston croydon guildford dorchester sherborne
    taunton truro falmouth penzance barnstaple tiverton frome wells devizes marlborough newbury
    abingdon banbury warwick stratford evesham ludlow kidderminster bury-st-edmunds kings-lynn
    yarmouth lowestoft cromer boston stamford peterborough huntingdon ely whitby scarborough beverley
    ripon richmond sunderland gateshead berwick alnwick hexham swansea cardiff carmarthen aberystwyth
    bangor caernarvon carnarvon wrexham brecon newport denbigh holywell dolgellau haverfordwest""".split())
# places abroad that share a name with one above (New London, London in Ontario, New York,
# Boston in Massachusetts, Perth in Western Australia, Richmond in Virginia): a place naming
# one of these is not taken for London or Britain
ABROAD = frozenset("""new-london new-york new-haven new-castle new-england america american usa u-s u-s-a
    united-states mass massachusetts conn connecticut virginia va pennsylvania pa ontario canada
    quebec australia n-s-w new-south-wales western-australia tasmania new-zealand india calcutta
    bombay madras jamaica""".split())
_WORDS = re.compile(r"[a-z]+(?:-[a-z]+)*")


def place_words(place: str) -> set[str]:
    """The place names in an imprint (``"London : printed for J. Smith; Edinburgh"``), lower-cased,
    and each run of two or three words joined by hyphens (``newcastle-upon-tyne``)."""
    text = re.sub(r"\b([a-z])\.(?=[a-z]\.)", r"\1-", place.lower().replace("’", "'"))  # "U.S.A." -> "u-s-a."
    words = _WORDS.findall(text.replace("st.", "st-").replace("'", ""))
    out = set(words)
    for n in (2, 3):
        out.update("-".join(words[i:i + n]) for i in range(len(words) - n + 1))
    return out


@dataclass
class Catalogue:
    """What the catalogue rules look at: one book's record."""

    place: str = ""
    country: str = ""
    languages: list[str] = field(default_factory=list)   # Language_1 first; empty entries dropped
    ocr_confidence: float | None = None                   # mean word confidence over its pages


class CatalogueFilter(Filter):
    """One rule on a :class:`Catalogue` (not on a text); the verdict is a :class:`filters.Verdict`."""

    name = "catalogue"

    def __call__(self, book: Catalogue) -> Verdict:  # type: ignore[override]
        raise NotImplementedError


class ImprintFilter(CatalogueFilter):
    """Kept when the place of publication names London (``scope="london"``) or, widened
    (``scope="britain"``), any place in England, Scotland or Wales, by the place or by the
    catalogue's country of publication. A book with no place recorded is rejected: the corpus
    is London's, and nothing else says where it was printed."""

    name = "imprint"

    def __init__(self, scope: str = "london"):
        if scope not in ("london", "britain"):
            raise ValueError(f"imprint scope must be london or britain, not {scope!r}")
        self.scope = scope
        self.reason = "not_london_imprint" if scope == "london" else "not_british_imprint"

    def __call__(self, book: Catalogue) -> Verdict:
        words = place_words(book.place or "")
        abroad = bool(words & ABROAD)
        if words & LONDON_PLACES and not abroad:
            return self._v(True, book.place, "London imprint")
        if self.scope == "britain" and not abroad and (words | place_words(book.country or "")) & BRITISH_PLACES:
            return self._v(True, book.place, "British imprint (--all_britain)")
        if not (book.place or "").strip():
            return self._v(False, "", "no place of publication recorded")
        where = "London" if self.scope == "london" else "England, Scotland or Wales"
        return self._v(False, book.place, f"printed at {book.place!r}, not in {where}")


class CatalogueLanguageFilter(CatalogueFilter):
    """Kept when the catalogue's main language (the first it lists) is accepted; a book whose
    record lists none passes (the text's own language filter still runs)."""

    name, reason = "catalogue_language", "not_english"

    def __init__(self, accepted: Sequence[str] = ("English",)):
        self.accepted = {a.strip().lower() for a in accepted}

    def __call__(self, book: Catalogue) -> Verdict:
        if not book.languages:
            return self._v(True, None, "no language recorded")
        main = book.languages[0]
        ok = main.strip().lower() in self.accepted
        return self._v(ok, main, f"catalogue languages: {', '.join(book.languages)}")


class OcrConfidenceFilter(CatalogueFilter):
    """Kept when the book's mean OCR word confidence is at least ``minimum`` (a book with no
    confidence recorded passes)."""

    name, reason = "ocr_confidence", "low_ocr_confidence"

    def __init__(self, minimum: float = 0.0):
        self.minimum = float(minimum)

    def __call__(self, book: Catalogue) -> Verdict:
        c = book.ocr_confidence
        if c is None:
            return self._v(True, None, "no confidence recorded")
        return self._v(c >= self.minimum, round(c, 4), f"mean word confidence {c:.3f}, minimum {self.minimum:g}")


def catalogue_filters(imprint: str | None = "london", languages: Sequence[str] | None = ("English",),
                      min_ocr_confidence: float = 0.0) -> list[CatalogueFilter]:
    """The rules a source's registry entry asks for (``imprint: null`` or ``languages: null``
    leave that rule out)."""
    out: list[CatalogueFilter] = []
    if imprint:
        out.append(ImprintFilter(imprint))
    if languages:
        out.append(CatalogueLanguageFilter(languages))
    out.append(OcrConfidenceFilter(min_ocr_confidence))
    return out


def first_failure(book: Catalogue, filters: Sequence[CatalogueFilter]) -> Verdict | None:
    """The first rule the book fails, or None when it passes them all."""
    for f in filters:
        v = f(book)
        if not v.passed:
            return v
    return None


__all__ = ["ABROAD", "BRITISH_PLACES", "Catalogue", "CatalogueFilter", "CatalogueLanguageFilter", "ImprintFilter",
           "LONDON_PLACES", "OcrConfidenceFilter", "catalogue_filters", "first_failure", "place_words"]
