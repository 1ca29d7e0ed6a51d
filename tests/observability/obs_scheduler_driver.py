"""Runs the real scheduler in a process of its own, on a clock that runs ``--speed`` times faster.

    python tests/observability/obs_scheduler_driver.py --port 9300 --namespace obs-test [--speed 60]

At 60x a ``* * * * *`` schedule fires every real second, so a test sees fires, a misfire after a
takeover and skipped ticks within seconds. Metrics are served on 127.0.0.1:PORT from the scheduler's own
registry, as ``python scheduler.py`` serves them. Stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

# A scheduler process keeps its metrics in memory, never in a worker's multiprocess directory.
os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


class FastClock:
    """Wall time that runs ``speed`` times faster from the moment it is made."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.origin = datetime.now(UTC)
        self.started = time.monotonic()

    def now(self) -> datetime:
        return self.origin + timedelta(seconds=(time.monotonic() - self.started) * self.speed)

    def sleep(self, seconds: float) -> None:
        time.sleep(min(max(seconds / self.speed, 0.0), 0.05))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--speed", type=float, default=60.0)
    parser.add_argument("--lock-ttl", type=int, default=1500, help="leader lock TTL in real milliseconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[scheduler-driver] %(levelname)s %(message)s")

    import obs_actors
    from prometheus_client import start_http_server

    from broker import redis_client_for
    from scheduler import Scheduler, build_schedule

    client = redis_client_for(obs_actors.actors.broker)
    assert client is not None
    schedules = [
        build_schedule("obs_tick", "* * * * *", timezone="UTC", actor=obs_actors.obs_tick),
        build_schedule("obs_tick_paused", "* * * * *", timezone="UTC", enabled=False, actor=obs_actors.obs_tick_paused),
    ]
    scheduler = Scheduler(
        schedules,
        client=client,
        clock=FastClock(args.speed),
        lock_ttl=args.lock_ttl,
        namespace=args.namespace,
        persist=False,
    )
    server, _thread = start_http_server(args.port, addr="127.0.0.1", registry=scheduler.metrics.registry)

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        scheduler.stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        scheduler.run()
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
