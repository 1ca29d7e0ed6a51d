"""Periodic runs through the project's broker and a real worker: on time, caught up, or too old to start."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.middleware import CurrentMessage
from periodiq import cron
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from sched_support import FakeClock, text

from scheduler import Schedule, Scheduler, schedules_from_actors, send_periodic
from tests.support import wait_for_job, wait_until

pytestmark = pytest.mark.usefixtures("schedule_db")


@dataclass
class PeriodicActors:
    """Two periodic actors made for one test; each run pushes its ``scheduled_at`` on a Redis list."""

    every_minute: Any
    strict: Any
    runs_key: str

    def runs(self, client: redis.Redis) -> list[str]:
        return [text(item) for item in client.lrange(self.runs_key, 0, -1)]


@pytest.fixture
def periodic_actors(broker: Any, redis_client: redis.Redis) -> Iterator[PeriodicActors]:
    suffix = uuid.uuid4().hex[:8]
    runs_key = f"test-scheduler-runs-{suffix}"

    def record_run() -> str:
        message = CurrentMessage.get_current_message()
        scheduled_at = message.options.get("scheduled_at", "by hand") if message else "unknown"
        redis_client.rpush(runs_key, scheduled_at)
        return scheduled_at

    every_minute = dramatiq.actor(
        actor_name=f"sched_test_every_minute_{suffix}", queue_name="default", periodic=cron("* * * * *")
    )(record_run)
    strict = dramatiq.actor(
        actor_name=f"sched_test_strict_{suffix}",
        queue_name="default",
        periodic=cron("0 * * * *"),
        schedule_grace=60_000,
    )(record_run)
    yield PeriodicActors(every_minute, strict, runs_key)
    for actor in (every_minute, strict):
        broker.actors.pop(actor.actor_name, None)
    redis_client.delete(runs_key)


def stale_skips(actor_name: str) -> float:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
    value = registry.get_sample_value("scheduler_skipped_total", {"actor_name": actor_name, "reason": "stale"})
    return value or 0.0


def test_a_periodic_actor_fires_on_time_through_a_real_worker(
    periodic_actors: PeriodicActors, worker: Any, redis_client: redis.Redis, namespace: str
) -> None:
    # Given a scheduler over the real broker whose clock stands just before the current minute's tick
    tick = datetime.now(UTC).replace(second=0, microsecond=0)
    clock = FakeClock(tick - timedelta(seconds=1))
    schedules = schedules_from_actors([periodic_actors.every_minute])
    sent: list[str] = []

    def send(schedule: Schedule, scheduled_at: datetime) -> str:
        sent.append(send_periodic(schedule, scheduled_at))
        return sent[-1]

    scheduler = Scheduler(schedules, client=redis_client, sender=send, clock=clock, namespace=namespace)
    scheduler.step()

    # When the tick falls due
    clock.set(tick)
    scheduler.step()
    scheduler.close()

    # Then one message was sent, the worker ran it, and the actor saw its scheduled time
    assert len(sent) == 1
    job = wait_for_job(sent[0])
    assert job.state == "succeeded"
    assert periodic_actors.runs(redis_client) == [tick.isoformat()]


def test_a_catch_up_run_sent_long_after_its_time_is_not_dropped_by_the_worker(
    periodic_actors: PeriodicActors, worker: Any, redis_client: redis.Redis
) -> None:
    # Given a run scheduled 20 minutes ago, as a scheduler back from downtime sends it (grace 1 h);
    # periodiq's own middleware drops anything older than 30 seconds
    scheduled_at = (datetime.now(UTC) - timedelta(minutes=20)).replace(microsecond=0).isoformat()

    # When it is sent and a worker picks it up
    message = periodic_actors.every_minute.send_with_options(scheduled_at=scheduled_at)

    # Then it runs
    assert wait_for_job(message.message_id).state == "succeeded"
    assert periodic_actors.runs(redis_client) == [scheduled_at]


def test_a_run_that_waited_in_its_queue_past_its_grace_is_skipped_and_counted(
    periodic_actors: PeriodicActors, worker: Any, redis_client: redis.Redis
) -> None:
    # Given a run of an actor with a 1 minute grace, scheduled 10 minutes ago (a backed-up queue)
    scheduled_at = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    before = stale_skips(periodic_actors.strict.actor_name)

    # When a worker picks it up
    message = periodic_actors.strict.send_with_options(scheduled_at=scheduled_at)

    # Then it does not run; its job ends with the reason, and the skip is counted as stale
    job = wait_for_job(message.message_id)
    assert job.state == "cancelled"
    assert job.error_message == "skipped: past its schedule grace"
    assert periodic_actors.runs(redis_client) == []
    wait_until(lambda: stale_skips(periodic_actors.strict.actor_name) == before + 1, timeout=10)


def test_a_periodic_actor_sent_by_hand_runs_whatever_its_grace(
    periodic_actors: PeriodicActors, worker: Any, redis_client: redis.Redis
) -> None:
    # Given a periodic actor with a short grace
    # When it is sent by hand, with no scheduled time
    message = periodic_actors.strict.send()

    # Then it runs
    assert wait_for_job(message.message_id).state == "succeeded"
    assert periodic_actors.runs(redis_client) == ["by hand"]


def test_a_retry_of_a_periodic_run_is_not_skipped_for_being_late(
    periodic_actors: PeriodicActors, worker: Any, redis_client: redis.Redis
) -> None:
    # Given a run of the 1-minute-grace actor scheduled 10 minutes ago, on its second attempt (a retry
    # whose backoff made it late on purpose)
    scheduled_at = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()

    # When a worker picks it up
    message = periodic_actors.strict.send_with_options(scheduled_at=scheduled_at, retries=1)

    # Then it runs
    assert wait_for_job(message.message_id).state == "succeeded"
    assert periodic_actors.runs(redis_client) == [scheduled_at]
