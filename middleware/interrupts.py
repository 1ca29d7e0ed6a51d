"""Exceptions raised into a running attempt from another thread, and the bookkeeping that aims them.

A time limit or a cancel reaches an actor as an exception raised in its thread by a monitor thread
(``PyThreadState_SetAsyncExc``). Two things make that safe:

- The exceptions are ``BaseException`` subclasses (Dramatiq's ``Interrupt``), so the ``except Exception``
  blocks of processing code and libraries (a PDF reader turning any error into "damaged file") let them
  through instead of swallowing or reclassifying them.
- Each one is aimed at one *attempt*, not at a thread: it is raised only while that attempt's actor
  function runs, checked under a lock, and whatever is still pending when the function leaves is
  cleared. It can never land in the next message the thread takes or in Dramatiq's own loop.

Time limits and cancels both use it, so it lives here, a leaf that imports no other middleware.
"""

from __future__ import annotations

import ctypes
import functools
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from dramatiq.middleware import Interrupt


class SoftTimeLimitExceeded(Interrupt):
    """Raised inside the actor at its soft limit, so it can clean up and stop."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(args or ("the attempt reached its soft time limit",)))


class HardTimeLimitExceeded(Interrupt):
    """The attempt ran past its hard limit and was ended."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(args or ("the attempt reached its hard time limit",)))


class JobCancelled(Interrupt):
    """Raised inside a running actor when its job is cancelled (and at ``report_progress``)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(args or ("the job was cancelled while it ran",)))


class Attempt:
    """One delivery of one message to one worker thread (compared by identity: it is the token)."""

    __slots__ = ("finished", "message", "native_id", "pending", "prepared", "raised", "running", "thread_id")

    def __init__(self, message: Any, thread_id: int, native_id: int) -> None:
        self.message = message
        self.thread_id = thread_id
        self.native_id = native_id
        self.prepared = time.monotonic()
        #: True while the actor's function runs: the only time an interrupt is raised into the thread.
        self.running = False
        #: Set when the function left (or the attempt was dropped): nothing is raised for it any more.
        self.finished = False
        #: An interrupt that arrived before the function started; it is raised as the function starts.
        self.pending: type[Interrupt] | None = None
        #: The kinds raised so far: each at most once per attempt, which bounds how many can land late.
        self.raised: tuple[type[Interrupt], ...] = ()


def _set_async_exc(thread_id: int, exception: type[BaseException] | None) -> None:
    # None passes NULL, which clears an exception set earlier and not yet raised.
    payload = ctypes.py_object(exception) if exception is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), payload)


class Attempts:
    """The attempts running in this process, by thread and by message id."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_thread: dict[int, Attempt] = {}
        self.by_message: dict[str, Attempt] = {}

    def prepare(self, message: Any) -> Attempt:
        """The attempt of ``message`` on this thread, registered before the actor runs (idempotent)."""
        ident = threading.get_ident()
        attempt = self.by_thread.get(ident)
        if attempt is not None and attempt.message is message:
            return attempt
        thread = threading.current_thread()
        with self.lock:
            attempt = self.by_thread.get(ident)
            if attempt is not None and attempt.message is message:
                return attempt
            attempt = Attempt(message, ident, thread.native_id or 0)
            self.by_thread[ident] = attempt
            self.by_message[message.message_id] = attempt
            return attempt

    def forget(self, message: Any) -> Attempt | None:
        """Drop this thread's attempt of ``message`` once its after-hooks run."""
        ident = threading.get_ident()
        current = self.by_thread.get(ident)
        if current is None or current.message is not message:
            return None
        with self.lock:
            attempt = self.by_thread.get(ident)
            if attempt is None or attempt.message is not message:
                return None
            attempt.finished = True
            del self.by_thread[ident]
            if self.by_message.get(message.message_id) is attempt:
                del self.by_message[message.message_id]
            return attempt

    def find(self, message_id: str) -> Attempt | None:
        with self.lock:
            return self.by_message.get(message_id)

    def all(self) -> list[Attempt]:
        with self.lock:
            return list(self.by_thread.values())

    def interrupt(self, attempt: Attempt, exception: type[Interrupt]) -> bool:
        """Raise ``exception`` in ``attempt``'s actor; False when the attempt is over or already got one."""
        with self.lock:
            if attempt.finished or exception in attempt.raised or self.by_thread.get(attempt.thread_id) is not attempt:
                return False
            attempt.raised += (exception,)
            if not attempt.running:
                attempt.pending = attempt.pending or exception
                return True
            _set_async_exc(attempt.thread_id, exception)
            return True

    def _enter(self, attempt: Attempt) -> None:
        with self.lock:
            if attempt.finished or attempt.running:
                return
            attempt.running = True
            pending, attempt.pending = attempt.pending, None
        if pending is not None:
            raise pending()

    def _leave(self, attempt: Attempt) -> None:
        if not attempt.running:
            return
        with self.lock:
            attempt.running = False
            attempt.finished = True
            if attempt.raised:
                # One may have been set and not raised yet: clear it, or it would fire in Dramatiq's
                # code or the next message.
                _set_async_exc(attempt.thread_id, None)


#: This process's attempts.
attempts = Attempts()


def _rearm_lost_interrupts(unraisable: Any) -> None:
    """An interrupt that lands in a weakref callback or a ``__del__`` is printed and dropped by Python,
    so the attempt it was meant for would run on past its limit or its cancel: raise it there again."""
    error = unraisable.exc_value
    attempt = attempts.by_thread.get(threading.get_ident())
    if isinstance(error, Interrupt) and attempt is not None:
        # From another thread, once this hook has returned: set here, it would fire inside the hook,
        # where Python drops it again.
        threading.Thread(target=_raise_again, args=(attempt, type(error)), name="interrupt-rearm", daemon=True).start()
        return
    _previous_unraisablehook(unraisable)


def _raise_again(attempt: Attempt, exception: type[BaseException]) -> None:
    time.sleep(0.01)
    with attempts.lock:
        if attempt.running and not attempt.finished and attempts.by_thread.get(attempt.thread_id) is attempt:
            _set_async_exc(attempt.thread_id, exception)


_previous_unraisablehook = sys.unraisablehook
sys.unraisablehook = _rearm_lost_interrupts

F = TypeVar("F", bound=Callable[..., Any])
_GUARDED = "_platform_guarded"


def guard(fn: F) -> F:
    """Wrap an actor's function so interrupts reach it only while it runs as part of a prepared attempt."""
    if getattr(fn, _GUARDED, False):
        return fn

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        attempt = attempts.by_thread.get(threading.get_ident())
        if attempt is None or attempt.running or attempt.finished:
            # Called outside a worker, or an actor called directly from inside another one.
            return fn(*args, **kwargs)
        error: BaseException | None = None
        result = None
        try:
            attempts._enter(attempt)
            result = fn(*args, **kwargs)
        except BaseException as raised:
            error = raised
        # An interrupt set just before the function returned fires at the interpreter's next check, which
        # may be inside ``_leave``. Each kind is raised at most once per attempt (three kinds), so of four
        # tries one finds nothing left to land in it, and after it nothing more is raised for this attempt.
        # Every call sits inside a ``try`` (a pending exception also fires at a callee's first line), and
        # between them there is nothing the interpreter checks at. An interrupt that lands here, after the
        # function ended, is dropped: the attempt's own outcome stands.
        try:
            attempts._leave(attempt)
        except Interrupt:
            try:
                attempts._leave(attempt)
            except Interrupt:
                try:
                    attempts._leave(attempt)
                except Interrupt:
                    try:
                        attempts._leave(attempt)
                    except Interrupt:
                        pass
        if error is not None:
            raise error
        return result

    setattr(guarded, _GUARDED, True)
    return guarded  # type: ignore[return-value]


def guard_actor(actor: Any) -> None:
    """Install ``guard`` on a declared actor (idempotent; each middleware that interrupts calls it)."""
    actor.fn = guard(actor.fn)
