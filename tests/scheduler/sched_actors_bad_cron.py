"""A periodic actor with an impossible minute, for ``scheduler.py`` to refuse at start."""

import dramatiq
from periodiq import cron


@dramatiq.actor(queue_name="default", periodic=cron("61 * * * *"))
def sched_test_bad_cron_cleanup() -> None:
    """Never runs: the scheduler refuses its schedule."""
