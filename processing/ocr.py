"""Reading text out of pictures with Tesseract (through pytesseract)."""

from __future__ import annotations

import functools
import logging
from typing import Any

from processing.errors import InvalidArgument

logger = logging.getLogger(__name__)


@functools.cache
def installed_languages() -> frozenset[str]:
    """The language packs the local Tesseract has (``eng``, ``osd``, ...)."""
    import pytesseract

    return frozenset(pytesseract.get_languages(config=""))


def check_language(language: str) -> None:
    """Refuse a language Tesseract has no data for, naming the ones it has.

    ``language`` may combine packs the way Tesseract does: ``"eng+deu"``.
    """
    available = installed_languages()
    missing = [part for part in language.split("+") if part not in available]
    if missing:
        raise InvalidArgument(
            f"OCR language {'+'.join(missing)!r} is not installed; installed: {', '.join(sorted(available))}"
        )


def ocr_image(image: Any, *, language: str = "eng") -> str:
    """The text Tesseract reads in ``image`` (a PIL image), with its line breaks."""
    import pytesseract

    check_language(language)
    # --psm 3: fully automatic page segmentation, the right default for whole pages.
    text = pytesseract.image_to_string(image, lang=language, config="--psm 3")
    return str(text).strip()
