"""Notifications: the webhook endpoints events are sent to, and one row per delivery of an event.

A delivery goes to one endpoint (``channel`` ``webhook``) or to LINE (``channel`` ``line``). It stays
``pending`` while attempts are made and moves once to ``delivered``, ``failed`` (retries spent, or a
request that can never succeed) or ``disabled`` (its endpoint answered 410, was disabled or removed).
``payload`` holds the exact body sent, so every attempt and every replay sends the same bytes under the
same ``webhook_id`` (for LINE, the same ``retry_key``). A replay is a new delivery that names the one it
replays in ``replay_of``.
"""

from __future__ import annotations

import enum
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String, Text, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column

from storage.db import Base, session_scope


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # recorded; an attempt is queued, running or scheduled after a backoff
    DELIVERED = "delivered"  # the receiver answered 2xx (LINE: or said it had accepted the retry key)
    FAILED = "failed"  # every retry failed, or the request can never succeed: ``last_error`` says why
    DISABLED = "disabled"  # not sent further: the endpoint answered 410, or was disabled or removed


class Channel(enum.StrEnum):
    WEBHOOK = "webhook"  # a POST to ``endpoint_id``'s URL, signed per Standard Webhooks
    LINE = "line"  # a LINE Messaging API push to the configured recipient


#: Characters of a receiver's answer and of an error kept per delivery.
RESPONSE_CHARS = 500
ERROR_CHARS = 1000


def utcnow() -> datetime:
    return datetime.now(UTC)


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(200))  # whsec_ + base64; signs every attempt
    events: Mapped[str] = mapped_column(Text)  # a JSON list of event types
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    def event_list(self) -> list[str]:
        return [str(event) for event in json.loads(self.events)] if self.events else []


class Delivery(Base):
    __tablename__ = "notification_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(20))
    # Null for LINE, and once the endpoint is removed (the record stays).
    endpoint_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("webhook_endpoints.id", ondelete="SET NULL"), index=True
    )
    event_type: Mapped[str] = mapped_column(String(50), index=True)
    payload: Mapped[str] = mapped_column(Text)  # the JSON body, exactly as sent
    webhook_id: Mapped[str] = mapped_column(String(64), index=True)  # msg_...
    retry_key: Mapped[str | None] = mapped_column(String(36))  # LINE's X-Line-Retry-Key
    replay_of: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_response: Mapped[str | None] = mapped_column(Text)  # an excerpt of the last answer
    last_error: Mapped[str | None] = mapped_column(Text)  # why the last attempt did not deliver
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    message_id: Mapped[str | None] = mapped_column(String(64))  # the job of the latest attempt
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def payload_data(self) -> Any:
        return json.loads(self.payload)


def create_endpoint(*, url: str, secret: str, events: list[str]) -> int:
    with session_scope() as session:
        row = WebhookEndpoint(url=url, secret=secret, events=json.dumps(events), enabled=True)
        session.add(row)
        session.flush()
        return int(row.id)


def get_endpoint(endpoint_id: int) -> WebhookEndpoint | None:
    with session_scope() as session:
        return session.get(WebhookEndpoint, endpoint_id)


def list_endpoints() -> list[WebhookEndpoint]:
    with session_scope() as session:
        return list(session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id)))


def endpoints_for(event_type: str) -> list[WebhookEndpoint]:
    """The enabled endpoints subscribed to ``event_type``."""
    with session_scope() as session:
        rows = session.scalars(
            select(WebhookEndpoint).where(WebhookEndpoint.enabled.is_(True)).order_by(WebhookEndpoint.id)
        )
        return [row for row in rows if event_type in row.event_list()]


def set_enabled(endpoint_id: int, enabled: bool, reason: str | None = None) -> bool:
    """Enable the endpoint (clearing the reason it was disabled) or disable it for ``reason``."""
    with session_scope() as session:
        result = session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id)
            .values(enabled=enabled, disabled_reason=None if enabled else (reason or "disabled")[:ERROR_CHARS])
        )
        return bool(getattr(result, "rowcount", 0))


def delete_endpoint(endpoint_id: int) -> bool:
    """Remove the endpoint; its deliveries stay, with no endpoint, and pending ones will not be sent."""
    with session_scope() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.endpoint_id == endpoint_id, Delivery.status == DeliveryStatus.PENDING.value)
            .values(
                status=DeliveryStatus.DISABLED.value,
                last_error="the endpoint was removed",
                next_attempt_at=None,
                updated_at=utcnow(),
            )
        )
        session.execute(update(Delivery).where(Delivery.endpoint_id == endpoint_id).values(endpoint_id=None))
        result = session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id))
        return bool(getattr(result, "rowcount", 0))


def create_delivery(
    *,
    channel: Channel,
    event_type: str,
    payload: str,
    webhook_id: str,
    endpoint_id: int | None = None,
    retry_key: str | None = None,
    replay_of: int | None = None,
) -> int:
    with session_scope() as session:
        row = Delivery(
            channel=channel.value,
            endpoint_id=endpoint_id,
            event_type=event_type,
            payload=payload,
            webhook_id=webhook_id,
            retry_key=retry_key,
            replay_of=replay_of,
            status=DeliveryStatus.PENDING.value,
            attempts=0,
        )
        session.add(row)
        session.flush()
        return int(row.id)


def get_delivery(delivery_id: int) -> Delivery | None:
    with session_scope() as session:
        return session.get(Delivery, delivery_id)


def list_deliveries(
    *,
    status: str | None = None,
    endpoint_id: int | None = None,
    event_type: str | None = None,
    channel: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Delivery]:
    """Deliveries newest first, under optional filters."""
    query = select(Delivery)
    if status is not None:
        query = query.where(Delivery.status == status)
    if endpoint_id is not None:
        query = query.where(Delivery.endpoint_id == endpoint_id)
    if event_type is not None:
        query = query.where(Delivery.event_type == event_type)
    if channel is not None:
        query = query.where(Delivery.channel == channel)
    with session_scope() as session:
        return list(session.scalars(query.order_by(Delivery.id.desc()).limit(limit).offset(offset)))


def set_message_id(delivery_id: int, message_id: str) -> None:
    with session_scope() as session:
        session.execute(update(Delivery).where(Delivery.id == delivery_id).values(message_id=message_id))


def record_attempt(
    delivery_id: int,
    *,
    status: DeliveryStatus,
    status_code: int | None,
    response: str | None,
    error: str | None,
    next_attempt_at: datetime | None = None,
) -> None:
    """Count one attempt and what came of it; ``delivered`` also stamps ``delivered_at``."""
    now = utcnow()
    values: dict[str, Any] = {
        "status": status.value,
        "attempts": Delivery.attempts + 1,
        "last_status_code": status_code,
        "last_response": response[:RESPONSE_CHARS] if response else None,
        "last_error": error[:ERROR_CHARS] if error else None,
        "next_attempt_at": next_attempt_at,
        "updated_at": now,
    }
    if status is DeliveryStatus.DELIVERED:
        values["delivered_at"] = now
    with session_scope() as session:
        session.execute(update(Delivery).where(Delivery.id == delivery_id).values(**values))


def finish(delivery_id: int, status: DeliveryStatus, reason: str) -> bool:
    """Move a still-``pending`` delivery to ``status`` for ``reason`` without an attempt; False when it had
    already left ``pending``."""
    with session_scope() as session:
        result = session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.PENDING.value)
            .values(status=status.value, last_error=reason[:ERROR_CHARS], next_attempt_at=None, updated_at=utcnow())
        )
        return bool(getattr(result, "rowcount", 0))
