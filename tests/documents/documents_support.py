"""Helpers for the documents tests that run through a real worker."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from tests.support import wait_for_job, wait_until


def fresh_dir(storage_root: Path) -> Path:
    """A new folder under the storage root, so tests never see each other's files."""
    folder = storage_root / "documents-tests" / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True)
    return folder


def relative(path: Path, storage_root: Path) -> str:
    return str(path.relative_to(storage_root))


def wait_for_document(document_id: int, timeout: float = 120.0) -> dict[str, Any]:
    """The document's status once it is ``indexed`` or ``failed``."""
    from pipelines.documents import document_status

    def finished() -> dict[str, Any] | None:
        status = document_status(document_id)
        return status if status is not None and status["status"] in ("indexed", "failed") else None

    return wait_until(finished, timeout=timeout, interval=0.05)


def jobs_of_run(run_id: str) -> dict[str, Any]:
    """The job rows of one pipeline run, by actor name."""
    from middleware.job_status import flush
    from storage.jobs import list_jobs

    flush()
    return {row.actor: row for row in list_jobs(parent_id=run_id, limit=100)}


__all__ = ["fresh_dir", "jobs_of_run", "relative", "wait_for_document", "wait_for_job"]
