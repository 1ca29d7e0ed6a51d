"""The periodic actor the multi-process scheduler tests fire, on a queue no worker consumes.

Its messages stay in Redis, where the tests count them per scheduled time.
"""

import dramatiq
from periodiq import cron
from sched_support import CLUSTER_QUEUE


@dramatiq.actor(queue_name=CLUSTER_QUEUE, periodic=cron("* * * * *"))
def sched_test_cluster_tick() -> None:
    """Never runs in the tests: they read its messages off the queue."""
