"""A scheduler process for the tests: the real ``Scheduler`` loop on a clock the test moves through Redis.

It fires ``sched_test_cluster_tick`` (``sched_actors_cluster.py``) through the project's broker, and also
notes each send (scheduled time, pid) on a Redis list so the test knows which process sent it.

    python tests/scheduler/run_scheduler_process.py --namespace NS --clock-key K --record-key R --lock-ttl 1000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]

from sched_support import RedisClock  # noqa: E402

import actors  # noqa: E402
from broker import redis_client_for  # noqa: E402
from scheduler import Schedule, Scheduler, schedules_from_actors, send_periodic  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--clock-key", required=True)
    parser.add_argument("--record-key", required=True)
    parser.add_argument("--lock-ttl", type=int, default=1_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"[pid {os.getpid()}] %(name)s %(levelname)s %(message)s")

    import sched_actors_cluster  # declares its actor on the broker ``actors`` set up

    client = redis_client_for(actors.broker)
    assert client is not None
    schedules = schedules_from_actors([sched_actors_cluster.sched_test_cluster_tick])

    def send(schedule: Schedule, scheduled_at: datetime) -> str:
        message_id = send_periodic(schedule, scheduled_at)
        entry = {"scheduled_at": scheduled_at.astimezone(UTC).isoformat(), "pid": str(os.getpid())}
        client.rpush(args.record_key, json.dumps(entry))
        return message_id

    scheduler = Scheduler(
        schedules,
        client=client,
        sender=send,
        clock=RedisClock(client, args.clock_key),
        lock_ttl=args.lock_ttl,
        namespace=args.namespace,
        owner=f"test:{os.getpid()}",
    )

    def stop(_signum: int, _frame: FrameType | None) -> None:
        scheduler.stop()

    signal.signal(signal.SIGTERM, stop)
    scheduler.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
