"""The trend platform for application code and the ``cli``: collect, follow runs, read trends and health.

``collect_all()`` sends ``collect_all_sources`` and returns the run's handle (``pipelines.Run``), whose
``wait()`` returns the collection run it opened (``run_for(id)``: items per source and failures) once
every source's job has ended, and raises ``RunFailed`` when one of them failed. ``collect(name)`` does
the same for one source.
``trends()`` and ``sources()`` read what the workers stored. ``demo()`` serves the shipped feed
fixtures (RSS, Atom, Hacker News, Reddit and a folder) from a local HTTP server and collects them.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pipelines.runs import Run
from settings import PROJECT_ROOT, settings

FIXTURES = PROJECT_ROOT / "samples" / "collection"
DEMO_FOLDER = Path("collection") / "demo"
DEMO_ORIGIN = "demo"
_TEMPLATE = re.compile(r"\{\{(rfc822|iso|unix):(-?\d+)\}\}")


def render_fixture(text: str, now: datetime | None = None) -> str:
    """A fixture with its ``{{rfc822:-30}}``-style placeholders replaced by times that many minutes
    from ``now``, so the demo's stories are always recent."""
    moment = now or datetime.now(UTC)

    def replace(match: re.Match[str]) -> str:
        at = moment + timedelta(minutes=int(match.group(2)))
        kind = match.group(1)
        if kind == "rfc822":
            return email.utils.format_datetime(at)
        if kind == "iso":
            return at.strftime("%Y-%m-%dT%H:%M:%SZ")
        return str(int(at.timestamp()))

    return _TEMPLATE.sub(replace, text)


_CONTENT_TYPES = {".xml": "application/xml; charset=utf-8", ".json": "application/json; charset=utf-8"}


class FixtureServer:
    """Serves ``root`` over HTTP on 127.0.0.1 in a daemon thread, as the real services answer: ETags
    and ``304 Not Modified``, ``Cache-Control`` and the right content types. ``/rss.xml``,
    ``/atom.xml``, ``/hn/v0/topstories.json``, ``/hn/v0/item/<id>.json``, ``/r/programming/hot.json``."""

    def __init__(self, root: Path = FIXTURES, *, port: int = 0) -> None:
        self.root = root
        self.rendered_at = datetime.now(UTC)
        self.requests = 0
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fixture-server", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def path_for(self, request_path: str) -> Path | None:
        path = request_path.split("?", 1)[0]
        mapped = {
            "/rss.xml": "rss.xml",
            "/atom.xml": "atom.xml",
            "/r/programming/hot.json": "reddit/hot.json",
            "/hn/v0/topstories.json": "hn/topstories.json",
        }.get(path)
        if mapped is None:
            match = re.fullmatch(r"/hn/v0/item/(\d+)\.json", path)
            mapped = f"hn/item/{match.group(1)}.json" if match else None
        return self.root / mapped if mapped else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fixture = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                fixture.requests += 1
                path = fixture.path_for(self.path)
                if path is None or not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = render_fixture(path.read_text(encoding="utf-8"), fixture.rendered_at).encode()
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", _CONTENT_TYPES.get(path.suffix, "application/octet-stream"))
                self.send_header("ETag", etag)
                self.send_header("Cache-Control", "max-age=300")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def demo_configs(base_url: str, folder: Path = DEMO_FOLDER) -> list[Any]:
    """The demo's five sources, one of each kind, on the fixture server at ``base_url``."""
    from processing.sources import SourceConfig

    return [
        SourceConfig("demo-rss", "rss", f"{base_url}/rss.xml", 60 * 60_000),
        SourceConfig("demo-atom", "atom", f"{base_url}/atom.xml", 60 * 60_000),
        SourceConfig("demo-hn", "hackernews", f"{base_url}/hn/v0", 15 * 60_000, high_frequency=True),
        SourceConfig("demo-reddit", "reddit", f"{base_url}/r/programming/hot.json", 30 * 60_000),
        SourceConfig("demo-folder", "folder", str(folder), 60 * 60_000),
    ]


def stage_demo_folder(target: Path | None = None) -> Path:
    """The folder fixtures, times filled in, under the storage root; returns the folder."""
    folder = target or settings.storage_root / DEMO_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted((FIXTURES / "folder").iterdir()):
        (folder / path.name).write_text(render_fixture(path.read_text(encoding="utf-8")), encoding="utf-8")
    return folder


_demo_server: FixtureServer | None = None
_demo_message: str | None = None  # the run ``demo()`` started last


def demo() -> list[Run]:
    """Collect the shipped fixtures from a local HTTP server, then process them and score the trends.

    The server runs in this process (the cli's) until it exits; ``demo_report`` prints the trends.
    Returns the ``collect_all_sources`` run.
    """
    global _demo_server, _demo_message
    from actors.collection import collect_all_sources
    from storage.collection import reset_source, sync_sources

    if _demo_server is None:
        _demo_server = FixtureServer()
    stage_demo_folder()
    configs = demo_configs(_demo_server.url)
    sync_sources(configs, origin=DEMO_ORIGIN)
    for config in configs:
        # The server's port changes between demos: forget the previous one's errors and ETags.
        reset_source(config.name)
    message = collect_all_sources.send(force=True, origin=DEMO_ORIGIN, process_after=True)
    _demo_message = message.message_id
    return [collection_run(message.message_id)]


_ENDED = ("succeeded", "failed", "dead", "cancelled")


def _job_ended(job_id: str) -> bool:
    from storage.jobs import get_job

    job = get_job(job_id)
    return job is not None and job.state in _ENDED


def _closed_run(message_id: str, *, followup: bool = True) -> dict[str, Any] | None:
    """The run of a ``collect_all_sources`` message once it closed (and, with ``followup``, its
    processing ended); ``None`` before."""
    from middleware.job_status import flush

    run = run_for(message_id)
    if run is None or run["finished_at"] is None:
        return None
    if not followup or not run["process_after"]:
        return run
    if run["followup_id"]:
        flush()
        if _job_ended(run["followup_id"]):
            return run
    return None


def wait_for_run(message_id: str, *, timeout: float = 300.0, followup: bool = True) -> dict[str, Any]:
    """The run of a ``collect_all_sources`` message once it closed (and its processing ended)."""
    deadline = time.monotonic() + timeout
    while True:
        run = _closed_run(message_id, followup=followup)
        if run is not None:
            return run
        if time.monotonic() > deadline:
            raise TimeoutError(f"collection run of {message_id} did not finish within {timeout:g} s")
        time.sleep(0.2)


def collection_run(message_id: str) -> Run:
    """The handle of a ``collect_all_sources`` message: its children are the sources' jobs, its result
    the collection run it opened (``run_for``), once closed and processed."""
    return Run(
        message_id,
        result=lambda: _closed_run(message_id),
        settled=lambda: _closed_run(message_id) is not None,
    )


def _steps(message_id: str) -> list[str]:
    """The message ids of the pipeline a ``collect_and_process`` job sent (empty until it succeeded)."""
    import json

    from storage.jobs import get_job

    job = get_job(message_id)
    try:
        return [str(step) for step in json.loads(job.result or "")["messages"]] if job is not None else []
    except (ValueError, KeyError, TypeError):
        return []


def _source_result(message_id: str) -> Any:
    steps = _steps(message_id)
    return Run(steps[0]).result() if steps else None


def source_run(message_id: str, *, process: bool) -> Run:
    """The handle of ``collect(name)``'s job: its result is what the source's fetch stored (``fetched``,
    ``new_items``, ``new_mentions``, ...), once the processing and scoring after it ended too."""
    if not process:
        return Run(message_id)

    def settled() -> bool:
        # Each step is sent when the one before ends: the run is over once the last one (scoring) has.
        steps = _steps(message_id)
        return bool(steps) and _job_ended(steps[-1])

    return Run(message_id, result=lambda: _source_result(message_id), settled=settled)


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def collect_all(*, force: bool = False, origin: str | None = None) -> Run:
    """Send ``collect_all_sources`` (every due source, all of them with ``force``; of one configuration
    with ``origin``); returns the run's handle, whose ``wait()`` returns the collection run (``run_for``)."""
    from actors.collection import collect_all_sources

    return collection_run(str(collect_all_sources.send(force=force, origin=origin).message_id))


def collect(name: str, *, process: bool = True) -> Run:
    """Collect one source (then process and score, with ``process``); returns the run's handle, whose
    ``wait()`` returns what the fetch stored and raises ``RunFailed`` when the source failed."""
    from actors.collection import collect_and_process, collect_from_source

    actor: Any = collect_and_process if process else collect_from_source
    return source_run(str(actor.send(name).message_id), process=process)


def run_for(message_id: str) -> dict[str, Any] | None:
    from storage.collection import get_run, run_for_message

    run_id = run_for_message(message_id)
    return get_run(run_id) if run_id is not None else None


def trends(limit: int = 30, state: str | None = None) -> list[dict[str, Any]]:
    from storage.collection import list_trends

    return list_trends(limit, state)


@dataclass(frozen=True)
class SourceHealth:
    name: str
    kind: str
    status: str
    success_rate: float | None
    last_error: str | None
    last_latency_ms: float | None
    items_last_run: int | None
    items_total: int
    next_check_at: datetime | None


def sources() -> list[SourceHealth]:
    """Every known source with its health (after following ``sources.toml``)."""
    from actors.collection import sync_configuration
    from storage.collection import list_sources

    sync_configuration()
    return [
        SourceHealth(
            s.name,
            s.kind,
            s.status,
            s.success_rate,
            s.disabled_reason or s.last_error,
            s.last_latency_ms,
            s.last_items,
            s.items_total,
            s.next_check_at,
        )
        for s in list_sources()
    ]


def demo_run_id() -> str | None:
    """The collection run ``demo()`` started, if it did."""
    return _demo_message
