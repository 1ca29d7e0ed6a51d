"""Files: detect type → thumbnail → text → AI metadata → embedding → notify, each a thin actor over
``processing`` and ``storage``.

Every actor takes a file id and moves the file along ``pending → processing → completed``. Bad input (a
``PermanentError``) marks the file ``failed`` with the step and the reason at once and ends the job
``failed``; any other error is retried by the retries middleware, and when the last retry fails
``file_step_failed`` (the ``on_failure`` callback) marks it. Either way ``file.failed`` is sent to the
subscribed webhooks; the last step sends ``file.completed``.

Periodic: stuck files (hourly), the daily summary and the storage quota check.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage
from periodiq import cron

from processing.errors import NotFound, PermanentError, is_permanent
from settings import settings
from storage import files as store
from storage.files import FileStatus

logger = logging.getLogger(__name__)

QUEUE = "files"
#: Step names, as stored in ``files.step`` / ``files.failed_step``.
DETECT, THUMBNAIL, TEXT, METADATA, EMBED, NOTIFY = "detect", "thumbnail", "text", "metadata", "embed", "notify"
#: Kinds that get a thumbnail; the others are described without one.
THUMBNAIL_KINDS = frozenset({"image", "pdf", "video"})
#: Times a stuck file is sent again before the reaper marks it failed.
STUCK_RESENDS = 2

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


def fail_file(file_id: int, step: str, reason: str) -> None:
    """Mark the file failed at ``step`` and tell the subscribed webhooks (``file.failed``)."""
    from actors.notifications import notify

    store.mark_failed(file_id, step, reason)
    row = store.get_file(file_id)
    if row is not None:
        notify("file.failed", event_data(row))


def event_data(row: store.File) -> dict[str, Any]:
    """What a ``file.completed`` / ``file.failed`` event says about the file."""
    data: dict[str, Any] = {
        "file_id": row.id,
        "filename": row.filename,
        "owner": row.owner,
        "sha256": row.sha256,
        "size_bytes": row.size_bytes,
        "mime_type": row.mime_type,
        "kind": row.kind,
        "status": row.status,
    }
    if row.status == FileStatus.FAILED.value:
        data.update(failed_step=row.failed_step, error=row.error)
    else:
        data.update(suggested_filename=row.suggested_filename, summary=row.summary, tags=row.tag_list())
    return data


def thumbnail_path(sha256: str, size: int, fmt: str) -> str:
    """Where the thumbnail of this content lives, relative to the storage root: one per content and size."""
    return f"files/thumbnails/{sha256[:2]}/{sha256}-{size}.{fmt}"


@contextlib.contextmanager
def _step(file_id: int, step: str) -> Iterator[None]:
    """Mark the file failed at ``step`` when bad input or a missing dependency stops it (never retried)."""
    try:
        yield
    except Exception as exc:
        if is_permanent(exc):
            reason = str(exc) if isinstance(exc, PermanentError) else f"installation error: {exc}"
            fail_file(file_id, step, reason)
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


@dramatiq.actor(**_COMMON, soft_time_limit=2 * 60_000, time_limit=4 * 60_000)
def make_file_thumbnail(file_id: int) -> dict[str, Any]:
    """Fit an image, a PDF's first page or a video's frame at 10% in ``THUMBNAIL_SIZE_PX``; runs before the
    text so a decompression bomb is refused from its header before OCR would try to read it."""
    from processing.paths import write_atomically
    from processing.thumbnails import make_thumbnail

    row = _begin(file_id, THUMBNAIL)
    if row is None:
        return SUPERSEDED
    if row.kind not in THUMBNAIL_KINDS:
        return {"thumbnail": None}
    size = settings.thumbnail_size
    path = _blob(row)
    with _step(file_id, THUMBNAIL):
        try:
            thumbnail = make_thumbnail(path, str(row.kind), size=size)
        except PermanentError as exc:
            # The blob is named by its hash; the reason reads better with the name the uploader gave.
            reason = str(exc).replace(path.name, row.filename)
            raise type(exc)(reason if row.filename in reason else f"{row.filename}: {reason}") from exc
    relative = thumbnail_path(row.sha256, size, thumbnail.format)
    write_atomically(settings.storage_root / relative, thumbnail.data)
    store.update_file(
        file_id, thumbnail_path=relative, thumbnail_width=thumbnail.width, thumbnail_height=thumbnail.height
    )
    return {"thumbnail": relative, "width": thumbnail.width, "height": thumbnail.height}


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
    store.update_file(file_id, ai_provider=reply.provider, ai_model=reply.model, **fields)
    return {"provider": reply.provider, "suggested_filename": fields["suggested_filename"]}


@dramatiq.actor(**_COMMON, soft_time_limit=30 * 60_000, time_limit=40 * 60_000)
def embed_file_text(file_id: int) -> dict[str, Any]:
    """Chunk and embed the text as a document of its own, so the document search finds the file; a file
    without text has no document."""
    from actors.documents import index_chunks
    from processing.chunking import chunk_pages
    from storage import documents

    row = _begin(file_id, EMBED)
    if row is None:
        return SUPERSEDED
    body = row.text or ""
    if not body.strip():
        store.update_file(file_id, document_id=None)
        return {"chunks": 0}
    with _step(file_id, EMBED):
        document_id = row.document_id or documents.create_document(row.blob_path)
        documents.replace_pages(document_id, [documents.PageRow(1, body)], [], kind=row.kind)
        chunks = chunk_pages([(1, body)], size=settings.chunk_size, overlap=settings.chunk_overlap)
        documents.replace_chunks(
            document_id, (documents.ChunkRow(c.index, c.text, c.start, c.end, c.page) for c in chunks)
        )
        vectors = index_chunks(document_id, lambda _percent, _note: None)
        documents.set_status(document_id, documents.DocumentStatus.INDEXED, step=None)
    store.update_file(file_id, document_id=document_id)
    return {"document_id": document_id, "chunks": len(chunks), "windows": len(vectors)}


@dramatiq.actor(**_COMMON, soft_time_limit=60_000, time_limit=120_000)
def finish_file(file_id: int) -> dict[str, Any]:
    """The run's last step: the file is ``completed`` and ``file.completed`` goes to the subscribed webhooks."""
    from actors.notifications import notify

    row = _begin(file_id, NOTIFY)
    if row is None:
        return SUPERSEDED
    store.set_status(file_id, FileStatus.COMPLETED, step=None)
    completed = store.get_file(file_id)
    deliveries = notify("file.completed", event_data(completed)) if completed is not None else []
    return {"deliveries": len(deliveries)}


#: The step each actor performs, for the failure callback.
STEP_OF_ACTOR = {
    "detect_file_type": DETECT,
    "make_file_thumbnail": THUMBNAIL,
    "extract_file_text": TEXT,
    "generate_file_metadata": METADATA,
    "embed_file_text": EMBED,
    "finish_file": NOTIFY,
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
    fail_file(file_id, step, reason)


#: The run's actors in order (``pipelines.files`` sends them as one pipeline).
RUN_ACTORS = (
    detect_file_type,
    make_file_thumbnail,
    extract_file_text,
    generate_file_metadata,
    embed_file_text,
    finish_file,
)


#: The hard time limit (ms) of the actor that runs each step.
HARD_LIMIT_MS = {STEP_OF_ACTOR[actor.actor_name]: int(actor.options["time_limit"]) for actor in RUN_ACTORS}


def _hard_limit_ms(step: str | None) -> int:
    """The hard time limit of the actor that runs ``step`` (the longest one when the step is unknown)."""
    return HARD_LIMIT_MS.get(step or "", max(HARD_LIMIT_MS.values()))


@dramatiq.actor(queue_name=QUEUE, max_retries=0, periodic=cron("20 * * * *"))
def reap_stuck_files() -> dict[str, int]:
    """Files ``processing`` for longer than their step's hard limit (the worker died, or the message was
    lost): sent again from the start while resends remain (``STUCK_RESENDS``), then failed with the reason."""
    from pipelines.files import resend_stuck

    now = datetime.now(UTC)
    shortest = min(HARD_LIMIT_MS.values())
    resent = failed = 0
    for row in store.stuck_files(now - timedelta(milliseconds=shortest)):
        updated = row.updated_at if row.updated_at.tzinfo else row.updated_at.replace(tzinfo=UTC)
        if now - updated <= timedelta(milliseconds=_hard_limit_ms(row.step)):
            continue
        minutes = int((now - updated).total_seconds() // 60)
        if row.stuck_resends < STUCK_RESENDS:
            logger.warning("file %s stuck in step %s for %d min; sending it again", row.id, row.step, minutes)
            resend_stuck(row.id, row.stuck_resends + 1)
            resent += 1
        else:
            reason = f"stuck in step {row.step} for {minutes} min after {row.stuck_resends} resends"
            fail_file(row.id, row.step or "unknown", reason)
            failed += 1
    return {"resent": resent, "failed": failed}


@dramatiq.actor(queue_name=QUEUE, max_retries=1, periodic=cron("10 0 * * *"))
def send_files_daily_summary() -> dict[str, Any]:
    """``summary.daily``: uploads, completed and failed files of the last 24 hours, and storage used."""
    from actors.notifications import notify

    since = datetime.now(UTC) - timedelta(days=1)
    summary: dict[str, Any] = {"since": since.isoformat(), **store.counts_since(since)}
    summary["storage_bytes"] = store.storage_used()["bytes"]
    return {**summary, "deliveries": len(notify("summary.daily", summary))}


@dramatiq.actor(queue_name=QUEUE, max_retries=1, periodic=cron("40 * * * *"))
def check_storage_quota() -> dict[str, Any]:
    """``storage.quota`` when the blobs take ``STORAGE_QUOTA_WARN_RATIO`` of ``STORAGE_QUOTA_BYTES`` or more
    (each hourly check over the line sends one); with no quota set there is nothing to check."""
    from actors.notifications import notify

    quota = settings.storage_quota_bytes
    used = store.storage_used()
    report: dict[str, Any] = {"used_bytes": used["bytes"], "quota_bytes": quota, "files": used["files"]}
    if quota <= 0:
        return {**report, "over": False}
    ratio = used["bytes"] / quota
    report.update(ratio=round(ratio, 4), threshold=settings.storage_quota_warn_ratio)
    over = ratio >= settings.storage_quota_warn_ratio
    deliveries = notify("storage.quota", report) if over else []
    return {**report, "over": over, "deliveries": len(deliveries)}
