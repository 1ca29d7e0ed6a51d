"""Thumbnails of images, PDFs and videos, made from real files written here, with both engines."""

from __future__ import annotations

import io
import resource
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from processing.errors import CorruptInput, InvalidArgument, TooLarge, UnsupportedFormat
from processing.thumbnails import make_thumbnail
from samples.documents.make_samples import text_pdf
from tests.files.made_files import bomb_png

RED = (255, 0, 0)
BLUE = (0, 0, 255)
ORIENTATION = 0x0112


@pytest.fixture(params=["vips", "pillow"])
def engine(request: pytest.FixtureRequest) -> str:
    if request.param == "vips":
        pytest.importorskip("pyvips")
    return str(request.param)


def _open(data: bytes) -> Any:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _close(pixel: Any, colour: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(int(got) - want) <= tolerance for got, want in zip(pixel, colour, strict=False))


def _halves(width: int, height: int, left: tuple[int, int, int], right: tuple[int, int, int]) -> Any:
    image = Image.new("RGB", (width, height), left)
    image.paste(right, (width // 2, 0, width, height))
    return image


def test_a_jpeg_rotated_by_exif_comes_out_upright_and_without_an_orientation_tag(tmp_path: Path, engine: str) -> None:
    # Given a 400×200 JPEG, red on the left and blue on the right, tagged orientation 6 (turn 90° clockwise)
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    _halves(400, 200, RED, BLUE).save(path, quality=95, exif=exif)

    # When it is thumbnailed
    thumbnail = make_thumbnail(path, "image", engine=engine)

    # Then it is a portrait JPEG, turned (red on top), and it carries no orientation tag to turn it again
    assert (thumbnail.format, thumbnail.width, thumbnail.height) == ("jpeg", 128, 256)
    image = _open(thumbnail.data)
    assert image.size == (128, 256)
    assert _close(image.getpixel((64, 10)), RED) and _close(image.getpixel((64, 245)), BLUE)
    assert ORIENTATION not in image.getexif()


def test_a_transparent_png_keeps_its_transparency(tmp_path: Path, engine: str) -> None:
    # Given a 400×400 PNG, transparent but for an opaque red square in the middle
    path = tmp_path / "logo.png"
    picture = Image.new("RGBA", (400, 400), (0, 0, 0, 0))
    picture.paste((*RED, 255), (100, 100, 300, 300))
    picture.save(path)

    # When it is thumbnailed
    thumbnail = make_thumbnail(path, "image", engine=engine)

    # Then it is a PNG with alpha: the corner stays transparent, the middle opaque red
    assert (thumbnail.format, thumbnail.width, thumbnail.height) == ("png", 256, 256)
    image = _open(thumbnail.data).convert("RGBA")
    assert image.getpixel((0, 0))[3] == 0
    assert _close(image.getpixel((128, 128)), (*RED, 255), tolerance=2)


def test_transparency_is_flattened_on_white_when_a_jpeg_is_asked_for(tmp_path: Path, engine: str) -> None:
    # Given a PNG whose transparent pixels are black underneath (what a naive conversion would show)
    path = tmp_path / "logo.png"
    picture = Image.new("RGBA", (400, 400), (0, 0, 0, 0))
    picture.paste((*BLUE, 255), (100, 100, 300, 300))
    picture.save(path)

    # When it is thumbnailed without keeping alpha
    thumbnail = make_thumbnail(path, "image", engine=engine, keep_alpha=False)

    # Then it is a JPEG whose transparent corner is white, not black
    assert thumbnail.format == "jpeg"
    image = _open(thumbnail.data)
    assert image.mode == "RGB"
    assert _close(image.getpixel((0, 0)), (255, 255, 255), tolerance=3)
    assert _close(image.getpixel((128, 128)), BLUE)


def test_an_alpha_channel_with_no_transparent_pixel_gives_a_jpeg(tmp_path: Path, engine: str) -> None:
    # Given an RGBA PNG that is opaque everywhere
    path = tmp_path / "photo.png"
    Image.new("RGBA", (300, 300), (*RED, 255)).save(path)

    # When it is thumbnailed
    thumbnail = make_thumbnail(path, "image", engine=engine)

    # Then the alpha channel, which carries nothing, is dropped and the thumbnail is a JPEG
    assert (thumbnail.format, thumbnail.width, thumbnail.height) == ("jpeg", 256, 256)
    assert _close(_open(thumbnail.data).getpixel((5, 5)), RED)


@pytest.mark.parametrize("file_format", ["GIF", "WEBP"])
def test_an_animation_is_thumbnailed_from_its_first_frame(tmp_path: Path, engine: str, file_format: str) -> None:
    # Given an animation of a red frame then a blue one (a palette GIF, or an animated WebP)
    path = tmp_path / f"animation.{file_format.lower()}"
    frames = [Image.new("RGB", (300, 150), colour) for colour in (RED, BLUE)]
    if file_format == "GIF":
        frames = [frame.convert("P", palette=Image.Palette.ADAPTIVE, colors=4) for frame in frames]
    frames[0].save(path, file_format, save_all=True, append_images=frames[1:], duration=100, loop=0)

    # When it is thumbnailed
    thumbnail = make_thumbnail(path, "image", engine=engine)

    # Then the picture is the first frame's: red
    assert (thumbnail.width, thumbnail.height) == (256, 128)
    assert _close(_open(thumbnail.data).convert("RGB").getpixel((128, 64)), RED)


def test_a_small_image_is_never_enlarged(tmp_path: Path, engine: str) -> None:
    # Given a 100×50 PNG
    path = tmp_path / "icon.png"
    _halves(100, 50, RED, BLUE).save(path)

    # When it is thumbnailed at the default 256
    thumbnail = make_thumbnail(path, "image", engine=engine)

    # Then it keeps its size
    assert (thumbnail.width, thumbnail.height) == (100, 50)
    assert _open(thumbnail.data).size == (100, 50)


@pytest.mark.parametrize(
    ("file_format", "stored", "expected"),
    [("WEBP", (600, 300), (256, 128)), ("TIFF", (500, 1000), (128, 256)), ("JPEG", (4000, 3000), (256, 192))],
)
def test_webp_tiff_and_jpeg_fit_within_the_size_keeping_their_aspect(
    tmp_path: Path, engine: str, file_format: str, stored: tuple[int, int], expected: tuple[int, int]
) -> None:
    # Given an image of the format, larger than the thumbnail
    path = tmp_path / f"picture.{file_format.lower()}"
    _halves(*stored, RED, BLUE).save(path, file_format)

    # When it is thumbnailed
    thumbnail = make_thumbnail(path, "image", engine=engine)

    # Then it fits in 256×256 with the same aspect, the halves where they were
    assert (thumbnail.format, (thumbnail.width, thumbnail.height)) == ("jpeg", expected)
    image = _open(thumbnail.data)
    assert _close(image.getpixel((2, expected[1] // 2)), RED)
    assert _close(image.getpixel((expected[0] - 3, expected[1] // 2)), BLUE)


@pytest.mark.parametrize("stored", [(333, 1001), (1001, 333), (257, 256), (4001, 2999), (999, 1)])
def test_both_engines_give_the_same_dimensions(tmp_path: Path, stored: tuple[int, int]) -> None:
    # Given a JPEG whose dimensions do not divide evenly
    pytest.importorskip("pyvips")
    path = tmp_path / "odd.jpg"
    Image.new("RGB", stored, RED).save(path)

    # When each engine thumbnails it
    vips = make_thumbnail(path, "image", engine="vips")
    pillow = make_thumbnail(path, "image", engine="pillow")

    # Then both agree, to the pixel
    assert (vips.width, vips.height) == (pillow.width, pillow.height)
    assert _open(vips.data).size == _open(pillow.data).size == (pillow.width, pillow.height)


def test_a_decompression_bomb_is_refused_from_its_header_without_decoding(tmp_path: Path, engine: str) -> None:
    # Given a PNG of a few dozen bytes that declares 30000×30000 pixels
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png())
    peak_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    # When it is thumbnailed
    with pytest.raises(TooLarge) as refused:
        make_thumbnail(path, "image", engine=engine)

    # Then it is refused with the reason, and the 2.7 GB picture was never allocated
    message = str(refused.value)
    assert "900 megapixels" in message and "100-megapixel limit" in message and "\n" not in message
    if engine == "vips":
        assert "30000×30000" in message
    peak_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before_kb) / 1024
    assert peak_growth_mb < 100


def test_the_pixel_limit_is_checked_before_decoding_and_can_be_lowered(tmp_path: Path, engine: str) -> None:
    # Given a real 2000×2000 JPEG
    path = tmp_path / "big.jpg"
    Image.new("RGB", (2000, 2000), BLUE).save(path)

    # When it is thumbnailed under a 1-megapixel limit
    with pytest.raises(TooLarge) as refused:
        make_thumbnail(path, "image", engine=engine, max_pixels=1_000_000)

    # Then the reason names its size and the limit
    assert str(refused.value) == "the image is 2000×2000 (4.0 megapixels), over the 1.0-megapixel limit"


def test_a_truncated_jpeg_fails_as_corrupt_with_one_readable_line(tmp_path: Path, engine: str) -> None:
    # Given a noisy JPEG cut in half
    whole = io.BytesIO()
    Image.effect_noise((1200, 900), 60).convert("RGB").save(whole, "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])

    # When it is thumbnailed
    with pytest.raises(CorruptInput) as failed:
        make_thumbnail(path, "image", engine=engine)

    # Then the reason says so, on one line, without the file's path
    message = str(failed.value)
    assert "truncated" in message and "\n" not in message and str(tmp_path) not in message


def test_a_file_that_is_not_an_image_fails_as_corrupt(tmp_path: Path, engine: str) -> None:
    # Given a text file handed over as an image
    path = tmp_path / "notes.png"
    path.write_text("not a picture at all\n")

    # When it is thumbnailed
    with pytest.raises(CorruptInput) as failed:
        make_thumbnail(path, "image", engine=engine)

    # Then the reason is one line without the file's path
    assert "\n" not in str(failed.value) and str(tmp_path) not in str(failed.value)


def test_a_pdf_is_thumbnailed_from_its_first_page(tmp_path: Path, engine: str) -> None:
    # Given a two-page text PDF (US Letter, portrait)
    path = tmp_path / "notes.pdf"
    path.write_bytes(text_pdf([["The first page has this paragraph."], ["The second page has another."]]))

    # When it is thumbnailed
    thumbnail = make_thumbnail(path, "pdf", engine=engine)

    # Then it is a portrait JPEG 256 high, a white page
    assert thumbnail.format == "jpeg" and thumbnail.height == 256 and 195 <= thumbnail.width <= 200
    image = _open(thumbnail.data)
    assert image.size == (thumbnail.width, thumbnail.height)
    assert _close(image.getpixel((thumbnail.width - 5, thumbnail.height - 5)), (255, 255, 255), tolerance=5)


def test_a_damaged_pdf_fails_as_corrupt(tmp_path: Path, engine: str) -> None:
    # Given a file that starts like a PDF and holds nothing else
    path = tmp_path / "broken.pdf"
    path.write_bytes(b"%PDF-1.4\n%%EOF\n")

    # When it is thumbnailed
    with pytest.raises(CorruptInput) as failed:
        make_thumbnail(path, "pdf", engine=engine)

    # Then the reason is one line
    assert str(failed.value).startswith("cannot render the first page of the PDF") and "\n" not in str(failed.value)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-second 320×240 MP4 of ffmpeg's test pattern."""
    path = tmp_path_factory.mktemp("video") / "testsrc.mp4"
    source = ["-f", "lavfi", "-i", "testsrc=duration=2:size=320x240:rate=10"]
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-v", "error", *source, "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def test_a_video_is_thumbnailed_from_a_frame(clip: Path, engine: str) -> None:
    # Given a 320×240 video

    # When it is thumbnailed
    thumbnail = make_thumbnail(clip, "video", engine=engine)

    # Then it is a JPEG of one frame, shrunk to fit 256 with its aspect
    assert (thumbnail.format, thumbnail.width, thumbnail.height) == ("jpeg", 256, 192)
    assert _open(thumbnail.data).size == (256, 192)


def test_when_the_fast_seek_yields_no_frame_the_accurate_seek_is_tried(
    clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an ffmpeg whose fast seek (-ss before -i) lands where nothing decodes
    import processing.thumbnails as thumbnails

    real = thumbnails._run_tool
    ffmpeg_calls: list[list[str]] = []

    def run_tool(command: list[str], timeout_seconds: float, what: str) -> subprocess.CompletedProcess[str]:
        if command[0] != "ffmpeg":
            return real(command, timeout_seconds, what)
        ffmpeg_calls.append(command)
        if command.index("-ss") < command.index("-i"):
            return subprocess.CompletedProcess(command, 0, "", "")  # "succeeds" without writing a frame
        return real(command, timeout_seconds, what)

    monkeypatch.setattr(thumbnails, "_run_tool", run_tool)

    # When the video is thumbnailed
    thumbnail = make_thumbnail(clip, "video")

    # Then the fast seek came first, the accurate one after it, and the frame is there
    assert [command.index("-ss") < command.index("-i") for command in ffmpeg_calls] == [True, False]
    assert (thumbnail.width, thumbnail.height) == (256, 192)


def test_a_file_without_a_video_stream_is_refused(tmp_path: Path, engine: str) -> None:
    # Given a WAV file: audio only
    path = tmp_path / "tone.wav"
    tone = ["-f", "lavfi", "-i", "sine=frequency=440:duration=1"]
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-v", "error", *tone, str(path)], check=True)

    # When it is thumbnailed as a video
    with pytest.raises(UnsupportedFormat) as refused:
        make_thumbnail(path, "video", engine=engine)

    # Then the reason says there is no picture to take
    assert "no video stream" in str(refused.value)


def test_an_unsupported_kind_is_refused_with_one_line(tmp_path: Path) -> None:
    # Given a document of a kind thumbnails are not made for
    path = tmp_path / "minutes.docx"
    path.write_bytes(b"PK\x03\x04")

    # When it is thumbnailed
    with pytest.raises(UnsupportedFormat) as refused:
        make_thumbnail(path, "docx")

    # Then the reason names the kind and the supported ones
    assert str(refused.value) == "cannot make a thumbnail of a 'docx' file (only image, pdf, video)"


def test_an_unknown_engine_is_an_invalid_argument(tmp_path: Path) -> None:
    # Given a real image
    path = tmp_path / "icon.png"
    Image.new("RGB", (10, 10), RED).save(path)

    # When an engine that does not exist is asked for
    # Then the call is refused before any work
    with pytest.raises(InvalidArgument):
        make_thumbnail(path, "image", engine="imagemagick")
