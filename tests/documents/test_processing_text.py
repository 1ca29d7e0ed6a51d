"""DOCX (paragraphs, tables, zip bombs) and text files with their encodings, called directly."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from processing.errors import CorruptInput
from processing.text import ZipBomb, check_zip_bomb, decode_text, read_docx, read_text_file
from samples.documents.make_samples import docx_document


def test_a_docx_gives_its_paragraphs_and_table_rows_in_order(tmp_path: Path) -> None:
    # Given a DOCX with two paragraphs and a 3×3 table
    path = tmp_path / "minutes.docx"
    path.write_bytes(
        docx_document(
            ["Minutes of the board.", "The budget was approved."],
            [["Item", "Owner", "Due"], ["Hire analyst", "Ana", "May"], ["Renew lease", "Bo", "June"]],
        )
    )

    # When it is read
    text = read_docx(path)

    # Then paragraphs come first, separated by a blank line, then one line per table row
    assert text == (
        "Minutes of the board.\n\nThe budget was approved.\n\n"
        "Item | Owner | Due\nHire analyst | Ana | May\nRenew lease | Bo | June"
    )


def bomb(path: Path, *, megabytes: int) -> Path:
    """A DOCX-shaped zip whose document.xml is ``megabytes`` of zeros (deflates ~1000 times)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w") as member:
            block = b"0" * (1024 * 1024)
            for _ in range(megabytes):
                member.write(block)
    return path


def test_a_docx_zip_bomb_is_refused_before_it_is_unpacked(tmp_path: Path) -> None:
    # Given a 64 MB document.xml squeezed into a few tens of kilobytes
    path = bomb(tmp_path / "bomb.docx", megabytes=64)
    assert path.stat().st_size < 200_000

    # When / Then it is refused for its compression ratio
    with pytest.raises(ZipBomb, match=r"compressed \d+ times .* zip bomb"):
        read_docx(path)


def test_a_docx_that_would_unpack_past_the_size_cap_is_refused(tmp_path: Path) -> None:
    # Given a DOCX-shaped zip that unpacks to 8 MB, and a cap of 4 MB
    path = bomb(tmp_path / "big.docx", megabytes=8)

    # When / Then
    with pytest.raises(ZipBomb, match="would unpack to 8 MB, over the limit of 4 MB"):
        check_zip_bomb(path, max_uncompressed_bytes=4_000_000, max_ratio=10_000)


def test_a_docx_that_is_not_a_zip_is_refused_as_damaged(tmp_path: Path) -> None:
    # Given plain text saved as .docx
    path = tmp_path / "fake.docx"
    path.write_text("this is not a word document")

    # When / Then
    with pytest.raises(CorruptInput, match="not a valid Word document"):
        read_docx(path)


def test_a_zip_without_a_word_document_inside_is_refused_as_damaged(tmp_path: Path) -> None:
    # Given a zip with unrelated content named .docx
    path = tmp_path / "photos.docx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("photo.txt", "hello")

    # When / Then
    with pytest.raises(CorruptInput, match="not a valid Word document"):
        read_docx(path)


def test_latin_1_text_is_decoded_with_its_accents(tmp_path: Path) -> None:
    # Given a Latin-1 file (not valid UTF-8)
    path = tmp_path / "notes.txt"
    path.write_bytes("Café crème à la façon de Noël.\r\nDeuxième ligne.".encode("latin-1"))

    # When it is read
    text, encoding = read_text_file(path)

    # Then the accents survive and Windows line ends become \n
    assert text == "Café crème à la façon de Noël.\nDeuxième ligne."
    assert encoding in {"cp1252", "latin-1"}


def test_utf8_with_and_without_a_byte_order_mark_is_decoded() -> None:
    # Given the same text as UTF-8 with and without a BOM
    sample = "naïve résumé — 東京"

    # When both are decoded
    plain = decode_text(sample.encode("utf-8"))
    with_bom = decode_text(b"\xef\xbb\xbf" + sample.encode("utf-8"))

    # Then both read the same, and the BOM is not part of the text
    assert plain == (sample, "utf-8")
    assert with_bom == (sample, "utf-8-sig")


def test_utf16_with_a_byte_order_mark_is_decoded() -> None:
    # Given UTF-16 text as Windows Notepad writes it
    data = "Grüße".encode("utf-16")

    # When / Then
    assert decode_text(data) == ("Grüße", "utf-16")


def test_binary_bytes_named_txt_are_refused() -> None:
    # Given bytes with NULs and no UTF-16 mark
    # When / Then
    with pytest.raises(CorruptInput, match="binary data"):
        decode_text(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
