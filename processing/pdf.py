"""PDF: text per page with pypdf, embedded images, and OCR of pages that carry no text layer.

A page whose text layer has fewer than ``min_text_chars`` visible characters is flagged ``needs_ocr``;
``ocr_page`` renders it with poppler's ``pdftoppm`` and reads it with Tesseract.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processing.errors import CorruptInput, MissingDependency, PermanentError, TooLarge, UnsupportedFormat

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str | None], None]

#: A page with fewer visible characters than this in its text layer is read by OCR.
MIN_TEXT_CHARS = 20
#: Resolution pages are rendered at for OCR; 300 dpi is what Tesseract is tuned for.
OCR_DPI = 300
#: How long one page may take to render before poppler is stopped (seconds).
RENDER_TIMEOUT_SECONDS = 120


class EncryptedPdf(UnsupportedFormat):
    """The PDF is encrypted and cannot be opened without its password."""


class WrongPassword(EncryptedPdf):
    """The PDF is encrypted and the password given does not open it."""


@dataclass
class PdfPageText:
    number: int  # 1-based page number
    text: str
    needs_ocr: bool  # the text layer is empty or near-empty
    ocr: bool = False  # ``text`` came from OCR


@dataclass
class PdfImageFile:
    page: int
    path: Path
    width: int
    height: int


@dataclass
class PdfContent:
    pages: list[PdfPageText]
    images: list[PdfImageFile] = field(default_factory=list)
    skipped_images: int = 0  # embedded images under the minimum size


def open_pdf(path: Path, *, max_pages: int, password: str | None = None) -> Any:
    """A ``pypdf.PdfReader`` on ``path`` after the checks that make a bad file fail with a clear reason:
    not a PDF, truncated, damaged, encrypted without (or with the wrong) ``password``, or over ``max_pages``."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    with open(path, "rb") as handle:
        head = handle.read(1024)
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - 1024))
        tail = handle.read()
    if b"%PDF-" not in head:
        raise CorruptInput(f"{path.name} is not a PDF (it does not start with the %PDF- header)")
    if b"%%EOF" not in tail:
        raise CorruptInput(f"{path.name} is truncated or damaged: the PDF end-of-file marker is missing")
    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            _decrypt(reader, path, password, DependencyError)
        count = len(reader.pages)
    except (PermanentError, TooLarge):
        raise
    except FileNotDecryptedError as exc:
        raise EncryptedPdf(_needs_password(path)) from exc
    except DependencyError as exc:
        raise MissingDependency(_missing_crypto(path, exc)) from exc
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise CorruptInput(f"{path.name} is damaged and cannot be read as a PDF ({exc})") from exc
    if count == 0:
        raise CorruptInput(f"{path.name} has no pages")
    if count > max_pages:
        raise TooLarge(f"{path.name} has {count} pages, over the limit of {max_pages} pages")
    return reader


def _needs_password(path: Path) -> str:
    return f"{path.name} is encrypted and needs a password; ingest it again with its password"


def _missing_crypto(path: Path, error: Exception) -> str:
    return (
        f"{path.name} is encrypted, and reading its cipher needs a module this installation lacks ({error}); "
        "install the pinned requirements"
    )


def _decrypt(reader: Any, path: Path, password: str | None, dependency_error: type[Exception]) -> None:
    """Open an encrypted PDF with ``password``, or with the empty password when none is given: many
    "encrypted" PDFs only restrict printing or copying and open without one."""
    try:
        opened = reader.decrypt(password or "")
    except dependency_error as exc:
        # pypdf reads AES only through the ``cryptography`` package: an installation error, not bad input.
        raise MissingDependency(_missing_crypto(path, exc)) from exc
    if opened:
        return
    if password:
        raise WrongPassword(f"{path.name} is encrypted and the password given for it is wrong")
    raise EncryptedPdf(_needs_password(path))


def visible_chars(text: str) -> int:
    return sum(1 for char in text if not char.isspace())


def extract_pdf(
    path: Path,
    *,
    max_pages: int,
    image_dir: Path | None = None,
    min_image_pixels: int = 100,
    min_text_chars: int = MIN_TEXT_CHARS,
    ocr_language: str | None = None,
    on_progress: ProgressCallback | None = None,
    password: str | None = None,
) -> PdfContent:
    """Text of every page and, when ``image_dir`` is given, the embedded images of at least
    ``min_image_pixels`` on both sides saved there (one file per image, in its own format).

    With ``ocr_language`` the pages that need OCR are read right away; without it they are only flagged
    (the documents actors OCR them in a step of their own). ``password`` opens an encrypted PDF.
    """
    reader = open_pdf(path, max_pages=max_pages, password=password)
    total = len(reader.pages)
    content = PdfContent(pages=[])
    seen_images: set[tuple[int, int]] = set()
    if image_dir is not None:
        image_dir.mkdir(parents=True, exist_ok=True)
    for index in range(total):
        number = index + 1
        try:
            page = reader.pages[index]
            text = page.extract_text() or ""
        except Exception as exc:  # pypdf raises many types on broken content streams
            raise CorruptInput(f"page {number} of {path.name} is damaged and cannot be read ({exc})") from exc
        needs_ocr = visible_chars(text) < min_text_chars
        content.pages.append(PdfPageText(number=number, text=text.strip(), needs_ocr=needs_ocr))
        if image_dir is not None:
            _save_images(page, number, image_dir, min_image_pixels, seen_images, content)
        if on_progress is not None:
            on_progress(100.0 * number / total, f"page {number} of {total}")
    if ocr_language is not None:
        wanted = [page_text.number for page_text in content.pages if page_text.needs_ocr]
        texts = ocr_pages(path, wanted, language=ocr_language, password=password, reader=reader)
        for page_text in content.pages:
            if page_text.number in texts:
                page_text.text = texts[page_text.number]
                page_text.ocr = True
    return content


def _save_images(
    page: Any,
    number: int,
    image_dir: Path,
    min_pixels: int,
    seen: set[tuple[int, int]],
    content: PdfContent,
) -> None:
    """Save the page's image XObjects of at least ``min_pixels`` per side.

    Sizes are read from the image dictionaries, so small images are skipped without being decoded and
    a page without images costs almost nothing. Images inside form XObjects are found through pypdf's
    ``page.images``; inline images (small by nature) are not saved.
    """
    try:
        resources = page.get("/Resources")
        xobjects = resources.get_object().get("/XObject") if resources is not None else None
        entries = list(xobjects.get_object().items()) if xobjects is not None else []
    except Exception as exc:
        logger.warning("resources of page %r could not be read: %r", number, exc)
        return
    wanted: list[str] = []
    for name, reference in entries:
        key = (reference.idnum, reference.generation) if hasattr(reference, "idnum") else None
        if key is not None and key in seen:  # the same picture (a logo) on many pages is saved once
            continue
        if key is not None:
            seen.add(key)
        xobject = reference.get_object()
        subtype = xobject.get("/Subtype")
        if subtype == "/Form":
            _save_all_images(page, number, image_dir, min_pixels, content)
            return
        if subtype != "/Image":
            continue
        if int(xobject.get("/Width", 0)) < min_pixels or int(xobject.get("/Height", 0)) < min_pixels:
            content.skipped_images += 1
            continue
        wanted.append(str(name))
    for position, name in enumerate(wanted):
        try:
            image = page.images[name]
        except Exception as exc:
            # An image pypdf cannot decode does not make the text unreadable: note it and go on.
            logger.warning("image %r of page %r could not be read: %r", name, number, exc)
            continue
        _write_image(image, number, position, image_dir, content)


def _save_all_images(page: Any, number: int, image_dir: Path, min_pixels: int, content: PdfContent) -> None:
    try:
        images = list(page.images)
    except Exception as exc:
        logger.warning("images of page %r could not be read: %r", number, exc)
        return
    for position, image in enumerate(images):
        try:
            width, height = image.image.size
        except Exception as exc:
            logger.warning("image %r of page %r could not be decoded: %r", position, number, exc)
            continue
        if width < min_pixels or height < min_pixels:
            content.skipped_images += 1
            continue
        _write_image(image, number, position, image_dir, content)


def _write_image(image: Any, number: int, position: int, image_dir: Path, content: PdfContent) -> None:
    width, height = image.image.size
    suffix = Path(image.name).suffix or ".png"
    target = image_dir / f"page-{number:04d}-{position:02d}{suffix}"
    target.write_bytes(image.data)
    content.images.append(PdfImageFile(page=number, path=target, width=width, height=height))


def render_page(path: Path, number: int, *, dpi: int = OCR_DPI, password: str | None = None, reader: Any = None) -> Any:
    """Page ``number`` (1-based) of the PDF as a grayscale PIL image, rendered by ``pdftoppm``; its
    ``info["dpi"]`` is the resolution it was rendered at.

    An encrypted PDF is opened with ``password`` (or through ``reader``, one already open), and the page
    is handed to poppler as a decrypted one-page copy in a private temporary folder: a password on
    poppler's command line would be readable by every user of the machine.
    """
    from PIL import Image

    if shutil.which("pdftoppm") is None:
        raise MissingDependency("pdftoppm is not installed (Debian/Ubuntu package poppler-utils)")
    with tempfile.TemporaryDirectory(prefix="pdfpage-") as tmp:
        source, wanted = path, number
        if password is not None or reader is not None:
            source, wanted = _decrypted_page(path, number, Path(tmp), password=password, reader=reader), 1
        prefix = Path(tmp) / "page"
        command = ["pdftoppm", "-r", str(dpi), "-gray", "-png", "-singlefile"]
        command += ["-f", str(wanted), "-l", str(wanted), str(source), str(prefix)]
        try:
            done = subprocess.run(command, capture_output=True, timeout=RENDER_TIMEOUT_SECONDS, check=False)
        except subprocess.TimeoutExpired as exc:
            raise CorruptInput(
                f"page {number} of {path.name} took more than {RENDER_TIMEOUT_SECONDS} s to render"
            ) from exc
        output = prefix.with_suffix(".png")
        if done.returncode != 0 or not output.exists():
            reason = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
            raise CorruptInput(f"page {number} of {path.name} could not be rendered for OCR ({reason})")
        with Image.open(output) as image:
            image.load()
            page = image.copy()
        # The resolution travels with the image: Tesseract guesses it wrongly from the pixels alone.
        page.info["dpi"] = (dpi, dpi)
        return page


def _decrypted_page(path: Path, number: int, folder: Path, *, password: str | None, reader: Any) -> Path:
    from pypdf import PdfWriter

    if reader is None:
        reader = open_pdf(path, max_pages=10**9, password=password)
    writer = PdfWriter()
    writer.add_page(reader.pages[number - 1])
    target = folder / "page.pdf"
    with open(target, "wb") as handle:
        writer.write(handle)
    return target


def ocr_page(path: Path, number: int, *, language: str = "eng", dpi: int = OCR_DPI, password: str | None = None) -> str:
    """The text of page ``number`` read by Tesseract from a rendering of the page."""
    from processing.ocr import ocr_image

    return ocr_image(render_page(path, number, dpi=dpi, password=password), language=language)


def ocr_pages(
    path: Path,
    numbers: Iterable[int],
    *,
    language: str = "eng",
    dpi: int = OCR_DPI,
    on_progress: ProgressCallback | None = None,
    password: str | None = None,
    reader: Any = None,
) -> dict[int, str]:
    """OCR of several pages: page number to text, reporting progress after each page."""
    from processing.ocr import ocr_image

    wanted = list(numbers)
    texts: dict[int, str] = {}
    if wanted and reader is None and password is not None:
        reader = open_pdf(path, max_pages=10**9, password=password)
    if reader is not None and not reader.is_encrypted:
        reader = None  # poppler reads a plain PDF itself, faster than a copy of each page
    for done, number in enumerate(wanted, start=1):
        image = render_page(path, number, dpi=dpi, reader=reader)
        texts[number] = ocr_image(image, language=language)
        if on_progress is not None:
            on_progress(100.0 * done / len(wanted), f"OCR page {number} ({done} of {len(wanted)})")
    return texts
