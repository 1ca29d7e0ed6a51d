"""Soft and hard time limits for one attempt."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.broker import Broker
from dramatiq.middleware import Middleware

from middleware.events import ABANDONED_ATTRIBUTE
from middleware.interrupts import Attempt, HardTimeLimitExceeded, SoftTimeLimitExceeded, attempts, guard_actor
from settings import settings

__all__ = ["EXIT_STUCK", "HardTimeLimitExceeded", "SoftTimeLimitExceeded", "TimeLimit"]


#: Sent to a worker thread at the hard limit: it interrupts a blocking system call (a C sleep, a read),
#: so the thread returns to Python and the pending exception fires.
INTERRUPT_SIGNAL = signal.SIGURG

#: How long after the hard limit a thread may take to stop before it is given up on (seconds).
ABANDON_AFTER = 2.0

#: A worker process that retires because an attempt would not stop exits with this code (EX_TEMPFAIL);
#: ``python -m worker`` replaces it.
EXIT_STUCK = 75

#: The Dramatiq whose worker internals the retiring process drives (its thread and consumer lists,
#: ``Worker.stop``, ``ConsumerThread.post_process_message`` and ``requeue_messages``).
DRAMATIQ_VERSION = "2.2.1"
if dramatiq.__version__ != DRAMATIQ_VERSION:  # pragma: no cover - a guard for upgrades
    raise ImportError(
        f"middleware/time_limit.py drives dramatiq {DRAMATIQ_VERSION}'s worker internals, but dramatiq "
        f"{dramatiq.__version__} is installed: check dramatiq/worker.py and update it"
    )


@dataclass(eq=False)
class _Limits:
    attempt: Attempt
    soft_deadline: float | None
    hard_deadline: float | None
    soft_fired: bool = False
    hard_fired_at: float | None = None


def _children_of_thread(native_id: int) -> set[int]:
    """Processes started by one thread (and their descendants), from Linux's /proc task list."""
    found: set[int] = set()
    pending = [f"/proc/{os.getpid()}/task/{native_id}/children"]
    while pending:
        path = pending.pop()
        try:
            with open(path) as handle:
                pids = [int(pid) for pid in handle.read().split()]
        except OSError:
            continue
        for pid in pids:
            if pid not in found:
                found.add(pid)
                pending.append(f"/proc/{pid}/task/{pid}/children")
    return found


class TimeLimit(Middleware):
    """End attempts that run too long: a soft limit first, then a hard one.

    At the soft limit ``SoftTimeLimitExceeded`` is raised inside the actor, which may catch it to clean
    up. At the hard limit the processes the actor's thread started are killed, the thread's blocking
    system call is interrupted, and ``HardTimeLimitExceeded`` is raised in it. A thread still stuck
    ``ABANDON_AFTER`` seconds later (a C loop that never returns to Python) is abandoned: the attempt is
    finished for it (retried or dead-lettered like any failure), a fresh worker thread takes its place,
    and whatever the stuck thread does later is ignored.

    Actor options:
      soft_time_limit(int): milliseconds. Default: ``SOFT_TIME_LIMIT_MS`` (30 minutes).
      time_limit(int): the hard limit in milliseconds. Default: ``HARD_TIME_LIMIT_MS`` (40 minutes).

    Parameters:
      interval(int): how often the monitor checks, in milliseconds. Default 100.
    """

    def __init__(self, *, interval: int = 100, exit_grace: int | None = None) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.interval = interval / 1000
        self.watched: dict[int, _Limits] = {}
        self.lock = threading.Lock()
        self.worker: Any = None
        self.broker: Broker | None = None
        self.monitor: threading.Thread | None = None
        self.limits: dict[str, tuple[int | None, int | None]] = {}
        self.exit_grace = settings.stuck_exit_grace if exit_grace is None else exit_grace
        self.retire_process = False
        self.retiring = False

    @property
    def actor_options(self) -> set[str]:
        return {"soft_time_limit", "time_limit"}

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        self.worker, self.broker = worker, broker
        # A worker process of a `dramatiq` (or `python -m worker`) command is a child of its parent; a
        # worker started inside another program (a test, a script) has no process it could give up.
        self.retire_process = multiprocessing.parent_process() is not None
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError):
                signal.signal(INTERRUPT_SIGNAL, lambda *_: None)
        if self.monitor is None or not self.monitor.is_alive():
            self.monitor = threading.Thread(target=self._watch, name="time-limit", daemon=True)
            self.monitor.start()

    def after_declare_actor(self, broker: Broker, actor: Any) -> None:
        guard_actor(actor)
        # Resolved once per actor: this runs before every message.
        self.limits[actor.actor_name] = (
            actor.options.get("soft_time_limit", settings.soft_time_limit),
            actor.options.get("time_limit", settings.hard_time_limit),
        )

    def before_process_message(self, broker: Broker, message: Any) -> None:
        default_soft, default_hard = self.limits.get(
            message.actor_name, (settings.soft_time_limit, settings.hard_time_limit)
        )
        soft = message.options.get("soft_time_limit", default_soft)
        hard = message.options.get("time_limit", default_hard)
        attempt = attempts.prepare(message)
        now = attempt.prepared
        with self.lock:
            self.watched[attempt.thread_id] = _Limits(
                attempt=attempt,
                soft_deadline=now + soft / 1000 if soft else None,
                hard_deadline=now + hard / 1000 if hard else None,
            )

    def _forget(self, message: Any) -> None:
        attempts.forget(message)
        with self.lock:
            limits = self.watched.get(threading.get_ident())
            if limits is not None and limits.attempt.message is message:
                del self.watched[threading.get_ident()]

    def after_process_message(self, broker: Broker, message: Any, *, result: Any = None, exception: Any = None) -> None:
        self._forget(message)

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        self._forget(message)

    def _watch(self) -> None:
        while True:
            time.sleep(self.interval)
            now = time.monotonic()
            with self.lock:
                watched = list(self.watched.values())
            for limits in watched:
                try:
                    self._check(limits, now)
                except Exception:
                    self.logger.exception("Time limit check failed for %r.", limits.attempt.message.message_id)

    def _check(self, limits: _Limits, now: float) -> None:
        attempt = limits.attempt
        message_id = attempt.message.message_id
        if limits.soft_deadline and not limits.soft_fired and now >= limits.soft_deadline:
            limits.soft_fired = True
            if attempts.interrupt(attempt, SoftTimeLimitExceeded):
                self.logger.warning("Soft time limit reached by message %r; raising in the actor.", message_id)
        if limits.hard_deadline and now >= limits.hard_deadline:
            if limits.hard_fired_at is None:
                limits.hard_fired_at = now
                self.logger.error("Hard time limit reached by message %r; stopping it.", message_id)
                self._stop(attempt)
            elif now - limits.hard_fired_at >= ABANDON_AFTER:
                if self.retire_process:
                    self._retire(limits)
                else:
                    self._abandon(limits)
            else:
                # Keep killing: the actor may have started another process since.
                self._kill_children(attempt)

    def _kill_children(self, attempt: Attempt) -> None:
        for pid in _children_of_thread(attempt.native_id):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def _stop(self, attempt: Attempt) -> None:
        if not attempts.interrupt(attempt, HardTimeLimitExceeded):
            return
        self._kill_children(attempt)
        with contextlib.suppress(ProcessLookupError, ValueError):
            signal.pthread_kill(attempt.thread_id, INTERRUPT_SIGNAL)

    def _take(self, limits: _Limits) -> bool:
        """Stop watching an attempt; False when another path already took it."""
        with self.lock:
            if self.watched.get(limits.attempt.thread_id) is not limits:
                return False
            del self.watched[limits.attempt.thread_id]
            return True

    def _settle(self, attempt: Attempt, error: HardTimeLimitExceeded) -> None:
        """Finish an attempt whose thread will not: record it failed (retried or dead-lettered) and ack it."""
        message, broker = attempt.message, self.broker
        message.stuff_exception(error)
        if broker is not None:
            broker.emit_after("process_message", message, exception=error)
        # Everything after this point (the thread returning, its after-hooks) is ignored for it.
        setattr(message, ABANDONED_ATTRIBUTE, True)
        if self.worker is not None:
            consumer = self.worker.consumers.get(message.queue_name)
            if consumer is not None:
                consumer.post_process_message(message)

    def _abandon(self, limits: _Limits) -> None:
        """In-process workers: finish an attempt whose thread will not stop, and add a fresh thread."""
        if not self._take(limits):
            return
        attempt = limits.attempt
        self.logger.critical(
            "Message %r is stuck past its hard limit in its worker thread; abandoning the thread.",
            attempt.message.message_id,
        )
        self._settle(
            attempt, HardTimeLimitExceeded("the attempt did not stop at its hard time limit; its thread was abandoned")
        )
        if self.worker is not None:
            for worker_thread in list(self.worker.workers):
                if worker_thread.ident == attempt.thread_id:
                    worker_thread.running = False
                    self.worker.workers.remove(worker_thread)
            self.worker._add_worker()

    def _retire(self, limits: _Limits) -> None:
        """Worker processes: an attempt will not stop, so this process goes (see the class docstring)."""
        with self.lock:
            if self.retiring:
                return
            self.retiring = True
        self.logger.critical(
            "Message %r did not stop %.0f s after its hard time limit. This worker process retires: its other "
            "jobs get %d ms to finish, then it exits with code %d and is replaced.",
            limits.attempt.message.message_id,
            ABANDON_AFTER,
            self.exit_grace,
            EXIT_STUCK,
        )
        threading.Thread(target=self._retire_process, name="time-limit-retire", daemon=True).start()

    def _retire_process(self) -> None:
        try:
            self._wind_down()
        except BaseException:
            self.logger.exception("Retiring this worker process failed; exiting anyway.")
        finally:
            logging.shutdown()
            os._exit(EXIT_STUCK)

    def _wind_down(self) -> None:
        worker = self.worker
        # The threads stuck past their hard limit are left out of the worker's graceful stop, which
        # would wait for them; every other thread finishes its message (or the grace runs out).
        stuck_threads = {limits.attempt.thread_id for limits in self._stuck()}
        for worker_thread in list(worker.workers):
            if worker_thread.ident in stuck_threads:
                worker_thread.running = False
                worker.workers.remove(worker_thread)
        worker.stop(timeout=self.exit_grace)
        # What still runs now: attempts stuck past their hard limit are finished as failures (their retry,
        # if any, is enqueued with its backoff: this process is gone by then); the others go back to their
        # queue unfinished, to run again elsewhere. Both happen as the last thing before the exit.
        with self.lock:
            left, self.watched = list(self.watched.values()), {}
        now = time.monotonic()
        for limits in left:
            attempt = limits.attempt
            if attempt.finished:
                continue
            if limits.hard_deadline is not None and now >= limits.hard_deadline:
                self._settle(
                    attempt,
                    HardTimeLimitExceeded(
                        "the attempt did not stop at its hard time limit; its worker process was replaced"
                    ),
                )
            else:
                setattr(attempt.message, ABANDONED_ATTRIBUTE, True)
                consumer = worker.consumers.get(attempt.message.queue_name)
                if consumer is not None:
                    consumer.requeue_messages([attempt.message])
                self.logger.warning(
                    "Message %r did not finish within the grace period; it is back on its queue.",
                    attempt.message.message_id,
                )

    def _stuck(self) -> list[_Limits]:
        now = time.monotonic()
        with self.lock:
            return [
                limits
                for limits in self.watched.values()
                if limits.hard_fired_at is not None and now - limits.hard_fired_at >= ABANDON_AFTER
            ]
