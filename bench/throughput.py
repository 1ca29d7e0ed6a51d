"""Throughput and latency: bare Dramatiq vs this platform's full stack vs Celery, in one run.

    python -m bench.throughput                      # 20,000 no-op + 10,000 × 10 KB messages
    python -m bench.throughput --messages 5000 --large 2000

Each variant gets the same Redis, the same worker processes and threads, and the same messages, enqueued
before its workers start; the rate is measured from the first message taken to the queue being empty, so
start-up time is not counted. Latency is enqueue → start on an idle worker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(sys.executable).parent


@dataclass
class Variant:
    name: str
    worker_command: list[str]
    remaining_keys: tuple[str, ...]
    enqueue_module: str


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def variants(processes: int, threads: int) -> list[Variant]:
    return [
        Variant(
            "bare dramatiq",
            [str(BIN / "dramatiq"), "bench.bare_app", "-p", str(processes), "-t", str(threads), "-Q", "default"],
            ("bare:default.msgs",),
            "bare",
        ),
        Variant(
            "platform (full stack)",
            [str(BIN / "dramatiq"), "bench.platform_app", "-p", str(processes), "-t", str(threads), "-Q", "default"],
            ("dramatiq:default.msgs",),
            "platform",
        ),
        Variant(
            "celery (prefork)",
            [
                str(BIN / "celery"), "-A", "bench.celery_app", "worker", "-c", str(processes), "-P", "prefork",
                "--without-heartbeat", "--without-mingle", "--without-gossip", "-l", "WARNING",
            ],
            ("celery", "unacked"),
            "celery",
        ),
    ]  # fmt: skip


def remaining(client: redis.Redis, keys: tuple[str, ...]) -> int:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        if key.endswith(".msgs") or key == "unacked":
            pipe.hlen(key)
        else:
            pipe.llen(key)
    return sum(pipe.execute())


def enqueue(variant: str, count: int, payload_bytes: int) -> None:
    """Run in a child process: enqueue ``count`` messages with the variant's own client; print the rate."""
    payload = "x" * payload_bytes if payload_bytes else None
    if variant == "celery":
        from bench.celery_app import noop as celery_noop

        started = time.perf_counter()
        for _ in range(count):
            celery_noop.apply_async(args=(payload,))
    else:
        if variant == "bare":
            from bench.bare_app import noop
        else:
            from bench.platform_app import noop  # type: ignore[assignment]
        started = time.perf_counter()
        for _ in range(count):
            noop.send(payload)
    print(json.dumps({"send_rate": count / (time.perf_counter() - started)}))


@dataclass
class Run:
    rate: float
    send_rate: float
    #: CPU seconds the worker command's processes used per message, in the measured window, in µs.
    worker_cpu_us: float
    #: Seconds from the queue's last message taken to the job table showing every job succeeded.
    table_lag: float | None = None


def job_table_lag(var_dir: str, count: int, since: float) -> float:
    """Seconds after ``since`` at which the platform's job table holds ``count`` succeeded rows."""
    import sqlite3

    database = Path(var_dir) / "platform.db"
    deadline = time.monotonic() + 120
    with contextlib.closing(sqlite3.connect(database, timeout=5)) as connection:
        while time.monotonic() < deadline:
            try:
                (done,) = connection.execute("SELECT count(*) FROM jobs WHERE state = 'succeeded'").fetchone()
            except sqlite3.OperationalError as error:
                if "no such table" not in str(error):
                    raise
                done = 0
            if done >= count:
                return time.perf_counter() - since
            time.sleep(0.01)
    raise RuntimeError(f"the job table did not show {count} succeeded jobs within 120 s")


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its children."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for process in (root, *root.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def run_variant(variant: Variant, count: int, payload_bytes: int, env: dict[str, str], client: redis.Redis) -> Run:
    client.flushdb()
    if variant.enqueue_module == "platform":
        # Each run counts its own rows.
        Path(env["VAR_DIR"], "platform.db").unlink(missing_ok=True)
    sent = subprocess.run(
        [PYTHON, "-m", "bench.throughput", "--enqueue", variant.enqueue_module, str(count), str(payload_bytes)],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    send_rate = float(json.loads(sent.stdout.strip().splitlines()[-1])["send_rate"])
    assert remaining(client, variant.remaining_keys) == count, "messages were not all enqueued"
    log = tempfile.NamedTemporaryFile(prefix="bench-worker-", suffix=".log", delete=False)  # noqa: SIM115
    worker = subprocess.Popen(variant.worker_command, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while (left := remaining(client, variant.remaining_keys)) >= count:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{variant.name} worker did not start; see {log.name}")
            time.sleep(0.005)
        started, start_left, cpu_at_start = time.perf_counter(), left, _tree_cpu(worker.pid)
        while (left := remaining(client, variant.remaining_keys)) > 0:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{variant.name} worker stopped with {left} messages left; see {log.name}")
            time.sleep(0.01)
        emptied = time.perf_counter()
        elapsed = emptied - started
        worker_cpu_us = (_tree_cpu(worker.pid) - cpu_at_start) / start_left * 1e6
        lag = job_table_lag(env["VAR_DIR"], count, emptied) if variant.enqueue_module == "platform" else None
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    return Run(start_left / elapsed, send_rate, worker_cpu_us, lag)


def latency(variant: Variant, samples: int, env: dict[str, str], client: redis.Redis) -> tuple[float, float]:
    client.flushdb()
    log = tempfile.NamedTemporaryFile(prefix="bench-latency-", suffix=".log", delete=False)  # noqa: SIM115
    worker = subprocess.Popen(variant.worker_command, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        result = subprocess.run(
            [PYTHON, "-m", "bench.throughput", "--latency-client", variant.enqueue_module, str(samples)],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        values = json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
    values.sort()
    return statistics.median(values) * 1000, values[int(len(values) * 0.99) - 1] * 1000


def latency_client(variant: str, samples: int) -> None:
    """Run in a child process: send one message at a time to an idle worker, print the latencies."""
    if variant == "bare":
        from bench.bare_app import broker, record_latency
    else:
        from bench.platform_app import broker, record_latency  # type: ignore[assignment]
    client = broker.client  # type: ignore[attr-defined]
    # Let the worker boot and go idle.
    record_latency.send(time.time())
    while client.llen("bench:latency") < 1:
        time.sleep(0.05)
    time.sleep(1.0)
    client.delete("bench:latency")
    for index in range(samples):
        record_latency.send(time.time())
        while client.llen("bench:latency") < index + 1:
            time.sleep(0.0005)
        time.sleep(0.05)
    print(json.dumps([float(v) for v in client.lrange("bench:latency", 0, -1)]))


def idle_rss_mb(env: dict[str, str], queues: list[str]) -> float:
    """RSS of one idle worker process that serves ``queues``, after it has booted."""
    import psutil

    command = [str(BIN / "dramatiq"), "actors", "-p", "1", "-t", "8", "-Q", *queues]
    log = tempfile.NamedTemporaryFile(prefix="bench-rss-", suffix=".log", delete=False)  # noqa: SIM115
    worker = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        time.sleep(8)
        parent = psutil.Process(worker.pid)
        children = [child for child in parent.children() if "dramatiq" in " ".join(child.cmdline())]
        worker_process = max(children, key=lambda child: child.memory_info().rss)
        return float(worker_process.memory_info().rss / 1024 / 1024)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)


SYSTEMS = ("bare dramatiq", "platform (full stack)", "celery (prefork)")


def _compare(
    rows: list[tuple[str, int, dict[str, Run]]],
    title: str,
    figure: Callable[[Run], float],
    shown: str,
    ratio: Callable[[float, float], str],
) -> None:
    """One figure of each system per workload, and the platform's against bare Dramatiq's."""
    print()
    print(title)
    for workload, _count, runs in rows:
        bare, ours, celery = (figure(runs[name]) for name in SYSTEMS)
        print(f"  {workload:<16}{shown.format(bare)} bare{shown.format(ours)} platform{shown.format(celery)} celery"
              f"   platform/bare {ratio(ours, bare)}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--large", type=int, default=10_000, help="messages with a 10 KB argument")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", ""))
    parser.add_argument("--enqueue", nargs=3, metavar=("VARIANT", "COUNT", "BYTES"))
    parser.add_argument("--latency-client", nargs=2, metavar=("VARIANT", "SAMPLES"))
    args = parser.parse_args()

    if args.enqueue:
        enqueue(args.enqueue[0], int(args.enqueue[1]), int(args.enqueue[2]))
        return
    if args.latency_client:
        latency_client(args.latency_client[0], int(args.latency_client[1]))
        return

    redis_url = args.redis_url
    if not redis_url:
        from broker import EmbeddedRedis, _port_answers

        if _port_answers("127.0.0.1", 6379):
            redis_url = "redis://127.0.0.1:6379/14"
        else:
            redis_url = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="bench-redis-"))).acquire()
    client = redis.Redis.from_url(redis_url)
    var_dir = tempfile.mkdtemp(prefix="bench-var-")
    env = {
        **os.environ,
        "BENCH_REDIS_URL": redis_url,
        "REDIS_URL": redis_url,
        "VAR_DIR": var_dir,
        "METRICS_PORT": str(_free_port()),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("DATABASE_URL", None)  # the job table on SQLite under VAR_DIR, where the bench reads it

    print(f"Redis {redis_url}; {args.processes} processes × {args.threads} threads; {os.cpu_count()} CPUs")
    rows = []
    for workload, count, size in (("no-op", args.messages, 0), ("10 KB argument", args.large, 10_240)):
        runs = {}
        for variant in variants(args.processes, args.threads):
            runs[variant.name] = run_variant(variant, count, size, env, client)
        rows.append((workload, count, runs))

    print()
    print(f"{'workload':<16}{'messages':>9}  {'bare dramatiq':>14}{'platform':>11}{'celery':>9}  "
          f"{'platform/bare':>14}{'platform/celery':>16}")  # fmt: skip
    for workload, count, runs in rows:
        bare, ours, celery = runs["bare dramatiq"], runs["platform (full stack)"], runs["celery (prefork)"]
        print(f"{workload:<16}{count:>9}  {bare.rate:>11.0f}/s{ours.rate:>8.0f}/s{celery.rate:>6.0f}/s  "
              f"{ours.rate / bare.rate:>13.0%}{ours.rate / celery.rate:>15.2f}×")  # fmt: skip

    _compare(
        rows,
        "worker CPU per message (all processes of the worker command, user + system)",
        lambda run: run.worker_cpu_us,
        "{:>6.0f} µs",
        lambda ours, bare: f"{ours / bare:.2f}×",
    )
    _compare(
        rows,
        "producer: one process calling send() (apply_async() for Celery)",
        lambda run: run.send_rate,
        "{:>8.0f}/s",
        lambda ours, bare: f"{ours / bare:.0%}",
    )

    print()
    print("job table: last message taken → every row 'succeeded' (SQLite)")
    for workload, _count, runs in rows:
        print(f"  {workload:<16}{runs['platform (full stack)'].table_lag or 0:>7.2f} s")

    print()
    print("enqueue → start latency on an idle worker:")
    for variant in variants(args.processes, args.threads)[:2]:
        p50, p99 = latency(variant, args.latency_samples, env, client)
        print(f"  {variant.name:<24} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")

    quick = ["priority", "default", "llm", "market", "collection", "files", "maintenance"]
    print()
    print(f"idle worker RSS, queues {' '.join(quick)}: {idle_rss_mb(env, quick):.0f} MB")


if __name__ == "__main__":
    main()
