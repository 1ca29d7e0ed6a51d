"""The ``priority`` queue: urgent messages go ahead of everything a worker is holding."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from dramatiq.broker import Broker
from dramatiq.middleware import Middleware

#: Subtracted from an urgent message's place in the worker's work queue; actor priorities are small ints.
URGENT_OFFSET = 1 << 40


class UrgentFirst(Middleware):
    """Put messages from the urgent queue at the head of each worker's in-memory work queue.

    A worker consumes every queue it serves in parallel, so an urgent message never waits behind a
    backlog in Redis; it could still wait behind the messages a worker has already fetched for its
    threads. This puts it in front of those. With RabbitMQ, ``send_urgent`` also sets the message's
    broker priority.

    Parameters:
      queue_name(str): the urgent queue. Default ``priority``.
    """

    def __init__(self, *, queue_name: str = "priority") -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.queue_name = queue_name

    def before_worker_boot(self, broker: Broker, worker: Any) -> None:
        work_queue = worker.work_queue
        put = work_queue.put
        urgent = self.queue_name

        # The work queue orders items by their actor's priority; an urgent item gets a lower number.
        def put_urgent_first(item: Any, block: bool = True, timeout: float | None = None) -> None:
            if item.message.queue_name == urgent:
                item = dataclasses.replace(item, priority=item.priority - URGENT_OFFSET)
            put(item, block, timeout)

        work_queue.put = put_urgent_first
