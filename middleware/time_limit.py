"""Soft and hard time limits for one attempt."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from dramatiq.broker import Broker
from dramatiq.middleware import Middleware

from middleware.events import ABANDONED_ATTRIBUTE
from settings import settings


class SoftTimeLimitExceeded(Exception):
    """Raised inside the actor at its soft limit, so it can clean up and stop."""


class HardTimeLimitExceeded(Exception):
    """The attempt ran past its hard limit and was ended."""


#: Sent to a worker thread at the hard limit: it interrupts a blocking system call (a C sleep, a read),
#: so the thread returns to Python and the pending exception fires.
INTERRUPT_SIGNAL = signal.SIGURG

#: How long after the hard limit a thread may take to stop before it is abandoned (seconds).
ABANDON_AFTER = 2.0


@dataclass
class _Attempt:
    message: Any
    thread_id: int
    native_id: int
    started: float
    soft_deadline: float | None
    hard_deadline: float | None
    soft_fired: bool = False
    hard_fired_at: float | None = None
    children: set[int] = field(default_factory=set)


def _raise_in_thread(thread_id: int, exception: type[BaseException]) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exception))


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

    def __init__(self, *, interval: int = 100) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.interval = interval / 1000
        self.attempts: dict[int, _Attempt] = {}
        self.lock = threading.Lock()
        self.worker: Any = None
        self.broker: Broker | None = None
        self.monitor: threading.Thread | None = None
        self.limits: dict[str, tuple[int | None, int | None]] = {}

    @property
    def actor_options(self) -> set[str]:
        return {"soft_time_limit", "time_limit"}

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        self.worker, self.broker = worker, broker
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError):
                signal.signal(INTERRUPT_SIGNAL, lambda *_: None)
        if self.monitor is None or not self.monitor.is_alive():
            self.monitor = threading.Thread(target=self._watch, name="time-limit", daemon=True)
            self.monitor.start()

    def after_declare_actor(self, broker: Broker, actor: Any) -> None:
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
        now = time.monotonic()
        thread = threading.current_thread()
        with self.lock:
            self.attempts[thread.ident or 0] = _Attempt(
                message=message,
                thread_id=thread.ident or 0,
                native_id=thread.native_id or 0,
                started=now,
                soft_deadline=now + soft / 1000 if soft else None,
                hard_deadline=now + hard / 1000 if hard else None,
            )

    def _forget(self) -> None:
        with self.lock:
            self.attempts.pop(threading.get_ident(), None)

    def after_process_message(self, broker: Broker, message: Any, *, result: Any = None, exception: Any = None) -> None:
        self._forget()

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        self._forget()

    def _watch(self) -> None:
        while True:
            time.sleep(self.interval)
            now = time.monotonic()
            with self.lock:
                attempts = list(self.attempts.values())
            for attempt in attempts:
                try:
                    self._check(attempt, now)
                except Exception:
                    self.logger.exception("Time limit check failed for %r.", attempt.message.message_id)

    def _check(self, attempt: _Attempt, now: float) -> None:
        message_id = attempt.message.message_id
        if attempt.soft_deadline and not attempt.soft_fired and now >= attempt.soft_deadline:
            attempt.soft_fired = True
            self.logger.warning("Soft time limit reached by message %r; raising in the actor.", message_id)
            _raise_in_thread(attempt.thread_id, SoftTimeLimitExceeded)
        if attempt.hard_deadline and now >= attempt.hard_deadline:
            if attempt.hard_fired_at is None:
                attempt.hard_fired_at = now
                self.logger.error("Hard time limit reached by message %r; stopping it.", message_id)
                self._stop(attempt)
            elif now - attempt.hard_fired_at >= ABANDON_AFTER:
                self._abandon(attempt)
            else:
                # Keep killing: the actor may have started another process since.
                self._kill_children(attempt)

    def _kill_children(self, attempt: _Attempt) -> None:
        for pid in _children_of_thread(attempt.native_id):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def _stop(self, attempt: _Attempt) -> None:
        _raise_in_thread(attempt.thread_id, HardTimeLimitExceeded)
        self._kill_children(attempt)
        with contextlib.suppress(ProcessLookupError, ValueError):
            signal.pthread_kill(attempt.thread_id, INTERRUPT_SIGNAL)

    def _abandon(self, attempt: _Attempt) -> None:
        """Finish an attempt whose thread will not stop, and give the worker a fresh thread."""
        with self.lock:
            if self.attempts.get(attempt.thread_id) is not attempt:
                return
            del self.attempts[attempt.thread_id]
        message, broker = attempt.message, self.broker
        self.logger.critical(
            "Message %r is stuck past its hard limit in its worker thread; abandoning the thread.",
            message.message_id,
        )
        error = HardTimeLimitExceeded("the attempt did not stop at its hard time limit; its thread was abandoned")
        message.stuff_exception(error)
        if broker is not None:
            broker.emit_after("process_message", message, exception=error)
        # Everything after this point (the thread returning, its after-hooks) is ignored for it.
        setattr(message, ABANDONED_ATTRIBUTE, True)
        if self.worker is not None:
            consumer = self.worker.consumers.get(message.queue_name)
            if consumer is not None:
                consumer.post_process_message(message)
            for worker_thread in list(self.worker.workers):
                if worker_thread.ident == attempt.thread_id:
                    worker_thread.running = False
                    self.worker.workers.remove(worker_thread)
            self.worker._add_worker()
