"""Which jobs are cancelled: the Redis set and channel, and each process's watcher of them.

A leaf module: the cancel middleware skips and interrupts with it, the job writer checks it at each
progress report, and the library records a cancel request through it; none imports the other.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from middleware.interrupts import JobCancelled, attempts

__all__ = ["CancelWatcher", "JobCancelled", "interrupt_running", "mark_cancelled", "watcher_for"]

#: Cancellations are remembered this long: long past any queue wait or retry backoff (seconds).
CANCEL_RETENTION = 7 * 24 * 3600
CANCELLED_SET = "dramatiq:__cancelled__"
CANCEL_CHANNEL = "dramatiq:__cancel__"


def mark_cancelled(client: redis.Redis, message_id: str) -> int:
    """Record a cancellation and tell every worker; returns how many workers heard it at once."""
    now = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.zadd(CANCELLED_SET, {message_id: now})
    pipe.zremrangebyscore(CANCELLED_SET, 0, now - CANCEL_RETENTION)
    pipe.publish(CANCEL_CHANNEL, message_id)
    return int(pipe.execute()[-1])


class CancelWatcher:
    """This process's copy of the cancelled ids, kept current through Redis pub/sub.

    It subscribes first and then loads the stored set, so no cancellation falls between the two; until
    it is ready, and whenever its connection drops, lookups go to Redis directly. Each cancellation it
    hears (and each one in the set it loads) interrupts that job's attempt if this process is running it.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.cancelled: set[str] = set()
        self.ready = threading.Event()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def start(self) -> None:
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="cancel-watcher", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(CANCEL_CHANNEL)
                pubsub.get_message(timeout=1.0)  # the subscription confirmation
                stored = self.client.zrangebyscore(CANCELLED_SET, time.time() - CANCEL_RETENTION, "+inf")
                self.cancelled = {value.decode() if isinstance(value, bytes) else str(value) for value in stored}
                self.ready.set()
                # Cancellations that came while this watcher was not listening.
                for attempt in attempts.all():
                    if attempt.message.message_id in self.cancelled:
                        interrupt_running(attempt.message.message_id)
                for item in pubsub.listen():
                    data = item.get("data") if item.get("type") == "message" else None
                    if isinstance(data, bytes):
                        message_id = data.decode()
                        # Into the set first: an attempt prepared after this line sees it at its check.
                        self.cancelled.add(message_id)
                        interrupt_running(message_id)
            except redis.RedisError as error:
                logging.getLogger(__name__).warning("Cancel watcher lost Redis (%r); reconnecting.", error)
            finally:
                self.ready.clear()
                pubsub.close()
            time.sleep(0.5)

    def is_cancelled(self, message_id: str) -> bool:
        if self.ready.is_set():
            return message_id in self.cancelled
        return self.client.zscore(CANCELLED_SET, message_id) is not None


def interrupt_running(message_id: str) -> bool:
    """Raise ``JobCancelled`` in this process's attempt of ``message_id``, if it runs one."""
    attempt = attempts.find(message_id)
    if attempt is None or not attempts.interrupt(attempt, JobCancelled):
        return False
    logging.getLogger(__name__).info("Job %r was cancelled while it ran; interrupting it.", message_id)
    return True


_watchers: dict[int, CancelWatcher] = {}


def watcher_for(client: redis.Redis) -> CancelWatcher:
    watcher = _watchers.get(id(client))
    if watcher is None:
        watcher = _watchers[id(client)] = CancelWatcher(client)
    watcher.start()
    return watcher
