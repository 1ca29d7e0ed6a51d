"""Thumbnails for the file drive: images, the first page of a PDF, a frame of a video.

No broker here: ``make_thumbnail(path, kind)`` runs the same in a notebook. Two engines make the same
thumbnail: pyvips (it shrinks while it decodes, and reads PNG, WebP, GIF and TIFF two to three times
faster than Pillow) and Pillow, the reference. Both give the same dimensions for the same input, apply
the EXIF orientation and write no metadata at all, so no orientation tag can rotate the result twice.
``engine="auto"`` takes Pillow for a JPEG (its decoder scales by 1/8 in the DCT, the least work there is
for a camera picture into a small box, measured in ``bench/files.py``) and pyvips for the rest.

Every failure is a ``PermanentError`` with one line a person understands; no library exception leaves
this module. An image's declared size is checked against a pixel limit before a single pixel is decoded,
so a small file that claims to be 30000×30000 is refused at once instead of taking the worker's memory.
"""

from __future__ import annotations

import functools
import io
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processing.errors import CorruptInput, InvalidArgument, MissingDependency, NotFound, TooLarge, UnsupportedFormat

#: The most pixels (width × height) an image may declare; over it, it is refused before decoding.
MAX_PIXELS = 100_000_000
KINDS = ("image", "pdf", "video")
ENGINES = ("auto", "vips", "pillow")
#: Where in a video its frame is taken, as a fraction of the duration (past a title card or a fade-in).
VIDEO_POSITION = 0.10
JPEG_QUALITY = 85
_ORIENTATION_TAG = 0x0112
#: EXIF orientations that turn the picture by 90 degrees, so width and height swap.
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
_WHITE = 255
_JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    format: str  # "png" when the image has transparent pixels (kept), else "jpeg"
    width: int
    height: int


def make_thumbnail(
    path: Path,
    kind: str,
    *,
    size: int = 256,
    engine: str = "auto",
    max_pixels: int = MAX_PIXELS,
    keep_alpha: bool = True,
    timeout_seconds: float = 60.0,
) -> Thumbnail:
    """A thumbnail of the file at ``path`` that fits within ``size`` × ``size`` pixels, aspect ratio kept.

    ``kind`` is ``"image"`` (JPEG, PNG, GIF, WebP, TIFF; the first frame of an animation), ``"pdf"`` (the
    first page) or ``"video"`` (the frame at 10% of the duration). An image is never enlarged. Transparency
    is kept (PNG); with ``keep_alpha=False`` it is flattened on white and the thumbnail is always a JPEG.
    ``engine`` is ``"vips"``, ``"pillow"`` or ``"auto"`` (Pillow for a JPEG, pyvips when importable otherwise).
    ``timeout_seconds`` bounds each ``pdftoppm``/``ffmpeg``/``ffprobe`` run.

    Raises ``NotFound``, ``UnsupportedFormat``, ``CorruptInput``, ``TooLarge`` (over ``max_pixels``),
    ``InvalidArgument`` or ``MissingDependency``, each with a one-line reason.
    """
    if kind not in KINDS:
        raise UnsupportedFormat(f"cannot make a thumbnail of a {kind!r} file (only {', '.join(KINDS)})")
    if size < 1:
        raise InvalidArgument(f"thumbnail size must be at least 1 pixel, got {size}")
    engine = _resolve_engine(engine)
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"file {path.name!r} does not exist")
    if path.stat().st_size == 0:
        raise CorruptInput(f"{path.name!r} is empty (0 bytes)")
    if kind == "image":
        return _thumbnail_image(path, size, _engine_for(path, engine), max_pixels, keep_alpha)
    with tempfile.TemporaryDirectory(prefix="thumbnail-") as folder:
        if kind == "pdf":
            still = _render_first_page(path, Path(folder), size, timeout_seconds)
        else:
            still = _grab_video_frame(path, Path(folder), size, max_pixels, timeout_seconds)
        return _thumbnail_image(still, size, _engine_for(still, engine), max_pixels, keep_alpha)


def _engine_for(path: Path, engine: str) -> str:
    """``engine``, or for ``auto`` the faster one for this file: Pillow for a JPEG, pyvips otherwise."""
    if engine != "auto":
        return engine
    with open(path, "rb") as handle:
        is_jpeg = handle.read(3) == _JPEG_MAGIC
    return "pillow" if is_jpeg or _pyvips() is None else "vips"


def fit_within(width: int, height: int, size: int) -> tuple[int, int]:
    """The dimensions of a ``width`` × ``height`` picture shrunk to fit ``size`` × ``size``; never larger.

    Both engines are told these exact dimensions, so they cannot differ by a rounding."""
    if width <= size and height <= size:
        return width, height
    scale = size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _resolve_engine(engine: str) -> str:
    if engine == "auto":
        return engine
    if engine not in ENGINES:
        raise InvalidArgument(f"unknown thumbnail engine {engine!r} (choose from {', '.join(ENGINES)})")
    if engine == "vips" and _pyvips() is None:
        raise MissingDependency("pyvips is not importable; install pyvips and pyvips-binary, or use Pillow")
    return engine


def vips_available() -> bool:
    """Whether pyvips and the libvips under it load here (``engine="auto"`` then uses them)."""
    return _pyvips() is not None


@functools.cache
def _pyvips() -> Any:
    """The pyvips module, or None when it (or libvips under it) cannot be loaded."""
    try:
        import pyvips
    except (ImportError, OSError):
        return None
    # libvips caches recent operations by file name: a file rewritten under the same name would get the
    # old thumbnail back, and a worker thumbnailing distinct files gains nothing from the cache.
    pyvips.cache_set_max(0)
    return pyvips


def _thumbnail_image(path: Path, size: int, engine: str, max_pixels: int, keep_alpha: bool) -> Thumbnail:
    if engine == "vips":
        return _thumbnail_vips(path, size, max_pixels, keep_alpha)
    return _thumbnail_pillow(path, size, max_pixels, keep_alpha)


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    pixels = width * height
    if pixels > max_pixels:
        raise TooLarge(
            f"the image is {width}×{height} ({_megapixels(pixels)} megapixels), "
            f"over the {_megapixels(max_pixels)}-megapixel limit"
        )


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.0f}" if pixels >= 10_000_000 else f"{pixels / 1e6:.1f}"


def _oriented(width: int, height: int, orientation: int) -> tuple[int, int]:
    return (height, width) if orientation in _SWAPPING_ORIENTATIONS else (width, height)


def _readable(reason: str, path: Path) -> str:
    """One line of a library's message, without the temporary or storage path it quotes."""
    lines = [line.strip() for line in reason.splitlines() if line.strip()]
    return (lines[-1] if lines else "unknown error").replace(str(path), path.name)


# ------------------------------------------------------------------------------------------------
# pyvips
# ------------------------------------------------------------------------------------------------


def _thumbnail_vips(path: Path, size: int, max_pixels: int, keep_alpha: bool) -> Thumbnail:
    pyvips = _pyvips()
    try:
        # Opening reads the header only; pixels are decoded when something asks for them.
        header = pyvips.Image.new_from_file(str(path))
    except pyvips.Error as exc:
        raise CorruptInput(f"not an image that can be read: {_vips_reason(exc, path)}") from exc
    _check_pixels(header.width, header.height, max_pixels)
    orientation = header.get("orientation") if header.get_typeof("orientation") else 1
    width, height = fit_within(*_oriented(header.width, header.height, orientation), size)
    try:
        # Shrink-on-load from the file and autorotate; "force" holds it to the computed dimensions (the
        # same as Pillow's), which are never larger than the image. "truncated" makes a cut file fail
        # instead of coming out grey at the bottom.
        image = pyvips.Image.thumbnail(str(path), width, height=height, size="force", fail_on="truncated")
        # The file is read once, top to bottom; the small result is kept in memory so the alpha check
        # and the encoder can both read it.
        image = image.copy_memory()
        space = "b-w" if image.interpretation in ("b-w", "grey16") else "srgb"
        if image.interpretation != space or image.format != "uchar":
            image = image.colourspace(space)  # CMYK, 16-bit: 8-bit sRGB (or grey) for the web
        transparent = image.hasalpha() and image[image.bands - 1].min() < _WHITE
        if image.hasalpha() and not (transparent and keep_alpha):
            # flatten's default background is black: give white, what a transparent area shows on a page.
            image = image.flatten(background=[_WHITE] * (image.bands - 1))
        if transparent and keep_alpha:
            data = image.pngsave_buffer(keep="none")
            return Thumbnail(data, "png", image.width, image.height)
        data = image.jpegsave_buffer(Q=JPEG_QUALITY, keep="none")
        return Thumbnail(data, "jpeg", image.width, image.height)
    except pyvips.Error as exc:
        raise CorruptInput(f"the image is damaged or truncated: {_vips_reason(exc, path)}") from exc


def _vips_reason(error: Any, path: Path) -> str:
    # The first line is which operation failed ("unable to call ..."); the detail says why.
    return _readable(str(getattr(error, "detail", "") or error), path)


# ------------------------------------------------------------------------------------------------
# Pillow
# ------------------------------------------------------------------------------------------------


def _thumbnail_pillow(path: Path, size: int, max_pixels: int, keep_alpha: bool) -> Thumbnail:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:  # reads the header only
            _check_pixels(opened.width, opened.height, max_pixels)
            opened.seek(0)  # the first frame of an animation
            orientation = int(opened.getexif().get(_ORIENTATION_TAG, 1) or 1)
            width, height = fit_within(*_oriented(opened.width, opened.height, orientation), size)
            # JPEG only: decode at 1/2, 1/4 or 1/8 scale, never below the thumbnail's size. The scaled
            # decode averages each 8×8 block in the DCT, so it is a clean box filter, and the resize after
            # it still reduces; decoding at twice the size (Pillow's thumbnail(), libvips) costs a third
            # more time for a difference a 256-pixel picture does not show.
            opened.draft(opened.mode, _oriented(width, height, orientation))
            image = ImageOps.exif_transpose(opened)
            if (image.width < image.height and width > height) or (image.width > image.height and width < height):
                # An orientation found only while decoding (a PNG's eXIf after its pixels) turned it.
                width, height = height, width
            image = _pillow_mode(image)
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BICUBIC, reducing_gap=2.0)
    except UnidentifiedImageError as exc:
        raise CorruptInput("not an image that can be read (unknown or damaged format)") from exc
    except Image.DecompressionBombError as exc:
        # Pillow's own limit (twice its MAX_IMAGE_PIXELS) refuses it before we see the dimensions.
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{_megapixels(int(declared.group(1)))} megapixels" if declared else "too many pixels"
        raise TooLarge(f"the image declares {pixels}, over the {_megapixels(max_pixels)}-megapixel limit") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CorruptInput(f"the image is damaged or truncated: {_readable(str(exc), path)}") from exc

    transparent = image.mode == "RGBA" and image.getchannel("A").getextrema()[0] < _WHITE
    if image.mode == "RGBA" and not (transparent and keep_alpha):
        background = Image.new("RGB", image.size, (_WHITE, _WHITE, _WHITE))
        background.paste(image, mask=image.getchannel("A"))
        image = background
    out = io.BytesIO()
    if transparent and keep_alpha:
        image.save(out, "PNG")
        return Thumbnail(out.getvalue(), "png", image.width, image.height)
    image.save(out, "JPEG", quality=JPEG_QUALITY)  # no exif= given: the thumbnail carries no EXIF
    return Thumbnail(out.getvalue(), "jpeg", image.width, image.height)


def _pillow_mode(image: Any) -> Any:
    """RGBA when the image has any transparency, else RGB or L (8 bits), before resampling: a palette
    image would be resampled by nearest neighbour, and 16-bit grey would be clipped, not scaled."""
    if image.has_transparency_data:
        return image.convert("RGBA")
    if image.mode in ("RGB", "L"):
        return image
    if image.mode.startswith("I"):
        return image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    return image.convert("RGB")


# ------------------------------------------------------------------------------------------------
# PDF pages and video frames, rendered to a still that the image engines finish
# ------------------------------------------------------------------------------------------------


def _run_tool(command: list[str], timeout_seconds: float, what: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout_seconds)
    except FileNotFoundError as exc:
        raise MissingDependency(f"{command[0]} is not installed; it is needed for {what}") from exc
    except subprocess.TimeoutExpired as exc:
        raise CorruptInput(f"{command[0]} did not finish {what} within {timeout_seconds:.0f}s") from exc


def _render_first_page(path: Path, folder: Path, size: int, timeout_seconds: float) -> Path:
    """The PDF's first page as a PNG whose long side is ``size`` (a page is vector: any size is sharp)."""
    prefix = folder / "page"
    command = ["pdftoppm", "-f", "1", "-l", "1", "-scale-to", str(size), "-png", "-singlefile"]
    completed = _run_tool([*command, str(path), str(prefix)], timeout_seconds, "rendering a PDF page")
    still = prefix.with_suffix(".png")
    if completed.returncode != 0 or not still.is_file() or still.stat().st_size == 0:
        reason = _readable(completed.stderr or "no page was rendered", path)
        raise CorruptInput(f"cannot render the first page of the PDF: {reason}")
    return still


def _grab_video_frame(path: Path, folder: Path, size: int, max_pixels: int, timeout_seconds: float) -> Path:
    """The frame at ``VIDEO_POSITION`` of the duration as a PNG, shrunk by ffmpeg to fit ``size``."""
    from processing.frames import probe_media

    probe = probe_media(path, timeout_seconds=timeout_seconds)
    if not probe.has_video:
        raise UnsupportedFormat(f"{path.name!r} has no video stream to take a thumbnail from")
    if probe.width and probe.height:
        _check_pixels(probe.width, probe.height, max_pixels)
    at = f"{(probe.duration or 0.0) * VIDEO_POSITION:.3f}"
    still = folder / "frame.png"
    # Never enlarged: the box is the frame itself when that is smaller than size × size.
    fit = f"scale=w='min({size},iw)':h='min({size},ih)':force_original_aspect_ratio=decrease"
    output = ["-frames:v", "1", "-vf", fit, "-f", "image2", "-c:v", "png", str(still)]
    base = ["ffmpeg", "-nostdin", "-y", "-v", "error"]
    # A fast seek (before -i) jumps to the keyframe before the time; in some files (a sparse index, a
    # stream starting late) it lands where nothing decodes, and only the slow, exact seek (after -i,
    # decoding from the start) finds a frame.
    attempts = ([*base, "-ss", at, "-i", str(path), *output], [*base, "-i", str(path), "-ss", at, *output])
    reason = "no picture decoded"
    for command in attempts:
        completed = _run_tool(command, timeout_seconds, "taking a video frame")
        if completed.returncode == 0 and still.is_file() and still.stat().st_size > 0:
            return still
        still.unlink(missing_ok=True)
        reason = _readable(completed.stderr or reason, path)
    raise CorruptInput(f"no video frame could be decoded at {at}s of {path.name!r} (ffmpeg: {reason})")
