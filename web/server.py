"""Serving the app with uvicorn: what ``python -m cli serve`` and ``make serve`` run."""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import Any

from settings import settings
from web.security import is_loopback, resolve_token, token_file


def app_from_settings() -> Any:
    """The factory each uvicorn worker process calls (``--workers`` > 1); reads what ``serve`` exported."""
    from web.app import create_app

    for module in filter(None, settings.api_imports.split(",")):
        importlib.import_module(module.strip())
    return create_app(host=settings.api_host, token=settings.api_token)


def serve(
    *,
    host: str,
    port: int,
    workers: int = 1,
    imports: Sequence[str] = (),
    access_log: bool = True,
) -> None:
    """Run the API and console until interrupted; refuses a non-loopback bind without ``API_TOKEN``."""
    import uvicorn

    if not settings.api_token and not is_loopback(host):
        raise ValueError(f"refusing to serve on {host}: a non-loopback address needs API_TOKEN")
    token = resolve_token(host)
    where = "API_TOKEN" if settings.api_token else str(token_file())
    print(f"console: http://{host}:{port}/   API: http://{host}:{port}/api/v1   token: {where}", flush=True)
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "access_log": access_log,
        "log_level": "info",
        # An open event stream would otherwise hold a shutdown for as long as the client stays.
        "timeout_graceful_shutdown": 3,
    }
    if workers <= 1:
        from web.app import create_app

        for module in imports:
            importlib.import_module(module)
        uvicorn.run(create_app(host=host, token=token), **common)
        return
    # Worker processes start fresh and read their settings from the environment.
    os.environ.update({"API_HOST": host, "API_PORT": str(port), "API_TOKEN": token, "API_IMPORTS": ",".join(imports)})
    uvicorn.run("web.server:app_from_settings", factory=True, workers=workers, **common)
