"""The HTTP API under ``/api/v1``: thin over ``pipelines`` (``pipelines.ops`` and the domain modules)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from pipelines import ops
from web.security import SESSION_COOKIE, Guard

#: Job ids are Dramatiq message ids (UUIDs); names are actor names. Anything else is refused up front.
ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,200}$"
JobId = Annotated[str, Path(pattern=ID_PATTERN, description="a job (message) id")]

#: How often the event stream looks at the job table (s), and how far back each look reaches: rows are
#: written in batches whose ``updated_at`` is when the change happened, so a row may land a little after
#: a newer one; re-reading a window and sending only what changed misses none.
EVENT_POLL_S = 0.25
EVENT_WINDOW_S = 10.0
KEEPALIVE_S = 15.0

STATE_EVENT = {
    "queued": "enqueued",
    "running": "started",
    "retrying": "retrying",
    "succeeded": "succeeded",
    "failed": "failed",
    "dead": "dead",
    "cancelled": "cancelled",
}


def guard(request: Request) -> Guard:
    return request.app.state.guard  # type: ignore[no-any-return]


# Async (they only compare strings): a sync dependency costs a hop to the thread pool and back on
# every request, which was the biggest part of a submit's time in the server.
async def require_read(request: Request) -> None:
    checker = guard(request)
    if checker.open_reads:
        return
    header = request.headers.get("authorization")
    if checker.bearer_ok(header) or checker.session_ok(request.cookies.get(SESSION_COOKIE)):
        return
    raise HTTPException(401, "missing bearer token" if not header else "wrong bearer token")


async def require_write(request: Request) -> None:
    header = request.headers.get("authorization")
    if not guard(request).bearer_ok(header):
        raise HTTPException(
            401, "writes need Authorization: Bearer <API_TOKEN>" if not header else "wrong bearer token"
        )


router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_read)])
Write = [Depends(require_write)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmitRequest(Strict):
    actor: str = Field(pattern=NAME_PATTERN)
    args: list[Any] = Field(default_factory=list, max_length=1000)
    kwargs: dict[str, Any] = Field(default_factory=dict, max_length=1000)
    options: dict[str, Any] = Field(default_factory=dict, description="urgent (bool), delay (ms)")


class JobHandle(BaseModel):
    id: str


class ReplayRequest(Strict):
    ids: list[Annotated[str, Field(pattern=ID_PATTERN)]] = Field(default_factory=list, max_length=1000)
    queue: str | None = Field(default=None, pattern=NAME_PATTERN)


class PurgeRequest(Strict):
    queue: str | None = Field(default=None, pattern=NAME_PATTERN)


class DocumentRequest(Strict):
    path: str = Field(min_length=1, max_length=4096, description="a file under the storage root")


class VideoRequest(Strict):
    source: str = Field(min_length=1, max_length=4096, description="a URL, or a file under the storage root")
    extract_frames: bool = True
    frame_interval: float | None = Field(default=None, gt=0, le=3600)


class MarketRefreshRequest(Strict):
    asset_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    lookback_days: int = Field(default=100, ge=1, le=3650)
    chart: bool = False


# -- jobs ------------------------------------------------------------------------------------------------


@router.post("/jobs", dependencies=Write, response_model=JobHandle)
async def submit_job(body: SubmitRequest) -> Response:
    """Send a job to a registered actor; arguments are checked against its signature first."""
    # On the event loop, not the thread pool: a submit is one Redis round trip (the job row is only
    # buffered), cheaper than the hop to a thread; it took POST /jobs from ~1,200/s to ~1,900/s.
    job_id = ops.submit(body.actor, body.args, body.kwargs, body.options)
    # The bytes written here, not a dict run through the response model again: a message id needs no
    # escaping, and this is the API's hottest path.
    return Response(b'{"id":"' + job_id.encode() + b'"}', media_type="application/json")


@router.get("/jobs")
def list_jobs(
    state: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    actor: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    queue: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    parent: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    since: Annotated[str | None, Query(max_length=40, description="30m, 2h, 7d or an ISO date")] = None,
    after: Annotated[str | None, Query(max_length=400, description="the previous page's next")] = None,
    limit: Annotated[int, Query(ge=1, le=ops.MAX_PAGE)] = 50,
) -> dict[str, Any]:
    """Jobs newest first; pass ``next`` back as ``after`` for the following page."""
    page = ops.list_jobs(
        state=state,
        actor=actor,
        queue=queue,
        parent=parent,
        since=ops.parse_since(since) if since else None,
        after=after,
        limit=limit,
    )
    return {"jobs": [ops.job_dict(job) for job in page.jobs], "next": page.next_cursor}


@router.get("/jobs/{job_id}")
def get_job(job_id: JobId) -> dict[str, Any]:
    """One job: state, attempts, progress, result, error and traceback, each failed attempt's error and
    traceback (``failed_attempts``), and a run's children."""
    job, children = ops.job_with_tree(job_id)
    return {**ops.job_dict(job), "failed_attempts": ops.failed_attempts(job), "children": children}


@router.post("/jobs/{job_id}/cancel", dependencies=Write)
def cancel_job(job_id: JobId) -> dict[str, str]:
    """The state the job ended in, or ``cancelling``: the request is recorded (``cancel_requested_at``)
    and the worker decides; a job that has not started is skipped when a worker takes it, a running one is
    interrupted, and both end ``cancelled``."""
    return {"id": job_id, "outcome": ops.cancel(job_id)}


@router.post("/jobs/{job_id}/retry", dependencies=Write, response_model=JobHandle)
def retry_job(job_id: JobId) -> dict[str, str]:
    """Send a failed or dead job again; the new job's ``parent_id`` is this one."""
    return {"id": ops.retry(job_id)}


# -- broker ----------------------------------------------------------------------------------------------


@router.get("/queues")
def queues() -> list[dict[str, Any]]:
    """Ready, delayed and dead messages per queue, and the oldest ready message's age (ms)."""
    return ops.queue_stats()


@router.get("/workers")
def workers(include_gone: bool = False) -> list[dict[str, Any]]:
    return ops.workers(include_gone=include_gone)


@router.get("/schedules")
def schedules() -> list[dict[str, Any]]:
    """Periodic actors: next fire, last tick handled and its outcome, enabled."""
    return ops.schedules()


@router.get("/dead-letters")
def dead_letters(queue: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None) -> list[dict[str, Any]]:
    return [entry.as_dict() for entry in ops.dead_letters(queue)]


@router.post("/dead-letters/replay", dependencies=Write)
def replay_dead_letters(body: ReplayRequest) -> dict[str, Any]:
    """Send dead letters again (all of a queue, or these ids) as new jobs linked to the dead ones."""
    pairs = ops.replay_dead_letters(body.ids or None, queue=body.queue)
    if body.ids and len(pairs) < len(set(body.ids)):
        missing = sorted(set(body.ids) - {dead for dead, _ in pairs})
        raise HTTPException(404, f"not in the dead-letter queues: {', '.join(missing[:5])}")
    return {"replayed": [{"dead": dead, "id": fresh} for dead, fresh in pairs]}


@router.post("/dead-letters/purge", dependencies=Write)
def purge_dead_letters(body: PurgeRequest) -> dict[str, int]:
    return {"purged": ops.purge_dead_letters(body.queue)}


# -- events ----------------------------------------------------------------------------------------------


def _changed_rows(job: str | None, run: str | None, since: datetime, limit: int = 500) -> list[Any]:
    from sqlalchemy import or_, select

    from middleware.job_status import flush
    from storage.db import is_sqlite, session_scope
    from storage.models import Job

    flush()
    bound = since.replace(tzinfo=None) if is_sqlite() else since
    query = select(Job).where(Job.updated_at >= bound)
    if job:
        query = query.where(Job.id == job)
    if run:
        query = query.where(or_(Job.id == run, Job.parent_id == run))
    query = query.order_by(Job.updated_at).limit(limit)
    with session_scope() as session:
        return list(session.scalars(query).all())


def _signature(row: Any) -> tuple[Any, ...]:
    return (row.state, row.seq, row.attempts, row.progress, row.progress_note)


@router.get("/events", response_class=StreamingResponse)
async def events(
    request: Request,
    job: Annotated[str | None, Query(pattern=ID_PATTERN, description="only this job")] = None,
    run: Annotated[str | None, Query(pattern=ID_PATTERN, description="only this run and its children")] = None,
) -> StreamingResponse:
    """Server-Sent Events: each change of a job row, named by the event vocabulary of the logs and
    metrics (``enqueued``, ``started``, ``retrying``, ``succeeded``, ``failed``, ``dead``, ``cancelled``);
    the data is the job as ``GET /jobs/{id}`` gives it, without arguments and traceback. With ``job`` or
    ``run``, the stream starts with the current state of what it follows."""

    async def stream() -> Any:
        seen: dict[str, tuple[tuple[Any, ...], float]] = {}
        start = datetime.now(UTC) - (timedelta(days=36500) if job or run else timedelta(seconds=EVENT_WINDOW_S))
        last_sent = time.monotonic()
        first = True
        yield "retry: 1000\n\n"
        while not await request.is_disconnected():
            since = start if first else datetime.now(UTC) - timedelta(seconds=EVENT_WINDOW_S)
            rows = await run_in_threadpool(_changed_rows, job, run, since)
            now = time.monotonic()
            for row in rows:
                signature = _signature(row)
                previous = seen.get(row.id)
                if previous is not None and previous[0] == signature:
                    continue
                seen[row.id] = (signature, now)
                data = ops.job_dict(row)
                data.pop("traceback", None)
                data.pop("args", None)
                name = STATE_EVENT.get(row.state or "", "enqueued")
                yield f"event: {name}\ndata: {json.dumps(data)}\n\n"
                last_sent = now
            # Forget rows that left the window; what follows one job or run keeps them all.
            if not first and not (job or run):
                for key in [key for key, (_, at) in seen.items() if now - at > 2 * EVENT_WINDOW_S]:
                    del seen[key]
            first = False
            if now - last_sent > KEEPALIVE_S:
                yield ": keep-alive\n\n"
                last_sent = now
            await asyncio.sleep(EVENT_POLL_S)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


# -- domain entry points -------------------------------------------------------------------------------


def _jsonable(status: dict[str, Any]) -> dict[str, Any]:
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in status.items()}


def _under_storage_root(path: str) -> None:
    """Refuse a path outside the storage root (or missing) before anything is written or sent."""
    from processing.paths import resolve_under
    from settings import settings

    try:
        resolved = resolve_under(settings.storage_root, path)
    except ValueError:
        raise HTTPException(400, f"path {path[:80]!r} is not a valid file name") from None
    if not resolved.is_file():
        raise HTTPException(400, f"path {path[:80]!r} is not a file")


@router.post("/documents", dependencies=Write)
def ingest_document(body: DocumentRequest) -> dict[str, Any]:
    """Extract → OCR → chunk → embed one document; returns its id and the run's id (its jobs' parent)."""
    from pipelines.documents import ingest_document as ingest

    _under_storage_root(body.path)
    run = ingest(body.path)
    return {"document_id": run.document_id, "run_id": run.id}


@router.get("/documents/{document_id}")
def get_document(document_id: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> dict[str, Any]:
    from pipelines.documents import document_status

    status = document_status(document_id)
    if status is None:
        raise HTTPException(404, f"no document with id {document_id}")
    return _jsonable(status)


@router.get("/search")
def search(
    q: Annotated[str, Query(min_length=1, max_length=1000)],
    k: Annotated[int, Query(ge=1, le=50)] = 5,
) -> list[dict[str, Any]]:
    """The chunks of indexed documents closest to ``q``, best first."""
    from dataclasses import asdict

    from pipelines.documents import search as search_chunks

    return [asdict(hit) for hit in search_chunks(q, k)]


@router.post("/videos", dependencies=Write, response_model=JobHandle)
def process_video(body: VideoRequest) -> dict[str, str]:
    """Captions or a Whisper transcript, and frames, of a video URL or file; returns the job id."""
    from pipelines.media import process_video as process

    if not body.source.startswith(("http://", "https://")):
        _under_storage_root(body.source)
    run = process(body.source, extract_frames=body.extract_frames, frame_interval=body.frame_interval)
    return {"id": run.id}


@router.post("/market/refresh", dependencies=Write, response_model=JobHandle)
def refresh_market(body: MarketRefreshRequest) -> dict[str, str]:
    """Indicators and signals for one asset or all; returns the run's message id."""
    from pipelines.market import refresh_market as refresh

    return {"id": refresh(body.asset_id, body.lookback_days, chart=body.chart).id}


# -- file drive ----------------------------------------------------------------------------------------

FileId = Annotated[int, Path(ge=1, le=2**31 - 1, description="a file id")]
#: Paths whose body is a file, allowed up to ``MAX_FILE_BYTES`` rather than ``API_MAX_BODY_BYTES``.
UPLOAD_PATHS = frozenset({"/api/v1/files/upload"})


def _file_or_404(file_id: int) -> dict[str, Any]:
    from pipelines.files import file_status

    status = file_status(file_id)
    if status is None:
        raise HTTPException(404, f"no file with id {file_id}")
    return _jsonable(status)


@router.post("/files/upload", dependencies=Write)
def upload_file(
    file: UploadFile,
    owner: Annotated[str, Form(max_length=200)] = "",
    dedupe: Annotated[bool, Form()] = False,
) -> dict[str, Any]:
    """Store a multipart upload (field ``file``) and start analysing it; answers at once with its id."""
    from pipelines.files import upload_file as upload

    run = upload(file.file, file.filename or "upload", owner=owner, dedupe=dedupe)
    status = _file_or_404(run.file_id)
    return {"file_id": run.file_id, "status": status["status"], "run_id": run.id}


@router.get("/files")
def list_files(
    owner: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[str | None, Query(pattern="^(pending|processing|completed|failed)$")] = None,
    kind: Annotated[str | None, Query(pattern="^(pdf|docx|text|image|video|other)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]]:
    """Files newest first, filtered by owner, status and kind."""
    from pipelines.files import list_files as rows

    return [_jsonable(row) for row in rows(owner=owner, status=status, kind=kind, limit=limit, offset=offset)]


@router.get("/files/search")
def search_files(
    q: Annotated[str, Query(min_length=1, max_length=1000)],
    k: Annotated[int, Query(ge=1, le=50)] = 5,
) -> list[dict[str, Any]]:
    """The files whose text is closest to ``q``, best first."""
    from pipelines.files import search_files as search_by_meaning

    return [_jsonable(hit) for hit in search_by_meaning(q, k)]


@router.get("/files/{file_id}/status")
def file_status(file_id: FileId) -> dict[str, Any]:
    """Status, step, error and, once completed, the AI results of one file."""
    return _file_or_404(file_id)


@router.get("/files/{file_id}/thumbnail")
def file_thumbnail(file_id: FileId) -> FileResponse:
    """The file's thumbnail (PNG when the image has transparency, JPEG otherwise)."""
    from pipelines.files import thumbnail_file

    path = thumbnail_file(file_id)
    return FileResponse(path, media_type="image/png" if path.suffix == ".png" else "image/jpeg")


@router.post("/files/{file_id}/reprocess", dependencies=Write)
def reprocess_file(file_id: FileId) -> dict[str, Any]:
    """Analyse the file again from scratch: it goes back to ``pending`` with a new run linked to it."""
    from pipelines.files import reprocess

    return {"file_id": file_id, "status": "pending", "run_id": reprocess(file_id).id}


# -- notifications -------------------------------------------------------------------------------------

EndpointId = Annotated[int, Path(ge=1, le=2**31 - 1, description="a webhook endpoint id")]
DeliveryId = Annotated[int, Path(ge=1, le=2**31 - 1, description="a delivery id")]


class WebhookRequest(Strict):
    url: str = Field(min_length=1, max_length=2000)
    events: list[str] = Field(min_length=1, max_length=10)
    secret: str | None = Field(default=None, max_length=200, description="whsec_…; a new one when left out")


@router.post("/webhooks", dependencies=Write)
def add_webhook(body: WebhookRequest) -> dict[str, Any]:
    """Subscribe an endpoint to events; the answer is the only place its signing secret is shown."""
    from pipelines.notifications import add_webhook as add

    return _jsonable(add(body.url, body.events, secret=body.secret))


@router.get("/webhooks")
def list_webhooks() -> list[dict[str, Any]]:
    from pipelines.notifications import list_webhooks as endpoints

    return [_jsonable(endpoint) for endpoint in endpoints()]


@router.delete("/webhooks/{endpoint_id}", dependencies=Write)
def remove_webhook(endpoint_id: EndpointId) -> dict[str, Any]:
    from pipelines.notifications import remove_webhook as remove

    remove(endpoint_id)
    return {"id": endpoint_id, "removed": True}


@router.post("/webhooks/{endpoint_id}/enable", dependencies=Write)
def enable_webhook(endpoint_id: EndpointId) -> dict[str, Any]:
    """Turn an endpoint back on (after it answered 410, say)."""
    from pipelines.notifications import enable_webhook as enable

    return _jsonable(enable(endpoint_id))


@router.get("/deliveries")
def list_deliveries(
    status: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    event: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    endpoint_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]]:
    """Notification deliveries newest first: status, attempts and the last answer of each."""
    from pipelines.notifications import list_deliveries as rows

    found = rows(status=status, event_type=event, endpoint_id=endpoint_id, limit=limit, offset=offset)
    return [_jsonable(row) for row in found]


@router.get("/deliveries/{delivery_id}")
def get_delivery(delivery_id: DeliveryId) -> dict[str, Any]:
    from pipelines.notifications import get_delivery as delivery

    found = delivery(delivery_id)
    if found is None:
        raise HTTPException(404, f"no delivery with id {delivery_id}")
    return _jsonable(found)


@router.post("/deliveries/{delivery_id}/replay", dependencies=Write)
def replay_delivery(delivery_id: DeliveryId) -> dict[str, Any]:
    """Send a delivery's payload again (same webhook id) as a new delivery."""
    from pipelines.notifications import replay_delivery as replay

    return {"replay_of": delivery_id, "id": replay(delivery_id)}
