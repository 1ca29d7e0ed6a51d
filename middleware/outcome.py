"""What follows an attempt, decided once and read by every middleware: the leaf they share.

The retries middleware acts on the decision (schedules the retry, dead-letters); the job table, the
metrics, the callbacks and the cancel gate record or react to the same one, so a word means the same
thing in the table, the log and the metrics. No middleware module imports another: what they share is
here and in ``middleware.events`` and ``middleware.interrupts``.
"""

from __future__ import annotations

import random
from typing import Any, NamedTuple

from dramatiq import Retry
from dramatiq.broker import Broker

from middleware.events import DECISION_ATTRIBUTE, Event, noted
from middleware.interrupts import JobCancelled
from processing.errors import is_permanent
from settings import settings


class Decision(NamedTuple):
    """What follows an attempt. ``delay`` (ms) is set for a retry."""

    event: Event
    attempt: int
    delay: int | None = None


def option(broker: Broker, message: Any, name: str, default: Any) -> Any:
    """An option from the message, else from its actor, else ``default`` (Dramatiq's own lookup order)."""
    if name in message.options:
        return message.options[name]
    try:
        actor = broker.get_actor(message.actor_name)
    except Exception:
        return default
    return actor.options.get(name, default)


def backoff(retries: int, *, min_backoff: int, max_backoff: int, jitter: float = 0.2) -> int:
    """Milliseconds before retry number ``retries + 1``: min_backoff * 2**retries, spread by ±jitter."""
    base = min(min_backoff * (2**retries), max_backoff)
    return max(int(base * random.uniform(1 - jitter, 1 + jitter)), 0)


def decide(broker: Broker, message: Any, exception: BaseException | None) -> Decision:
    """Decide, once per attempt, what follows it. Every middleware reads the same decision."""
    cached = noted(message, DECISION_ATTRIBUTE)
    if cached is not None:
        return cached
    retries = int(message.options.get("retries", 0))
    attempt = retries + 1
    decision: Decision
    if exception is None:
        decision = Decision(Event.SUCCEEDED, attempt)
    elif isinstance(exception, JobCancelled):
        decision = Decision(Event.CANCELLED, attempt)
    elif is_permanent(exception):
        decision = Decision(Event.FAILED, attempt)
    else:
        retry_on = option(broker, message, "retry_on", None)
        max_retries = option(broker, message, "max_retries", settings.max_retries)
        if retry_on is not None and not isinstance(exception, (Retry, *tuple(retry_on))):
            decision = Decision(Event.FAILED, attempt)
        elif max_retries is not None and retries >= max_retries:
            decision = Decision(Event.DEAD, attempt)
        elif isinstance(exception, Retry) and exception.delay is not None:
            decision = Decision(Event.RETRYING, attempt, int(exception.delay))
        else:
            delay = backoff(
                retries,
                min_backoff=option(broker, message, "min_backoff", settings.min_backoff),
                max_backoff=option(broker, message, "max_backoff", settings.max_backoff),
            )
            decision = Decision(Event.RETRYING, attempt, delay)
    setattr(message, DECISION_ATTRIBUTE, decision)
    return decision
