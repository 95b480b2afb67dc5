"""Tiny in-process fixtures for the OCR tests: a period text to learn a lexicon from, and OCR
made of it with the misreadings real OCR makes."""
from __future__ import annotations

from londonlm.corpus.ocr.confusions import ConfusionModel, load_confusions
from londonlm.corpus.ocr.lexicon import build_lexicon

PERIOD = """Yesterday the Lords of the Admiralty commissioned the following Ships, and it is thought some
Villains had a Design to have set Fire to the Magazine of Powder. The Soldier was taken Care of, and
his Leg was cut off yesterday, and 'tis hop'd he will do well. We hear that the Lords have ordered
all the small Vessels to be fully mann'd for the Service of the Channel. A Bill is ordered into
Parliament for making it High Treason to hold any Correspondence with the Son of the Pretender.
The Court of Aldermen met at Guildhall, where the Lord Mayor did shew the Petition of the
Merchants, and the connexion of the Trade of the City with the Navy was much debated. To-morrow
the Court will sit again, and the Merchants will attend with their Accounts. He said that he had
been in the House of Commons, and that the Members were of one Mind as to the Duty on Sugar.
The Price of Bread was the same as last Week, and the Bakers of the City have prevailed upon the
Court to hear them. In the Evening the Watch was set, and the Streets were quiet; the Prisoner
was examined before the Justice, and the Goods were found in his House in Fleet Street.
"""
# the same text, read by a poor OCR: long s as f, h as b or li, e as c, n as u, a lost line-end hyphen
OCR = """Yefterday the Lords of tbe Admiralty commiffioned the following Ships, and it is thought fome
Villains had a Defign to have fet Fire to the Magazine of Powder. The Soldier was taken Care of, and
his Leg was cut off yefterday, and 'tis hop'd he will do well. We hear that the Lords have ordered
all tlie small Veffels to be fully mann'd for the Service of the Channel. A Bill is ordered into
Parliament for making it High Treafon to hold any Correfpondence with the Son of the Pretender.
"""


def period_lexicon(extra: str = "", times: int = 3):
    """A lexicon learned from ``PERIOD`` (each word seen ``times`` times) and ``extra``."""
    return build_lexicon([PERIOD] * times + ([extra] if extra else []), made_from={"test": "PERIOD"})


def confusions_without(marks: str):
    """The shipped confusion model as if learned from OCR that never read ``marks``: no rule,
    whole-word rule or debris whose OCR side holds one (an engine new to it, for the tests of
    what the repair does with readings no rule knows)."""
    m = load_confusions()
    keep = lambda table: {o: alts for o, alts in table.items() if not any(c in o for c in marks)}  # noqa: E731
    return ConfusionModel(keep(m.learned_rules), m.split, m.join, m.hyphen, dict(m.made_by), keep(m.words),
                          {c: lp for c, lp in m.debris.items() if c not in marks})
