"""PDF text, image filtering and the checks that refuse bad PDFs, called directly (no broker)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pypdf import PdfWriter

from processing.errors import CorruptInput, TooLarge
from processing.pdf import EncryptedPdf, extract_pdf
from samples.documents.make_samples import PdfPage, gradient_image, pdf_bytes, scanned_pdf, text_pdf

PAGE_ONE = "Invoices are sent on the first working day of each month."
PAGE_TWO = "Payment is due within thirty days of the invoice date."


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def encrypted(data: bytes, user_password: str) -> bytes:
    writer = PdfWriter(clone_from=io.BytesIO(data))
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_a_text_pdf_gives_the_text_of_each_page(tmp_path: Path) -> None:
    # Given a two-page PDF with a text layer
    path = write(tmp_path / "terms.pdf", text_pdf([[PAGE_ONE], [PAGE_TWO]]))

    # When its text is extracted
    content = extract_pdf(path, max_pages=10)

    # Then each page carries its own text and none needs OCR
    assert [page.number for page in content.pages] == [1, 2]
    assert content.pages[0].text == PAGE_ONE
    assert content.pages[1].text == PAGE_TWO
    assert not any(page.needs_ocr or page.ocr for page in content.pages)


def test_a_page_without_a_text_layer_is_flagged_for_ocr(tmp_path: Path) -> None:
    # Given a PDF with a text page and a page that is only a picture
    scanned = scanned_pdf(["A picture of words."], dpi=100, bilevel=True)
    text = text_pdf([[PAGE_ONE]])
    (tmp_path / "scan.pdf").write_bytes(scanned)
    (tmp_path / "text.pdf").write_bytes(text)

    # When both are extracted without OCR
    scan_content = extract_pdf(tmp_path / "scan.pdf", max_pages=10)
    text_content = extract_pdf(tmp_path / "text.pdf", max_pages=10)

    # Then only the picture page is flagged, and nothing was OCR'd yet
    assert scan_content.pages[0].needs_ocr and not scan_content.pages[0].ocr
    assert not text_content.pages[0].needs_ocr


def test_embedded_images_smaller_than_the_minimum_are_skipped(tmp_path: Path) -> None:
    # Given a page with two large pictures and one 20×20 dot
    page = PdfPage(
        lines=["Two charts and a bullet."],
        images=[
            gradient_image(320, 200, x=72, y=450),
            gradient_image(150, 160, x=72, y=200),
            gradient_image(20, 20, x=400, y=100),
        ],
    )
    path = write(tmp_path / "charts.pdf", pdf_bytes([page]))

    # When images are extracted with the default 100 px minimum
    content = extract_pdf(path, max_pages=10, image_dir=tmp_path / "images", min_image_pixels=100)

    # Then the two large ones are saved with their sizes and the dot is counted as skipped
    assert sorted((image.width, image.height) for image in content.images) == [(150, 160), (320, 200)]
    assert content.skipped_images == 1
    saved = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert len(saved) == 2
    assert all(image.path.is_file() and image.path.stat().st_size > 0 for image in content.images)
    assert all(image.page == 1 for image in content.images)


def test_progress_is_reported_after_every_page(tmp_path: Path) -> None:
    # Given a three-page PDF and a progress callback
    path = write(tmp_path / "three.pdf", text_pdf([[PAGE_ONE], [PAGE_TWO], [PAGE_ONE]]))
    reports: list[tuple[float, str | None]] = []

    # When it is extracted
    extract_pdf(path, max_pages=10, on_progress=lambda percent, note: reports.append((percent, note)))

    # Then progress rose page by page to 100%
    assert [note for _, note in reports] == ["page 1 of 3", "page 2 of 3", "page 3 of 3"]
    assert reports[-1][0] == pytest.approx(100.0)


def test_a_truncated_pdf_is_refused_as_damaged(tmp_path: Path) -> None:
    # Given the first half of a valid PDF
    data = text_pdf([[PAGE_ONE], [PAGE_TWO]])
    path = write(tmp_path / "half.pdf", data[: len(data) // 2])

    # When / Then it is refused with a reason that says so
    with pytest.raises(CorruptInput, match="truncated or damaged"):
        extract_pdf(path, max_pages=10)


def test_a_pdf_with_a_broken_cross_reference_is_refused_as_damaged(tmp_path: Path) -> None:
    # Given a PDF whose end survives but whose middle was cut out
    data = text_pdf([[PAGE_ONE]])
    path = write(tmp_path / "holed.pdf", data[:100] + data[-30:])

    # When / Then
    with pytest.raises(CorruptInput, match="damaged"):
        extract_pdf(path, max_pages=10)


def test_random_bytes_named_pdf_are_refused_as_not_a_pdf(tmp_path: Path) -> None:
    # Given random bytes in a file called .pdf
    path = write(tmp_path / "noise.pdf", bytes((index * 7919) % 256 for index in range(4096)))

    # When / Then
    with pytest.raises(CorruptInput, match="not a PDF"):
        extract_pdf(path, max_pages=10)


def test_an_encrypted_pdf_without_its_password_is_refused(tmp_path: Path) -> None:
    # Given a PDF that needs a user password to open
    path = write(tmp_path / "locked.pdf", encrypted(text_pdf([[PAGE_ONE]]), user_password="s3cret"))

    # When / Then it is refused as encrypted
    with pytest.raises(EncryptedPdf, match="encrypted and needs a password"):
        extract_pdf(path, max_pages=10)


def test_an_encrypted_pdf_with_an_empty_user_password_is_read(tmp_path: Path) -> None:
    # Given a PDF encrypted only with an owner password (copy/print restrictions)
    path = write(tmp_path / "restricted.pdf", encrypted(text_pdf([[PAGE_ONE]]), user_password=""))

    # When it is extracted
    content = extract_pdf(path, max_pages=10)

    # Then its text comes out
    assert content.pages[0].text == PAGE_ONE


def test_a_pdf_over_the_page_cap_is_refused(tmp_path: Path) -> None:
    # Given a PDF of 2,001 pages (one shared content stream keeps it small)
    path = write(tmp_path / "long.pdf", pdf_bytes([PdfPage(lines=["x"])] * 2001, share_content=True))

    # When / Then the default cap of 2,000 pages refuses it before any page is read
    with pytest.raises(TooLarge, match="2001 pages, over the limit of 2000"):
        extract_pdf(path, max_pages=2000)
