"""Periodic declarations: actors say ``periodic=cron("0 3 * * *")`` as periodiq users expect.

``scheduler.py`` reads the options and sends the runs; this middleware, on the worker side, drops a run
that waited in its queue past its grace, and says so.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from dramatiq.broker import Broker
from dramatiq.middleware import SkipMessage
from periodiq import PeriodiqMiddleware

from middleware.events import SKIP_REASON_ATTRIBUTE, Event
from middleware.outcome import option
from settings import settings

#: The ``reason`` label of ``scheduler_skipped_total`` for a run a worker found too old to start.
STALE = "stale"

_counter: Any = None
_counter_lock = threading.Lock()


def skipped_counter() -> Any:
    """``scheduler_skipped_total`` in this process, created on first use.

    Created late on purpose: the metrics middleware points prometheus-client at its multiprocess
    directory when the worker boots, and a counter made before that would not be seen by the scrape.
    """
    global _counter
    if _counter is None:
        with _counter_lock:
            if _counter is None:
                from prometheus_client import Counter

                _counter = Counter(
                    "scheduler_skipped",
                    "Runs not sent (beyond_grace, disabled) or dropped by a worker as too old (stale).",
                    ["actor_name", "reason"],
                    registry=None,
                )
    return _counter


class PeriodicMiddleware(PeriodiqMiddleware):
    """Owns the scheduling options of actors and skips periodic runs that are too late to start.

    periodiq's own middleware drops any run whose ``scheduled_at`` is more than ``skip_delay`` (30 s)
    old, silently. That would drop every catch-up run the scheduler sends after downtime, and it hides a
    backed-up queue. Here one rule holds from scheduler to worker: a run may start until its grace after
    its scheduled time; past that it is skipped, logged, counted as
    ``scheduler_skipped_total{reason="stale"}`` and its job ends ``cancelled`` ("skipped: past its
    schedule grace"). A message without ``scheduled_at`` was sent by hand and always runs; a retry of a
    run is late by its own backoff and is not checked again.

    Actor options:
      periodic(periodiq.CronSpec | str): when the actor runs, from periodiq's ``cron()`` (a plain string
        is read the same way; six fields put seconds first).
      schedule_enabled(bool): False declares the schedule but never fires it. Default True.
      schedule_grace(int): how late, in milliseconds, a run may still be sent and started after its
        scheduled time. Default: ``grace``.
      schedule_timezone(str): the IANA timezone the cron expression is read in. Default: the
        ``SCHEDULER_TIMEZONE`` setting (UTC).

    Parameters:
      grace(int): the default grace in milliseconds. Default: the ``SCHEDULER_MISFIRE_GRACE_MS``
        setting (1 hour).
    """

    actor_options = {"periodic", "schedule_enabled", "schedule_grace", "schedule_timezone"}

    def __init__(self, *, grace: int | None = None) -> None:
        super().__init__()
        self.grace = settings.scheduler_misfire_grace if grace is None else grace
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")

    def before_process_message(self, broker: Broker, message: Any) -> None:
        scheduled = message.options.get("scheduled_at")
        if scheduled is None:
            return
        if message.options.get("retries", 0):
            # A retry is late on purpose (its backoff); the grace is for the run's first start.
            return
        try:
            actor = broker.get_actor(message.actor_name)
        except Exception:
            return
        if "periodic" not in actor.options:
            return
        try:
            scheduled_at = datetime.fromisoformat(str(scheduled))
        except ValueError:
            self.logger.warning("Unreadable scheduled_at %r in %r; running it.", scheduled, message)
            return
        if scheduled_at.tzinfo is None:
            scheduled_at = scheduled_at.replace(tzinfo=UTC)
        grace_option = option(broker, message, "schedule_grace", None)
        grace = self.grace if grace_option is None else int(grace_option)
        late = datetime.now(UTC) - scheduled_at
        if late <= timedelta(milliseconds=grace):
            return
        self.logger.warning(
            "Skipping %s (%s) scheduled at %s: %.0f s late is past its grace of %.0f s.",
            message.actor_name,
            message.message_id,
            scheduled,
            late.total_seconds(),
            grace / 1000,
        )
        skipped_counter().labels(message.actor_name, STALE).inc()
        setattr(message, SKIP_REASON_ATTRIBUTE, Event.SKIPPED)
        raise SkipMessage(f"scheduled at {scheduled}, past its grace of {grace} ms")
