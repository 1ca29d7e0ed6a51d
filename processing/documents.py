"""One entry point for every document format: checks, then text per page (and images for PDF).

``extract_document`` is what the documents actors call; it is also usable on its own::

    from processing.documents import extract_document
    result = extract_document("reports/q3.pdf", root=Path("var/storage"), ocr_language="eng")
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from processing import pdf, text
from processing.errors import CorruptInput, TooLarge, UnsupportedFormat
from processing.paths import resolve_under

ProgressCallback = Callable[[float, str | None], None]

#: File name endings this module reads, and the kind each one is.
KINDS: dict[str, str] = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".markdown": "text",
}


@dataclass
class Page:
    number: int  # 1-based; DOCX and text files are one page
    text: str
    needs_ocr: bool = False
    ocr: bool = False


@dataclass
class Extraction:
    path: Path  # the resolved file
    kind: str  # pdf, docx or text
    size_bytes: int
    pages: list[Page]
    images: list[pdf.PdfImageFile] = field(default_factory=list)
    skipped_images: int = 0
    encoding: str | None = None  # text files only


def kind_of(path: Path) -> str:
    """``pdf``, ``docx`` or ``text`` from the file name, or ``UnsupportedFormat``."""
    suffix = path.suffix.lower()
    if suffix in KINDS:
        return KINDS[suffix]
    if suffix == ".doc":
        raise UnsupportedFormat(f"{path.name}: old Word .doc files are not supported; save it as .docx")
    readable = ", ".join(sorted(KINDS))
    shown = suffix or "no extension"
    raise UnsupportedFormat(f"{path.name}: files with {shown} are not supported (readable: {readable})")


def check_size(path: Path, max_bytes: int) -> int:
    """The file's size, refusing an empty file or one over ``max_bytes``."""
    size = path.stat().st_size
    if size == 0:
        raise CorruptInput(f"{path.name} is empty (0 bytes)")
    if size > max_bytes:
        raise TooLarge(f"{path.name} is {size / 1e6:.1f} MB, over the limit of {max_bytes / 1e6:.1f} MB")
    return size


def resolve(path: str | Path, *, root: Path) -> Path:
    """``path`` (relative to ``root`` or absolute) resolved, refusing anything outside ``root``."""
    resolved = resolve_under(root, path)
    if not resolved.is_file():
        raise UnsupportedFormat(f"{str(path)!r} is not a regular file")
    return resolved


def extract_document(
    path: str | Path,
    *,
    root: Path,
    max_file_bytes: int = 100 * 1024 * 1024,
    max_pdf_pages: int = 2_000,
    min_image_pixels: int = 100,
    image_dir: Path | None = None,
    ocr_language: str | None = None,
    on_progress: ProgressCallback | None = None,
    password: str | None = None,
) -> Extraction:
    """Text of the document at ``path`` (under ``root``), page by page.

    PDF pages with no usable text layer are flagged ``needs_ocr``; they are read right away when
    ``ocr_language`` is given. Embedded PDF images of at least ``min_image_pixels`` per side are saved
    in ``image_dir`` when it is given. ``password`` opens an encrypted PDF (other kinds ignore it).
    """
    resolved = resolve(path, root=root)
    kind = kind_of(resolved)
    size = check_size(resolved, max_file_bytes)
    if kind == "pdf":
        content = pdf.extract_pdf(
            resolved,
            max_pages=max_pdf_pages,
            image_dir=image_dir,
            min_image_pixels=min_image_pixels,
            ocr_language=ocr_language,
            on_progress=on_progress,
            password=password,
        )
        pages = [Page(p.number, p.text, needs_ocr=p.needs_ocr, ocr=p.ocr) for p in content.pages]
        return Extraction(resolved, kind, size, pages, content.images, content.skipped_images)
    if kind == "docx":
        body = text.read_docx(resolved)
        encoding = None
    else:
        body, encoding = text.read_text_file(resolved)
    if on_progress is not None:
        on_progress(100.0, "page 1 of 1")
    return Extraction(resolved, kind, size, [Page(1, body.strip())], encoding=encoding)
