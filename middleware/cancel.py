"""Cancelling jobs: a queued job never runs; a running one is interrupted; a finished one keeps its outcome."""

from __future__ import annotations

import logging
from typing import Any

import redis
from dramatiq.broker import Broker
from dramatiq.middleware import Middleware, SkipMessage

from middleware.cancellations import CancelWatcher, watcher_for
from middleware.events import DECISION_ATTRIBUTE, SKIP_REASON_ATTRIBUTE, Event
from middleware.interrupts import attempts, guard_actor

__all__ = ["Cancellation"]


class Cancellation(Middleware):
    """Skip messages whose job was cancelled while they waited; interrupt the ones that are running.

    A running job gets ``JobCancelled`` raised in its thread (``middleware.interrupts``: only into that
    attempt, and only while its actor runs) and also at its next ``report_progress``. Like the soft time
    limit, it reaches Python code; a C call sees it when it returns. Workers learn of a cancellation
    through Redis pub/sub, so the check costs no round trip per message.

    Parameters:
      client(redis.Redis | None): where cancellations are kept. None disables the check.
    """

    def __init__(self, *, client: redis.Redis | None) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.client = client
        self.watcher: CancelWatcher | None = None

    def after_declare_actor(self, broker: Broker, actor: Any) -> None:
        guard_actor(actor)

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        if self.client is not None:
            self.watcher = watcher_for(self.client)
            self.watcher.ready.wait(5)

    def before_process_message(self, broker: Broker, message: Any) -> None:
        if self.client is None:
            return
        watcher = self.watcher or watcher_for(self.client)
        # Registered before the check: a cancel heard after the check finds this attempt and interrupts it.
        attempts.prepare(message)
        if watcher.is_cancelled(message.message_id):
            from middleware.outcome import Decision

            self.logger.info("Message %r was cancelled before it ran; skipping it.", message.message_id)
            attempt = int(message.options.get("retries", 0)) + 1
            setattr(message, DECISION_ATTRIBUTE, Decision(Event.CANCELLED, attempt))
            setattr(message, SKIP_REASON_ATTRIBUTE, Event.CANCELLED)
            raise SkipMessage(f"job {message.message_id} was cancelled")

    def after_process_message(self, broker: Broker, message: Any, *, result: Any = None, exception: Any = None) -> None:
        attempts.forget(message)

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        attempts.forget(message)
