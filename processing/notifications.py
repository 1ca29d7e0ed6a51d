"""Notifications, plain: event payloads, Standard Webhooks signing, one webhook attempt, one LINE push.

A webhook is a POST of the event's JSON signed as the Standard Webhooks spec says: ``webhook-id`` (the
same on every attempt of one event, so a receiver can drop a duplicate), ``webhook-timestamp`` (seconds,
of this attempt: receivers refuse a signature older than five minutes, so each retry signs afresh) and
``webhook-signature`` (``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body`` under the endpoint's
``whsec_`` secret, computed by the ``standardwebhooks`` package that receivers verify with).

Each attempt ends in one ``Result``: a 2xx is delivered; a 410 means the receiver is gone for good; a
redirect is not followed (a signed body must not be replayed to a place the endpoint's owner did not
register) and, like any other answer, a timeout or a failed connection, is worth another attempt later.
Whether and when that attempt comes is not decided here: the caller (an actor) raises, and the retries
middleware schedules it.

LINE Notify was shut down on 2025-04-01; LINE messages go through the Messaging API push endpoint, with
an ``X-Line-Retry-Key`` fixed per notification: LINE accepts a key once and answers 409 to a repeat, so a
push retried after a lost answer is still delivered once. The channel token never appears in a result.
"""

from __future__ import annotations

import base64
import enum
import json
import math
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from processing import netguard
from processing.errors import InvalidArgument
from processing.redaction import redact_text

#: Every event a notification can be sent for.
EVENTS: tuple[str, ...] = ("file.completed", "file.failed", "storage.quota", "summary.daily")
SECRET_PREFIX = "whsec_"
#: Characters of a receiver's answer kept with the delivery.
EXCERPT_CHARS = 500
#: Bytes of an answer read at most (the excerpt is all we keep).
READ_BYTES = 4096
#: LINE refuses a text message longer than this (characters).
LINE_TEXT_MAX = 5000
USER_AGENT = "taskforge-webhooks/1.0"


class Result(enum.StrEnum):
    DELIVERED = "delivered"  # a 2xx answer (for LINE also a 409 for a retry key it already accepted)
    GONE = "gone"  # HTTP 410: the receiver asks never to be called again
    RETRY = "retry"  # a 3xx, 4xx or 5xx answer, a timeout or a failed connection: try again later
    REJECTED = "rejected"  # no attempt can succeed: the address is refused, or LINE refused the request


@dataclass(frozen=True)
class Attempt:
    """How one attempt went. ``reason`` is one line, empty when delivered; ``response`` an excerpt."""

    result: Result
    status_code: int | None = None
    response: str = ""
    reason: str = ""


def check_event(event_type: str) -> str:
    """``event_type`` when it is one of ``EVENTS``; an ``InvalidArgument`` naming them otherwise."""
    if event_type not in EVENTS:
        raise InvalidArgument(f"unknown event {event_type!r}; events are {', '.join(EVENTS)}")
    return event_type


def check_events(events: list[str] | tuple[str, ...]) -> list[str]:
    """The distinct events of a subscription, in ``EVENTS`` order; at least one, each known."""
    if isinstance(events, str) or not events:
        raise InvalidArgument(f"subscribe to at least one event of {', '.join(EVENTS)}")
    for event in events:
        check_event(event)
    return [event for event in EVENTS if event in events]


def check_url(url: str) -> str:
    """``url`` when it is an absolute http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(f"a webhook URL must be an absolute http:// or https:// URL, got {url[:200]!r}")
    return url


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def check_secret(secret: str) -> str:
    """``secret`` when it is ``whsec_`` + base64 of 24 to 64 bytes, as the spec asks."""
    body = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else None
    try:
        # Padding is optional: some providers hand secrets out without it.
        key = base64.b64decode((body or "") + "=" * (-len(body or "") % 4), validate=True)
    except ValueError:
        key = b""
    if body is None or not 24 <= len(key) <= 64:
        # The secret itself is never quoted back.
        raise InvalidArgument(f"a webhook secret must be {SECRET_PREFIX!r} + base64 of 24 to 64 random bytes")
    return secret


def new_webhook_id() -> str:
    """A ``webhook-id``: the same on every attempt (and replay) of one event to one endpoint."""
    return f"msg_{uuid.uuid4().hex}"


def new_retry_key() -> str:
    """An ``X-Line-Retry-Key``: a UUID, the same on every attempt of one LINE notification."""
    return str(uuid.uuid4())


def build_payload(event_type: str, data: Mapping[str, Any], *, now: datetime | None = None) -> dict[str, Any]:
    """The event as sent: ``{"type", "timestamp" (ISO 8601, UTC), "data"}``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return {
        "type": check_event(event_type),
        "timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": dict(data),
    }


def encode(payload: Mapping[str, Any]) -> str:
    """The body that is signed and sent, and stored as it is so a retry or a replay sends the same bytes."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str)


def signed_headers(secret: str, webhook_id: str, body: str, *, timestamp: int | None = None) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt, signed with the ``standardwebhooks`` package."""
    from standardwebhooks import Webhook

    seconds = math.floor(time.time()) if timestamp is None else timestamp
    signature = Webhook(secret).sign(webhook_id, datetime.fromtimestamp(seconds, UTC), body)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(seconds),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


def _post(url: str, body: bytes, headers: dict[str, str], timeout_ms: int) -> tuple[int, str, dict[str, str]]:
    """POST once, redirects not followed; the status, an excerpt of the answer and its headers.

    The deadline covers the whole exchange: a per-read timeout alone lets a server that trickles a byte
    now and then hold the attempt for ever.
    """
    import httpx

    deadline = time.monotonic() + timeout_ms / 1000
    # A fresh client per attempt: deliveries are few, and each one resolves its host again, under the guard.
    with (
        httpx.Client(follow_redirects=False, trust_env=False, timeout=httpx.Timeout(timeout_ms / 1000)) as client,
        client.stream("POST", url, content=body, headers=headers) as answer,
    ):
        chunks: list[bytes] = []
        size = 0
        for chunk in answer.iter_bytes():
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout("the answer did not finish in time")
            chunks.append(chunk)
            size += len(chunk)
            if size >= READ_BYTES:
                break
        text = b"".join(chunks)[:READ_BYTES].decode("utf-8", errors="replace")
        return answer.status_code, text[:EXCERPT_CHARS], dict(answer.headers)


def _failure(error: Exception, timeout_ms: int, refused: str | None = None) -> Attempt:
    """The ``Attempt`` of a request that got no answer; ``refused`` says why the guard refused its address."""
    import httpx

    if isinstance(error, httpx.TimeoutException):
        return Attempt(Result.RETRY, reason=f"timeout: no complete answer within {timeout_ms} ms")
    if refused:
        return Attempt(Result.REJECTED, reason=f"refused: {refused}")
    return Attempt(Result.RETRY, reason=_one_line(f"connection failed: {type(error).__name__}: {error}"))


def classify_webhook(status: int, response: str = "") -> Attempt:
    """2xx delivered; 410 gone; any other status worth another attempt."""
    if 200 <= status < 300:
        return Attempt(Result.DELIVERED, status, response)
    if status == 410:
        return Attempt(Result.GONE, status, response, "HTTP 410 Gone: the endpoint asked not to be called again")
    if 300 <= status < 400:
        return Attempt(Result.RETRY, status, response, f"HTTP {status}: a redirect, not followed")
    return Attempt(Result.RETRY, status, response, f"HTTP {status}")


def send_webhook(
    url: str,
    secret: str,
    webhook_id: str,
    body: str,
    *,
    timeout_ms: int,
    policy: netguard.OutboundPolicy | None = None,
) -> Attempt:
    """One signed POST of ``body`` to ``url``; never raises for what the receiver or the network does.

    The URL is a user's, so it reaches public addresses only, or the networks ``policy`` trusts.
    """
    import httpx

    headers = signed_headers(secret, webhook_id, body)
    try:
        with netguard.guarded(policy):
            status, response, _ = _post(url, body.encode(), headers, timeout_ms)
    except httpx.HTTPError as error:
        return _failure(error, timeout_ms, netguard.refusal())
    return classify_webhook(status, response)


def line_text(payload: Mapping[str, Any]) -> str:
    """The text of a LINE message for an event: its type, then its data as ``key: value`` lines."""
    lines = [f"[taskforge] {payload.get('type', 'event')}"]
    data = payload.get("data") or {}
    for key, value in data.items() if isinstance(data, Mapping) else ():
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        lines.append(f"{key}: {_one_line(shown, 500)}")
    text = "\n".join(lines)
    return text if len(text) <= LINE_TEXT_MAX else text[: LINE_TEXT_MAX - 1] + "…"


def _retry_key_accepted(headers: Mapping[str, str], response: str) -> bool:
    """A 409 that says this retry key was accepted before (LINE names the request it accepted)."""
    lowered = {key.lower() for key in headers}
    return "x-line-accepted-request-id" in lowered or "retry key" in response.lower()


def classify_line(status: int, response: str, headers: Mapping[str, str]) -> Attempt:
    """2xx delivered, and a 409 for a retry key already accepted; 429 and 5xx worth another attempt; any
    other 4xx is a request LINE will refuse however often it is sent (a bad token, a bad recipient)."""
    if 200 <= status < 300:
        return Attempt(Result.DELIVERED, status, response)
    if status == 409 and _retry_key_accepted(headers, response):
        return Attempt(Result.DELIVERED, status, response, "")
    if status == 429 or status >= 500 or 300 <= status < 400:
        return Attempt(Result.RETRY, status, response, f"HTTP {status}")
    return Attempt(Result.REJECTED, status, response, f"HTTP {status}: LINE refused the push")


def push_line(api_url: str, token: str, to: str, text: str, retry_key: str, *, timeout_ms: int) -> Attempt:
    """One push of a text message to ``to``; never raises for what LINE or the network does.

    ``api_url`` is the operator's setting, not a user's, so no address guard applies.
    """
    import httpx

    body = json.dumps({"to": to, "messages": [{"type": "text", "text": text}]}, ensure_ascii=False)
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "X-Line-Retry-Key": retry_key,
        "User-Agent": USER_AGENT,
    }
    try:
        status, response, answer_headers = _post(api_url, body.encode(), headers, timeout_ms)
    except httpx.HTTPError as error:
        failed = _failure(error, timeout_ms)
        return Attempt(failed.result, reason=redact_text(failed.reason, token))
    return classify_line(status, redact_text(response, token), answer_headers)
