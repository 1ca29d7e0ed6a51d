"""Clocks the scheduler tests move by hand, and functions that read what a scheduler sent."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta

import redis

#: The queue of ``sched_actors_cluster.py``: no worker consumes it, the tests count its messages.
CLUSTER_QUEUE = "sched-test-cluster"


def text(value: bytes | str) -> str:
    """A Redis reply as text (the client answers bytes)."""
    return value.decode() if isinstance(value, bytes) else value


class FakeClock:
    """A clock that only moves when the test says so; ``sleep`` moves it forward."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current

    def sleep(self, seconds: float) -> None:
        self.current += timedelta(seconds=max(seconds, 0.0))

    def set(self, when: datetime) -> None:
        self.current = when

    def advance(self, **delta: float) -> datetime:
        self.current += timedelta(**delta)
        return self.current


class RedisClock:
    """A clock shared by several processes: the test writes the time into Redis.

    ``sleep`` returns as soon as the time changes (or after ``seconds`` of real time), and before
    waiting it reports, under ``<key>:seen``, the time this process had read when its last turn began:
    a test that waits until every process reports time T knows each one has finished a turn at T.
    """

    def __init__(self, client: redis.Redis, key: str, *, poll: float = 0.01) -> None:
        self.client = client
        self.key = key
        self.poll = poll
        self._turn_began_at: bytes | str | None = None

    def now(self) -> datetime:
        value = self.client.get(self.key)
        if value is None:
            raise RuntimeError(f"no time set under {self.key!r}")
        return datetime.fromisoformat(text(value))

    def sleep(self, seconds: float) -> None:
        if self._turn_began_at is not None:
            self.client.hset(f"{self.key}:seen", str(os.getpid()), self._turn_began_at)
        start = self._turn_began_at
        deadline = time.monotonic() + max(seconds, 0.0)
        while time.monotonic() < deadline:
            if self.client.get(self.key) != start:
                break
            time.sleep(self.poll)
        self._turn_began_at = self.client.get(self.key)

    def set(self, when: datetime) -> None:
        self.client.set(self.key, when.isoformat())

    def seen(self) -> dict[int, datetime]:
        raw = self.client.hgetall(f"{self.key}:seen")
        return {int(pid): datetime.fromisoformat(text(value)) for pid, value in raw.items()}


def recorded_fires(client: redis.Redis, key: str) -> list[dict[str, str]]:
    """What the recording sender of ``run_scheduler_process.py`` pushed, oldest first."""
    return [json.loads(item) for item in client.lrange(key, 0, -1)]


def utc(text: str) -> datetime:
    """A UTC time from ``"2026-01-05 12:00:00"``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def wait_for(predicate: object, *, timeout: float = 30.0, interval: float = 0.02) -> None:
    """Wait until ``predicate()`` is true; fail the test after ``timeout`` seconds."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")
