"""Scanned pages as scanners deliver them (a few degrees off level, speckled, JPEG q70, 200 dpi) are read
by OCR, directly and through a worker: at least 90% of the words of every page."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from documents_support import fresh_dir, relative, wait_for_document
from scans import PARAGRAPHS, scan, scanned_jpeg_pdf, word_recall

from storage import documents as store

pytestmark = pytest.mark.timeout(900)

ANGLES = [-3.0, -2.2, -1.5, -0.6, 0.0, 0.8, 1.5, 2.4, 3.0]


def test_every_page_of_a_rotated_noisy_scan_is_read(tmp_path: Path) -> None:
    # Given a PDF of scans rotated from -3° to +3°, speckled and JPEG-compressed at 200 dpi
    from processing.pdf import ocr_pages

    path = tmp_path / "scans.pdf"
    texts = [PARAGRAPHS[index % len(PARAGRAPHS)] for index in range(len(ANGLES))]
    path.write_bytes(
        scanned_jpeg_pdf(
            [scan(text, angle=angle, seed=index) for index, (text, angle) in enumerate(zip(texts, ANGLES, strict=True))]
        )
    )

    # When every page is read by OCR
    found = ocr_pages(path, range(1, len(ANGLES) + 1))

    # Then every page gives at least 90% of its words
    recalls = {
        angle: word_recall(text, found[number])
        for number, (text, angle) in enumerate(zip(texts, ANGLES, strict=True), 1)
    }
    assert all(recall >= 0.9 for recall in recalls.values()), recalls


@pytest.mark.parametrize("angle", [-2.5, 1.5])
def test_the_skew_of_a_scan_is_measured_and_undone(angle: float) -> None:
    # Given a scan rotated by the angle
    from PIL import Image

    from processing.ocr import skew_angle

    picture = Image.open(io.BytesIO(scan(PARAGRAPHS[0], angle=angle).jpeg))

    # When its skew is measured
    measured = skew_angle(picture)

    # Then the rotation that levels it is the opposite angle, within a quarter degree
    assert abs(measured + angle) <= 0.25, measured


def test_a_rendered_page_carries_its_resolution_to_tesseract(tmp_path: Path) -> None:
    # Given a scanned PDF page
    from processing.ocr import _config, image_dpi
    from processing.pdf import render_page

    path = tmp_path / "one.pdf"
    path.write_bytes(scanned_jpeg_pdf([scan(PARAGRAPHS[2], angle=0.5)]))

    # When it is rendered at 200 dpi
    page = render_page(path, 1, dpi=200)

    # Then the image says 200 dpi and Tesseract is told so
    assert image_dpi(page) == 200
    assert "--dpi 200" in _config(image_dpi(page))


def test_a_sideways_scan_is_turned_upright_before_it_is_read() -> None:
    # Given a scan turned a quarter turn
    from PIL import Image

    from processing.ocr import ocr_image

    picture = Image.open(io.BytesIO(scan(PARAGRAPHS[1], angle=0.0, noise=0.0).jpeg)).rotate(90, expand=True)

    # When it is read
    text = ocr_image(picture, dpi=200)

    # Then its words are found
    assert word_recall(PARAGRAPHS[1], text) >= 0.9


def test_a_worker_reads_every_page_of_a_rotated_scan(worker: Any, storage_root: Path) -> None:
    # Given a three-page scan rotated -3°, +1.5° and +3° under the storage root
    from pipelines.documents import ingest_document

    folder = fresh_dir(storage_root)
    angles = [-3.0, 1.5, 3.0]
    (folder / "scan.pdf").write_bytes(
        scanned_jpeg_pdf([scan(text, angle=angle, seed=7) for text, angle in zip(PARAGRAPHS, angles, strict=True)])
    )

    # When it is ingested
    document_id = ingest_document(relative(folder / "scan.pdf", storage_root)).document_id
    status = wait_for_document(document_id, timeout=600)

    # Then every page was read by OCR with at least 90% of its words
    assert status["status"] == "indexed", status
    pages = store.pages_of(document_id)
    assert [page.ocr for page in pages] == [True, True, True]
    recalls = [word_recall(text, page.text) for text, page in zip(PARAGRAPHS, pages, strict=True)]
    assert min(recalls) >= 0.9, recalls
