"""The file drive for application code, the HTTP API and the CLI: upload, reprocess, status, list.

``upload_file(content, filename, owner=...)`` stores the content once under its SHA-256, registers a
file and starts its run (detect → thumbnail → text → AI metadata → embedding → notify); it returns the
run's handle at once, a ``FileRun`` whose ``file_id`` names the file and whose ``wait()`` returns
``file_status(id)`` once it is completed (``RunFailed`` with the failing step's error when it failed).
Every job of a run carries the run's id, its first message id, as its ``parent_id``. ``search_files``
finds files by meaning, through the document search.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

from pipelines.runs import Run
from settings import settings

#: What ``file_status`` reports (AI results are added once the file is completed).
STATUS_FIELDS = (
    *("id", "filename", "owner", "sha256", "size_bytes", "mime_type", "kind", "type_mismatch"),
    *("status", "step", "failed_step", "error", "message_id", "created_at", "updated_at", "completed_at"),
    *("thumbnail_path", "thumbnail_width", "thumbnail_height", "document_id", "stuck_resends"),
)


class FileRun(Run):
    """The handle of one run of a file: ``file_id`` is the file; ``result()`` and ``wait()`` give its
    ``file_status`` once it is ``completed`` and raise ``RunFailed`` once it is ``failed``."""

    def __init__(self, id: str, file_id: int) -> None:
        super().__init__(id, result=self._completed, settled=self._ended)
        self.file_id = int(file_id)

    def __repr__(self) -> str:
        return f"FileRun({self.id!r}, file_id={self.file_id})"

    def _ended(self) -> bool:
        status = file_status(self.file_id)
        return status is None or status["status"] in ("completed", "failed")

    def _completed(self) -> dict[str, Any] | None:
        status = file_status(self.file_id)
        if status is not None and status["status"] == "failed":
            raise self.failed_in_domain(f"{status['failed_step']} step: {status['error']}")
        return status


def _start_run(file_id: int, *, stuck_resends: int = 0) -> FileRun:
    """Reset the file to ``pending`` and send its pipeline; returns the run's handle."""
    from dramatiq import pipeline

    from actors.files import RUN_ACTORS
    from storage.files import restart

    head, *tail = RUN_ACTORS
    first = head.message_with_options(args=(file_id,), pipe_ignore=True)
    run = first.message_id
    first = first.copy(options={**first.options, "parent_id": run})
    rest = [actor.message_with_options(args=(file_id,), pipe_ignore=True, parent_id=run) for actor in tail]
    restart(file_id, run, stuck_resends=stuck_resends)
    pipeline([first, *rest]).run()
    return FileRun(str(run), file_id)


def upload_file(
    content: bytes | str | Path | BinaryIO, filename: str, *, owner: str = "", dedupe: bool = False
) -> FileRun:
    """Store ``content`` (bytes, a path to copy or an open binary stream) and start analysing it; returns
    the run's handle at once (``.file_id``, ``.wait(timeout)``).

    The same content is one blob however often it is uploaded; it is a new file record each time unless
    ``dedupe`` asks for the owner's existing record, which is then returned without a new run: the handle
    of that file's latest run.
    """
    from processing.files import store_blob
    from storage.db import migrate
    from storage.files import create_file, find_by_hash

    migrate()
    source = Path(content) if isinstance(content, str) else content
    blob = store_blob(source, root=settings.storage_root, max_bytes=settings.max_file_bytes)
    if dedupe:
        existing = find_by_hash(blob.sha256, owner)
        if existing is not None:
            if existing.message_id is None:  # never started (its first send failed): start it now
                return _start_run(int(existing.id))
            return FileRun(existing.message_id, int(existing.id))
    file_id = create_file(
        filename=Path(filename).name or "upload",
        owner=owner,
        sha256=blob.sha256,
        blob_path=blob.path,
        size_bytes=blob.size_bytes,
    )
    return _start_run(file_id)


def reprocess(file_id: int) -> FileRun:
    """Analyse the file again from scratch; returns the new run's handle."""
    from processing.errors import NotFound
    from storage.files import get_file

    if get_file(file_id) is None:
        raise NotFound(f"file {file_id} does not exist")
    return _start_run(file_id)


def resend_stuck(file_id: int, resends: int) -> FileRun:
    """Start the run of a stuck file again, counting the resend (the reaper gives up after a few)."""
    return _start_run(file_id, stuck_resends=resends)


def thumbnail_file(file_id: int) -> Path:
    """The thumbnail of a file (PNG or JPEG); ``NotFound`` when there is no such file or no thumbnail yet."""
    from processing.errors import NotFound
    from storage.files import get_file

    row = get_file(file_id)
    if row is None:
        raise NotFound(f"file {file_id} does not exist")
    if not row.thumbnail_path:
        raise NotFound(f"file {file_id} has no thumbnail ({row.kind or 'type not known yet'}, {row.status})")
    return settings.storage_root / row.thumbnail_path


def search_files(query: str, k: int = 5) -> list[dict[str, Any]]:
    """The files whose text is most similar to ``query``, best first: each file's status with the
    ``score`` and ``text`` of its best chunk (the document search over the files' documents)."""
    from pipelines.documents import search
    from storage.files import files_of_documents

    hits = search(query, k=max(k * 4, 20))
    by_document = files_of_documents([hit.document_id for hit in hits])
    found: list[dict[str, Any]] = []
    for hit in hits:
        row = by_document.pop(hit.document_id, None)
        if row is not None:
            found.append({**_status_of(row), "score": hit.score, "text": hit.text})
        if len(found) == k:
            break
    return found


def _status_of(row: Any) -> dict[str, Any]:
    status = {name: getattr(row, name) for name in STATUS_FIELDS}
    if row.status == "completed":
        status["ai"] = {
            "suggested_filename": row.suggested_filename,
            "summary": row.summary,
            "tags": row.tag_list(),
            "provider": row.ai_provider,
            "model": row.ai_model,
        }
    return status


def file_status(file_id: int) -> dict[str, Any] | None:
    """Status, step, error and (when completed) the AI results of one file; ``None`` when there is none."""
    from storage.files import get_file

    row = get_file(file_id)
    return None if row is None else _status_of(row)


def list_files(
    *, owner: str | None = None, status: str | None = None, kind: str | None = None, limit: int = 100, offset: int = 0
) -> list[dict[str, Any]]:
    """Files newest first, under optional filters on owner, status and kind."""
    from storage.db import migrate
    from storage.files import list_files as rows

    migrate()
    return [_status_of(row) for row in rows(owner=owner, status=status, kind=kind, limit=limit, offset=offset)]
