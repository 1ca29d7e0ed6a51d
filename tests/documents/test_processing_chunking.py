"""Chunk boundaries, overlap, offsets and pages, called directly."""

from __future__ import annotations

import itertools

import pytest

from processing.chunking import chunk_pages, chunk_text, join_pages
from processing.errors import InvalidArgument


def sentence(number: int) -> str:
    return f"Sentence number {number} talks about topic {number % 7} in a few plain words."


def test_a_short_text_is_one_chunk_with_its_offsets() -> None:
    # Given a text shorter than the chunk size, with surrounding blanks
    text = "  One short paragraph.  \n"

    # When it is chunked
    chunks = chunk_text(text, size=4000, overlap=400)

    # Then there is one chunk, trimmed, whose offsets point at it
    assert len(chunks) == 1
    assert chunks[0].text == "One short paragraph."
    assert text[chunks[0].start : chunks[0].end] == chunks[0].text


def test_chunks_respect_the_size_and_overlap_by_about_the_configured_amount() -> None:
    # Given a long text of many sentences
    text = " ".join(sentence(number) for number in range(400))

    # When it is chunked at 1,000 characters with 100 overlap
    chunks = chunk_text(text, size=1000, overlap=100)

    # Then no chunk is longer than the size, each maps back to the text, and consecutive chunks overlap
    assert len(chunks) > 20
    for previous, current in itertools.pairwise(chunks):
        assert len(current.text) <= 1000
        assert text[current.start : current.end] == current.text
        shared = previous.end - current.start
        assert 80 <= shared <= 100, shared
        assert text[current.start - 1] == " "  # the overlap starts at a word
    assert chunks[-1].end == len(text)
    assert [chunk.index for chunk in chunks] == list(range(len(chunks)))


def test_a_chunk_is_cut_at_a_paragraph_break_near_the_limit() -> None:
    # Given two paragraphs; the first ends 150 characters before the size limit
    first = "A" * 40 + ". " + ("word " * 160).strip() + "."
    second = ("other " * 200).strip()
    text = first + "\n\n" + second
    assert 1000 - 200 < len(first) < 1000

    # When chunked at 1,000
    chunks = chunk_text(text, size=1000, overlap=0)

    # Then the first chunk is exactly the first paragraph
    assert chunks[0].text == first
    assert chunks[1].text.startswith("other")


def test_a_chunk_is_cut_at_a_sentence_end_when_no_paragraph_break_is_near() -> None:
    # Given one long paragraph of sentences
    text = " ".join(sentence(number) for number in range(60))

    # When chunked at 1,000 with no overlap
    chunks = chunk_text(text, size=1000, overlap=0)

    # Then every chunk but the last ends with a full stop
    assert all(chunk.text.endswith(".") for chunk in chunks)
    assert " ".join(chunk.text for chunk in chunks) == text


def test_a_text_without_any_break_is_cut_hard_at_the_size() -> None:
    # Given 2,500 characters without a space
    text = "x" * 2500

    # When chunked at 1,000 with 100 overlap
    chunks = chunk_text(text, size=1000, overlap=100)

    # Then the cuts fall at the size exactly
    assert [(chunk.start, chunk.end) for chunk in chunks] == [(0, 1000), (900, 1900), (1800, 2500)]


def test_chunks_stay_within_their_page_and_keep_document_offsets() -> None:
    # Given three pages of about 600 characters each
    pages = [(number, " ".join(sentence(number * 100 + i) for i in range(8))) for number in (1, 2, 3)]
    text, starts, _ = join_pages(pages)

    # When chunked at 500 with 50 overlap
    chunks = chunk_pages(pages, size=500, overlap=50)

    # Then every chunk lies inside the page it names, and its offsets index the joined text
    for chunk in chunks:
        page_start = starts[chunk.page - 1]
        page_end = page_start + len(pages[chunk.page - 1][1])
        assert page_start <= chunk.start < chunk.end <= page_end
        assert text[chunk.start : chunk.end] == chunk.text
    assert [chunk.page for chunk in chunks] == sorted(chunk.page for chunk in chunks)
    assert {chunk.page for chunk in chunks} == {1, 2, 3}
    assert [chunk.index for chunk in chunks] == list(range(len(chunks)))


def test_a_page_without_text_gives_no_chunk() -> None:
    # Given a document whose middle page is blank
    pages = [(1, "First page."), (2, "   "), (3, "Third page.")]

    # When chunked
    chunks = chunk_pages(pages, size=4000, overlap=400)

    # Then only the pages with text have chunks
    assert [(chunk.page, chunk.text) for chunk in chunks] == [(1, "First page."), (3, "Third page.")]


def test_the_default_settings_give_four_thousand_character_chunks() -> None:
    # Given a text of about 20,000 characters
    text = " ".join(sentence(number) for number in range(270))

    # When chunked with the defaults (4,000 / 400)
    chunks = chunk_text(text, size=4000, overlap=400)

    # Then chunks are close to the size and never over it
    assert all(3200 <= len(chunk.text) <= 4000 for chunk in chunks[:-1])


def test_an_overlap_as_large_as_the_chunk_is_refused() -> None:
    # When / Then
    with pytest.raises(InvalidArgument, match="overlap"):
        chunk_text("text", size=100, overlap=100)
