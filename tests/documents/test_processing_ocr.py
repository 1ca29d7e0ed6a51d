"""OCR of scanned pages with the real Tesseract, called directly (no broker)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from processing.errors import InvalidArgument
from processing.ocr import ocr_image
from processing.pdf import extract_pdf, ocr_page
from samples.documents.make_samples import render_paragraph, scanned_pdf

PARAGRAPH = (
    "The committee reviewed the annual budget and approved funding for three new research projects. "
    "Each project will report its progress every quarter, and the first results are expected before "
    "the summer holidays. Travel costs must be approved in advance by the finance office."
)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def recall(expected: str, found: str) -> float:
    """Share of the expected words that OCR found (each occurrence counted once)."""
    pool = words(found)
    hits = 0
    for word in words(expected):
        if word in pool:
            pool.remove(word)
            hits += 1
    return hits / len(words(expected))


def test_ocr_reads_back_a_scanned_paragraph(tmp_path: Path) -> None:
    # Given a paragraph rendered in DejaVu Sans at 300 dpi and wrapped in a PDF without text layer
    path = tmp_path / "scan.pdf"
    path.write_bytes(scanned_pdf([PARAGRAPH], dpi=300))

    # When the page is rendered by pdftoppm and read by Tesseract
    text = ocr_page(path, 1, language="eng")

    # Then at least 90% of the paragraph's words come back
    assert recall(PARAGRAPH, text) >= 0.9, text


def test_extraction_with_ocr_fills_in_the_scanned_page_and_records_it(tmp_path: Path) -> None:
    # Given a scanned page stored bilevel at 200 dpi, as cheap scanners do
    path = tmp_path / "memo.pdf"
    path.write_bytes(scanned_pdf([PARAGRAPH], dpi=200, bilevel=True))

    # When it is extracted with OCR on
    content = extract_pdf(path, max_pages=10, ocr_language="eng")

    # Then the page text is the OCR'd paragraph and the page is marked as OCR'd
    page = content.pages[0]
    assert page.needs_ocr and page.ocr
    assert recall(PARAGRAPH, page.text) >= 0.9, page.text


def test_ocr_of_a_picture_reads_its_words() -> None:
    # Given a picture of a short sentence
    image = render_paragraph("Quarterly revenue grew by twelve percent.", dpi=300)

    # When it is read
    text = ocr_image(image, language="eng")

    # Then the words are there
    assert recall("Quarterly revenue grew by twelve percent.", text) == 1.0, text


def test_an_ocr_language_that_is_not_installed_is_refused() -> None:
    # Given a picture and a language pack that does not exist
    image = render_paragraph("Hello.", dpi=100)

    # When / Then the error names the missing language and the installed ones
    with pytest.raises(InvalidArgument, match=r"'zzz' is not installed; installed: .*eng"):
        ocr_image(image, language="zzz")
