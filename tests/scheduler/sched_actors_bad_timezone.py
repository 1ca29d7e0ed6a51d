"""A periodic actor scheduled in a timezone that does not exist, for ``scheduler.py`` to refuse at start."""

import dramatiq
from periodiq import cron


@dramatiq.actor(queue_name="default", periodic=cron("0 3 * * *"), schedule_timezone="Mars/Olympus_Mons")
def sched_test_bad_timezone_report() -> None:
    """Never runs: the scheduler refuses its schedule."""
