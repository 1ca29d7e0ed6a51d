"""Files: detect type → text → AI metadata, each a thin actor over ``processing.files`` and ``storage``.

Every actor takes a file id and moves the file along ``pending → processing → completed``. Bad input (a
``PermanentError``) marks the file ``failed`` with the step and the reason at once and ends the job
``failed``; any other error is retried by the retries middleware, and when the last retry fails
``file_step_failed`` (the ``on_failure`` callback) marks it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from processing.errors import NotFound, PermanentError, is_permanent
from settings import settings
from storage import files as store
from storage.files import FileStatus

logger = logging.getLogger(__name__)

QUEUE = "files"
#: Step names, as stored in ``files.step`` / ``files.failed_step``.
DETECT, TEXT, METADATA = "detect", "text", "metadata"

_COMMON: dict[str, Any] = {"queue_name": QUEUE, "max_retries": 3, "on_failure": "file_step_failed"}
SUPERSEDED: dict[str, Any] = {"superseded": True}


def _load(file_id: int) -> store.File:
    row = store.get_file(file_id)
    if row is None:
        raise NotFound(f"file {file_id} does not exist")
    return row


def _superseded(row: store.File) -> bool:
    """True when this message belongs to an earlier run of the file (it was reprocessed since)."""
    message = CurrentMessage.get_current_message()
    run = message.options.get("parent_id") if message is not None else None
    return run is not None and row.message_id is not None and run != row.message_id


def _begin(file_id: int, step: str) -> store.File | None:
    """The file's row with its status set to ``step``; ``None`` when this message belongs to an earlier run."""
    row = _load(file_id)
    if _superseded(row):
        return None
    store.set_status(file_id, FileStatus.PROCESSING, step=step)
    return row


def _blob(row: store.File) -> Path:
    return settings.storage_root / row.blob_path


@contextlib.contextmanager
def _step(file_id: int, step: str) -> Iterator[None]:
    """Mark the file failed at ``step`` when bad input or a missing dependency stops it (never retried)."""
    try:
        yield
    except Exception as exc:
        if is_permanent(exc):
            reason = str(exc) if isinstance(exc, PermanentError) else f"installation error: {exc}"
            store.mark_failed(file_id, step, reason)
        raise


@dramatiq.actor(**_COMMON, soft_time_limit=60_000, time_limit=120_000)
def detect_file_type(file_id: int) -> dict[str, Any]:
    """Detect the type from the content; a name that claims another type is recorded, not trusted."""
    from processing.files import detect_type

    row = _begin(file_id, DETECT)
    if row is None:
        return SUPERSEDED
    with _step(file_id, DETECT):
        path = _blob(row)
        if not path.is_file():
            raise NotFound(f"the stored content of {row.filename} is missing")
        detected = detect_type(path, row.filename)
    store.update_file(file_id, mime_type=detected.mime_type, kind=detected.kind, type_mismatch=detected.mismatch)
    return {"mime_type": detected.mime_type, "kind": detected.kind, "mismatch": detected.mismatch}


@dramatiq.actor(**_COMMON, soft_time_limit=30 * 60_000, time_limit=40 * 60_000)
def extract_file_text(file_id: int) -> dict[str, Any]:
    """Read the text with the documents processing (PDF with OCR of scanned pages, DOCX, text, images)."""
    from processing.files import DetectedType, extract_text

    row = _begin(file_id, TEXT)
    if row is None:
        return SUPERSEDED
    with _step(file_id, TEXT):
        detected = DetectedType(row.mime_type or "", row.kind or "other", row.type_mismatch)
        body = extract_text(
            _blob(row),
            detected,
            filename=row.filename,
            max_pdf_pages=settings.max_pdf_pages,
            ocr_language=settings.ocr_language,
        )
    store.update_file(file_id, text=body)
    return {"chars": len(body)}


@dramatiq.actor(**_COMMON, soft_time_limit=5 * 60_000, time_limit=10 * 60_000)
def generate_file_metadata(file_id: int) -> dict[str, Any]:
    """Ask the configured LLM provider (offline by default) for a suggested name, a summary and tags."""
    from actors.llm import _prices, provider
    from processing.files import metadata_request, parse_metadata
    from processing.llm.complete import MemoryLedger, complete

    row = _begin(file_id, METADATA)
    if row is None:
        return SUPERSEDED
    with _step(file_id, METADATA):
        chosen = provider()
        request = metadata_request(row.filename, row.mime_type or "", row.text or "")
        reply = complete(chosen, request, ledger=MemoryLedger(), prices=_prices(), max_reasks=settings.llm_max_reasks)
        fields = parse_metadata(reply.data)
    store.set_status(
        file_id, FileStatus.COMPLETED, step=None, ai_provider=reply.provider, ai_model=reply.model, **fields
    )
    return {"provider": reply.provider, "suggested_filename": fields["suggested_filename"]}


#: The step each actor performs, for the failure callback.
STEP_OF_ACTOR = {
    "detect_file_type": DETECT,
    "extract_file_text": TEXT,
    "generate_file_metadata": METADATA,
}


@dramatiq.actor(queue_name=QUEUE, max_retries=3)
def file_step_failed(message_data: dict, failure: dict) -> None:
    """``on_failure`` callback: mark the file failed when a step ends ``failed`` or ``dead``.

    Bad input already marked it; this covers the rest (retries spent, a hard time limit). A failure of an
    earlier run (the file was reprocessed since) is ignored.
    """
    args = message_data.get("args") or []
    if not args or not isinstance(args[0], int):
        return
    file_id = args[0]
    row = store.get_file(file_id)
    if row is None or row.status == FileStatus.FAILED.value:
        return
    run = (message_data.get("options") or {}).get("parent_id")
    if run is not None and row.message_id is not None and run != row.message_id:
        logger.info("ignoring a failure of an earlier run of file %r", file_id)
        return
    step = STEP_OF_ACTOR.get(str(message_data.get("actor_name")), "unknown")
    reason = f"{failure.get('type', 'Error')}: {failure.get('message', '')}"
    if failure.get("state") == "dead":
        reason += " (every retry failed)"
    store.mark_failed(file_id, step, reason)
