"""The collection's HTTP client: one pooled ``httpx`` client per process, conditional GET, hard caps.

Every source fetches through ``fetch``. It keeps connections open between fetches, accepts gzip, sends
``If-None-Match`` / ``If-Modified-Since`` from the previous answer, stops reading a body at
``max_bytes``, follows at most ``max_redirects`` redirects, and gives up after ``timeout_ms``. What the
server says about its next check (``Cache-Control: max-age``, ``Retry-After``) comes back parsed, so the
caller can schedule the source (see ``processing.sources.timing``).

Failures are ``FetchError``s with a short ``reason`` (the label of the ``collection_fetch_errors``
metric) and a sentence a person reads in ``cli sources``.
"""

from __future__ import annotations

import email.utils
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: Sent with every request: who we are, so an operator of a site can tell us apart (Reddit asks for it).
USER_AGENT = "taskforge-collector/1.0 (+https://github.com/taskforge/taskforge; trend collection)"

_client: Any = None
_client_pid: int | None = None
_client_lock = threading.Lock()


class FetchError(Exception):
    """A fetch that gave nothing usable. ``reason`` is a short label; ``retry_after_ms`` the server's ask."""

    def __init__(
        self, reason: str, message: str, *, status: int | None = None, retry_after_ms: int | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.retry_after_ms = retry_after_ms

    @property
    def gone(self) -> bool:
        """HTTP 410: the source says it is gone for good."""
        return self.status == 410


@dataclass
class Response:
    """A finished fetch. ``not_modified`` is a 304: nothing new, ``body`` is empty."""

    url: str
    status: int
    body: bytes
    content_type: str
    etag: str | None
    last_modified: str | None
    max_age_ms: int | None
    retry_after_ms: int | None
    elapsed_ms: float
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def not_modified(self) -> bool:
        return self.status == 304


def client() -> Any:
    """The process's pooled client, made on first use and again after a fork."""
    import os

    global _client, _client_pid
    with _client_lock:
        if _client is None or _client_pid != os.getpid():
            import httpx

            _client = httpx.Client(
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"},
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
                follow_redirects=False,
                trust_env=False,
            )
            _client_pid = os.getpid()
        return _client


def parse_max_age(cache_control: str | None) -> int | None:
    """``Cache-Control: max-age=N`` in ms (``s-maxage`` is for shared caches, not for us)."""
    if not cache_control:
        return None
    match = re.search(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)", cache_control, re.IGNORECASE)
    return int(match.group(1)) * 1000 if match else None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> int | None:
    """``Retry-After`` as seconds or an HTTP date, in ms from now; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value) * 1000
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0, int(((moment - (now or datetime.now(UTC))).total_seconds()) * 1000))


def fetch(
    url: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    timeout_ms: int = 20_000,
    max_bytes: int = 15 * 1024 * 1024,
    max_redirects: int = 5,
    headers: dict[str, str] | None = None,
) -> Response:
    """GET ``url`` with the caps above; raises ``FetchError`` for anything but a 2xx or a 304."""
    import httpx

    request_headers = dict(headers or {})
    if etag:
        request_headers["If-None-Match"] = etag
    if last_modified:
        request_headers["If-Modified-Since"] = last_modified
    started = time.perf_counter()
    # A read timeout alone would let a server that trickles a byte every 19 s hold us forever: the
    # deadline covers the whole exchange.
    deadline = started + timeout_ms / 1000
    timeout = httpx.Timeout(timeout_ms / 1000)
    current = url
    try:
        for _ in range(max_redirects + 1):
            with client().stream("GET", current, headers=request_headers, timeout=timeout) as answer:
                if answer.status_code in (301, 302, 303, 307, 308) and "location" in answer.headers:
                    current = str(answer.url.join(answer.headers["location"]))
                    continue
                status = answer.status_code
                retry_after = parse_retry_after(answer.headers.get("retry-after"))
                if status == 304:
                    body = b""
                elif 200 <= status < 300:
                    declared = answer.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > max_bytes:
                        raise FetchError("too_large", f"{url} declares {declared} bytes, over the {max_bytes} cap")
                    chunks, size = [], 0
                    for chunk in answer.iter_bytes():
                        size += len(chunk)
                        if size > max_bytes:
                            raise FetchError("too_large", f"{url} sent more than the {max_bytes} byte cap")
                        if time.perf_counter() > deadline:
                            raise FetchError("timeout", f"{url} did not finish within {timeout_ms} ms")
                        chunks.append(chunk)
                    body = b"".join(chunks)
                else:
                    raise FetchError(
                        _status_reason(status),
                        f"{url} answered HTTP {status}"
                        + (f" (retry after {retry_after // 1000} s)" if retry_after else ""),
                        status=status,
                        retry_after_ms=retry_after,
                    )
                return Response(
                    url=str(answer.url),
                    status=status,
                    body=body,
                    content_type=answer.headers.get("content-type", ""),
                    etag=answer.headers.get("etag") or (etag if status == 304 else None),
                    last_modified=answer.headers.get("last-modified") or (last_modified if status == 304 else None),
                    max_age_ms=parse_max_age(answer.headers.get("cache-control")),
                    retry_after_ms=retry_after,
                    elapsed_ms=(time.perf_counter() - started) * 1000,
                    headers=dict(answer.headers),
                )
        raise FetchError("redirects", f"{url} redirected more than {max_redirects} times")
    except httpx.TimeoutException:
        raise FetchError("timeout", f"{url} did not answer within {timeout_ms} ms") from None
    except httpx.DecodingError as error:
        raise FetchError("bad_encoding", f"{url} sent a body that does not decode: {error}") from None
    except httpx.HTTPError as error:
        raise FetchError("connection", f"{url}: {type(error).__name__}: {error}") from None


def _status_reason(status: int) -> str:
    if status == 404:
        return "not_found"
    if status == 410:
        return "gone"
    if status == 429:
        return "rate_limited"
    if 500 <= status < 600:
        return "server_error"
    return f"http_{status}"
