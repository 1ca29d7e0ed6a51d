"""Notifications: one attempt per message, a signed webhook or a LINE push, over ``processing.notifications``.

``notify(event, data)`` records one delivery per enabled endpoint subscribed to the event, and one for
LINE when ``LINE_CHANNEL_TOKEN`` and ``LINE_TO`` are set, then sends a message per delivery. Every
delivery of one event shares its ``webhook-id``.

Each attempt is recorded on its delivery row. One that did not deliver raises ``NotDelivered`` and the
retries middleware schedules the next (``WEBHOOK_MAX_RETRIES`` retries, from ``WEBHOOK_MIN_BACKOFF_MS``
doubling up to ``WEBHOOK_MAX_BACKOFF_MS``: about 20 hours with the defaults). The actor reads the same
decision the middleware acts on (``middleware.outcome.decide``), so the row says when the next attempt
comes, or that the last one failed. A 410 disables the endpoint and ends the delivery ``disabled``; a
request that can never succeed (an address the outbound policy refuses, a push LINE refuses) ends it
``failed`` at once. ``notification_failed`` (the ``on_failure`` callback) ends ``failed`` a delivery
whose job ended without the actor saying so (a hard time limit, a crash).

Guarantees: at least once. An attempt whose answer is lost is sent again under the same ``webhook-id``
(receivers drop what they have seen) or the same ``X-Line-Retry-Key`` (LINE drops it itself).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from middleware.events import Event
from middleware.outcome import decide
from processing import netguard
from processing.errors import NotFound, PermanentError
from processing.notifications import (
    Attempt,
    Result,
    build_payload,
    encode,
    line_text,
    new_retry_key,
    new_webhook_id,
    send_webhook,
)
from processing.notifications import push_line as push_to_line
from settings import settings
from storage import notifications as store
from storage.notifications import Channel, DeliveryStatus

logger = logging.getLogger(__name__)

QUEUE = "files"

netguard.set_policy(netguard.OutboundPolicy.parse(settings.url_allowed_networks))

_OPTIONS: dict[str, Any] = {
    "queue_name": QUEUE,
    "max_retries": settings.webhook_max_retries,
    "min_backoff": settings.webhook_min_backoff,
    "max_backoff": settings.webhook_max_backoff,
    "on_failure": "notification_failed",
    # One attempt is one request of at most ``WEBHOOK_TIMEOUT_MS``; the rest is a few row writes.
    "soft_time_limit": settings.webhook_timeout + 30_000,
    "time_limit": settings.webhook_timeout + 60_000,
}


class NotDelivered(Exception):
    """An attempt that did not deliver and may next time (a 5xx, a redirect, a timeout): retried."""


class DeliveryRefused(PermanentError):
    """A delivery no attempt can make (a refused address, a push LINE refuses): never retried."""


def line_configured() -> bool:
    return bool(settings.line_channel_token and settings.line_to)


def _pending(delivery_id: int) -> store.Delivery | None:
    """The delivery when it still waits for an attempt; ``None`` when it already ended (a duplicate message)."""
    row = store.get_delivery(delivery_id)
    if row is None:
        raise NotFound(f"delivery {delivery_id} does not exist")
    if row.status != DeliveryStatus.PENDING.value:
        logger.info("delivery %r is already %s; nothing to send", delivery_id, row.status)
        return None
    return row


def _record(
    delivery_id: int,
    status: DeliveryStatus,
    attempt: Attempt,
    *,
    error: str | None = None,
    next_attempt: datetime | None = None,
) -> None:
    store.record_attempt(
        delivery_id,
        status=status,
        status_code=attempt.status_code,
        response=attempt.response,
        error=error or attempt.reason or None,
        next_attempt_at=next_attempt,
    )


def _settle(delivery_id: int, attempt: Attempt) -> dict[str, Any]:
    """Record the attempt on the delivery; raise to fail the job or have it retried."""
    if attempt.result is Result.DELIVERED:
        _record(delivery_id, DeliveryStatus.DELIVERED, attempt)
        return {"status": DeliveryStatus.DELIVERED.value, "status_code": attempt.status_code}
    if attempt.result is Result.GONE:
        _record(delivery_id, DeliveryStatus.DISABLED, attempt)
        return {"status": DeliveryStatus.DISABLED.value, "status_code": attempt.status_code}
    if attempt.result is Result.REJECTED:
        _record(delivery_id, DeliveryStatus.FAILED, attempt)
        raise DeliveryRefused(attempt.reason)
    error = NotDelivered(attempt.reason)
    message = CurrentMessage.get_current_message()
    decision = decide(dramatiq.get_broker(), message, error) if message is not None else None
    if decision is not None and decision.event is Event.RETRYING and decision.delay is not None:
        next_attempt = datetime.now(UTC) + timedelta(milliseconds=decision.delay)
        _record(delivery_id, DeliveryStatus.PENDING, attempt, next_attempt=next_attempt)
    else:
        attempts = decision.attempt if decision is not None else 1
        gave_up = f"{attempt.reason} (gave up after {attempts} attempt{'' if attempts == 1 else 's'})"
        _record(delivery_id, DeliveryStatus.FAILED, attempt, error=gave_up)
    raise error


@dramatiq.actor(**_OPTIONS)
def deliver_webhook(delivery_id: int) -> dict[str, Any]:
    """One signed POST of the delivery's payload to its endpoint."""
    row = _pending(delivery_id)
    if row is None:
        return {"status": "skipped"}
    endpoint = store.get_endpoint(row.endpoint_id) if row.endpoint_id is not None else None
    if endpoint is None:
        store.finish(delivery_id, DeliveryStatus.DISABLED, "the endpoint was removed")
        return {"status": DeliveryStatus.DISABLED.value}
    if not endpoint.enabled:
        store.finish(delivery_id, DeliveryStatus.DISABLED, f"the endpoint is disabled: {endpoint.disabled_reason}")
        return {"status": DeliveryStatus.DISABLED.value}
    attempt = send_webhook(
        endpoint.url, endpoint.secret, row.webhook_id, row.payload, timeout_ms=settings.webhook_timeout
    )
    if attempt.result is Result.GONE:
        logger.warning("webhook endpoint %r answered 410 Gone; disabling it", endpoint.id)
        store.set_enabled(endpoint.id, False, f"HTTP 410 Gone on delivery {delivery_id}")
    return _settle(delivery_id, attempt)


@dramatiq.actor(**_OPTIONS)
def push_line(delivery_id: int) -> dict[str, Any]:
    """One LINE push of the delivery's event, under the delivery's fixed retry key."""
    row = _pending(delivery_id)
    if row is None:
        return {"status": "skipped"}
    if not line_configured():
        reason = "LINE is not configured (LINE_CHANNEL_TOKEN and LINE_TO)"
        store.finish(delivery_id, DeliveryStatus.FAILED, reason)
        raise DeliveryRefused(reason)
    attempt = push_to_line(
        settings.line_api_url,
        settings.line_channel_token,
        settings.line_to,
        line_text(row.payload_data()),
        row.retry_key or row.webhook_id,
        timeout_ms=settings.webhook_timeout,
    )
    return _settle(delivery_id, attempt)


@dramatiq.actor(queue_name=QUEUE, max_retries=3)
def notification_failed(message_data: dict, failure: dict) -> None:
    """``on_failure`` callback: end ``failed`` a delivery whose job ended while it was still ``pending``."""
    args = message_data.get("args") or []
    if not args or not isinstance(args[0], int):
        return
    reason = f"{failure.get('type', 'Error')}: {failure.get('message', '')}"
    if failure.get("state") == "dead":
        reason += " (every retry failed)"
    store.finish(args[0], DeliveryStatus.FAILED, reason)


def send_delivery(delivery_id: int) -> str:
    """Send the message that makes the delivery's attempts; returns its message id (its job's id)."""
    row = store.get_delivery(delivery_id)
    if row is None:
        raise NotFound(f"delivery {delivery_id} does not exist")
    actor = push_line if row.channel == Channel.LINE.value else deliver_webhook
    message = actor.message(delivery_id)
    store.set_message_id(delivery_id, message.message_id)
    dramatiq.get_broker().enqueue(message)
    return str(message.message_id)


def notify(event_type: str, data: Mapping[str, Any]) -> list[int]:
    """Record and send one delivery of the event per subscribed endpoint (and LINE); returns their ids."""
    body = encode(build_payload(event_type, data))
    webhook_id = new_webhook_id()
    ids = [
        store.create_delivery(
            channel=Channel.WEBHOOK,
            event_type=event_type,
            payload=body,
            webhook_id=webhook_id,
            endpoint_id=endpoint.id,
        )
        for endpoint in store.endpoints_for(event_type)
    ]
    if line_configured():
        ids.append(
            store.create_delivery(
                channel=Channel.LINE,
                event_type=event_type,
                payload=body,
                webhook_id=webhook_id,
                retry_key=new_retry_key(),
            )
        )
    for delivery_id in ids:
        send_delivery(delivery_id)
    return ids
