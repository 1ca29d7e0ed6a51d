"""Scheduler: fire accuracy (scheduled vs sent) and takeover time after the leader is killed.

    python -m bench.scheduler                     # 200 fires, 3 takeovers with SCHEDULER_LOCK_TTL_MS
    python -m bench.scheduler --fires 400 --actors 8 --takeovers 5 --lock-ttl 2000

Accuracy: ``--actors`` periodic actors every second (a six-field cron), fired by one ``Scheduler`` on the
real clock through the project's broker (Redis) onto a queue of their own; the delay of a fire is the
time ``send`` returned minus the scheduled second. Takeover: two scheduler processes on the real clock
over one Redis; the leader is killed with SIGKILL and the bench times how long until the standby holds
the lock and until it has sent its first run. Uses ``BENCH_REDIS_URL`` (default ``REDIS_URL``) and a
throwaway SQLite database.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "bench-scheduler"


def _prepare_environment() -> None:
    """Point settings at the bench's Redis and a throwaway database, before anything imports them."""
    if os.environ.get("BENCH_REDIS_URL"):
        os.environ["REDIS_URL"] = os.environ["BENCH_REDIS_URL"]
    if "BENCH_VAR_DIR" not in os.environ:
        os.environ["BENCH_VAR_DIR"] = tempfile.mkdtemp(prefix="bench-scheduler-")
    os.environ["VAR_DIR"] = os.environ["BENCH_VAR_DIR"]
    os.environ["DATABASE_URL"] = f"sqlite:///{os.environ['BENCH_VAR_DIR']}/bench.db"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(round(fraction * (len(ordered) - 1)), len(ordered) - 1)
    return ordered[index]


# -- accuracy ------------------------------------------------------------------------------------------


def measure_accuracy(fires: int, actor_count: int) -> dict[str, Any]:
    import dramatiq

    import actors
    from broker import redis_client_for
    from scheduler import Schedule, Scheduler, schedules_from_actors, send_periodic
    from storage.db import migrate

    migrate()
    broker = actors.broker
    client = redis_client_for(broker)
    assert client is not None
    broker.declare_queue(QUEUE)

    def tick() -> None:
        return None

    bench_actors = [
        dramatiq.actor(actor_name=f"bench_scheduler_tick_{i}", queue_name=QUEUE, periodic="* * * * * *")(tick)
        for i in range(actor_count)
    ]
    delays: list[float] = []

    def send(schedule: Schedule, scheduled_at: datetime) -> str:
        message_id = send_periodic(schedule, scheduled_at)
        delays.append(time.time() - scheduled_at.timestamp())
        if len(delays) >= fires:
            scheduler.stop()
        return message_id

    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    scheduler = Scheduler(schedules_from_actors(bench_actors), client=client, sender=send, namespace=namespace)
    started = time.monotonic()
    scheduler.run()
    elapsed = time.monotonic() - started
    broker.flush(QUEUE)
    for key in client.scan_iter(f"{namespace}:*"):
        client.delete(key)
    ms = [delay * 1000 for delay in delays[:fires]]
    return {
        "fires": len(ms),
        "actors": actor_count,
        "seconds": round(elapsed, 1),
        "p50_ms": round(percentile(ms, 0.50), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "max_ms": round(max(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


# -- takeover ------------------------------------------------------------------------------------------


def run_child(namespace: str, record_key: str, lock_ttl: int) -> int:
    """A scheduler process for the takeover bench: one schedule every second, sends recorded in Redis."""
    import redis

    from scheduler import Schedule, Scheduler, build_schedule
    from storage.db import migrate

    migrate()
    client = redis.Redis.from_url(os.environ["REDIS_URL"])

    def record(schedule: Schedule, scheduled_at: datetime) -> str:
        at = scheduled_at.astimezone(UTC).isoformat()
        client.rpush(record_key, json.dumps({"at": at, "pid": os.getpid(), "sent": time.time()}))
        return at

    scheduler = Scheduler(
        [build_schedule(f"bench_scheduler_takeover_{namespace}", "* * * * * *", timezone="UTC")],
        client=client,
        sender=record,
        lock_ttl=lock_ttl,
        namespace=namespace,
        owner=f"bench:{os.getpid()}",
    )
    signal.signal(signal.SIGTERM, lambda *_: scheduler.stop())
    scheduler.run()
    return 0


def measure_takeover(rounds: int, lock_ttl: int) -> dict[str, Any]:
    import redis

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    record_key = f"{namespace}:sent"
    lock_key = f"{namespace}:leader"
    processes: dict[int, subprocess.Popen[bytes]] = {}

    def spawn() -> None:
        command = [sys.executable, "-m", "bench.scheduler", "--child", namespace, record_key, str(lock_ttl)]
        process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
        processes[process.pid] = process

    def leader() -> int | None:
        value = client.get(lock_key)
        return int(str(value, "utf-8").rsplit(":", 1)[1]) if isinstance(value, bytes) else None

    def sends() -> list[dict[str, Any]]:
        return [json.loads(item) for item in client.lrange(record_key, 0, -1)]

    def wait(predicate: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError("the takeover bench timed out")
            time.sleep(0.001)

    def one_round() -> tuple[float, float]:
        wait(lambda: leader() is not None)
        old = leader()
        assert old is not None
        wait(lambda: sum(1 for entry in sends() if entry["pid"] == old) >= 2)
        killed_at = time.time()
        os.kill(old, signal.SIGKILL)
        processes.pop(old).wait()
        wait(lambda: leader() not in (None, old))
        lock_taken = time.time() - killed_at

        def new_sends() -> list[float]:
            return [entry["sent"] for entry in sends() if entry["pid"] != old and entry["sent"] > killed_at]

        wait(lambda: bool(new_sends()))
        spawn()  # a new standby for the next round
        return lock_taken, min(new_sends()) - killed_at

    lock_times, fire_times = [], []
    try:
        spawn()
        spawn()
        for _ in range(rounds):
            lock_taken, first_send = one_round()
            lock_times.append(lock_taken)
            fire_times.append(first_send)
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        for process in processes.values():
            process.wait(timeout=10)
    scheduled = Counter(entry["at"] for entry in sends())
    client.delete(record_key, lock_key, *client.scan_iter(f"{namespace}:*"))
    return {
        "rounds": rounds,
        "lock_ttl_ms": lock_ttl,
        "lock_taken_s": [round(value, 3) for value in lock_times],
        "first_send_s": [round(value, 3) for value in fire_times],
        "mean_lock_taken_s": round(statistics.fmean(lock_times), 3),
        "max_lock_taken_s": round(max(lock_times), 3),
        "ticks_sent_twice": sum(1 for count in scheduled.values() if count > 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fires", type=int, default=200)
    parser.add_argument("--actors", type=int, default=4, help="actors firing every second")
    parser.add_argument("--takeovers", type=int, default=3)
    parser.add_argument("--lock-ttl", type=int, default=None, help="ms; default SCHEDULER_LOCK_TTL_MS")
    parser.add_argument("--child", nargs=3, metavar=("NAMESPACE", "RECORD_KEY", "LOCK_TTL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    _prepare_environment()
    if args.child:
        namespace, record_key, lock_ttl = args.child
        return run_child(namespace, record_key, int(lock_ttl))

    from settings import settings

    lock_ttl = args.lock_ttl or settings.scheduler_lock_ttl
    accuracy = measure_accuracy(args.fires, args.actors)
    print(
        f"fire accuracy over {accuracy['fires']} fires ({accuracy['actors']} actors every second, "
        f"{accuracy['seconds']} s): p50 {accuracy['p50_ms']} ms, p99 {accuracy['p99_ms']} ms, "
        f"max {accuracy['max_ms']} ms, mean {accuracy['mean_ms']} ms"
    )
    takeover = measure_takeover(args.takeovers, lock_ttl)
    print(
        f"takeover after SIGKILL (lock TTL {takeover['lock_ttl_ms']} ms, {takeover['rounds']} rounds): "
        f"lock taken in mean {takeover['mean_lock_taken_s']} s, max {takeover['max_lock_taken_s']} s "
        f"{takeover['lock_taken_s']}; first send by the new leader after {takeover['first_send_s']} s; "
        f"ticks sent twice: {takeover['ticks_sent_twice']}"
    )
    print(json.dumps({"accuracy": accuracy, "takeover": takeover}))
    shutil.rmtree(os.environ["BENCH_VAR_DIR"], ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
