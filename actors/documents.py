"""Documents: extract → OCR → chunk → embed, each a thin actor over ``processing`` and ``storage``.

Every actor takes a document id and moves the document's status along
``pending → extracting → extracted → indexed``. Bad input (a ``PermanentError``) marks the document
``failed`` with the step and the reason right away and ends the job ``failed``; any other error is
retried, and when the last retry fails ``document_step_failed`` (the ``on_failure`` callback) marks it.
Each step writes its rows in one transaction, so a failed step leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from middleware.job_status import report_progress
from processing.errors import InvalidArgument, NotFound, PermanentError, is_permanent
from settings import settings
from storage import documents as store
from storage.documents import DocumentStatus

logger = logging.getLogger(__name__)

QUEUE = "documents"
#: Step names, as stored in ``documents.step`` / ``documents.failed_step``.
EXTRACT, OCR, CHUNK, EMBED = "extract", "ocr", "chunk", "embed"

_COMMON: dict[str, Any] = {
    "queue_name": QUEUE,
    "max_retries": 3,
    "on_failure": "document_step_failed",
}


def image_dir(document_id: int) -> Path:
    """Where the embedded images of a document are saved."""
    return settings.storage_root / "documents" / str(document_id) / "images"


def _load(document_id: int) -> store.Document:
    document = store.get_document(document_id)
    if document is None:
        raise NotFound(f"document {document_id} does not exist")
    return document


def _superseded(document: store.Document) -> bool:
    """True when this message belongs to an earlier run of the document (it was reprocessed since):
    the step then does nothing, so two runs never write the same document."""
    message = CurrentMessage.get_current_message()
    run = message.options.get("parent_id") if message is not None else None
    return run is not None and document.message_id is not None and run != document.message_id


SUPERSEDED: dict[str, Any] = {"superseded": True}

#: Where the password of an encrypted PDF waits for the steps that open the file, and for how long (s).
PASSWORD_KEY = "documents:password:"
PASSWORD_TTL_SECONDS = 7 * 24 * 3600


def _redis() -> Any:
    from broker import redis_client_for

    return redis_client_for(dramatiq.get_broker())


def remember_password(document_id: int, password: str | None) -> None:
    """Keep the password of a document's PDF for its run, or forget an earlier one (``None``).

    The password never travels in a message: Dramatiq logs a failed message with its arguments, the job
    table keeps them as text and a failure callback receives the whole message. It waits in Redis under
    the document's id until the run has read the file (OCR is the last step that opens it), at most
    ``PASSWORD_TTL_SECONDS``.
    """
    client = _redis()
    key = f"{PASSWORD_KEY}{document_id}"
    if password is None:
        if client is not None:
            client.delete(key)
        return
    if client is None:
        raise InvalidArgument("a PDF password needs Redis (REDIS_URL) to reach the worker")
    client.set(key, password.encode("utf-8"), ex=PASSWORD_TTL_SECONDS)


def _password(document_id: int) -> str | None:
    client = _redis()
    value = client.get(f"{PASSWORD_KEY}{document_id}") if client is not None else None
    return None if value is None else bytes(value).decode("utf-8")


def _progress(min_interval: float = 0.1) -> Callable[[float, str | None], None]:
    """``report_progress`` for a loop over pages: every page of a slow loop is reported, a fast one
    (a text PDF reads hundreds of pages a second) at most every ``min_interval`` seconds, and the last
    page always. Each report is also the point where a cancelled job stops."""
    last = -min_interval

    def report(percent: float, note: str | None = None) -> None:
        nonlocal last
        now = time.monotonic()
        if percent >= 100.0 or now - last >= min_interval:
            last = now
            report_progress(percent, note)

    return report


def index_chunks(document_id: int, progress: Callable[[float, str | None], None]) -> list[store.WindowVector]:
    """Embed the document's stored chunks and store their vectors (the document search reads them)."""
    from processing.embeddings import embed_in_batches

    chunks = store.chunks_of(document_id)

    def report(done: int, total: int) -> None:
        progress(100.0 * done / total, f"{done} of {total} chunks")

    embedded = embed_in_batches(
        [chunk.text for _, chunk in chunks],
        model_name=settings.embedding_model,
        batch_size=settings.embedding_batch_size,
        progress=report,
    )
    vectors = [store.WindowVector(chunks[w.text][0], w.position, w.start, w.end, row) for w, row in embedded]
    store.replace_embeddings(document_id, settings.embedding_model, vectors)
    return vectors


@contextlib.contextmanager
def _step(document_id: int, step: str) -> Iterator[None]:
    """Mark the document failed at ``step`` when bad input or a missing dependency stops it (neither is
    ever retried); the password of the run is then no longer needed."""
    try:
        yield
    except Exception as exc:
        if is_permanent(exc):
            reason = str(exc) if isinstance(exc, PermanentError) else f"installation error: {exc}"
            store.mark_failed(document_id, step, reason)
            remember_password(document_id, None)
        raise


@dramatiq.actor(**_COMMON, soft_time_limit=30 * 60_000, time_limit=40 * 60_000)
def extract_document(document_id: int) -> dict[str, Any]:
    """Read the text of every page and save the embedded images; flag pages that need OCR."""
    from processing.documents import extract_document as extract

    document = _load(document_id)
    if _superseded(document):
        return SUPERSEDED
    store.set_status(document_id, DocumentStatus.EXTRACTING, step=EXTRACT)
    images = image_dir(document_id)
    shutil.rmtree(images, ignore_errors=True)
    root = settings.storage_root.resolve()
    try:
        with _step(document_id, EXTRACT):
            result = extract(
                document.path,
                root=settings.storage_root,
                max_file_bytes=settings.max_file_bytes,
                max_pdf_pages=settings.max_pdf_pages,
                min_image_pixels=settings.min_image_pixels,
                image_dir=images,
                on_progress=_progress(),
                password=_password(document_id),
            )
        store.replace_pages(
            document_id,
            [store.PageRow(p.number, p.text, needs_ocr=p.needs_ocr, ocr=p.ocr) for p in result.pages],
            [store.ImageRow(i.page, str(i.path.resolve().relative_to(root)), i.width, i.height) for i in result.images],
            kind=result.kind,
            size_bytes=result.size_bytes,
            encoding=result.encoding,
        )
    except BaseException:
        # Nothing half-written: the images saved so far go with the failed attempt.
        shutil.rmtree(images, ignore_errors=True)
        raise
    return {
        "pages": len(result.pages),
        "images": len(result.images),
        "skipped_images": result.skipped_images,
        "pages_needing_ocr": sum(1 for p in result.pages if p.needs_ocr),
    }


@dramatiq.actor(
    **_COMMON,
    # OCR takes one to three seconds a page: the 2,000-page cap needs more than the default limits.
    soft_time_limit=120 * 60_000,
    time_limit=150 * 60_000,
    result_metrics={"pages_ocr": "documents_pages_ocr_total"},
)
def ocr_document(document_id: int) -> dict[str, Any]:
    """Render and OCR every page flagged ``needs_ocr``; the document is ``extracted`` afterwards."""
    from processing.documents import resolve
    from processing.ocr import check_language
    from processing.pdf import ocr_pages

    document = _load(document_id)
    if _superseded(document):
        return SUPERSEDED
    store.set_status(document_id, DocumentStatus.EXTRACTING, step=OCR)
    wanted = [page.number for page in store.pages_of(document_id) if page.needs_ocr and not page.ocr]
    with _step(document_id, OCR):
        if wanted:
            check_language(settings.ocr_language)
            path = resolve(document.path, root=settings.storage_root)
            texts = ocr_pages(
                path,
                wanted,
                language=settings.ocr_language,
                on_progress=_progress(),
                password=_password(document_id),
            )
            store.store_ocr_text(document_id, texts)
    store.set_status(document_id, DocumentStatus.EXTRACTED, step=OCR)
    remember_password(document_id, None)  # no later step opens the file
    return {"pages_ocr": len(wanted)}


@dramatiq.actor(**_COMMON, soft_time_limit=10 * 60_000, time_limit=15 * 60_000)
def chunk_document(document_id: int) -> dict[str, Any]:
    """Cut the document's text into overlapping chunks (``CHUNK_SIZE`` / ``CHUNK_OVERLAP``)."""
    from processing.chunking import chunk_pages

    if _superseded(_load(document_id)):
        return SUPERSEDED
    store.set_status(document_id, DocumentStatus.EXTRACTED, step=CHUNK)
    with _step(document_id, CHUNK):
        pages = [(page.number, page.text) for page in store.pages_of(document_id)]
        chunks = chunk_pages(pages, size=settings.chunk_size, overlap=settings.chunk_overlap)
    count = store.replace_chunks(
        document_id,
        (store.ChunkRow(c.index, c.text, c.start, c.end, c.page) for c in chunks),
    )
    report_progress(100.0, f"{count} chunks")
    return {"chunks": count}


@dramatiq.actor(**_COMMON, soft_time_limit=30 * 60_000, time_limit=40 * 60_000)
def embed_document(document_id: int) -> dict[str, Any]:
    """Embed every chunk in windows the model reads whole (``processing.embeddings.windows``), one
    vector per window, ``EMBEDDING_BATCH_SIZE`` chunks at a time; the document is ``indexed`` afterwards."""

    if _superseded(_load(document_id)):
        return SUPERSEDED
    store.set_status(document_id, DocumentStatus.EXTRACTED, step=EMBED)
    with _step(document_id, EMBED):
        vectors = index_chunks(document_id, _progress())
    store.set_status(document_id, DocumentStatus.INDEXED, step=None)
    return {"chunks_embedded": len({vector.chunk_id for vector in vectors}), "windows_embedded": len(vectors)}


@dramatiq.actor(queue_name=QUEUE, max_retries=3, soft_time_limit=5 * 60_000, time_limit=10 * 60_000)
def search_documents(query: str, k: int = 3) -> dict[str, Any]:
    """Search the indexed documents (the last step of ``make demo``); the job's result lists the hits as
    ``path page N (score)``, best first."""
    from processing.embeddings import embed_array

    vector = embed_array([query], model_name=settings.embedding_model, batch_size=1)[0]
    hits = store.search_chunks(vector, model=settings.embedding_model, k=k)
    for hit in hits:
        logger.info("search %r: %s page %d score %.3f", query, hit.path, hit.page, hit.score)
    return {"hits": [f"{Path(hit.path).name} page {hit.page} ({hit.score:.2f})" for hit in hits], "query": query}


#: The step each actor performs, for the failure callback.
STEP_OF_ACTOR = {
    "extract_document": EXTRACT,
    "ocr_document": OCR,
    "chunk_document": CHUNK,
    "embed_document": EMBED,
}


@dramatiq.actor(queue_name=QUEUE, max_retries=3)
def document_step_failed(message_data: dict, failure: dict) -> None:
    """``on_failure`` callback: mark the document failed when a step ends ``failed`` or ``dead``.

    Bad input already marked it; this covers the rest (retries spent, a hard time limit). A failure of
    an earlier run (the document was reprocessed since) is ignored.
    """
    args = message_data.get("args") or []
    if not args or not isinstance(args[0], int):
        return
    document_id = args[0]
    document = store.get_document(document_id)
    if document is None or document.status == DocumentStatus.FAILED.value:
        return
    run = (message_data.get("options") or {}).get("parent_id")
    if run is not None and document.message_id is not None and run != document.message_id:
        logger.info("ignoring a failure of an earlier run of document %r", document_id)
        return
    step = STEP_OF_ACTOR.get(str(message_data.get("actor_name")), "unknown")
    reason = f"{failure.get('type', 'Error')}: {failure.get('message', '')}"
    if failure.get("state") == "dead":
        reason += " (every retry failed)"
    store.mark_failed(document_id, step, reason)
