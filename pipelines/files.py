"""The file drive for application code, the HTTP API and the CLI: upload, reprocess, status, list.

``upload_file(content, filename, owner=...)`` stores the content once under its SHA-256, registers a
file and starts detect → text → AI metadata; it returns the file id at once. Follow
``file_status(id)``; every job of a run carries the run's first message id as its ``parent_id``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from settings import settings

#: What ``file_status`` reports (AI results are added once the file is completed).
STATUS_FIELDS = (
    *("id", "filename", "owner", "sha256", "size_bytes", "mime_type", "kind", "type_mismatch"),
    *("status", "step", "failed_step", "error", "message_id", "created_at", "updated_at", "completed_at"),
)


def _start_run(file_id: int) -> str:
    """Reset the file to ``pending`` and send its pipeline; returns the run's first message id."""
    from dramatiq import pipeline

    from actors.files import detect_file_type, extract_file_text, generate_file_metadata
    from storage.files import restart

    first = detect_file_type.message_with_options(args=(file_id,), pipe_ignore=True)
    run = first.message_id
    first = first.copy(options={**first.options, "parent_id": run})
    rest = [
        actor.message_with_options(args=(file_id,), pipe_ignore=True, parent_id=run)
        for actor in (extract_file_text, generate_file_metadata)
    ]
    restart(file_id, run)
    pipeline([first, *rest]).run()
    return str(run)


def upload_file(content: bytes | str | Path, filename: str, *, owner: str = "", dedupe: bool = False) -> int:
    """Store ``content`` (bytes or a path to copy) and start analysing it; returns the file id at once.

    The same content is one blob however often it is uploaded; it is a new file record each time unless
    ``dedupe`` asks for the owner's existing record, which is then returned without a new run.
    """
    from processing.files import store_blob
    from storage.db import migrate
    from storage.files import create_file, find_by_hash

    migrate()
    source = content if isinstance(content, bytes) else Path(content)
    blob = store_blob(source, root=settings.storage_root, max_bytes=settings.max_file_bytes)
    if dedupe:
        existing = find_by_hash(blob.sha256, owner)
        if existing is not None:
            return int(existing.id)
    file_id = create_file(
        filename=Path(filename).name or "upload",
        owner=owner,
        sha256=blob.sha256,
        blob_path=blob.path,
        size_bytes=blob.size_bytes,
    )
    _start_run(file_id)
    return file_id


def reprocess(file_id: int) -> str:
    """Analyse the file again from scratch; returns the new run's first message id."""
    from processing.errors import NotFound
    from storage.files import get_file

    if get_file(file_id) is None:
        raise NotFound(f"file {file_id} does not exist")
    return _start_run(file_id)


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
