"""The ASGI app: the API under ``/api/v1``, the console pages, and one-line errors for everything.

uvicorn --factory web.app:create_app      # what ``python -m cli serve`` runs
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from settings import settings

HERE = Path(__file__).resolve().parent


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:300]


def _validation_line(error: RequestValidationError) -> str:
    first = error.errors()[0] if error.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path"))
    message = first.get("msg", "invalid request")
    return _one_line(f"{where}: {message}" if where else message)


def _library_errors() -> tuple[type[Exception], ...]:
    import redis
    import sqlalchemy.exc

    from pipelines import ops
    from processing.errors import PermanentError

    return (ops.OpsError, PermanentError, redis.ConnectionError, sqlalchemy.exc.OperationalError)


def _status_for(error: Exception) -> int:
    """The HTTP status of an error the library raises: bad input is 4xx, an unreachable store 503."""
    from pipelines import ops
    from processing.errors import NotFound, PermanentError

    if isinstance(error, ops.UnknownJob | NotFound):
        return 404
    if isinstance(error, ops.Conflict):
        return 409
    if isinstance(error, ops.BadRequest | PermanentError):
        return 400
    return 503


def create_app(*, host: str | None = None, token: str | None = None) -> FastAPI:
    """Build the app; ``host`` is where it is served (reads need the token off loopback)."""
    import actors  # noqa: F401  (registers every actor on the broker)
    from storage.db import migrate
    from web import api, console
    from web.security import BodyLimit, Guard, is_loopback, resolve_token

    host = host or settings.api_host
    migrate()
    app = FastAPI(
        title="Taskforge",
        version="1",
        summary="Submit and follow background jobs; inspect queues, workers, dead letters and schedules.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.guard = Guard(token or resolve_token(host), open_reads=is_loopback(host))
    app.include_router(api.router)
    app.include_router(console.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_line(error)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Any:
        if error.status_code == 401 and not request.url.path.startswith("/api/"):
            return console.to_login(request)
        headers = {"WWW-Authenticate": "Bearer"} if error.status_code == 401 else None
        return JSONResponse({"detail": _one_line(str(error.detail))}, status_code=error.status_code, headers=headers)

    async def library_error(_: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"detail": _one_line(str(error))}, status_code=_status_for(error))

    # Registered per class (not for Exception, which Starlette re-raises after answering): these are the
    # library's words for bad input or a missing dependency, not faults of the server.
    for error_class in _library_errors():
        app.add_exception_handler(error_class, library_error)  # type: ignore[arg-type]

    app.add_middleware(
        BodyLimit,  # type: ignore[arg-type]
        max_bytes=settings.api_max_body_bytes,
        upload_paths=api.UPLOAD_PATHS,
        # The multipart framing and form fields around the file are small; 64 KiB covers them.
        upload_max_bytes=settings.max_file_bytes + 64 * 1024,
    )
    return app
