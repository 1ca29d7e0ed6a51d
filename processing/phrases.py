"""Key phrases of an item: the noun-phrase-like n-grams of its title and text.

The text is cut into runs at stop words, punctuation and numbers-only tokens; every 1-, 2- and
3-word n-gram inside a run is a candidate (the RAKE idea without its scores). Words are folded (lower
case, accents dropped, plurals made singular: "Batteries" → "battery", "GPUs" → "gpu"), so one
phrase has one spelling. An item yields each phrase once; title phrases come first, and at most
``max_phrases`` are kept.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

STOP_WORDS = frozenset(
    """
    a about above after again against ago all almost also although am among an and another any anyone anything
    are around as at away back be because been before being below between both but by can could did do does
    doing done down during each either else enough even ever every few first for from further get gets getting
    go goes going got had has have having he her here hers herself him himself his how however i if in into is
    it its itself just last least less let like made make makes many may maybe me might more most much must my
    myself near need new next no nor not now of off often old on once one only or other others our ours
    ourselves out over own per perhaps put quite rather really said same say says see seem seems several shall
    she should show since so some something still such take than that the their theirs them themselves then
    there these they thing things this those though through thus to today too toward towards two under until
    up upon us use used uses using very via want was way we well were what whatever when where whether which
    while who whom whose why will with within without would yes yet you your yours yourself yourselves
    ask hn via new week year years day days time times vs versus
    """.split()  # noqa: SIM905
)
#: Words that end in "s" and are not plurals.
NOT_PLURAL = frozenset(
    """
    news series species analysis basis crisis thesis physics mathematics economics politics always perhaps
    thanks ios macos kubernetes rails pandas redis postgres chaos bias gas plus status campus virus corpus
    lens atlas canvas alias bonus census focus genius radius nexus axis express process access success class
    glass boss less loss mass pass business address progress wireless serverless stress
    """.split()  # noqa: SIM905
)
_TOKEN = re.compile(r"[a-z0-9][a-z0-9+#'.-]*[a-z0-9+#]|[a-z0-9]")


def fold(word: str) -> str:
    """One spelling of a word: plurals made singular (lower-cased input)."""
    if len(word) <= 3 or word in NOT_PLURAL or not word.endswith("s") or word.endswith("ss"):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "ches", "shes", "xes", "zes")):
        return word[:-2]
    return word[:-1]


def tokens(text: str) -> list[str | None]:
    """Folded words of ``text``; None marks a break (a stop word, punctuation, a bare number)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    out: list[str | None] = []
    position = 0
    for match in _TOKEN.finditer(ascii_text):
        gap = ascii_text[position : match.start()]
        if gap.strip() and any(ch in gap for ch in '.,;:!?()[]{}"|/—–'):
            out.append(None)
        position = match.end()
        word = match.group().strip("'.-")
        if word.endswith("'s"):
            word = word[:-2]
        if not word or word in STOP_WORDS or word.isdigit() or len(word) < 2:
            out.append(None)
            continue
        out.append(fold(word))
    return out


def _ngrams(words: list[str | None], longest: int) -> Iterable[str]:
    run: list[str] = []
    for word in [*words, None]:
        if word is not None:
            run.append(word)
            continue
        for size in range(longest, 0, -1):
            for start in range(len(run) - size + 1):
                yield " ".join(run[start : start + size])
        run = []


def key_phrases(title: str, text: str = "", *, max_phrases: int = 30, longest: int = 3) -> list[str]:
    """The item's phrases, title first, each once, at most ``max_phrases``."""
    seen: dict[str, None] = {}
    for part in (title, text[:2000]):
        for phrase in _ngrams(tokens(part), longest):
            if phrase not in seen:
                seen[phrase] = None
                if len(seen) >= max_phrases:
                    return list(seen)
    return list(seen)
