"""Scheduler copies in separate processes, sharing one Redis: one leads, a killed leader is replaced.

The processes run ``run_scheduler_process.py`` on a clock the test moves through Redis, so ticks a
minute apart take no real minute; the leader lock's TTL is real (1 s). They send through the project's
broker to a queue no worker consumes, and the test counts the messages there per scheduled time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis
from dramatiq.message import Message
from sched_support import CLUSTER_QUEUE as QUEUE
from sched_support import RedisClock, recorded_fires, text, utc, wait_for

pytestmark = pytest.mark.usefixtures("schedule_db")

ENTRY = Path(__file__).resolve().parent / "run_scheduler_process.py"
ROOT = Path(__file__).resolve().parents[2]


class Cluster:
    """Scheduler processes started by one test, all on one clock and one record list."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.clock = RedisClock(client, f"{namespace}:clock")
        self.record_key = f"{namespace}:sent"
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, count: int) -> None:
        for _ in range(count):
            process = subprocess.Popen(
                [
                    sys.executable,
                    str(ENTRY),
                    "--namespace",
                    self.namespace,
                    "--clock-key",
                    self.clock.key,
                    "--record-key",
                    self.record_key,
                    "--lock-ttl",
                    "1000",
                ],
                cwd=ROOT,
                env={**os.environ},
            )
            self.processes[process.pid] = process

    def alive(self) -> list[int]:
        return [pid for pid, process in self.processes.items() if process.poll() is None]

    def leader_pid(self) -> int | None:
        value = self.client.get(f"{self.namespace}:leader")
        return int(text(value).rsplit(":", 1)[1]) if value else None

    def move_clock_to(self, when: datetime) -> None:
        """Set the time and wait until every live process has finished a turn at it."""
        self.clock.set(when)
        wait_for(lambda: all(self.clock.seen().get(pid) == when for pid in self.alive()))

    def sends(self) -> Counter[str]:
        """Messages on the actor's queue, counted by their ``scheduled_at``."""
        raw = self.client.hvals(f"dramatiq:{QUEUE}.msgs")
        return Counter(Message.decode(data).options["scheduled_at"] for data in raw if isinstance(data, bytes))

    def senders(self) -> dict[str, str]:
        """Which process sent each scheduled time."""
        return {entry["scheduled_at"]: entry["pid"] for entry in recorded_fires(self.client, self.record_key)}

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def cluster(redis_client: redis.Redis, namespace: str) -> Iterator[Callable[[int], Cluster]]:
    started: list[Cluster] = []

    def start(count: int) -> Cluster:
        group = Cluster(redis_client, namespace)
        group.clock.set(utc("2026-01-05 12:00:30"))
        group.start(count)
        started.append(group)
        wait_for(lambda: group.leader_pid() is not None)
        group.move_clock_to(utc("2026-01-05 12:00:31"))
        return group

    yield start
    for group in started:
        group.stop()
    redis_client.delete(f"dramatiq:{QUEUE}", f"dramatiq:{QUEUE}.msgs", f"dramatiq:__notify__.{QUEUE}")


def test_two_scheduler_processes_side_by_side_send_each_due_time_exactly_once(
    cluster: Callable[[int], Cluster],
) -> None:
    # Given two scheduler processes over one Redis
    group = cluster(2)

    # When the clock passes five minute boundaries, each visited by both processes
    ticks = [utc(f"2026-01-05 12:0{minute}:00") for minute in range(1, 6)]
    for tick in ticks:
        group.move_clock_to(tick)

    # Then each due time is on the queue exactly once, all sent by the leader
    assert group.sends() == Counter({tick.isoformat(): 1 for tick in ticks})
    assert set(group.senders().values()) == {str(group.leader_pid())}


def test_the_standby_sends_the_next_tick_after_the_leader_is_killed(
    cluster: Callable[[int], Cluster],
) -> None:
    # Given two scheduler processes, the leader having sent 12:01
    group = cluster(2)
    group.move_clock_to(utc("2026-01-05 12:01:00"))
    leader = group.leader_pid()
    assert leader is not None
    assert group.sends() == Counter({utc("2026-01-05 12:01:00").isoformat(): 1})

    # When the leader is killed with SIGKILL and 12:02 falls due before its lock has expired
    os.kill(leader, signal.SIGKILL)
    group.processes[leader].wait()
    group.clock.set(utc("2026-01-05 12:02:00"))

    # Then the standby takes the lock and sends 12:02 once, then 12:03 on time
    wait_for(lambda: group.leader_pid() not in (None, leader))
    wait_for(lambda: utc("2026-01-05 12:02:00").isoformat() in group.sends())
    group.move_clock_to(utc("2026-01-05 12:02:01"))
    group.move_clock_to(utc("2026-01-05 12:03:00"))
    assert group.sends() == Counter({utc(f"2026-01-05 12:0{m}:00").isoformat(): 1 for m in (1, 2, 3)})
    senders = group.senders()
    assert senders[utc("2026-01-05 12:01:00").isoformat()] == str(leader)
    survivor = str(group.leader_pid())
    assert (
        senders[utc("2026-01-05 12:02:00").isoformat()] == senders[utc("2026-01-05 12:03:00").isoformat()] == survivor
    )
