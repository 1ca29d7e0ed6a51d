"""The operator console: server-rendered pages over ``pipelines.ops``, forms protected by CSRF tokens."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from pipelines import ops
from web.api import ID_PATTERN, NAME_PATTERN, guard
from web.app import HERE
from web.security import CSRF_FIELD, SESSION_COOKIE

templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)

FINISHED = {"succeeded", "failed", "dead", "cancelled"}


def _age(value: str | None) -> str:
    if not value:
        return ""
    moment = datetime.fromisoformat(value)
    seconds = (datetime.now(UTC) - moment).total_seconds()
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h ago"
    return moment.strftime("%Y-%m-%d %H:%M")


def _ms(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.1f} s"


def _duration(job: dict[str, Any]) -> str:
    if not job.get("started_at") or not job.get("finished_at"):
        return ""
    started = datetime.fromisoformat(job["started_at"])
    finished = datetime.fromisoformat(job["finished_at"])
    return _ms((finished - started).total_seconds() * 1000)


templates.env.filters["age"] = _age
templates.env.filters["ms"] = _ms
templates.env.filters["duration"] = _duration


def to_login(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)


def _session(request: Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE)


def _can_read(request: Request) -> None:
    checker = guard(request)
    if checker.open_reads or checker.session_ok(_session(request)):
        return
    raise HTTPException(401, "sign in first")


def _check_form(request: Request, csrf: str | None) -> None:
    """A console write needs a session made with the token, and the form's CSRF token of that session."""
    checker = guard(request)
    session = _session(request)
    if not checker.session_ok(session):
        raise HTTPException(401, "sign in with the API token first")
    if not checker.csrf_ok(session, csrf):
        raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page and try again")


def _page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    checker = guard(request)
    session = _session(request)
    signed_in = checker.session_ok(session)
    context.update(
        signed_in=signed_in,
        csrf=checker.csrf_for(session) if signed_in else "",
        csrf_field=CSRF_FIELD,
        notice=request.query_params.get("notice", "")[:300],
        path=request.url.path,
    )
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def _back(path: str, notice: str) -> RedirectResponse:
    return RedirectResponse(f"{path}?{urlencode({'notice': notice})}", status_code=303)


# -- signing in ------------------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return _page(request, "login.html", next=next if next.startswith("/") else "/", error="")


@router.post("/login")
def login(request: Request, token: Annotated[str, Form(max_length=400)], next: str = Form("/")) -> Response:
    checker = guard(request)
    target = next if next.startswith("/") and not next.startswith("//") else "/"
    if not checker.token_ok(token):
        return _page(request, "login.html", status_code=401, next=target, error="wrong token")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, checker.new_session(), httponly=True, samesite="strict", max_age=7 * 86400)
    return response


@router.post("/logout")
def logout(request: Request, csrf_token: Annotated[str | None, Form()] = None) -> Response:
    _check_form(request, csrf_token)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


# -- pages -----------------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def overview(request: Request) -> HTMLResponse:
    _can_read(request)
    counts = ops.recent_counts(minutes=60)
    finished = sum(counts.get(state, 0) for state in FINISHED)
    failures = ops.list_jobs(state="failed", since=ops.parse_since("1h"), limit=10).jobs
    dead = ops.list_jobs(state="dead", since=ops.parse_since("1h"), limit=10).jobs
    return _page(
        request,
        "overview.html",
        queues=ops.queue_stats(),
        workers=ops.workers(),
        counts=counts,
        per_minute=finished / 60,
        failures=[ops.job_dict(job) for job in [*failures, *dead]],
    )


@router.get("/jobs", response_class=HTMLResponse)
def jobs(
    request: Request,
    state: Annotated[str | None, Query(max_length=40)] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    queue: Annotated[str | None, Query(max_length=100)] = None,
    parent: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[str | None, Query(max_length=40)] = None,
    after: Annotated[str | None, Query(max_length=400)] = None,
) -> HTMLResponse:
    _can_read(request)
    filters = {
        "state": state or "",
        "actor": actor or "",
        "queue": queue or "",
        "parent": parent or "",
        "since": since or "",
    }
    error = ""
    rows: list[dict[str, Any]] = []
    next_link = ""
    try:
        page = ops.list_jobs(
            state=state or None,
            actor=actor or None,
            queue=queue or None,
            parent=parent or None,
            since=ops.parse_since(since) if since else None,
            after=after or None,
            limit=50,
        )
        rows = [ops.job_dict(job) for job in page.jobs]
        if page.next_cursor:
            next_link = "/jobs?" + urlencode({**{k: v for k, v in filters.items() if v}, "after": page.next_cursor})
    except ops.BadRequest as exc:
        error = str(exc)
    from settings import QUEUES
    from storage.models import JobState

    return _page(
        request,
        "jobs.html",
        status_code=400 if error else 200,
        jobs=rows,
        filters=filters,
        error=error,
        next_link=next_link,
        states=[member.value for member in JobState],
        queues=QUEUES,
    )


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_detail(request: Request, job_id: str) -> HTMLResponse:
    _can_read(request)
    import re

    if not re.fullmatch(ID_PATTERN.strip("^$"), job_id):
        return _page(request, "error.html", status_code=404, message=f"no job with id {job_id[:64]!r}")
    try:
        row, children = ops.job_with_tree(job_id)
    except ops.UnknownJob as error:
        return _page(request, "error.html", status_code=404, message=str(error))
    job = ops.job_dict(row)
    attempts = ops.failed_attempts(row)
    return _page(request, "job.html", job=job, children=children, attempts=attempts, finished=job["state"] in FINISHED)


@router.get("/dead-letters", response_class=HTMLResponse)
def dead_letters(request: Request) -> HTMLResponse:
    _can_read(request)
    return _page(request, "dead_letters.html", letters=[entry.as_dict() for entry in ops.dead_letters()])


@router.get("/schedules", response_class=HTMLResponse)
def schedules(request: Request) -> HTMLResponse:
    _can_read(request)
    return _page(request, "schedules.html", schedules=ops.schedules())


@router.get("/workers", response_class=HTMLResponse)
def workers(request: Request) -> HTMLResponse:
    _can_read(request)
    return _page(request, "workers.html", workers=ops.workers(include_gone=True), queues=ops.queue_stats())


# -- actions ---------------------------------------------------------------------------------------------


@router.post("/jobs/{job_id}/cancel")
def cancel(request: Request, job_id: str, csrf_token: Annotated[str | None, Form()] = None) -> Response:
    _check_form(request, csrf_token)
    try:
        outcome = ops.cancel(job_id[:64])
    except ops.OpsError as error:
        return _back(f"/jobs/{quote(job_id[:64])}", str(error))
    return _back(
        f"/jobs/{quote(job_id)}",
        {
            "cancelled": "cancelled: it will not run",
            "cancelling": "cancel requested: its worker skips or stops it, and records it cancelled",
        }.get(outcome, outcome),
    )


@router.post("/jobs/{job_id}/retry")
def retry(request: Request, job_id: str, csrf_token: Annotated[str | None, Form()] = None) -> Response:
    _check_form(request, csrf_token)
    try:
        fresh = ops.retry(job_id[:64])
    except ops.OpsError as error:
        return _back(f"/jobs/{quote(job_id[:64])}", str(error))
    return _back(f"/jobs/{fresh}", f"sent again as {fresh}")


@router.post("/dead-letters/replay")
def replay(
    request: Request,
    csrf_token: Annotated[str | None, Form()] = None,
    message_id: Annotated[str | None, Form(pattern=ID_PATTERN)] = None,
) -> Response:
    _check_form(request, csrf_token)
    pairs = ops.replay_dead_letters([message_id] if message_id else None)
    if message_id and pairs:
        return _back(f"/jobs/{pairs[0][1]}", f"replayed {message_id} as {pairs[0][1]}")
    return _back("/dead-letters", f"replayed {len(pairs)} dead letters" if pairs else "nothing to replay")


@router.post("/dead-letters/purge")
def purge(
    request: Request,
    csrf_token: Annotated[str | None, Form()] = None,
    queue: Annotated[str | None, Form(pattern=NAME_PATTERN)] = None,
) -> Response:
    _check_form(request, csrf_token)
    try:
        removed = ops.purge_dead_letters(queue or None)
    except ops.OpsError as error:
        return _back("/dead-letters", str(error))
    return _back("/dead-letters", f"purged {removed} dead letters")
