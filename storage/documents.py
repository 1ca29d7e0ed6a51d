"""Documents and what was read from them: pages, images, chunks and their embeddings.

Vectors are stored portably, as little-endian float32 bytes, so the same schema works on SQLite and
PostgreSQL: one per window of a chunk (a chunk is longer than the model reads). Search ranks them in
numpy against a matrix each process keeps in memory and reloads only when ``document_index_version``
says the searchable documents changed (see ``search_chunks``).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from storage.db import Base, session_scope


class DocumentStatus(enum.StrEnum):
    PENDING = "pending"  # registered; the pipeline has not started on it
    EXTRACTING = "extracting"  # text, images and OCR are being read
    EXTRACTED = "extracted"  # every page has its text; chunking and embedding follow
    INDEXED = "indexed"  # chunks embedded: the document is searchable
    FAILED = "failed"  # a step failed: ``failed_step`` and ``error`` say which and why


def utcnow() -> datetime:
    return datetime.now(UTC)


class Document(Base):
    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # As given by the caller: relative to the storage root, or absolute inside it.
    path: Mapped[str] = mapped_column(String(1000))
    kind: Mapped[str | None] = mapped_column(String(20))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    encoding: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20), index=True)
    # The step running now (extract, ocr, chunk, embed), or the one that failed.
    step: Mapped[str | None] = mapped_column(String(20))
    failed_step: Mapped[str | None] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)
    page_count: Mapped[int] = mapped_column(Integer, default=0)
    pages_ocr: Mapped[int] = mapped_column(Integer, default=0)
    image_count: Mapped[int] = mapped_column(Integer, default=0)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    # First message id of the latest pipeline run: poll it in the job table.
    message_id: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    indexed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DocumentPage(Base):
    __tablename__ = "document_pages"
    __table_args__ = (UniqueConstraint("document_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)  # 1-based
    text: Mapped[str] = mapped_column(Text, default="")
    needs_ocr: Mapped[bool] = mapped_column(Boolean, default=False)
    ocr: Mapped[bool] = mapped_column(Boolean, default=False)  # the text came from OCR


class DocumentImage(Base):
    __tablename__ = "document_images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    page: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(1000))  # relative to the storage root
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)


class DocumentChunk(Base):
    __tablename__ = "document_chunks"
    __table_args__ = (UniqueConstraint("document_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # 0-based order in the document
    page: Mapped[int] = mapped_column(Integer)
    char_start: Mapped[int] = mapped_column(Integer)  # offsets in the pages' text joined by blank lines
    char_end: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)


class DocumentVector(Base):
    """One vector per window of a chunk; ``char_start``/``char_end`` are offsets in the chunk's text."""

    __tablename__ = "document_vectors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chunk_id: Mapped[int] = mapped_column(ForeignKey("document_chunks.id", ondelete="CASCADE"), index=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)  # 0-based window of the chunk
    char_start: Mapped[int] = mapped_column(Integer, default=0)
    char_end: Mapped[int] = mapped_column(Integer, default=0)
    model: Mapped[str] = mapped_column(String(200), index=True)
    dimensions: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian, unit length


class DocumentIndexVersion(Base):
    """One row; incremented by every write that changes what search sees."""

    __tablename__ = "document_index_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


def _bump_version(session: Any) -> None:
    """Tell every process that its search matrix is out of date. Called last in a transaction, so the
    row lock on PostgreSQL is held only until the commit that follows."""
    session.execute(
        update(DocumentIndexVersion)
        .where(DocumentIndexVersion.id == 1)
        .values(version=DocumentIndexVersion.version + 1)
    )


# ------------------------------------------------------------------------------------------------
# Documents
# ------------------------------------------------------------------------------------------------


def create_document(path: str) -> int:
    with session_scope() as session:
        document = Document(path=path, status=DocumentStatus.PENDING.value)
        session.add(document)
        session.flush()
        return int(document.id)


def get_document(document_id: int) -> Document | None:
    with session_scope() as session:
        return session.get(Document, document_id)


def document_id_for_run(message_id: str) -> int | None:
    """The document whose latest run started with ``message_id``."""
    with session_scope() as session:
        found = session.scalar(select(Document.id).where(Document.message_id == message_id))
        return None if found is None else int(found)


def update_document(document_id: int, **values: Any) -> None:
    values["updated_at"] = utcnow()
    with session_scope() as session:
        session.execute(update(Document).where(Document.id == document_id).values(**values))
        if "status" in values:  # search sees indexed documents only
            _bump_version(session)


def set_status(document_id: int, status: DocumentStatus, *, step: str | None = None, **values: Any) -> None:
    """Move the document to ``status``; a status other than ``failed`` clears the previous failure."""
    if status is not DocumentStatus.FAILED:
        values.setdefault("failed_step", None)
        values.setdefault("error", None)
    if status is DocumentStatus.INDEXED:
        values.setdefault("indexed_at", utcnow())
    update_document(document_id, status=status.value, step=step, **values)


def mark_failed(document_id: int, step: str, reason: str) -> None:
    update_document(document_id, status=DocumentStatus.FAILED.value, step=step, failed_step=step, error=reason[:4000])


def restart(document_id: int, message_id: str | None) -> None:
    """Forget what was read from the document and set it back to ``pending`` for a new run."""
    with session_scope() as session:
        for model in (DocumentVector, DocumentChunk, DocumentImage, DocumentPage):
            session.execute(delete(model).where(model.document_id == document_id))
        session.execute(
            update(Document)
            .where(Document.id == document_id)
            .values(
                status=DocumentStatus.PENDING.value,
                step=None,
                failed_step=None,
                error=None,
                page_count=0,
                pages_ocr=0,
                image_count=0,
                chunk_count=0,
                message_id=message_id,
                indexed_at=None,
                updated_at=utcnow(),
            )
        )
        _bump_version(session)


# ------------------------------------------------------------------------------------------------
# Pages and images
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageRow:
    number: int
    text: str
    needs_ocr: bool = False
    ocr: bool = False


@dataclass(frozen=True)
class ImageRow:
    page: int
    path: str
    width: int
    height: int


def replace_pages(document_id: int, pages: Sequence[PageRow], images: Sequence[ImageRow], **values: Any) -> None:
    """Store the pages and images of a document in one transaction, replacing earlier ones."""
    with session_scope() as session:
        for model in (DocumentVector, DocumentChunk, DocumentImage, DocumentPage):
            session.execute(delete(model).where(model.document_id == document_id))
        # Core bulk inserts: one statement for all rows rather than one ORM object per page.
        if pages:
            session.execute(
                insert(DocumentPage),
                [
                    {
                        "document_id": document_id,
                        "number": p.number,
                        "text": p.text,
                        "needs_ocr": p.needs_ocr,
                        "ocr": p.ocr,
                    }
                    for p in pages
                ],
            )
        if images:
            session.execute(
                insert(DocumentImage),
                [
                    {"document_id": document_id, "page": i.page, "path": i.path, "width": i.width, "height": i.height}
                    for i in images
                ],
            )
        session.execute(
            update(Document)
            .where(Document.id == document_id)
            .values(
                page_count=len(pages),
                pages_ocr=sum(1 for p in pages if p.ocr),
                image_count=len(images),
                chunk_count=0,
                updated_at=utcnow(),
                **values,
            )
        )
        _bump_version(session)


def pages_of(document_id: int) -> list[PageRow]:
    with session_scope() as session:
        rows = session.scalars(
            select(DocumentPage).where(DocumentPage.document_id == document_id).order_by(DocumentPage.number)
        )
        return [PageRow(r.number, r.text, r.needs_ocr, r.ocr) for r in rows]


def images_of(document_id: int) -> list[ImageRow]:
    with session_scope() as session:
        rows = session.scalars(
            select(DocumentImage).where(DocumentImage.document_id == document_id).order_by(DocumentImage.id)
        )
        return [ImageRow(r.page, r.path, r.width, r.height) for r in rows]


def store_ocr_text(document_id: int, texts: dict[int, str]) -> None:
    """Write OCR'd page texts (page number to text) in one transaction."""
    with session_scope() as session:
        for number, text in texts.items():
            session.execute(
                update(DocumentPage)
                .where(DocumentPage.document_id == document_id, DocumentPage.number == number)
                .values(text=text, ocr=True)
            )
        ocr_count = session.scalar(
            select(func.count())
            .select_from(DocumentPage)
            .where(DocumentPage.document_id == document_id, DocumentPage.ocr.is_(True))
        )
        session.execute(
            update(Document)
            .where(Document.id == document_id)
            .values(pages_ocr=int(ocr_count or 0), updated_at=utcnow())
        )


# ------------------------------------------------------------------------------------------------
# Chunks and embeddings
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkRow:
    position: int
    text: str
    char_start: int
    char_end: int
    page: int


def replace_chunks(document_id: int, chunks: Iterable[ChunkRow]) -> int:
    """Store the chunks of a document, replacing earlier ones (and their embeddings)."""
    with session_scope() as session:
        session.execute(delete(DocumentVector).where(DocumentVector.document_id == document_id))
        session.execute(delete(DocumentChunk).where(DocumentChunk.document_id == document_id))
        rows = [
            {
                "document_id": document_id,
                "position": c.position,
                "page": c.page,
                "char_start": c.char_start,
                "char_end": c.char_end,
                "text": c.text,
            }
            for c in chunks
        ]
        if rows:
            session.execute(insert(DocumentChunk), rows)
        session.execute(
            update(Document).where(Document.id == document_id).values(chunk_count=len(rows), updated_at=utcnow())
        )
        _bump_version(session)
        return len(rows)


def chunks_of(document_id: int) -> list[tuple[int, ChunkRow]]:
    """``(chunk id, chunk)`` pairs of a document, in order."""
    with session_scope() as session:
        rows = session.scalars(
            select(DocumentChunk).where(DocumentChunk.document_id == document_id).order_by(DocumentChunk.position)
        )
        return [(r.id, ChunkRow(r.position, r.text, r.char_start, r.char_end, r.page)) for r in rows]


def vector_bytes(vector: Any) -> bytes:
    """A vector (numpy array or list of floats) as little-endian float32 bytes."""
    import numpy as np

    return np.asarray(vector, dtype="<f4").tobytes()


def vector_of(data: bytes) -> Any:
    import numpy as np

    return np.frombuffer(data, dtype="<f4")


@dataclass(frozen=True)
class WindowVector:
    """The vector of one window of a chunk (offsets in the chunk's text)."""

    chunk_id: int
    position: int
    char_start: int
    char_end: int
    vector: Any


def replace_embeddings(document_id: int, model: str, vectors: Sequence[WindowVector | tuple[int, Any]]) -> None:
    """Store the vectors of a document's chunks, one per window (a ``(chunk id, vector)`` pair is the
    chunk's only window), replacing the document's earlier ones."""
    with session_scope() as session:
        session.execute(delete(DocumentVector).where(DocumentVector.document_id == document_id))
        rows = []
        for item in vectors:
            if not isinstance(item, WindowVector):
                item = WindowVector(item[0], 0, 0, 0, item[1])
            rows.append(
                {
                    "chunk_id": item.chunk_id,
                    "document_id": document_id,
                    "position": item.position,
                    "char_start": item.char_start,
                    "char_end": item.char_end,
                    "model": model,
                    "dimensions": len(item.vector),
                    "vector": vector_bytes(item.vector),
                }
            )
        if rows:
            session.execute(insert(DocumentVector), rows)
        _bump_version(session)


@dataclass(frozen=True)
class SearchHit:
    document_id: int
    path: str
    page: int
    chunk_id: int
    score: float  # cosine similarity, -1 to 1: the chunk's best window
    text: str


@dataclass(frozen=True)
class SearchMatrix:
    """Every window vector of one model in indexed documents, rows grouped by chunk."""

    version: int
    matrix: Any  # windows × dimensions, float32
    chunk_ids: Any  # chunk id of each group
    starts: Any  # first row of each group


_matrices: dict[tuple[str, str], SearchMatrix] = {}
_matrices_lock = threading.Lock()


def index_version() -> int:
    with session_scope() as session:
        return int(session.scalar(select(DocumentIndexVersion.version).where(DocumentIndexVersion.id == 1)) or 0)


def load_matrix(model: str) -> SearchMatrix:
    """This process's search matrix for ``model``, read from the database only when the index version
    moved since it was last read (one small query otherwise)."""
    import numpy as np

    from settings import settings

    key = (settings.database_url, model)
    version = index_version()
    cached = _matrices.get(key)
    if cached is not None and cached.version == version:
        return cached
    with _matrices_lock:
        cached = _matrices.get(key)
        if cached is not None and cached.version == version:
            return cached
        with session_scope() as session:
            # Read in the same transaction as the version, so the matrix is never newer than its label.
            version = int(session.scalar(select(DocumentIndexVersion.version)) or 0)
            rows = session.execute(
                select(DocumentVector.chunk_id, DocumentVector.vector)
                .join(Document, Document.id == DocumentVector.document_id)
                .where(DocumentVector.model == model, Document.status == DocumentStatus.INDEXED.value)
                .order_by(DocumentVector.chunk_id, DocumentVector.position)
            ).all()
        if rows:
            dimensions = len(rows[0].vector) // 4
            matrix = np.frombuffer(b"".join(row.vector for row in rows), dtype="<f4").reshape(len(rows), dimensions)
            ids = np.fromiter((row.chunk_id for row in rows), dtype=np.int64, count=len(rows))
            starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
            loaded = SearchMatrix(version, np.ascontiguousarray(matrix, dtype=np.float32), ids[starts], starts)
        else:
            empty = np.zeros(0, dtype=np.int64)
            loaded = SearchMatrix(version, np.zeros((0, 0), dtype=np.float32), empty, empty)
        _matrices[key] = loaded
        return loaded


def search_chunks(query_vector: Any, *, model: str, k: int) -> list[SearchHit]:
    """The ``k`` chunks of indexed documents most similar to ``query_vector`` (unit length); a chunk
    scores as its best window.

    The vectors come from the process's matrix (``load_matrix``), so a query costs one small version
    query, one matrix product and one read of the ``k`` chunks found. Vectors of another model are not
    comparable and are left out.
    """
    import numpy as np

    if k <= 0:
        return []
    loaded = load_matrix(model)
    if not len(loaded.chunk_ids):
        return []
    query = np.asarray(query_vector, dtype=np.float32)
    scores = loaded.matrix @ query
    best = np.maximum.reduceat(scores, loaded.starts)
    count = min(k, len(best))
    top = np.argpartition(-best, count - 1)[:count] if count < len(best) else np.arange(len(best))
    chosen = {int(loaded.chunk_ids[i]): float(best[i]) for i in top}
    with session_scope() as session:
        details = session.execute(
            select(
                DocumentChunk.id,
                DocumentChunk.document_id,
                DocumentChunk.page,
                DocumentChunk.text,
                Document.path,
            )
            .join(Document, Document.id == DocumentChunk.document_id)
            .where(DocumentChunk.id.in_(chosen))
        ).all()
    hits = [
        SearchHit(
            document_id=row.document_id,
            path=row.path,
            page=row.page,
            chunk_id=row.id,
            score=chosen[row.id],
            text=row.text,
        )
        for row in details
    ]
    return sorted(hits, key=lambda hit: (-hit.score, hit.chunk_id))
