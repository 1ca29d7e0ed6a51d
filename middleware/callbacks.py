"""Success and failure callbacks, and one log line per lifecycle event."""

from __future__ import annotations

import logging
import time
from typing import Any

from dramatiq.broker import Broker
from dramatiq.middleware import Middleware

from middleware.events import ABANDONED_ATTRIBUTE, SKIP_REASON_ATTRIBUTE, Event, noted
from settings import settings

lifecycle = logging.getLogger("lifecycle")

#: Routine events (enqueued, started, succeeded) log at DEBUG unless ``LOG_EVERY_EVENT`` is on: at
#: thousands of jobs a second, two INFO lines per job cost a quarter of a worker's throughput.
ROUTINE_LEVEL = logging.INFO if settings.log_every_event else logging.DEBUG
_LEVELS = {
    Event.RETRYING: logging.WARNING,
    Event.FAILED: logging.WARNING,
    Event.DEAD: logging.ERROR,
    Event.CANCELLED: logging.INFO,
    Event.SKIPPED: logging.INFO,
    Event.TIMEOUT: logging.WARNING,
}


class Callbacks(Middleware):
    """Send a message to ``on_success`` / ``on_failure`` actors, and log every lifecycle event.

    ``on_failure`` fires once, when the job ends ``failed`` or ``dead``, not for an attempt that will be
    retried. Callback actors receive ``(message_data, result)`` on success and
    ``(message_data, {"type", "message", "state"})`` on failure, as Dramatiq's own callbacks do.

    Each event logs one line on the ``lifecycle`` logger:
    ``event=succeeded message_id=… actor=… queue=… attempt=1 duration_ms=12.3``. Failures, retries and
    dead letters log at WARNING or above, cancellations and skips at INFO, and the routine events
    (enqueued, started, succeeded) at DEBUG, or at INFO with ``LOG_EVERY_EVENT=true``.

    Actor options:
      on_success(str): name of the actor to send to on success.
      on_failure(str): name of the actor to send to on final failure.
    """

    def __init__(self) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.started: dict[str, float] = {}
        self.on_success: dict[str, str] = {}

    def after_declare_actor(self, broker: Broker, actor: Any) -> None:
        # Looked up once here: the success path runs for every message.
        if actor.options.get("on_success"):
            self.on_success[actor.actor_name] = actor.options["on_success"]

    @property
    def actor_options(self) -> set[str]:
        return {"on_success", "on_failure"}

    @staticmethod
    def _log(event: Event, message: Any, **fields: Any) -> None:
        level = _LEVELS.get(event, ROUTINE_LEVEL)
        if lifecycle.isEnabledFor(level):
            extra = "".join(f" {key}={value}" for key, value in fields.items())
            lifecycle.log(
                level,
                "event=%s message_id=%s actor=%s queue=%s%s",
                event.value,
                message.message_id,
                message.actor_name,
                message.queue_name,
                extra,
            )

    def after_enqueue(self, broker: Broker, message: Any, delay: Any) -> None:
        if delay is None and "retries" not in message.options:
            self._log(Event.ENQUEUED, message)

    def before_process_message(self, broker: Broker, message: Any) -> None:
        self.started[message.message_id] = time.perf_counter()
        if lifecycle.isEnabledFor(ROUTINE_LEVEL):
            self._log(Event.STARTED, message, attempt=int(message.options.get("retries", 0)) + 1)

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if noted(message, ABANDONED_ATTRIBUTE):
            return
        from middleware.outcome import decide, option

        decision = decide(broker, message, exception)
        started = self.started.pop(message.message_id, None)
        if lifecycle.isEnabledFor(_LEVELS.get(decision.event, ROUTINE_LEVEL)):
            fields: dict[str, Any] = {"attempt": decision.attempt}
            if started is not None:
                fields["duration_ms"] = f"{(time.perf_counter() - started) * 1000:.1f}"
            if exception is not None:
                fields["error"] = f"{type(exception).__name__}: {str(exception)[:200]!r}"
            if decision.delay is not None:
                fields["retry_in_ms"] = decision.delay
            self._log(decision.event, message, **fields)

        if decision.event is Event.SUCCEEDED:
            target = message.options.get("on_success") or self.on_success.get(message.actor_name)
            if target:
                broker.get_actor(target).send(message.asdict(), result)
        elif decision.event in (Event.FAILED, Event.DEAD):
            target = option(broker, message, "on_failure", None)
            if target:
                assert exception is not None
                failure = {"type": type(exception).__name__, "message": str(exception), "state": decision.event.value}
                broker.get_actor(target).send(message.asdict(), failure)

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        self.started.pop(message.message_id, None)
        reason = noted(message, SKIP_REASON_ATTRIBUTE) or Event.SKIPPED
        self._log(reason, message)
