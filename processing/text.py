"""Word documents (DOCX, through python-docx) and plain text or Markdown with its encoding detected."""

from __future__ import annotations

import codecs
import zipfile
from pathlib import Path

from processing.errors import CorruptInput, TooLarge

#: A DOCX may unpack to at most this many bytes in all (its XML is typically 5-20 times its zip size).
DOCX_MAX_UNCOMPRESSED_BYTES = 512 * 1024 * 1024
#: A member larger than ``DOCX_RATIO_CHECK_BYTES`` may be at most this many times smaller zipped.
DOCX_MAX_RATIO = 100
DOCX_RATIO_CHECK_BYTES = 1024 * 1024
DOCX_MAX_MEMBERS = 10_000


class ZipBomb(TooLarge):
    """An archive that would unpack to far more than it weighs."""


def decode_text(data: bytes) -> tuple[str, str]:
    """``data`` as text and the encoding it was read with.

    A byte-order mark wins (UTF-8, UTF-16); then strict UTF-8; then Windows-1252, the superset of
    Latin-1 that files called "Latin-1" usually are; then Latin-1 itself, which decodes any byte.
    Bytes with NULs and no UTF-16 mark are binary, not text.
    """
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8) :].decode("utf-8", errors="replace"), "utf-8-sig"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace"), "utf-16"
    if b"\x00" in data:
        raise CorruptInput("the file contains binary data (NUL bytes), not text")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def read_text_file(path: Path) -> tuple[str, str]:
    """The text of a plain-text or Markdown file and its detected encoding; line ends become ``\\n``."""
    text, encoding = decode_text(path.read_bytes())
    return text.replace("\r\n", "\n").replace("\r", "\n"), encoding


def check_zip_bomb(
    path: Path,
    *,
    max_uncompressed_bytes: int = DOCX_MAX_UNCOMPRESSED_BYTES,
    max_ratio: float = DOCX_MAX_RATIO,
) -> None:
    """Refuse an archive that would unpack to more than ``max_uncompressed_bytes`` or that has a large
    member compressed more than ``max_ratio`` times, before anything decompresses it.

    The sizes come from the zip's central directory. A member that lies about its size is still safe:
    Python's ``zipfile`` stops at the declared size and fails the CRC check.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise CorruptInput(f"{path.name} is not a valid Word document (not a readable ZIP archive)") from exc
    if len(members) > DOCX_MAX_MEMBERS:
        raise ZipBomb(f"{path.name} holds {len(members)} files, over the limit of {DOCX_MAX_MEMBERS}")
    total = sum(member.file_size for member in members)
    if total > max_uncompressed_bytes:
        raise ZipBomb(
            f"{path.name} would unpack to {total / 1e6:.0f} MB, over the limit of "
            f"{max_uncompressed_bytes / 1e6:.0f} MB; it looks like a zip bomb"
        )
    for member in members:
        if member.file_size < DOCX_RATIO_CHECK_BYTES:
            continue
        ratio = member.file_size / max(member.compress_size, 1)
        if ratio > max_ratio:
            raise ZipBomb(
                f"{path.name} contains {member.filename!r}, compressed {ratio:.0f} times "
                f"(more than {max_ratio:.0f}); it looks like a zip bomb"
            )


def read_docx(
    path: Path,
    *,
    max_uncompressed_bytes: int = DOCX_MAX_UNCOMPRESSED_BYTES,
    max_ratio: float = DOCX_MAX_RATIO,
) -> str:
    """The text of a DOCX in document order: paragraphs, then each table row as ``cell | cell``.

    Paragraphs are separated by a blank line; a table is one block with a line per row.
    """
    check_zip_bomb(path, max_uncompressed_bytes=max_uncompressed_bytes, max_ratio=max_ratio)
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    try:
        document = docx.Document(str(path))
        blocks: list[str] = []
        for item in document.iter_inner_content():
            if isinstance(item, Table):
                table_text = _table_text(item)
                if table_text:
                    blocks.append(table_text)
            elif item.text.strip():
                blocks.append(item.text.strip())
    except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise CorruptInput(f"{path.name} is not a valid Word document ({exc})") from exc
    except Exception as exc:
        if type(exc).__module__.startswith(("lxml", "docx")):
            raise CorruptInput(f"{path.name} is a damaged Word document ({exc})") from exc
        raise
    return "\n\n".join(blocks)


def _table_text(table: object) -> str:
    from docx.table import Table

    assert isinstance(table, Table)
    lines: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            if cell._tc is previous:  # a merged cell is returned once per grid column it spans
                continue
            previous = cell._tc
            cells.append(" ".join(cell.text.split()))
        if any(cells):
            lines.append(" | ".join(cells))
    return "\n".join(lines)
