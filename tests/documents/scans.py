"""Scanned pages as a scanner delivers them: a little rotated, noisy, JPEG-compressed, in a PDF whose
pages are only those pictures (written here byte by byte, no PDF library)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from samples.documents.make_samples import render_paragraph


@dataclass(frozen=True)
class Scan:
    jpeg: bytes
    width: int  # pixels
    height: int
    dpi: int


def scan(text: str, *, angle: float, dpi: int = 200, quality: int = 70, noise: float = 0.02, seed: int = 1) -> Scan:
    """``text`` printed, then scanned ``angle`` degrees off level (counter-clockwise), with speckle
    noise on ``noise`` of the pixels and JPEG compression at ``quality``."""
    import numpy as np
    from PIL import Image

    page = render_paragraph(text, dpi=dpi)
    turned = page.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)
    pixels = np.asarray(turned, dtype=np.int16).copy()
    rng = np.random.default_rng(seed)
    pixels += rng.normal(0, 12, pixels.shape).astype(np.int16)  # sensor grain
    speckle = rng.random(pixels.shape) < noise
    pixels[speckle] = rng.integers(0, 256, int(speckle.sum()))
    picture = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=quality)
    return Scan(out.getvalue(), picture.width, picture.height, dpi)


def scanned_jpeg_pdf(scans: Sequence[Scan]) -> bytes:
    """A PDF with one page per scan, each page the picture at its real size (DCTDecode, no text layer)."""
    objects: list[bytes] = [b"", b""]  # catalog and page tree, filled in at the end
    kids: list[int] = []
    for item in scans:
        width_pt, height_pt = item.width * 72 / item.dpi, item.height * 72 / item.dpi
        objects.append(
            f"<< /Type /XObject /Subtype /Image /Width {item.width} /Height {item.height} /ColorSpace "
            f"/DeviceGray /BitsPerComponent 8 /Filter /DCTDecode /Length {len(item.jpeg)} >>\nstream\n".encode()
            + item.jpeg
            + b"\nendstream"
        )
        image_id = len(objects)
        content = f"q {width_pt:.2f} 0 0 {height_pt:.2f} 0 0 cm /Im0 Do Q".encode()
        objects.append(f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"\nendstream")
        content_id = len(objects)
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width_pt:.2f} {height_pt:.2f}] "
            f"/Resources << /XObject << /Im0 {image_id} 0 R >> >> /Contents {content_id} 0 R >>".encode()
        )
        kids.append(len(objects))
    objects[0] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {len(kids)} >>".encode()
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    out.write(b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets))
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def words(text: str) -> list[str]:
    cleaned = ("".join(ch for ch in word.lower() if ch.isalnum()) for word in text.split())
    return [word for word in cleaned if word]


def word_recall(expected: str, found: str) -> float:
    """Share of the expected words (with their repeats) that the found text has."""
    pool: dict[str, int] = {}
    for word in words(found):
        pool[word] = pool.get(word, 0) + 1
    hits = 0
    for word in words(expected):
        if pool.get(word, 0) > 0:
            pool[word] -= 1
            hits += 1
    return hits / max(1, len(words(expected)))


PARAGRAPHS = [
    "The harbour office opens at seven in the morning. Fishing boats must report their catch before "
    "noon, and the crane operator checks every net for torn mesh before it is lifted onto the quay.",
    "Our quarterly survey found that customers in the northern district prefer evening deliveries. "
    "Drivers will therefore start their routes two hours later from the first Monday of next month.",
    "Please return the borrowed microscopes to the biology laboratory by Friday afternoon. Each case "
    "must contain its lenses, the power cable and the cleaning cloth listed on the inventory sheet.",
]

__all__ = ["PARAGRAPHS", "Scan", "scan", "scanned_jpeg_pdf", "word_recall", "words"]
