"""The checks every document goes through before it is read, called directly."""

from __future__ import annotations

from pathlib import Path

import pytest

from processing.documents import extract_document
from processing.errors import CorruptInput, NotFound, OutsideStorageRoot, TooLarge, UnsupportedFormat
from samples.documents.make_samples import docx_document, text_pdf


@pytest.fixture
def root(tmp_path: Path) -> Path:
    storage = tmp_path / "storage"
    storage.mkdir()
    return storage


def test_each_supported_format_gives_pages_of_text(root: Path) -> None:
    # Given a PDF, a DOCX and a Markdown file under the storage root
    (root / "a.pdf").write_bytes(text_pdf([["First page text is here."], ["Second page text is here."]]))
    (root / "b.docx").write_bytes(docx_document(["A Word paragraph."]))
    (root / "c.md").write_text("# Title\n\nSome *markdown* text.\n", encoding="utf-8")

    # When each is extracted
    pdf = extract_document("a.pdf", root=root)
    docx = extract_document("b.docx", root=root)
    markdown = extract_document(root / "c.md", root=root)

    # Then each gives its kind and text; DOCX and Markdown are one page
    assert (pdf.kind, [p.text for p in pdf.pages]) == (
        "pdf",
        ["First page text is here.", "Second page text is here."],
    )
    assert (docx.kind, [p.text for p in docx.pages]) == ("docx", ["A Word paragraph."])
    assert (markdown.kind, markdown.encoding) == ("text", "utf-8")
    assert markdown.pages[0].text == "# Title\n\nSome *markdown* text."


def test_an_empty_file_is_refused(root: Path) -> None:
    # Given a 0-byte PDF
    (root / "empty.pdf").write_bytes(b"")

    # When / Then
    with pytest.raises(CorruptInput, match=r"empty \(0 bytes\)"):
        extract_document("empty.pdf", root=root)


def test_an_unsupported_extension_is_refused_naming_the_readable_ones(root: Path) -> None:
    # Given a spreadsheet
    (root / "sheet.xlsx").write_bytes(b"PK\x03\x04 not read")

    # When / Then
    with pytest.raises(UnsupportedFormat, match=r"\.xlsx are not supported \(readable: .*\.pdf"):
        extract_document("sheet.xlsx", root=root)


def test_a_path_outside_the_storage_root_is_refused(root: Path) -> None:
    # When / Then a ../ path is refused before anything is opened
    with pytest.raises(OutsideStorageRoot, match="outside the storage root"):
        extract_document("../../etc/passwd", root=root)


def test_a_missing_file_is_reported_as_not_found(root: Path) -> None:
    # When / Then
    with pytest.raises(NotFound, match="does not exist"):
        extract_document("nowhere.pdf", root=root)


def test_a_file_over_the_size_cap_is_refused_without_being_read(root: Path) -> None:
    # Given a sparse 101 MB file (no disk space used) and the default 100 MiB cap
    path = root / "huge.pdf"
    with open(path, "wb") as handle:
        handle.truncate(101 * 1024 * 1024)

    # When / Then
    with pytest.raises(TooLarge, match=r"over the limit of 104\.9 MB"):
        extract_document("huge.pdf", root=root, max_file_bytes=100 * 1024 * 1024)
