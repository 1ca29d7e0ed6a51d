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


#: Skew the deskew looks for on either side of level, in degrees; scanners feed pages a few degrees off.
MAX_SKEW_DEGREES = 5.0


def image_dpi(image: Any) -> int | None:
    """The resolution recorded with ``image`` (``info["dpi"]``), when it is a plausible one."""
    value = image.info.get("dpi")
    if isinstance(value, tuple | list) and value:
        value = value[0]
    try:
        dpi = round(float(value))
    except (TypeError, ValueError):
        return None
    return dpi if 50 <= dpi <= 2400 else None


def skew_angle(image: Any, *, max_degrees: float = MAX_SKEW_DEGREES) -> float:
    """The angle (degrees, counter-clockwise) that levels the text lines of ``image``.

    Projection profile: rotated by the right angle, the rows of ink line up, so the row sums of a
    binarised picture alternate most sharply between text lines and the gaps between them. The search
    runs on a picture about 1,000 pixels wide, first every half degree, then every tenth around the best.
    """
    import numpy as np
    from PIL import Image

    gray = image.convert("L")
    scale = min(1.0, 1000.0 / max(gray.width, 1))
    if scale < 1.0:
        gray = gray.resize((max(1, round(gray.width * scale)), max(1, round(gray.height * scale))))
    pixels = np.asarray(gray, dtype=np.uint8)
    ink = Image.fromarray(np.where(pixels < 128, 255, 0).astype(np.uint8))
    if not np.asarray(ink).any():
        return 0.0

    def sharpness(angle: float) -> float:
        rows = np.asarray(ink.rotate(angle, resample=Image.Resampling.NEAREST, fillcolor=0), dtype=np.float64)
        profile = rows.sum(axis=1)
        return float(np.sum(np.diff(profile) ** 2))

    coarse = np.arange(-max_degrees, max_degrees + 1e-9, 0.5)
    best = max(coarse, key=sharpness)
    fine = np.arange(best - 0.5, best + 0.5 + 1e-9, 0.1)
    return round(float(max(fine, key=sharpness)), 2)


def deskew(image: Any) -> Any:
    """``image`` rotated so its text lines are level (white fills the corners), or as it is when level."""
    from PIL import Image

    angle = skew_angle(image)
    if abs(angle) < 0.15:
        return image
    gray = image.convert("L")
    turned = gray.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)
    turned.info.update(image.info)
    return turned


#: Share of pixels a 3×3 median changes by more than a quarter of the grey range, above which a page is
#: treated as speckled and cleaned first; clean renderings stay under 0.35% even at 150 dpi.
SPECKLE_SHARE = 0.005


def despeckle(image: Any) -> Any:
    """``image`` through a 3×3 median filter when it is speckled (scanner noise), else as it is.

    Speckles read as stray punctuation that breaks words apart; a clean page keeps its fine strokes.
    """
    import numpy as np
    from PIL import ImageFilter

    gray = image.convert("L")
    smooth = gray.filter(ImageFilter.MedianFilter(3))
    changed = np.abs(np.asarray(gray, dtype=np.int16) - np.asarray(smooth, dtype=np.int16)) > 64
    if float(changed.mean()) <= SPECKLE_SHARE:
        return image
    smooth.info.update(image.info)
    return smooth


def _config(dpi: int | None, psm: int = 3) -> str:
    # --psm 3: fully automatic page segmentation, the right default for whole pages.
    return f"--psm {psm}" + (f" --dpi {dpi}" if dpi else "")


#: Orientation confidence (Tesseract OSD's own scale) above which a page is turned as OSD says.
MIN_ORIENTATION_CONFIDENCE = 2.0


def upright(image: Any, dpi: int | None = None) -> Any:
    """``image`` turned the right way up after Tesseract's orientation detection (a page scanned sideways
    or upside down reads as garbage, not as nothing); as it is when upright, unsure or without text."""
    import pytesseract

    if "osd" not in installed_languages():
        return image
    try:
        found = pytesseract.image_to_osd(image, config=_config(dpi, psm=0), output_type=pytesseract.Output.DICT)
    except pytesseract.TesseractError:
        return image  # too little text to tell the orientation
    rotate = int(found.get("rotate", 0)) % 360
    if rotate == 0 or float(found.get("orientation_conf", 0.0)) < MIN_ORIENTATION_CONFIDENCE:
        return image
    # OSD's "rotate" is clockwise; PIL's rotate turns counter-clockwise.
    turned = image.rotate(-rotate, expand=True, fillcolor=255 if image.mode == "L" else None)
    turned.info.update(image.info)
    return turned


def ocr_image(image: Any, *, language: str = "eng", dpi: int | None = None) -> str:
    """The text Tesseract reads in ``image`` (a PIL image), with its line breaks.

    ``dpi`` is the image's resolution (default: the one recorded in ``image.info``); Tesseract is told it,
    since its own guess from the glyph sizes is often far off and then finds no text. The page is first
    turned upright (``upright``), levelled (``deskew``) and cleaned of speckles (``despeckle``).
    """
    import pytesseract

    check_language(language)
    dpi = dpi or image_dpi(image)
    page = despeckle(deskew(upright(image.convert("L"), dpi)))
    return str(pytesseract.image_to_string(page, lang=language, config=_config(dpi))).strip()
