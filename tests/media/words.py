"""Comparing a transcript with the sentence that was spoken: word recall, never exact text."""

from __future__ import annotations

import re

#: Whisper writes some spoken words as figures; count them as the words the clip says.
_EQUIVALENTS = {"2": "two", "%": "percent", "2%": "two percent"}


def words_of(text: str) -> list[str]:
    text = text.lower()
    for written, spoken in _EQUIVALENTS.items():
        text = text.replace(written, f" {spoken} ")
    return re.findall(r"[a-z']+", text)


def word_recall(expected: str, heard: str) -> float:
    """Share of the expected words (with repeats) found in what was heard."""
    want = words_of(expected)
    have = words_of(heard)
    found = 0
    for word in want:
        if word in have:
            have.remove(word)
            found += 1
    return found / len(want) if want else 0.0
