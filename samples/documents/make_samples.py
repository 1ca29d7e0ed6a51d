"""Make the sample documents the repository ships, and the builders tests and benchmarks share.

Run ``python -m samples.documents.make_samples`` from the repository root to write:

- ``strategy-notes.pdf``: a two-page PDF with a real text layer (Helvetica);
- ``scanned-memo.pdf``: one page that is only a picture of a paragraph (no text layer), so it must be
  read by OCR;
- ``meeting-minutes.docx``: paragraphs and a table.

The PDF writer here is deliberately tiny: it writes the objects a reader needs (catalog, pages, a base-14
font, content streams, image XObjects) and a cross-reference table, nothing else. That keeps the
generated files small and the tests free of any PDF-authoring dependency.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SYSTEM_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")  # Debian's fonts-dejavu-core

PAGE_WIDTH_PT = 612  # US Letter, in points (1/72 inch)
PAGE_HEIGHT_PT = 792


@dataclass
class PdfImage:
    """An image placed on a page: raw samples plus where it goes (points)."""

    width: int
    height: int
    samples: bytes  # raw bytes, row by row, packed as colorspace/bits say
    colorspace: str = "DeviceRGB"  # DeviceRGB or DeviceGray
    bits: int = 8
    x: float = 72
    y: float = 72
    shown_width: float = 200
    shown_height: float = 200


@dataclass
class PdfPage:
    lines: list[str] = field(default_factory=list)
    images: list[PdfImage] = field(default_factory=list)
    font_size: float = 11


def _escape(text: str) -> bytes:
    raw = text.encode("cp1252", errors="replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def pdf_bytes(pages: Sequence[PdfPage], *, share_content: bool = False) -> bytes:
    """A PDF with the given pages. With ``share_content`` every page points at one content stream
    (the first page's), which keeps a PDF of thousands of identical pages tiny."""
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    def stream(dictionary: str, data: bytes) -> bytes:
        return f"<< {dictionary} /Length {len(data)} >>\nstream\n".encode() + data + b"\nendstream"

    catalog = add(b"")  # filled in at the end
    pages_obj = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    page_ids: list[int] = []
    shared_content: int | None = None
    for page in pages:
        ops: list[bytes] = []
        xobjects: list[str] = []
        for number, image in enumerate(page.images):
            data = zlib.compress(image.samples, 6)
            image_id = add(
                stream(
                    f"/Type /XObject /Subtype /Image /Width {image.width} /Height {image.height} "
                    f"/ColorSpace /{image.colorspace} /BitsPerComponent {image.bits} /Filter /FlateDecode",
                    data,
                )
            )
            xobjects.append(f"/Im{number} {image_id} 0 R")
            ops.append(
                f"q {image.shown_width:.2f} 0 0 {image.shown_height:.2f} {image.x:.2f} {image.y:.2f} cm "
                f"/Im{number} Do Q\n".encode()
            )
        if page.lines:
            leading = page.font_size * 1.3
            ops.append(f"BT /F1 {page.font_size} Tf {leading:.1f} TL 72 {PAGE_HEIGHT_PT - 72} Td\n".encode())
            for line in page.lines:
                ops.append(b"(" + _escape(line) + b") Tj T*\n")
            ops.append(b"ET\n")
        if share_content and shared_content is not None:
            content = shared_content
        else:
            content = add(stream("", b"".join(ops)))
            shared_content = content
        resources = f"/Font << /F1 {font} 0 R >>"
        if xobjects:
            resources += " /XObject << " + " ".join(xobjects) + " >>"
        page_ids.append(
            add(
                f"<< /Type /Page /Parent {pages_obj} 0 R /MediaBox [0 0 {PAGE_WIDTH_PT} {PAGE_HEIGHT_PT}] "
                f"/Resources << {resources} >> /Contents {content} 0 R >>".encode()
            )
        )
    kids = " ".join(f"{page_id} 0 R" for page_id in page_ids)
    objects[pages_obj - 1] = f"<< /Type /Pages /Kids [{kids}] /Count {len(page_ids)} >>".encode()
    objects[catalog - 1] = f"<< /Type /Catalog /Pages {pages_obj} 0 R >>".encode()

    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets: list[int] = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref_at = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root {catalog} 0 R >>\nstartxref\n{xref_at}\n%%EOF\n".encode())
    return out.getvalue()


def wrap(text: str, width: int = 90) -> list[str]:
    """Greedy word wrap of one paragraph into lines of at most ``width`` characters."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        lines.append(current)
    return lines


def text_pdf(pages: Sequence[Sequence[str]]) -> bytes:
    """A text PDF: each page is a list of paragraphs, wrapped and separated by a blank line."""
    built = []
    for paragraphs in pages:
        lines: list[str] = []
        for paragraph in paragraphs:
            lines.extend(wrap(paragraph))
            lines.append("")
        built.append(PdfPage(lines=lines[:-1] if lines else []))
    return pdf_bytes(built)


def font_path() -> Path:
    """DejaVu Sans: the system's copy, else the one matplotlib ships."""
    if SYSTEM_FONT.exists():
        return SYSTEM_FONT
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def render_paragraph(text: str, *, dpi: int = 300, font_size_pt: float = 12, width_in: float = 8.5) -> Any:
    """A white page-width picture of ``text`` in DejaVu Sans, as a scanner would deliver it (PIL "L")."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(font_path()), round(font_size_pt * dpi / 72))
    margin = dpi  # one inch
    usable = int(width_in * dpi) - 2 * margin
    probe = ImageDraw.Draw(Image.new("L", (10, 10)))
    lines: list[str] = []
    for paragraph in text.split("\n\n"):
        current = ""
        for word in paragraph.split():
            trial = f"{current} {word}" if current else word
            if current and probe.textlength(trial, font=font) > usable:
                lines.append(current)
                current = word
            else:
                current = trial
        lines.append(current)
        lines.append("")
    line_height = round(font_size_pt * 1.5 * dpi / 72)
    height = max(int(11 * dpi * 0.4), 2 * margin + line_height * len(lines))
    image = Image.new("L", (int(width_in * dpi), height), 255)
    draw = ImageDraw.Draw(image)
    for number, line in enumerate(lines):
        draw.text((margin, margin + number * line_height), line, fill=0, font=font)
    return image


def scanned_pdf(paragraphs: Sequence[str], *, dpi: int = 300, bilevel: bool = False) -> bytes:
    """A PDF whose pages are pictures of the paragraphs (one per page) and carry no text layer."""
    pages = []
    for paragraph in paragraphs:
        picture = render_paragraph(paragraph, dpi=dpi)
        if bilevel:
            picture = picture.point(lambda value: 255 if value > 160 else 0).convert("1")
        width_pt = picture.width * 72 / dpi
        height_pt = picture.height * 72 / dpi
        pages.append(
            PdfPage(
                images=[
                    PdfImage(
                        width=picture.width,
                        height=picture.height,
                        samples=picture.tobytes(),
                        colorspace="DeviceGray",
                        bits=1 if bilevel else 8,
                        x=0,
                        y=PAGE_HEIGHT_PT - height_pt,
                        shown_width=width_pt,
                        shown_height=height_pt,
                    )
                ]
            )
        )
    return pdf_bytes(pages)


def gradient_image(width: int, height: int, *, x: float = 72, y: float = 72) -> PdfImage:
    """An RGB test picture (a colour gradient) of the given pixel size."""
    row = bytearray()
    samples = bytearray()
    for column in range(width):
        row += bytes((column * 255 // max(width - 1, 1), 128, 255 - column * 255 // max(width - 1, 1)))
    for line in range(height):
        shade = line * 255 // max(height - 1, 1)
        samples += bytes(value if index % 3 != 1 else shade for index, value in enumerate(row))
    return PdfImage(
        width=width,
        height=height,
        samples=bytes(samples),
        x=x,
        y=y,
        shown_width=width / 2,
        shown_height=height / 2,
    )


def docx_document(paragraphs: Sequence[str], table: Sequence[Sequence[str]] | None = None) -> bytes:
    """A DOCX with the paragraphs and, after them, a table whose first row is the header."""
    from docx import Document

    document = Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for row_number, row in enumerate(table):
            for column_number, value in enumerate(row):
                grid.cell(row_number, column_number).text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


STRATEGY_PAGES = [
    [
        "Moving average crossover. A fast moving average crossing above a slow one is read as the start of "
        "an uptrend; crossing below it as the start of a downtrend. The classic pair is the 50-day and the "
        "200-day simple moving average, known as the golden cross and the death cross.",
        "Position sizing. Risk a fixed fraction of the account on each trade, for example one percent, and "
        "place the stop loss below the most recent swing low so the loss is known before the order is sent.",
    ],
    [
        "Relative strength index. The RSI compares average gains with average losses over fourteen periods. "
        "Readings above seventy are called overbought and readings below thirty oversold; in a strong trend "
        "the indicator can stay at an extreme for a long time.",
        "Backtesting. Test a rule on years of history, include commissions and slippage, and keep a part of "
        "the data aside that the rule never saw while it was tuned.",
    ],
]

SCANNED_MEMO = (
    "The warehouse inventory count will take place on Friday morning. Every shelf must be labelled "
    "before the auditors arrive, and the loading dock stays closed until the count is finished."
)

MINUTES_PARAGRAPHS = [
    "Minutes of the quarterly planning meeting.",
    "The team agreed to move the product launch to the second week of March because the supplier "
    "delivers the packaging late. Marketing will prepare the announcement for the new date.",
]
MINUTES_TABLE = [
    ["Action", "Owner", "Due"],
    ["Confirm packaging delivery", "Dana", "February 10"],
    ["Update launch announcement", "Lee", "February 24"],
]


def main() -> None:
    (HERE / "strategy-notes.pdf").write_bytes(text_pdf(STRATEGY_PAGES))
    (HERE / "scanned-memo.pdf").write_bytes(scanned_pdf([SCANNED_MEMO], dpi=200, bilevel=True))
    (HERE / "meeting-minutes.docx").write_bytes(docx_document(MINUTES_PARAGRAPHS, MINUTES_TABLE))
    for name in ("strategy-notes.pdf", "scanned-memo.pdf", "meeting-minutes.docx"):
        print(f"{name}: {(HERE / name).stat().st_size} bytes")


if __name__ == "__main__":
    main()
