"""Which collected items are the same story.

Three keys, tried in order: the source's own id (its GUID, within that source), the canonical URL,
and a hash of the normalised title and text. An item that matches a stored one by any key is a new
*mention* of it (when it comes from a source that had not mentioned it) or a plain duplicate.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)


def normalise(text: str) -> str:
    """Case, accents, punctuation and spacing folded away."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return " ".join(_NON_WORD.sub(" ", folded).split())


def content_hash(title: str, summary: str = "") -> str:
    """The hash that tells two copies of a story apart from two stories: title plus the text's start."""
    basis = normalise(title) + "\n" + normalise(summary)[:500]
    return hashlib.sha256(basis.encode()).hexdigest()
