"""Periodic actors for the ``--list`` test: one in Paris, one disabled, one every ten seconds."""

import dramatiq
from periodiq import cron


@dramatiq.actor(queue_name="default", periodic=cron("0 9 * * 1-5"), schedule_timezone="Europe/Paris")
def sched_test_listed_morning_report() -> None:
    """Weekday mornings, Paris time."""


@dramatiq.actor(queue_name="market", periodic=cron("0 22 * * *"), schedule_enabled=False)
def sched_test_listed_disabled_digest() -> None:
    """Declared but switched off."""


@dramatiq.actor(queue_name="default", periodic="*/10 * * * * *", schedule_grace=5_000)
def sched_test_listed_heartbeat() -> None:
    """Every ten seconds (a six-field expression)."""
