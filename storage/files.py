"""Uploaded files: one row per upload, pointing at a blob stored once per content hash.

A file moves ``pending → processing → completed | failed``; ``step`` names the step running now (or the
one that failed) and ``error`` says why in one line. ``message_id`` is the first message of the latest
run, so a reprocessed file's steps of an earlier run can tell they are superseded.
"""

from __future__ import annotations

import enum
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, String, Text, func, select, update
from sqlalchemy.orm import Mapped, mapped_column

from storage.db import Base, session_scope


class FileStatus(enum.StrEnum):
    PENDING = "pending"  # stored; the run has not started on it
    PROCESSING = "processing"  # a step of the run is working on it
    COMPLETED = "completed"  # every step succeeded: type, text and AI metadata are there
    FAILED = "failed"  # a step failed: ``failed_step`` and ``error`` say which and why


def utcnow() -> datetime:
    return datetime.now(UTC)


class File(Base):
    __tablename__ = "files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    filename: Mapped[str] = mapped_column(String(500))  # as the uploader named it
    owner: Mapped[str] = mapped_column(String(200), default="", index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    blob_path: Mapped[str] = mapped_column(String(1000))  # relative to the storage root
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    mime_type: Mapped[str | None] = mapped_column(String(200))  # detected from the content
    kind: Mapped[str | None] = mapped_column(String(20))  # pdf, docx, text, image, video, other
    # Set when the file name's extension says another type than the content does.
    type_mismatch: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), index=True)
    step: Mapped[str | None] = mapped_column(String(20))
    failed_step: Mapped[str | None] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    suggested_filename: Mapped[str | None] = mapped_column(String(500))
    summary: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[str | None] = mapped_column(Text)  # a JSON list of strings
    ai_provider: Mapped[str | None] = mapped_column(String(32))
    ai_model: Mapped[str | None] = mapped_column(String(128))
    # The thumbnail (relative to the storage root) of an image, PDF or video; none for other kinds.
    thumbnail_path: Mapped[str | None] = mapped_column(String(1000))
    thumbnail_width: Mapped[int | None] = mapped_column(Integer)
    thumbnail_height: Mapped[int | None] = mapped_column(Integer)
    # The document that makes the text searchable with the document search; none for a file without text.
    document_id: Mapped[int | None] = mapped_column(Integer)
    # Times the stuck-file reaper sent the file again; an explicit reprocess starts from 0.
    stuck_resends: Mapped[int] = mapped_column(Integer, default=0)
    message_id: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def tag_list(self) -> list[str]:
        return [str(tag) for tag in json.loads(self.tags)] if self.tags else []


def create_file(*, filename: str, owner: str, sha256: str, blob_path: str, size_bytes: int) -> int:
    with session_scope() as session:
        row = File(
            filename=filename,
            owner=owner,
            sha256=sha256,
            blob_path=blob_path,
            size_bytes=size_bytes,
            status=FileStatus.PENDING.value,
        )
        session.add(row)
        session.flush()
        return int(row.id)


def get_file(file_id: int) -> File | None:
    with session_scope() as session:
        return session.get(File, file_id)


def find_by_hash(sha256: str, owner: str) -> File | None:
    """The oldest file of ``owner`` with this content, for an upload that asks for dedupe."""
    with session_scope() as session:
        return session.scalars(
            select(File).where(File.sha256 == sha256, File.owner == owner).order_by(File.id).limit(1)
        ).first()


def update_file(file_id: int, **values: Any) -> None:
    values["updated_at"] = utcnow()
    with session_scope() as session:
        session.execute(update(File).where(File.id == file_id).values(**values))


def set_status(file_id: int, status: FileStatus, *, step: str | None = None, **values: Any) -> None:
    """Move the file to ``status``; any status but ``failed`` clears an earlier failure."""
    if status is not FileStatus.FAILED:
        values.setdefault("failed_step", None)
        values.setdefault("error", None)
    if status is FileStatus.COMPLETED:
        values.setdefault("completed_at", utcnow())
    update_file(file_id, status=status.value, step=step, **values)


def mark_failed(file_id: int, step: str, reason: str) -> None:
    update_file(file_id, status=FileStatus.FAILED.value, step=step, failed_step=step, error=reason[:4000])


def restart(file_id: int, message_id: str | None, *, stuck_resends: int = 0) -> None:
    """Forget what the last run found and set the file back to ``pending`` for the run ``message_id``."""
    update_file(
        file_id,
        stuck_resends=stuck_resends,
        status=FileStatus.PENDING.value,
        step=None,
        failed_step=None,
        error=None,
        mime_type=None,
        kind=None,
        type_mismatch=None,
        text=None,
        suggested_filename=None,
        summary=None,
        tags=None,
        ai_provider=None,
        ai_model=None,
        thumbnail_path=None,
        thumbnail_width=None,
        thumbnail_height=None,
        message_id=message_id,
        completed_at=None,
    )


def list_files(
    *,
    owner: str | None = None,
    status: str | None = None,
    kind: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[File]:
    """Files newest first, under optional filters."""
    query = select(File)
    if owner is not None:
        query = query.where(File.owner == owner)
    if status is not None:
        query = query.where(File.status == status)
    if kind is not None:
        query = query.where(File.kind == kind)
    with session_scope() as session:
        return list(session.scalars(query.order_by(File.id.desc()).limit(limit).offset(offset)))


def stuck_files(updated_before: datetime, *, limit: int = 500) -> list[File]:
    """Files ``processing`` whose row has not moved since ``updated_before`` (their step outlived its
    hard limit: the worker running it died, or its message was lost)."""
    with session_scope() as session:
        return list(
            session.scalars(
                select(File)
                .where(File.status == FileStatus.PROCESSING.value, File.updated_at < updated_before)
                .order_by(File.id)
                .limit(limit)
            )
        )


def counts_since(since: datetime) -> dict[str, int]:
    """Uploads since ``since``, and how many of the files touched since then are completed or failed."""
    with session_scope() as session:
        uploads = session.scalar(select(func.count()).select_from(File).where(File.created_at >= since)) or 0
        by_status = dict(
            session.execute(
                select(File.status, func.count()).where(File.updated_at >= since).group_by(File.status)
            ).all()
        )
    return {
        "uploads": int(uploads),
        "completed": int(by_status.get(FileStatus.COMPLETED.value, 0)),
        "failed": int(by_status.get(FileStatus.FAILED.value, 0)),
    }


def storage_used() -> dict[str, int]:
    """Bytes the stored blobs take (each content once, however many records point at it), and the files."""
    with session_scope() as session:
        blobs = select(File.sha256, func.max(File.size_bytes).label("size")).group_by(File.sha256).subquery()
        used = session.scalar(select(func.coalesce(func.sum(blobs.c.size), 0))) or 0
        files = session.scalar(select(func.count()).select_from(File)) or 0
    return {"bytes": int(used), "files": int(files)}


def files_of_documents(document_ids: list[int]) -> dict[int, File]:
    """The files whose text these documents index, by document id."""
    if not document_ids:
        return {}
    with session_scope() as session:
        rows = session.scalars(select(File).where(File.document_id.in_(document_ids)))
        return {int(row.document_id): row for row in rows if row.document_id is not None}
