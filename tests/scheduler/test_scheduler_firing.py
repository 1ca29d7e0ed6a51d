"""The scheduler's loop on a clock the test moves: on-time fires, leadership, misfires, disabled schedules.

Real Redis (leader lock, fire keys) and real SQL (``schedule_state``); the sender is injected and records.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

import pytest
import redis
from sched_support import FakeClock, utc

from scheduler import (
    BEYOND_GRACE,
    DISABLED,
    FIRED,
    MISFIRED,
    Schedule,
    Scheduler,
    build_schedule,
    load_state,
)

pytestmark = pytest.mark.usefixtures("schedule_db")


class Recorder:
    """An injected sender: remembers each (actor, scheduled time) and answers a message id."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, datetime]] = []
        self.failures_left = 0

    def __call__(self, schedule: Schedule, scheduled_at: datetime) -> str:
        if self.failures_left:
            self.failures_left -= 1
            raise ConnectionError("broker unreachable")
        self.sent.append((schedule.actor_name, scheduled_at))
        return uuid.uuid4().hex


def actor_name(label: str) -> str:
    return f"sched_test_{uuid.uuid4().hex[:8]}_{label}"


def make(
    client: redis.Redis,
    namespace: str,
    clock: FakeClock,
    schedules: list[Schedule],
    sender: Recorder,
    *,
    owner: str | None = None,
) -> Scheduler:
    return Scheduler(
        schedules, client=client, sender=sender, clock=clock, namespace=namespace, lock_ttl=2_000, owner=owner
    )


def sample(scheduler: Scheduler, metric: str, **labels: str) -> float:
    value = scheduler.metrics.registry.get_sample_value(metric, labels)
    return 0.0 if value is None else value


def test_a_schedule_fires_once_at_each_due_time_with_the_scheduled_time(
    redis_client: redis.Redis, namespace: str
) -> None:
    # Given a schedule every 5 minutes and a scheduler that leads
    name = actor_name("every5")
    clock = FakeClock(utc("2026-01-05 12:01:00"))
    sender = Recorder()
    scheduler = make(redis_client, namespace, clock, [build_schedule(name, "*/5 * * * *", timezone="UTC")], sender)
    scheduler.step()

    # When the clock passes 12:05 and 12:10, with several turns at each time
    for when in ("12:04:59", "12:05:00", "12:05:00", "12:07:30", "12:10:00", "12:10:01"):
        clock.set(utc(f"2026-01-05 {when}"))
        scheduler.step()

    # Then each due time was sent exactly once, with its scheduled time, and recorded in schedule_state
    assert sender.sent == [(name, utc("2026-01-05 12:05:00")), (name, utc("2026-01-05 12:10:00"))]
    assert sample(scheduler, "scheduler_fires_total", actor_name=name) == 2
    assert sample(scheduler, "scheduler_is_leader") == 1
    assert load_state()[name].last_fire_at == utc("2026-01-05 12:10:00")
    assert load_state()[name].last_outcome == FIRED
    scheduler.close()


def test_only_the_copy_holding_the_lock_fires_and_the_other_stands_by(
    redis_client: redis.Redis, namespace: str
) -> None:
    # Given two schedulers over the same Redis namespace
    name = actor_name("minutely")
    clock = FakeClock(utc("2026-01-05 12:00:30"))
    sender_a, sender_b = Recorder(), Recorder()
    schedule = build_schedule(name, "* * * * *", timezone="UTC")
    first = make(redis_client, namespace, clock, [schedule], sender_a, owner="a")
    second = make(redis_client, namespace, clock, [schedule], sender_b, owner="b")

    # When both turn through three due times
    for minute in (1, 2, 3):
        clock.set(utc(f"2026-01-05 12:0{minute}:00"))
        first.step()
        second.step()

    # Then the first one leads and sent each, the second sent nothing
    assert [when for _, when in sender_a.sent] == [utc(f"2026-01-05 12:0{m}:00") for m in (1, 2, 3)]
    assert sender_b.sent == []
    assert (first.is_leader, second.is_leader) == (True, False)
    assert sample(second, "scheduler_is_leader") == 0
    first.close()
    second.close()


def test_a_leader_that_lost_its_lock_stops_firing_at_once(redis_client: redis.Redis, namespace: str) -> None:
    # Given a leading scheduler
    name = actor_name("minutely")
    clock = FakeClock(utc("2026-01-05 12:00:30"))
    sender = Recorder()
    scheduler = make(redis_client, namespace, clock, [build_schedule(name, "* * * * *", timezone="UTC")], sender)
    scheduler.step()
    assert scheduler.is_leader

    # When its lock is taken by another copy (as after an expiry) and a tick falls due
    redis_client.set(f"{namespace}:leader", "someone-else", px=10_000)
    clock.set(utc("2026-01-05 12:01:00"))
    scheduler.step()

    # Then it sent nothing and no longer claims to lead
    assert sender.sent == []
    assert not scheduler.is_leader
    assert sample(scheduler, "scheduler_is_leader") == 0
    scheduler.close()


def test_a_tick_sent_by_a_leader_that_died_is_not_sent_again_by_the_next(
    redis_client: redis.Redis, namespace: str
) -> None:
    # Given a leader that sent 12:01 and died before it could record it in schedule_state
    name = actor_name("minutely")
    schedule = build_schedule(name, "* * * * *", timezone="UTC")
    clock = FakeClock(utc("2026-01-05 12:00:30"))
    old_sender = Recorder()
    old = make(redis_client, namespace, clock, [schedule], old_sender, owner="old")
    old.step()  # leads; 12:00:00 is recorded as the baseline below
    old.persist = False
    clock.set(utc("2026-01-05 12:01:00"))
    old.step()
    assert [when for _, when in old_sender.sent] == [utc("2026-01-05 12:01:00")]
    from scheduler import record_state

    record_state(name, utc("2026-01-05 12:00:00"), FIRED)
    redis_client.delete(f"{namespace}:leader")  # its lock expired

    # When a standby takes over at 12:01:20 and catches up what schedule_state says it missed
    clock.set(utc("2026-01-05 12:01:20"))
    new_sender = Recorder()
    new = make(redis_client, namespace, clock, [schedule], new_sender, owner="new")
    new.step()
    clock.set(utc("2026-01-05 12:02:00"))
    new.step()

    # Then 12:01 was not sent a second time, and the next tick was sent by the new leader
    assert new_sender.sent == [(name, utc("2026-01-05 12:02:00"))]
    new.close()


def test_a_restart_after_downtime_runs_a_missed_tick_once_within_grace_and_skips_one_beyond(
    redis_client: redis.Redis, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given two hourly schedules, one with a grace of 2 h and one of 10 min, that fired at 09:00
    generous, strict = actor_name("generous"), actor_name("strict")
    schedules = [
        build_schedule(generous, "0 * * * *", timezone="UTC", grace_ms=2 * 3_600_000),
        build_schedule(strict, "0 * * * *", timezone="UTC", grace_ms=10 * 60_000),
    ]
    clock = FakeClock(utc("2026-01-05 08:59:00"))
    before = Recorder()
    first = make(redis_client, namespace, clock, schedules, before)
    first.step()
    clock.set(utc("2026-01-05 09:00:00"))
    first.step()
    first.close()
    assert len(before.sent) == 2

    # When the scheduler was down from 09:00:01 until 11:40 (10:00 and 11:00 missed) and starts again
    clock.set(utc("2026-01-05 11:40:00"))
    after = Recorder()
    caplog.set_level(logging.WARNING, logger="scheduler")
    second = make(redis_client, namespace, clock, schedules, after)
    second.step()
    second.step()

    # Then the generous one runs once, for 11:00 (coalesced), and the strict one is skipped and counted
    assert after.sent == [(generous, utc("2026-01-05 11:00:00"))]
    assert sample(second, "scheduler_misfires_total", actor_name=generous) == 1
    assert sample(second, "scheduler_skipped_total", actor_name=strict, reason=BEYOND_GRACE) == 1
    assert sample(second, "scheduler_misfires_total", actor_name=strict) == 0
    assert any(strict in record.getMessage() and "beyond its grace" in record.getMessage() for record in caplog.records)
    state = load_state()
    assert (state[generous].last_fire_at, state[generous].last_outcome) == (
        utc("2026-01-05 11:00:00"),
        MISFIRED,
    )
    assert (state[strict].last_fire_at, state[strict].last_outcome) == (
        utc("2026-01-05 11:00:00"),
        BEYOND_GRACE,
    )

    # And at 12:00 both are back on time
    clock.set(utc("2026-01-05 12:00:00"))
    second.step()
    assert sorted(after.sent[1:]) == sorted(
        [(generous, utc("2026-01-05 12:00:00")), (strict, utc("2026-01-05 12:00:00"))]
    )
    second.close()


def test_a_disabled_schedule_never_fires_and_each_due_tick_is_counted(
    redis_client: redis.Redis, namespace: str
) -> None:
    # Given a disabled schedule every minute next to an enabled one
    off, on = actor_name("off"), actor_name("on")
    clock = FakeClock(utc("2026-01-05 12:00:30"))
    sender = Recorder()
    scheduler = make(
        redis_client,
        namespace,
        clock,
        [
            build_schedule(off, "* * * * *", timezone="UTC", enabled=False),
            build_schedule(on, "* * * * *", timezone="UTC"),
        ],
        sender,
    )

    # When three minutes pass
    for minute in (1, 2, 3):
        clock.set(utc(f"2026-01-05 12:0{minute}:00"))
        scheduler.step()

    # Then only the enabled one was sent, and the disabled one counted three skips
    assert {name for name, _ in sender.sent} == {on}
    assert len(sender.sent) == 3
    assert sample(scheduler, "scheduler_skipped_total", actor_name=off, reason=DISABLED) == 3
    assert load_state()[off].last_outcome == DISABLED
    scheduler.close()


def test_a_send_that_fails_is_retried_and_sent_once(redis_client: redis.Redis, namespace: str) -> None:
    # Given a leader whose broker refuses the first send
    name = actor_name("minutely")
    clock = FakeClock(utc("2026-01-05 12:00:30"))
    sender = Recorder()
    scheduler = make(redis_client, namespace, clock, [build_schedule(name, "* * * * *", timezone="UTC")], sender)
    scheduler.step()
    sender.failures_left = 1

    # When the tick falls due, and the scheduler turns again before and after its retry delay
    clock.set(utc("2026-01-05 12:01:00"))
    scheduler.step()
    sent_after_failure = list(sender.sent)
    clock.set(utc("2026-01-05 12:01:00.500000"))
    scheduler.step()
    sent_before_retry = list(sender.sent)
    clock.set(utc("2026-01-05 12:01:01"))
    scheduler.step()

    # Then nothing was sent until the retry, which sent the tick once
    assert sent_after_failure == sent_before_retry == []
    assert sender.sent == [(name, utc("2026-01-05 12:01:00"))]
    scheduler.close()


def test_closing_the_leader_frees_the_lock_for_a_standby(redis_client: redis.Redis, namespace: str) -> None:
    # Given a leader and a standby
    name = actor_name("minutely")
    clock = FakeClock(utc("2026-01-05 12:00:30"))
    schedule = build_schedule(name, "* * * * *", timezone="UTC")
    leader = make(redis_client, namespace, clock, [schedule], Recorder(), owner="leader")
    standby_sender = Recorder()
    standby = make(redis_client, namespace, clock, [schedule], standby_sender, owner="standby")
    leader.step()
    standby.step()

    # When the leader shuts down cleanly
    leader.close()
    clock.set(utc("2026-01-05 12:01:00"))
    standby.step()

    # Then the standby leads at its next turn and sends the tick
    assert standby.is_leader
    assert standby_sender.sent == [(name, utc("2026-01-05 12:01:00"))]
    standby.close()


def test_a_missed_run_whose_send_fails_on_restart_is_retried_and_sent_once(
    redis_client: redis.Redis, namespace: str
) -> None:
    # Given an hourly schedule that fired at 09:00, and a restart at 10:20 while the broker refuses a send
    name = actor_name("hourly")
    schedule = build_schedule(name, "0 * * * *", timezone="UTC")
    clock = FakeClock(utc("2026-01-05 08:59:00"))
    first = make(redis_client, namespace, clock, [schedule], Recorder())
    first.step()
    clock.set(utc("2026-01-05 09:00:00"))
    first.step()
    first.close()
    clock.set(utc("2026-01-05 10:20:00"))
    sender = Recorder()
    sender.failures_left = 1
    second = make(redis_client, namespace, clock, [schedule], sender)

    # When it turns, fails to send the missed 10:00, and turns again after the retry delay
    second.step()
    assert sender.sent == []
    clock.set(utc("2026-01-05 10:20:01"))
    second.step()
    second.step()

    # Then 10:00 was sent exactly once
    assert sender.sent == [(name, utc("2026-01-05 10:00:00"))]
    second.close()


def test_schedule_state_counts_each_tick_sent_late_once() -> None:
    from scheduler import record_state

    # Given a schedule whose ticks were sent on time, late, late again (that write retried), and late
    name = actor_name("counted")
    record_state(name, utc("2026-01-05 09:00:00"), MISFIRED)
    record_state(name, utc("2026-01-05 10:00:00"), FIRED)
    record_state(name, utc("2026-01-05 11:00:00"), MISFIRED)
    record_state(name, utc("2026-01-05 11:00:00"), MISFIRED)
    record_state(name, utc("2026-01-05 12:00:00"), BEYOND_GRACE)
    record_state(name, utc("2026-01-05 13:00:00"), MISFIRED)
    # And an older tick recorded after a newer one
    record_state(name, utc("2026-01-05 08:00:00"), MISFIRED)

    # Then the late ticks are counted, each once, and the last tick is the newest
    record = load_state()[name]
    assert (record.misfires, record.last_outcome, record.last_fire_at) == (3, MISFIRED, utc("2026-01-05 13:00:00"))
