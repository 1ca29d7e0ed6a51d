"""Retries with exponential backoff and jitter; bad input is never retried."""

from __future__ import annotations

import logging
import random
import traceback
from typing import Any, NamedTuple

from dramatiq import Retry
from dramatiq.broker import Broker
from dramatiq.middleware import Middleware

from middleware.cancel import JobCancelled
from middleware.events import ABANDONED_ATTRIBUTE, DECISION_ATTRIBUTE, Event, noted
from processing.errors import PermanentError
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
    elif isinstance(exception, PermanentError):
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


class Retries(Middleware):
    """Retry failed attempts with exponential backoff and jitter; dead-letter after the last one.

    Errors of the ``processing.errors.PermanentError`` family mean bad input and are never retried: the
    job ends ``failed``. When every retry has failed the message goes to the dead-letter queue and the job
    ends ``dead``.

    Actor options:
      max_retries(int): retries after the first attempt. Default: ``MAX_RETRIES`` (3).
      min_backoff(int): milliseconds before the first retry; each later one doubles. Default:
        ``MIN_BACKOFF_MS`` (60000, so about 60 s, 120 s, 240 s).
      max_backoff(int): upper bound of one backoff in milliseconds. Default: ``MAX_BACKOFF_MS``.
      retry_on(tuple[type[Exception], ...]): only these exceptions are retried; others fail the job at
        once. Default: every exception but a PermanentError.
    """

    def __init__(self) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")

    @property
    def actor_options(self) -> set[str]:
        return {"max_retries", "min_backoff", "max_backoff", "retry_on"}

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if exception is None or noted(message, ABANDONED_ATTRIBUTE):
            return
        decision = decide(broker, message, exception)
        if decision.event is Event.RETRYING:
            message.options["retries"] = decision.attempt
            message.options["traceback"] = traceback.format_exc(limit=30)
            self.logger.info(
                "Retrying message %r (attempt %d failed) in %d ms.",
                message.message_id,
                decision.attempt,
                decision.delay,
            )
            broker.enqueue(message, delay=decision.delay)
        elif decision.event is Event.DEAD:
            self.logger.warning(
                "Retries exhausted for message %r after %d attempts; dead-lettered.",
                message.message_id,
                decision.attempt,
            )
            message.fail()
