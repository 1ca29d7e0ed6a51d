"""Prometheus metrics of every worker process, served once per worker command.

Names and labels are listed in docs/metrics.md. Worker processes record into prometheus-client's
multiprocess directory; one exposition server (a fork of the ``dramatiq`` command) adds them up and reads
queue depths and live workers from the broker at scrape time.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import glob
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dramatiq.broker import Broker
from dramatiq.common import current_millis
from dramatiq.middleware import Middleware

from middleware.events import ABANDONED_ATTRIBUTE, DECISION_ATTRIBUTE, SKIP_REASON_ATTRIBUTE, Event, noted
from settings import QUEUES, settings

logger = logging.getLogger(__name__)

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

#: Counters an actor feeds through its ``result_metrics`` option: name → help text.
DOMAIN_COUNTERS = {
    "documents_pages_ocr_total": "PDF pages read by OCR.",
    "media_transcribed_audio_seconds_total": "Seconds of audio transcribed.",
    "market_signals_emitted_total": "Buy and sell signals emitted.",
}


def use_multiprocess_dir(path: os.PathLike[str] | str) -> None:
    """Point prometheus-client at the shared directory; must happen before any metric is created."""
    os.makedirs(path, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    from prometheus_client import values

    values.ValueClass = values.get_value_class()


def _command_of_this_process() -> str:
    """The command that started this process (the ``dramatiq`` parent): its pid and its start time.

    The start time tells a reused pid from the original, so a later command never passes for this one.
    """
    parent = os.getppid()
    return f"{parent}:{_start_time(parent)}"


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # Field 22 (start time in clock ticks), counted after the parenthesised command name.
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _command_alive(command: str) -> bool:
    pid, _, started = command.partition(":")
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return _start_time(int(pid)) == started


def claim_multiprocess_dir(path: str, command: str | None = None) -> bool:
    """Make ``path`` this worker command's own: wipe what an earlier command left there; True if it did.

    Every worker process of one ``dramatiq`` command calls this at boot, before it records anything:
    the first one finds another command's mark and wipes the directory, the others find their own and
    keep what their siblings already wrote. A directory still marked by a live command (two commands
    given one ``METRICS_DIR``) is never wiped: its processes are using it.
    """
    command = command or _command_of_this_process()
    os.makedirs(path, exist_ok=True)
    mark = os.path.join(path, "command")
    with open(os.path.join(path, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(mark) as file:
                previous = file.read().strip()
        except FileNotFoundError:
            previous = ""
        if previous == command:
            return False
        if (previous and _command_alive(previous)) or _live_writers(path):
            logger.warning("METRICS_DIR %s is in use by another live worker command; give each command its own.", path)
            return False
        for name in glob.glob(os.path.join(path, "*.db")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
        with open(mark, "w") as file:
            file.write(command)
        return True


def _writers(path: str) -> set[int]:
    """The pids whose files are in a multiprocess directory (prometheus-client names them ``*_PID.db``)."""
    pids = set()
    for name in glob.glob(os.path.join(path, "*.db")):
        match = re.search(r"_(\d+)\.db$", name)
        if match:
            pids.add(int(match.group(1)))
    return pids


def _live_writers(path: str) -> set[int]:
    live = set()
    for pid in _writers(path) - {os.getpid()}:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        live.add(pid)
    return live


def _clear_dead_processes(path: str) -> None:
    """Forget the live gauges of processes that are gone (a killed worker's in-progress count)."""
    from prometheus_client import multiprocess

    for pid in _writers(path):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, path)
        except PermissionError:
            pass


class _Batch:
    """Metric updates summed in memory and written to the shared files every ``interval`` seconds.

    Writing a multiprocess value takes a lock and an mmap write; a message touches seven of them. Summing
    in a dict first costs a fraction of that, and a scrape sees the numbers at most ``interval`` late.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.lock = threading.Lock()
        self.deltas: dict[Any, float] = {}
        self.observations: dict[Any, list[float]] = {}
        self.thread: threading.Thread | None = None

    def inc(self, child: Any, amount: float = 1.0) -> None:
        with self.lock:
            self.deltas[child] = self.deltas.get(child, 0.0) + amount
        self._ensure_thread()

    def observe(self, child: Any, value: float) -> None:
        self._ensure_thread()
        with self.lock:
            values = self.observations.get(child)
            if values is None:
                self.observations[child] = [value]
            else:
                values.append(value)

    def _ensure_thread(self) -> None:
        if self.thread is None:
            with self.lock:
                if self.thread is None:
                    self.thread = threading.Thread(target=self._run, name="metrics-batch", daemon=True)
                    self.thread.start()
                    # A forked child has no copy of this thread (nor a use for the parent's sums).
                    os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self.thread = None
        self.lock = threading.Lock()
        self.deltas, self.observations = {}, {}

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            try:
                self.flush()
            except Exception:
                logger.exception("Writing metrics failed.")

    def flush(self) -> None:
        with self.lock:
            deltas, self.deltas = self.deltas, {}
            observations, self.observations = self.observations, {}
        for child, delta in deltas.items():
            if delta:
                child.inc(delta)
        for child, values in observations.items():
            # Histogram buckets in multiprocess mode hold per-bucket counts; Histogram.observe adds one
            # value to its bucket and to the sum, so adding a batch is the same per bucket.
            per_bucket = [0] * len(child._upper_bounds)
            for value in values:
                per_bucket[bisect.bisect_left(child._upper_bounds, value)] += 1
            child._sum.inc(sum(values))
            for index, count in enumerate(per_bucket):
                if count:
                    child._buckets[index].inc(count)


class _Instruments:
    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        labels = ["queue_name", "actor_name"]
        self.messages = Counter(
            "dramatiq_messages", "Messages processed, by outcome.", [*labels, "outcome"], registry=None
        )
        self.errors = Counter("dramatiq_message_errors", "Attempts that raised.", labels, registry=None)
        self.retries = Counter("dramatiq_message_retries", "Retries scheduled.", labels, registry=None)
        self.dead_letters = Counter(
            "dramatiq_message_dead_letters", "Messages moved to the dead-letter queue.", labels, registry=None
        )
        self.rate_limited = Counter("dramatiq_rate_limited", "Messages delayed by a rate limit.", labels, registry=None)
        self.duration = Histogram(
            "dramatiq_message_duration_seconds",
            "Time one attempt took.",
            labels,
            buckets=DURATION_BUCKETS,
            registry=None,
        )
        self.queue_wait = Histogram(
            "dramatiq_message_queue_wait_seconds",
            "Time from enqueue (or the end of a delay) to the start of an attempt.",
            labels,
            buckets=DURATION_BUCKETS,
            registry=None,
        )
        self.inprogress = Gauge(
            "dramatiq_messages_inprogress",
            "Attempts running now.",
            labels,
            multiprocess_mode="livesum",
            registry=None,
        )
        self.domain = {
            name: Counter(name.removesuffix("_total"), help_text, registry=None)
            for name, help_text in DOMAIN_COUNTERS.items()
        }
        self.children: dict[tuple[str, str], tuple[Any, ...]] = {}
        self.outcomes: dict[tuple[str, str, str], Any] = {}
        self.batch = _Batch()

    def per_actor(self, queue_name: str, actor_name: str) -> tuple[Any, ...]:
        key = (queue_name, actor_name)
        children = self.children.get(key)
        if children is None:
            children = self.children[key] = (
                self.duration.labels(queue_name, actor_name),
                self.queue_wait.labels(queue_name, actor_name),
                self.inprogress.labels(queue_name, actor_name),
            )
        return children

    def outcome(self, queue_name: str, actor_name: str, outcome: str) -> Any:
        key = (queue_name, actor_name, outcome)
        child = self.outcomes.get(key)
        if child is None:
            child = self.outcomes[key] = self.messages.labels(queue_name, actor_name, outcome)
        return child


class Metrics(Middleware):
    """Record messages by outcome, retries, dead letters, durations, queue waits and work in progress.

    Actor options:
      result_metrics(dict[str, str]): maps a numeric key of the dict an actor returns to a domain counter
        (``DOMAIN_COUNTERS``), e.g. ``{"pages_ocr": "documents_pages_ocr_total"}``.

    Parameters:
      host(str): where the exposition server listens. Default: ``METRICS_HOST`` (127.0.0.1).
      port(int): its port. Default: ``METRICS_PORT`` (9191).
      directory(str): prometheus-client's multiprocess directory. Default: ``METRICS_DIR``.
      forks(list[Callable[[], int]]): Dramatiq fork processes to run beside the workers, such as the one
        that serves the scrape (``metrics_server.serve_from_fork``, handed in by ``broker.py``: serving
        needs the broker, which no middleware imports). Default: none.
    """

    def __init__(
        self,
        *,
        host: str | None = None,
        port: int | None = None,
        directory: str | None = None,
        forks: list[Callable[[], int]] | None = None,
    ) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self._forks = list(forks or ())
        self.host = host or settings.metrics_host
        self.port = settings.metrics_port if port is None else port
        self.directory = directory or os.environ.get("PROMETHEUS_MULTIPROC_DIR") or str(settings.metrics_dir)
        self.instruments: _Instruments | None = None
        self.started: dict[str, float] = {}
        self.lock = threading.Lock()

    @property
    def actor_options(self) -> set[str]:
        return {"result_metrics"}

    @property
    def forks(self) -> list[Any]:
        return self._forks

    def after_process_boot(self, broker: Broker) -> None:
        # Counters start from zero with each worker command, not from what the last one left on disk.
        if claim_multiprocess_dir(self.directory):
            self.logger.info("Wiped the metrics an earlier worker command left in %s.", self.directory)
        use_multiprocess_dir(self.directory)
        _clear_dead_processes(self.directory)
        self._instruments()

    def _instruments(self) -> _Instruments:
        if self.instruments is None:
            with self.lock:
                if self.instruments is None:
                    use_multiprocess_dir(self.directory)
                    self.instruments = _Instruments()
        return self.instruments

    def before_process_message(self, broker: Broker, message: Any) -> None:
        instruments = self._instruments()
        _, queue_wait, inprogress = instruments.per_actor(message.queue_name, message.actor_name)
        now = current_millis()
        ready_since = message.options.get("ready_at") or message.message_timestamp
        batch = instruments.batch
        batch.observe(queue_wait, max(now - ready_since, 0) / 1000)
        batch.inc(inprogress)
        self.started[message.message_id] = time.perf_counter()

    def before_enqueue(self, broker: Broker, message: Any, delay: Any) -> None:
        # The moment a message becomes ready to run: queue wait is measured from here, not from a
        # retry's backoff or a delay the sender asked for.
        if delay is None:
            message.options["ready_at"] = current_millis()

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if noted(message, ABANDONED_ATTRIBUTE):
            return
        from middleware.outcome import decide

        instruments = self._instruments()
        queue_name, actor_name = message.queue_name, message.actor_name
        duration, _, inprogress = instruments.per_actor(queue_name, actor_name)
        batch = instruments.batch
        started = self.started.pop(message.message_id, None)
        if started is not None:
            batch.observe(duration, time.perf_counter() - started)
            batch.inc(inprogress, -1.0)
        decision = decide(broker, message, exception)
        batch.inc(instruments.outcome(queue_name, actor_name, decision.event.value))
        if exception is not None:
            batch.inc(instruments.errors.labels(queue_name, actor_name))
        if decision.event is Event.RETRYING:
            batch.inc(instruments.retries.labels(queue_name, actor_name))
        elif decision.event is Event.DEAD:
            batch.inc(instruments.dead_letters.labels(queue_name, actor_name))
        if exception is None and isinstance(result, dict):
            self._count_results(broker, message, result, instruments)

    def _count_results(self, broker: Broker, message: Any, result: dict[str, Any], instruments: _Instruments) -> None:
        from middleware.outcome import option

        mapping = option(broker, message, "result_metrics", None)
        if not mapping:
            return
        for key, metric_name in mapping.items():
            value = result.get(key)
            counter = instruments.domain.get(metric_name)
            if counter is not None and isinstance(value, (int, float)) and value > 0:
                instruments.batch.inc(counter, float(value))

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        instruments = self._instruments()
        queue_name, actor_name = message.queue_name, message.actor_name
        batch = instruments.batch
        started = self.started.pop(message.message_id, None)
        if started is not None:
            batch.inc(instruments.per_actor(queue_name, actor_name)[2], -1.0)
        reason = noted(message, SKIP_REASON_ATTRIBUTE)
        if reason is Event.RATE_LIMITED:
            batch.inc(instruments.rate_limited.labels(queue_name, actor_name))
        elif reason is Event.CANCELLED:
            batch.inc(instruments.outcome(queue_name, actor_name, Event.CANCELLED.value))
        else:
            batch.inc(instruments.outcome(queue_name, actor_name, Event.SKIPPED.value))

    def after_nack(self, broker: Broker, message: Any) -> None:
        # Messages dead-lettered without an attempt (unknown actor) still count as dead letters.
        if noted(message, DECISION_ATTRIBUTE) is None:
            instruments = self._instruments()
            instruments.batch.inc(instruments.dead_letters.labels(message.queue_name, message.actor_name))

    def flush(self) -> None:
        """Write the updates summed so far (the batch thread does it every half second)."""
        if self.instruments is not None:
            self.instruments.batch.flush()

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        from prometheus_client import multiprocess

        self.flush()
        with contextlib.suppress(Exception):
            multiprocess.mark_process_dead(os.getpid(), self.directory)


class MetricsOff(Middleware):
    """Stands in for ``Metrics`` when ``METRICS_ENABLED`` is off: records nothing, but still owns the
    ``result_metrics`` option, so actors that declare it can be imported."""

    @property
    def actor_options(self) -> set[str]:
        return {"result_metrics"}


# --------------------------------------------------------------------------------------------------
# Scrape-time collector and the exposition server
# --------------------------------------------------------------------------------------------------


class BrokerCollector:
    """Queue depths, read from the broker, and live workers, read from Redis, when Prometheus scrapes.

    Parameters:
      client(redis.Redis): the Redis holding the worker registry (``dramatiq:__workers__``).
      depths(Callable[[], dict[str, tuple[int, int, int]]]): ready, delayed and dead messages per queue,
        as the broker counts them (``broker.queue_depths``).
    """

    def __init__(
        self,
        client: Any,
        depths: Callable[[], dict[str, tuple[int, int, int]]],
        queues: tuple[str, ...] = QUEUES,
        namespace: str = "dramatiq",
    ) -> None:
        self.client = client
        self.depths = depths
        self.queues = queues
        self.namespace = namespace

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        depth = GaugeMetricFamily(
            "dramatiq_queue_messages", "Messages in each queue, by state.", labels=["queue_name", "state"]
        )
        alive = GaugeMetricFamily(
            "dramatiq_workers_alive", "Worker processes with a fresh heartbeat, per queue.", labels=["queue_name"]
        )
        try:
            depths = self.depths()
            workers = self.client.hgetall(f"{self.namespace}:__workers__")
        except Exception as error:
            logger.warning("Could not read queue depths: %r", error)
            return
        for queue in self.queues:
            ready, delayed, dead = depths.get(queue, (0, 0, 0))
            depth.add_metric([queue, "ready"], ready)
            depth.add_metric([queue, "delayed"], delayed)
            depth.add_metric([queue, "dead"], dead)
        counts = dict.fromkeys(self.queues, 0)
        deadline = current_millis() - settings.heartbeat_timeout
        for raw in workers.values():
            with contextlib.suppress(ValueError, KeyError):
                info = json.loads(raw)
                if info["seen"] >= deadline:
                    for queue in info["queues"]:
                        if queue in counts:
                            counts[queue] += 1
        for queue, count in counts.items():
            alive.add_metric([queue], count)
        yield depth
        yield alive


class CollectionCollector:
    """Per-source totals and health, and trends per state, read from the database when Prometheus scrapes.

    The sources table is where these numbers live (``cli sources`` prints the same), so every worker
    group reports the same values: alert rules and panels take ``max`` over instances, never ``sum``.
    """

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

        try:
            from storage.collection import metrics_snapshot, utcnow

            snapshot = metrics_snapshot()
        except Exception as error:
            logger.warning("Could not read the collection's metrics: %r", error)
            return
        collected = CounterMetricFamily(
            "collection_items_collected", "New items and new mentions stored, by source.", labels=["source"]
        )
        duplicates = CounterMetricFamily(
            "collection_duplicates", "Items fetched again that were already stored, by source.", labels=["source"]
        )
        fetches = CounterMetricFamily("collection_fetches", "Fetches, by source.", labels=["source"])
        errors = CounterMetricFamily(
            "collection_fetch_errors", "Failed fetches, by source and reason.", labels=["source", "reason"]
        )
        latency = SummaryMetricFamily("collection_fetch_latency_seconds", "Time one fetch took.", labels=["source"])
        last_latency = GaugeMetricFamily(
            "collection_fetch_last_latency_seconds", "Time the last fetch took.", labels=["source"]
        )
        healthy = GaugeMetricFamily(
            "collection_source_healthy", "1 when an active source's last fetch succeeded.", labels=["source"]
        )
        consecutive = GaugeMetricFamily(
            "collection_source_consecutive_errors", "Failed fetches in a row.", labels=["source"]
        )
        next_check = GaugeMetricFamily(
            "collection_source_next_check_seconds", "Seconds until the source is due again.", labels=["source"]
        )
        trends = GaugeMetricFamily("collection_trends", "Trends now, by state.", labels=["state"])
        now = utcnow()
        for source in snapshot["sources"]:
            label = [source.name]
            collected.add_metric(label, source.items_total)
            duplicates.add_metric(label, source.duplicates_total)
            fetches.add_metric(label, source.runs_total)
            for reason, count in source.errors_by_reason.items():
                errors.add_metric([source.name, reason], count)
            latency.add_metric(label, count_value=source.runs_total, sum_value=source.fetch_ms_total / 1000)
            if source.last_latency_ms is not None:
                last_latency.add_metric(label, source.last_latency_ms / 1000)
            if source.active:
                healthy.add_metric(label, 1 if source.consecutive_errors == 0 else 0)
                consecutive.add_metric(label, source.consecutive_errors)
                due = (source.next_check_at - now).total_seconds() if source.next_check_at else 0.0
                next_check.add_metric(label, max(due, 0.0))
        for state in ("emerging", "rising", "peaking", "declining"):
            trends.add_metric([state], snapshot["trends_by_state"].get(state, 0))
        yield from (
            collected,
            duplicates,
            fetches,
            errors,
            latency,
            last_latency,
            healthy,
            consecutive,
            next_check,
            trends,
        )


def render_metrics(directory: str, collector: BrokerCollector | None) -> bytes:
    """What a scrape returns: every process's metrics, the broker's depths and live workers, the collection's."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    if collector is not None:
        registry.register(collector)
    registry.register(CollectionCollector())
    return generate_latest(registry)


def make_server(host: str, port: int, directory: str, collector: BrokerCollector | None) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] not in ("/", "/metrics"):
                self.send_error(404)
                return
            body = render_metrics(directory, collector)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    ThreadingHTTPServer.allow_reuse_address = True
    return ThreadingHTTPServer((host, port), Handler)
