"""Cutting a document's text into overlapping chunks for embedding.

Chunks are at most ``size`` characters and start ``overlap`` characters before the previous one ended.
A cut is made at a paragraph break when one lies in the last fifth of the window, else at the end of a
sentence there, else between words, and only as a last resort in the middle of a word. Every chunk keeps
its character offsets in the document's text (``text[start:end] == chunk.text``) and its page: a chunk
never spans two pages, so a search hit names the one page it came from.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from processing.errors import InvalidArgument

#: Pages are joined with a blank line, so a page break is also a paragraph break.
PAGE_SEPARATOR = "\n\n"
#: The cut is looked for in the last ``1 / NEAR_FRACTION`` of the window.
NEAR_FRACTION = 5

_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*\s")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_SPACE = re.compile(r"\s")


@dataclass(frozen=True)
class Chunk:
    index: int  # 0-based position in the document
    text: str
    start: int  # character offset of the first character in the document's text
    end: int  # offset just past the last character
    page: int  # the page the chunk is on (1-based)


def join_pages(pages: Sequence[tuple[int, str]]) -> tuple[str, list[int], list[int]]:
    """The document's text (pages joined by a blank line), each page's start offset, and page numbers."""
    parts: list[str] = []
    starts: list[int] = []
    numbers: list[int] = []
    offset = 0
    for number, text in pages:
        if parts:
            parts.append(PAGE_SEPARATOR)
            offset += len(PAGE_SEPARATOR)
        starts.append(offset)
        numbers.append(number)
        parts.append(text)
        offset += len(text)
    return "".join(parts), starts, numbers


def _last_match_end(pattern: re.Pattern[str], text: str, lo: int, hi: int) -> int | None:
    """End of the last match of ``pattern`` that begins in ``text[lo:hi]`` and ends by ``hi``."""
    best = None
    for match in pattern.finditer(text, lo, hi):
        best = match.end()
    return best


def _cut(text: str, start: int, limit: int, size: int) -> int:
    lo = max(start + 1, limit - size // NEAR_FRACTION)
    for pattern in (_PARAGRAPH_BREAK, _SENTENCE_END, _SPACE):
        end = _last_match_end(pattern, text, lo, limit)
        if end is not None and end > start:
            return end
    return limit


def _check(size: int, overlap: int) -> None:
    if size <= 0:
        raise InvalidArgument(f"chunk size must be positive, got {size}")
    if overlap < 0 or overlap >= size:
        raise InvalidArgument(f"chunk overlap must be between 0 and the chunk size ({size}), got {overlap}")


def chunk_text(
    text: str,
    *,
    size: int,
    overlap: int,
    page: int = 1,
    begin: int = 0,
    stop: int | None = None,
    first_index: int = 0,
) -> list[Chunk]:
    """Chunks of ``text[begin:stop]`` (all of it by default), all on ``page``; offsets index ``text``."""
    _check(size, overlap)
    chunks: list[Chunk] = []
    length = len(text) if stop is None else stop
    start = _skip_space(text, begin, length)
    while start < length:
        limit = start + size
        end = length if limit >= length else _cut(text, start, limit, size)
        trimmed = end
        while trimmed > start and text[trimmed - 1].isspace():
            trimmed -= 1
        if trimmed > start:
            chunks.append(
                Chunk(
                    index=first_index + len(chunks),
                    text=text[start:trimmed],
                    start=start,
                    end=trimmed,
                    page=page,
                )
            )
        if end >= length:
            break
        following = max(end - overlap, start + 1)
        if overlap and following > 0 and not text[following - 1].isspace():
            # Start the overlap at a word: move forward to the next space, if one is before the cut.
            space = _SPACE.search(text, following, end)
            if space is not None:
                following = space.end()
        start = _skip_space(text, following, length)
    return chunks


def _skip_space(text: str, offset: int, length: int) -> int:
    while offset < length and text[offset].isspace():
        offset += 1
    return offset


def chunk_pages(pages: Sequence[tuple[int, str]], *, size: int, overlap: int) -> list[Chunk]:
    """Chunks of a document given as ``(page number, text)`` pairs, page by page; offsets index the
    document's text as ``join_pages`` builds it."""
    _check(size, overlap)
    text, starts, _ = join_pages(pages)
    chunks: list[Chunk] = []
    for (number, page_text), start in zip(pages, starts, strict=True):
        chunks += chunk_text(
            text,
            size=size,
            overlap=overlap,
            page=number,
            begin=start,
            stop=start + len(page_text),
            first_index=len(chunks),
        )
    return chunks
