"""The file drive's plain work: the content-hash blob store, type detection, text and AI metadata.

No broker here: ``detect_type(path)`` or ``extract_text(path, detected)`` run the same in a notebook.
The type always comes from the content (libmagic); the file name's extension is only compared with it,
and a mismatch is recorded, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from processing.errors import CorruptInput, MissingDependency, TooLarge, UnsupportedFormat

#: MIME types (from the content) and the kind each is processed as.
KIND_OF_MIME: dict[str, str] = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "image/jpeg": "image",
    "image/png": "image",
    "image/gif": "image",
    "image/webp": "image",
    "image/tiff": "image",
}
#: What an extension claims, for the mismatch check only.
KIND_OF_EXTENSION: dict[str, str] = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".csv": "text",
    ".json": "text",
    **{ext: "image" for ext in (".jpg", ".jpeg", ".png", ".gif", ".webp", ".tif", ".tiff")},
    **{ext: "video" for ext in (".mp4", ".mov", ".mkv", ".webm", ".avi")},
}
_HASH_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredBlob:
    sha256: str
    path: str  # relative to the storage root
    size_bytes: int


@dataclass(frozen=True)
class DetectedType:
    mime_type: str
    kind: str  # pdf, docx, text, image, video or other
    mismatch: str | None  # one line when the extension claims another kind


def blob_path(sha256: str) -> str:
    """Where the blob of this content lives, relative to the storage root."""
    return f"files/blobs/{sha256[:2]}/{sha256}"


def store_blob(content: bytes | Path | BinaryIO, *, root: Path, max_bytes: int) -> StoredBlob:
    """Store ``content`` (bytes, a file to copy, or an open binary stream such as an HTTP upload) once
    under its SHA-256; the same content stored again is the same blob. The blob is written to a temporary
    file and renamed, so a reader never sees half."""
    digest = hashlib.sha256()
    size = 0
    folder = root / "files" / "blobs"
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".upload-")
    try:
        with os.fdopen(handle, "wb") as out:
            if isinstance(content, bytes):
                chunks: Any = [content]
            elif isinstance(content, Path):
                source = open(content, "rb")  # noqa: SIM115 - closed below, after the loop
                chunks = iter(lambda: source.read(_HASH_CHUNK), b"")
            else:
                stream = content
                chunks = iter(lambda: stream.read(_HASH_CHUNK), b"")
            try:
                for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLarge(f"the upload is over the limit of {max_bytes / 1e6:.1f} MB")
                    digest.update(chunk)
                    out.write(chunk)
            finally:
                if isinstance(content, Path):
                    source.close()
        sha = digest.hexdigest()
        relative = blob_path(sha)
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            os.unlink(temporary)
        else:
            os.replace(temporary, target)
        return StoredBlob(sha, relative, size)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def detect_type(path: Path, filename: str) -> DetectedType:
    """The type of the file at ``path`` from its content (libmagic); ``filename`` is only compared."""
    try:
        import magic
    except ImportError as exc:  # python-magic is installed, libmagic1 may not be
        raise MissingDependency(f"libmagic is not available ({exc}); install libmagic1") from exc
    if path.stat().st_size == 0:
        raise CorruptInput(f"{filename} is empty (0 bytes)")
    mime = str(magic.from_file(str(path), mime=True))
    if mime in KIND_OF_MIME:
        kind = KIND_OF_MIME[mime]
    elif mime.startswith("text/") or mime in ("application/json", "application/csv"):
        kind = "text"
    elif mime.startswith("video/"):
        kind = "video"
    else:
        kind = "other"
    claimed = KIND_OF_EXTENSION.get(Path(filename).suffix.lower())
    mismatch = None
    if claimed is not None and claimed != kind:
        mismatch = f"{filename} is named like {claimed} but its content is {mime}"
    return DetectedType(mime, kind, mismatch)


def extract_text(
    path: Path,
    detected: DetectedType,
    *,
    filename: str,
    max_pdf_pages: int = 2_000,
    ocr_language: str = "eng",
) -> str:
    """The text of the file, read by the documents processing: PDF (OCR for scanned pages), DOCX, text,
    OCR for images. Videos and other binary files have none (an empty string) rather than failing:
    they are still thumbnailed and described."""
    from processing import pdf, text

    if detected.kind == "pdf":
        content = pdf.extract_pdf(path, max_pages=max_pdf_pages, ocr_language=ocr_language)
        return "\n\n".join(page.text for page in content.pages if page.text).strip()
    if detected.kind == "docx":
        return text.read_docx(path).strip()
    if detected.kind == "text":
        body, _encoding = text.read_text_file(path)
        return body.strip()
    if detected.kind == "image":
        from PIL import Image, UnidentifiedImageError

        from processing.ocr import ocr_image

        try:
            with Image.open(path) as image:
                image.load()
                return ocr_image(image, language=ocr_language)
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise CorruptInput(f"{filename} is a damaged {detected.mime_type} image ({exc})") from exc
        except Image.DecompressionBombError as exc:
            raise TooLarge(f"{filename} declares too many pixels to read ({exc})") from exc
    if detected.kind == "video":
        return ""
    raise UnsupportedFormat(f"{filename}: {detected.mime_type} files are not supported")


# ------------------------------------------------------------------------------------------------
# AI metadata
# ------------------------------------------------------------------------------------------------

#: The structured reply a provider gives for one file.
METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "suggested_filename": {"type": "string"},
        "summary": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 10},
    },
    "required": ["suggested_filename", "summary", "tags"],
    "additionalProperties": False,
}
METADATA_SCHEMA_NAME = "file_metadata"
METADATA_SYSTEM = (
    "You describe an uploaded file for a file drive. Reply with JSON: a short descriptive file name that "
    "keeps the original extension, a summary of one or two sentences, and up to ten lowercase tags."
)
#: How much of the text is sent to the provider.
METADATA_TEXT_CHARS = 8_000

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")
_STOPWORDS = frozenset(
    [
        "this",
        "that",
        "with",
        "from",
        "have",
        "were",
        "will",
        "would",
        "there",
        "their",
        "them",
        "they",
        "then",
        "than",
        "what",
        "when",
        "where",
        "which",
        "while",
        "your",
        "about",
        "into",
        "over",
        "under",
        "after",
        "before",
        "every",
        "each",
        "also",
        "only",
        "some",
        "such",
        "more",
        "most",
        "other",
        "these",
        "those",
        "been",
        "being",
        "does",
        "done",
        "must",
        "should",
        "could",
        "shall",
        "upon",
        "very",
        "just",
        "like",
    ]
)


def metadata_request(filename: str, mime_type: str, text: str) -> Any:
    """The provider request asking for a file's suggested name, summary and tags."""
    from processing.llm.prompts import TEXT_END, TEXT_START
    from processing.llm.types import Message, Request

    body = f"File name: {filename}\nType: {mime_type}\n{TEXT_START}\n{text[:METADATA_TEXT_CHARS]}\n{TEXT_END}"
    return Request(
        system=METADATA_SYSTEM,
        messages=(Message("user", body),),
        schema=METADATA_SCHEMA,
        schema_name=METADATA_SCHEMA_NAME,
        max_tokens=1024,
    )


def metadata_by_rules(filename: str, mime_type: str, text: str) -> dict[str, Any]:
    """A deterministic description: the first sentences as the summary, the most frequent words as tags
    and the file name, the leading significant words as the name. The offline provider answers with it."""
    words = [word.lower() for word in _WORD.findall(text)]
    significant = [word for word in words if word not in _STOPWORDS]
    tags = [word for word, _count in Counter(significant).most_common(5)]
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]
    summary = " ".join(sentences[:2])[:300] if sentences else f"A {mime_type} file with no text."
    suffix = Path(filename).suffix.lower()
    stem = "-".join(significant[:5]) or re.sub(r"[^a-z0-9]+", "-", Path(filename).stem.lower()).strip("-")
    return {"suggested_filename": f"{stem or 'file'}{suffix}", "summary": summary, "tags": tags}


def parse_metadata(data: Any) -> dict[str, Any]:
    """A provider's reply reduced to the three fields, each of the right type."""
    if not isinstance(data, dict):
        raise CorruptInput("the provider's file metadata is not an object")
    tags = data.get("tags") or []
    return {
        "suggested_filename": str(data.get("suggested_filename") or "")[:500],
        "summary": str(data.get("summary") or ""),
        "tags": json.dumps([str(tag) for tag in tags][:10]),
    }
