"""Notifications for application code, the HTTP API and the CLI: webhook endpoints, events, deliveries.

``add_webhook(url, events)`` registers an endpoint and returns it with its signing secret (shown only
here). ``send_event(type, data)`` records and sends one delivery per subscribed endpoint (and LINE when
configured); follow each with ``get_delivery(id)``. ``replay_delivery(id)`` sends a delivery's payload
again under the same ``webhook-id``, as a new delivery with attempts of its own.

Events are ``processing.notifications.EVENTS``; an unknown one, a bad URL or secret is an
``InvalidArgument``, a missing endpoint or delivery a ``NotFound``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from processing.errors import InvalidArgument, NotFound
from processing.notifications import EVENTS

__all__ = [
    "EVENTS",
    "add_webhook",
    "disable_webhook",
    "enable_webhook",
    "get_delivery",
    "get_webhook",
    "list_deliveries",
    "list_webhooks",
    "remove_webhook",
    "replay_delivery",
    "send_event",
]

#: What ``list_webhooks`` reports of an endpoint (``add_webhook`` adds the secret).
WEBHOOK_FIELDS = ("id", "url", "events", "enabled", "disabled_reason", "created_at")
#: What ``get_delivery`` / ``list_deliveries`` report of a delivery; ``payload`` (parsed) and ``target``
#: (the endpoint's URL, password masked, or ``line``) are added.
DELIVERY_FIELDS = (
    *("id", "channel", "endpoint_id", "event_type", "webhook_id", "retry_key", "replay_of", "status"),
    *("attempts", "last_status_code", "last_response", "last_error", "next_attempt_at", "message_id"),
    *("created_at", "updated_at", "delivered_at"),
)


def _webhook(row: Any) -> dict[str, Any]:
    webhook = {name: getattr(row, name) for name in WEBHOOK_FIELDS}
    webhook["events"] = row.event_list()
    return webhook


def _delivery(row: Any, urls: Mapping[int, str]) -> dict[str, Any]:
    from processing.redaction import redact_url

    delivery = {name: getattr(row, name) for name in DELIVERY_FIELDS}
    delivery["payload"] = row.payload_data()
    if row.channel == "line":
        delivery["target"] = "line"
    else:
        url = urls.get(row.endpoint_id) if row.endpoint_id is not None else None
        delivery["target"] = redact_url(url) if url else "(endpoint removed)"
    return delivery


def _urls() -> dict[int, str]:
    from storage.notifications import list_endpoints

    return {int(row.id): row.url for row in list_endpoints()}


def _endpoint(endpoint_id: int) -> Any:
    from storage.db import migrate
    from storage.notifications import get_endpoint

    migrate()
    row = get_endpoint(endpoint_id)
    if row is None:
        raise NotFound(f"webhook {endpoint_id} does not exist")
    return row


def add_webhook(url: str, events: Sequence[str], secret: str | None = None) -> dict[str, Any]:
    """Register an endpoint for ``events``; a ``whsec_`` secret is made when none is given.

    The returned dict is the only place the secret is shown: the receiver verifies signatures with it.
    """
    from processing.notifications import check_events, check_secret, check_url, new_secret
    from storage.db import migrate
    from storage.notifications import create_endpoint

    chosen = check_secret(secret) if secret is not None else new_secret()
    if isinstance(events, str):
        raise InvalidArgument("events must be a list of event names, not one string")
    subscribed = check_events(list(events))
    migrate()
    endpoint_id = create_endpoint(url=check_url(url), secret=chosen, events=subscribed)
    return {**_webhook(_endpoint(endpoint_id)), "secret": chosen}


def list_webhooks() -> list[dict[str, Any]]:
    """Every endpoint, oldest first, without its secret."""
    from storage.db import migrate
    from storage.notifications import list_endpoints

    migrate()
    return [_webhook(row) for row in list_endpoints()]


def get_webhook(endpoint_id: int) -> dict[str, Any] | None:
    """One endpoint, without its secret; ``None`` when there is none."""
    try:
        return _webhook(_endpoint(endpoint_id))
    except NotFound:
        return None


def remove_webhook(endpoint_id: int) -> None:
    """Remove the endpoint. Its deliveries stay on record; those still pending are not sent."""
    from storage.notifications import delete_endpoint

    _endpoint(endpoint_id)
    delete_endpoint(endpoint_id)


def enable_webhook(endpoint_id: int) -> dict[str, Any]:
    """Enable an endpoint a 410 (or an operator) disabled; later events are sent to it again."""
    from storage.notifications import set_enabled

    _endpoint(endpoint_id)
    set_enabled(endpoint_id, True)
    return _webhook(_endpoint(endpoint_id))


def disable_webhook(endpoint_id: int, reason: str = "disabled by an operator") -> dict[str, Any]:
    """Stop sending to an endpoint; its pending deliveries end ``disabled`` when their turn comes."""
    from storage.notifications import set_enabled

    _endpoint(endpoint_id)
    set_enabled(endpoint_id, False, reason)
    return _webhook(_endpoint(endpoint_id))


def send_event(event_type: str, data: Mapping[str, Any]) -> list[int]:
    """Record and send the event to every enabled endpoint subscribed to it (and LINE); the delivery ids."""
    from actors.notifications import notify
    from processing.notifications import check_event
    from storage.db import migrate

    check_event(event_type)
    if not isinstance(data, Mapping):
        raise InvalidArgument(f"an event's data must be a mapping, got {type(data).__name__}")
    migrate()
    return notify(event_type, data)


def list_deliveries(
    *,
    status: str | None = None,
    endpoint_id: int | None = None,
    event_type: str | None = None,
    channel: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Deliveries newest first, under optional filters on status, endpoint, event and channel."""
    from processing.notifications import check_event
    from storage.db import migrate
    from storage.notifications import Channel, DeliveryStatus
    from storage.notifications import list_deliveries as rows

    if status is not None and status not in {member.value for member in DeliveryStatus}:
        raise InvalidArgument(f"unknown status {status!r}; one of {', '.join(DeliveryStatus)}")
    if channel is not None and channel not in {member.value for member in Channel}:
        raise InvalidArgument(f"unknown channel {channel!r}; one of {', '.join(Channel)}")
    if event_type is not None:
        check_event(event_type)
    migrate()
    found = rows(
        status=status, endpoint_id=endpoint_id, event_type=event_type, channel=channel, limit=limit, offset=offset
    )
    urls = _urls()
    return [_delivery(row, urls) for row in found]


def get_delivery(delivery_id: int) -> dict[str, Any] | None:
    """One delivery with its payload and what its last attempt got; ``None`` when there is none."""
    from storage.db import migrate
    from storage.notifications import get_delivery as row_of

    migrate()
    row = row_of(delivery_id)
    return None if row is None else _delivery(row, _urls())


def replay_delivery(delivery_id: int) -> int:
    """Send a delivery's payload again, same ``webhook-id`` (and LINE retry key), as a new delivery; its id.

    A webhook delivery replays to its endpoint, which must still exist and be enabled.
    """
    from actors.notifications import line_configured, send_delivery
    from storage.db import migrate
    from storage.notifications import Channel, create_delivery
    from storage.notifications import get_delivery as row_of

    migrate()
    row = row_of(delivery_id)
    if row is None:
        raise NotFound(f"delivery {delivery_id} does not exist")
    channel = Channel(row.channel)
    if channel is Channel.WEBHOOK:
        if row.endpoint_id is None:
            raise InvalidArgument(f"delivery {delivery_id} cannot be replayed: its endpoint was removed")
        endpoint = _endpoint(row.endpoint_id)
        if not endpoint.enabled:
            raise InvalidArgument(
                f"delivery {delivery_id} cannot be replayed: webhook {endpoint.id} is disabled "
                f"({endpoint.disabled_reason}); enable it first"
            )
    elif not line_configured():
        raise InvalidArgument(f"delivery {delivery_id} cannot be replayed: LINE is not configured")
    replay = create_delivery(
        channel=channel,
        event_type=row.event_type,
        payload=row.payload,
        webhook_id=row.webhook_id,
        endpoint_id=row.endpoint_id,
        retry_key=row.retry_key,
        replay_of=row.id,
    )
    send_delivery(replay)
    return replay
