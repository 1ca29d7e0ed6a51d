"""Retries with exponential backoff and jitter; bad input is never retried."""

from __future__ import annotations

import logging
import traceback
from typing import Any

from dramatiq.broker import Broker
from dramatiq.middleware import Middleware

from middleware.events import ABANDONED_ATTRIBUTE, Event, noted
from middleware.outcome import decide


class Retries(Middleware):
    """Retry failed attempts with exponential backoff and jitter; dead-letter after the last one.

    Errors of the ``processing.errors.PermanentError`` family mean bad input, and an ``ImportError`` a
    missing dependency (``processing.errors.is_permanent``): neither is ever retried, the job ends
    ``failed``. When every retry has failed the message goes to the dead-letter queue and the job ends
    ``dead``.

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
