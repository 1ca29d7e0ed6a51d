"""The scheduler: fires the actors declared ``periodic=cron(...)``, one leader among any number of copies.

``python scheduler.py`` imports the ``actors`` package, finds every actor whose options carry ``periodic``
(periodiq's ``cron()``), registers an APScheduler cron job per actor and sends the actor's message when it
is due, with the scheduled time in the message's ``scheduled_at`` option. ``--list`` prints the schedules.

Why the pieces are there (docs/scheduler.md has the state table):

- One leader. Every copy runs the same loop; only the copy holding a Redis lock (``SET NX PX``, renewed
  every third of its TTL) fires. A standby polls for the lock and takes over once the dead leader's lock
  expires. A leader that fails to renew stops firing at once.
- One send per tick. Before sending, the leader claims a fire key (actor + scheduled time) in one Lua
  script that also checks it still holds the lock; a tick whose key exists was sent already, by this copy
  or by a leader that died right after sending, and is never sent again.
- Misfires. The last tick handled per actor is kept in the ``schedule_state`` table. On becoming leader
  (at start or on takeover) the copy looks at what it missed since then: the latest missed tick is sent
  once (coalesced) if it is within the actor's grace, otherwise it is skipped, logged and counted.
- Time comes from a ``Clock`` so tests drive it; the lock TTL is Redis time, and the lock is renewed on
  the process's monotonic clock, so a test clock that stands still never lets the lock lapse.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis
from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from settings import settings

logger = logging.getLogger("scheduler")

#: What ``last_outcome`` of ``schedule_state`` holds; the same words label the log lines.
FIRED = "fired"  # sent on time
MISFIRED = "misfired"  # sent once, late, after downtime or a takeover (within grace)
BEYOND_GRACE = "beyond_grace"  # missed by more than the grace: not sent
DISABLED = "disabled"  # due but the schedule is disabled: not sent

#: Seconds before a send that raised (broker unreachable) is tried again.
RETRY_SEND_AFTER = 1.0

_NAMED_SPECS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class ScheduleError(Exception):
    """A periodic actor's declaration cannot be scheduled (bad cron, unknown timezone, bad grace)."""


class Clock(Protocol):
    """Where the scheduler reads the time and waits; tests pass one they move by hand."""

    def now(self) -> datetime:
        """The current time, timezone-aware."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait about ``seconds``; may return early."""
        ...


class SystemClock:
    """The real clock; ``wake()`` ends a sleep early so a stop request is served at once."""

    def __init__(self) -> None:
        self._wake = threading.Event()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        self._wake.wait(max(seconds, 0.0))
        self._wake.clear()

    def wake(self) -> None:
        self._wake.set()


# -- declarations -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """One periodic actor as the scheduler sees it."""

    actor_name: str
    queue_name: str
    cron: str
    timezone: str
    enabled: bool
    grace_ms: int
    trigger: BaseTrigger
    #: The dramatiq actor; ``None`` where a test injects its own sender.
    actor: Any = None


def _expand_weekdays(field: str) -> list[int]:
    """Crontab day-of-week values (0 or 7 = Sunday, names allowed, ranges and steps) as 0..6."""
    values: set[int] = set()
    for part in field.lower().split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"bad step in day of week {field!r}")
        if span in ("*", "?"):
            start, end = 0, 6
        else:
            first, _, last = span.partition("-")
            start = _weekday_number(first)
            end = _weekday_number(last) if last else (7 if step_text else start)
        if not (0 <= start <= 7 and 0 <= end <= 7 and start <= end):
            raise ValueError(f"day of week out of range in {field!r}")
        values.update(day % 7 for day in range(start, end + 1, step))
    return sorted(values)


def _weekday_number(text: str) -> int:
    if text in _WEEKDAYS:
        return _WEEKDAYS.index(text)
    if not text.isdigit():
        raise ValueError(f"bad day of week {text!r}")
    return int(text)


def cron_trigger(spec: str, timezone: ZoneInfo) -> BaseTrigger:
    """An APScheduler trigger for a crontab expression, with crontab's meaning kept.

    Five fields (minute hour day month weekday) or six with a leading seconds field; ``@daily`` and the
    other named specs of periodiq. Weekdays are crontab's (0 or 7 = Sunday), not APScheduler 3's
    (0 = Monday), and when both day of month and day of week are restricted either one matches, as in
    cron and periodiq.
    """
    text = spec.strip()
    text = _NAMED_SPECS.get(text, text)
    fields = text.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ValueError(f"expected 5 fields (or 6 with seconds first), got {len(fields)}")
    second, minute, hour, day, month, weekday = fields
    days = _expand_weekdays(weekday)
    day_of_week = "*" if len(days) == 7 else ",".join(_WEEKDAYS[d] for d in days)
    common = {"second": second, "minute": minute, "hour": hour, "month": month, "timezone": timezone}
    if not day.startswith(("*", "?")) and not weekday.startswith(("*", "?")):
        return OrTrigger([CronTrigger(day=day, **common), CronTrigger(day_of_week=day_of_week, **common)])
    if day == "?":
        day = "*"
    return CronTrigger(day=day, day_of_week=day_of_week, **common)


def build_schedule(
    actor_name: str,
    spec: object,
    *,
    timezone: str,
    enabled: bool = True,
    grace_ms: int | None = None,
    queue_name: str = "default",
    actor: Any = None,
) -> Schedule:
    """Check one declaration and build its schedule; every error names the actor."""
    # periodiq's CronSpec prints the expression it was parsed from.
    cron = spec if isinstance(spec, str) else str(spec)
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ScheduleError(f"actor {actor_name!r}: unknown timezone {timezone!r}") from None
    try:
        trigger = cron_trigger(cron, zone)
    except (ValueError, TypeError, KeyError) as exc:
        raise ScheduleError(f"actor {actor_name!r}: invalid cron expression {cron!r}: {exc}") from None
    grace = settings.scheduler_misfire_grace if grace_ms is None else grace_ms
    if not isinstance(grace, int) or isinstance(grace, bool) or grace < 0:
        raise ScheduleError(f"actor {actor_name!r}: schedule_grace must be milliseconds >= 0, got {grace!r}")
    return Schedule(
        actor_name=actor_name,
        queue_name=queue_name,
        cron=cron,
        timezone=timezone,
        enabled=bool(enabled),
        grace_ms=grace,
        trigger=trigger,
        actor=actor,
    )


def schedules_from_actors(actors: Iterable[Any], *, timezone: str | None = None) -> list[Schedule]:
    """A schedule per actor whose options carry ``periodic``, sorted by actor name."""
    schedules = []
    for actor in actors:
        options = actor.options
        if "periodic" not in options:
            continue
        schedules.append(
            build_schedule(
                actor.actor_name,
                options["periodic"],
                timezone=options.get("schedule_timezone") or timezone or settings.scheduler_timezone,
                enabled=options.get("schedule_enabled", True),
                grace_ms=options.get("schedule_grace"),
                queue_name=actor.queue_name,
                actor=actor,
            )
        )
    return sorted(schedules, key=lambda schedule: schedule.actor_name)


def latest_tick(trigger: BaseTrigger, *, after: datetime, now: datetime) -> datetime | None:
    """The latest fire time in ``(after, now]``, or None.

    Looks back from ``now`` in windows that double in size, from one minute, so neither a week of downtime
    of a schedule that fires every second nor a yearly schedule is walked tick by tick.
    """
    span = timedelta(minutes=1)
    while True:
        start = max(after, now - span)
        tick = trigger.get_next_fire_time(start, start)
        if tick is None or tick > now:
            if start == after:
                return None
            span *= 2
            continue
        while True:
            following = trigger.get_next_fire_time(tick, tick)
            if following is None or following > now:
                return tick
            tick = following


# -- state ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleRecord:
    """A row of ``schedule_state``: the last tick handled and what happened to it."""

    last_fire_at: datetime | None
    last_outcome: str | None
    misfires: int = 0


def _aware(value: datetime | None) -> datetime | None:
    # SQLite gives back naive datetimes; every time stored here is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def load_state() -> dict[str, ScheduleRecord]:
    """Every row of ``schedule_state`` by actor name."""
    from storage.db import session_scope
    from storage.models import ScheduleState

    with session_scope() as session:
        return {
            row.actor: ScheduleRecord(_aware(row.last_fire_at), row.last_outcome, row.misfires or 0)
            for row in session.query(ScheduleState).all()
        }


def record_state(actor_name: str, tick: datetime, outcome: str) -> None:
    """Remember that ``tick`` was handled; an older tick never overwrites a newer one."""
    record_states([(actor_name, tick, outcome)])


def record_states(records: Iterable[tuple[str, datetime, str]]) -> None:
    """``record_state`` for several (actor, tick, outcome), in one transaction."""
    from storage.db import session_scope
    from storage.models import ScheduleState

    with session_scope() as session:
        for actor_name, tick, outcome in records:
            tick = tick.astimezone(UTC)
            row = session.get(ScheduleState, actor_name)
            if row is None:
                misfires = 1 if outcome == MISFIRED else 0
                session.add(ScheduleState(actor=actor_name, last_fire_at=tick, last_outcome=outcome, misfires=misfires))
                session.flush()
                continue
            last = _aware(row.last_fire_at)
            if last is None or last <= tick:
                # A tick recorded again (a retried write) is counted once.
                if outcome == MISFIRED and (last is None or last < tick or row.last_outcome != MISFIRED):
                    row.misfires = (row.misfires or 0) + 1
                row.last_fire_at = tick
                row.last_outcome = outcome


# -- the leader lock -----------------------------------------------------------------------------------

# Take the lock if it is free or ours; else answer how long (ms) the holder's lock still lives.
_ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 0
end
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
  return 0
end
return redis.call('pttl', KEYS[1])
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
# Claiming a tick and checking the lock in one script: a copy that lost the lock can never claim.
_CLAIM = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then
  return -1
end
if redis.call('set', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"""


class LeaderLock:
    """A Redis lock held by one scheduler at a time, with the fire keys checked under it."""

    def __init__(self, client: redis.Redis, *, key: str, owner: str, ttl_ms: int) -> None:
        self.client = client
        self.key = key
        self.owner = owner
        self.ttl_ms = ttl_ms
        #: Seconds the other copy's lock still lives, as of the last failed ``acquire()``.
        self.held_elsewhere_for = 0.0
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._claim = client.register_script(_CLAIM)

    def acquire(self) -> bool:
        """Take the lock if it is free (or already ours); else note when the holder's lock expires."""
        remaining = int(self._acquire(keys=[self.key], args=[self.owner, self.ttl_ms]))
        # A lock with no TTL (set by hand) has no expiry to wait for: poll as usual.
        self.held_elsewhere_for = remaining / 1000 if remaining > 0 else float("inf")
        return remaining == 0

    def renew(self) -> bool:
        """Extend the lock; False when another copy holds it or it expired."""
        return bool(self._renew(keys=[self.key], args=[self.owner, self.ttl_ms]))

    def release(self) -> None:
        self._release(keys=[self.key], args=[self.owner])

    def claim(self, fire_key: str, ttl_ms: int) -> int:
        """1: claimed, send it; 0: sent already; -1: this copy no longer holds the lock."""
        return int(self._claim(keys=[self.key, fire_key], args=[self.owner, ttl_ms]))


# -- metrics -------------------------------------------------------------------------------------------


class SchedulerMetrics:
    """The scheduler's own series (docs/metrics.md), in a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.fires = Counter(
            "scheduler_fires", "Periodic messages sent on time.", ["actor_name"], registry=self.registry
        )
        self.misfires = Counter(
            "scheduler_misfires",
            "Late runs sent once after downtime (within grace).",
            ["actor_name"],
            registry=self.registry,
        )
        self.skipped = Counter(
            "scheduler_skipped",
            "Runs not sent (beyond_grace, disabled).",
            ["actor_name", "reason"],
            registry=self.registry,
        )
        self.is_leader = Gauge(
            "scheduler_is_leader", "1 when this scheduler holds the leader lock.", registry=self.registry
        )
        self.fire_delay = Histogram(
            "scheduler_fire_delay_seconds",
            "Sent time minus scheduled time.",
            ["actor_name"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
            registry=self.registry,
        )


# -- the scheduler -------------------------------------------------------------------------------------

#: Sends one run of a schedule; returns the message id.
Sender = Callable[[Schedule, datetime], str]


def send_periodic(schedule: Schedule, scheduled_at: datetime) -> str:
    """Send the actor's message with the scheduled time (ISO 8601, UTC) in its options."""
    if schedule.actor is None:
        raise ScheduleError(f"actor {schedule.actor_name!r}: no actor to send")
    message = schedule.actor.send_with_options(scheduled_at=scheduled_at.astimezone(UTC).isoformat())
    return str(message.message_id)


class _JobRegistry(BaseScheduler):
    """APScheduler holding one job per schedule; the ``Scheduler`` loop, not APScheduler's, runs them.

    APScheduler 3 reads the wall clock in its own loop and executors; using it for the jobs and their
    triggers while the loop runs on the injected clock keeps time controllable.
    """

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)

    def wakeup(self) -> None:
        pass


def _noop() -> None:
    pass


class Scheduler:
    """Fires schedules from one leader among any number of copies sharing a Redis.

    Parameters:
      schedules(list[Schedule]): what to fire.
      client(redis.Redis): where the leader lock and the fire keys live.
      sender(Sender): sends one run; default ``send_periodic``.
      clock(Clock): default ``SystemClock()``.
      lock_ttl(int): leader lock TTL in milliseconds; renewed every third of it. Default: the
        ``SCHEDULER_LOCK_TTL_MS`` setting.
      namespace(str): prefix of the Redis keys; copies that share it share one leader. Default "scheduler".
      owner(str): this copy's name in the lock. Default host:pid:random.
      persist(bool): read and write ``schedule_state``. Default True.
      metrics(SchedulerMetrics): where the series go. Default: a registry of this scheduler's own.
    """

    def __init__(
        self,
        schedules: Sequence[Schedule],
        *,
        client: redis.Redis,
        sender: Sender = send_periodic,
        clock: Clock | None = None,
        lock_ttl: int | None = None,
        namespace: str = "scheduler",
        owner: str | None = None,
        persist: bool = True,
        metrics: SchedulerMetrics | None = None,
    ) -> None:
        self.schedules = {schedule.actor_name: schedule for schedule in schedules}
        self.sender = sender
        self.clock: Clock = clock or SystemClock()
        self.namespace = namespace
        self.persist = persist
        self.metrics = metrics or SchedulerMetrics()
        ttl = settings.scheduler_lock_ttl if lock_ttl is None else lock_ttl
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lock = LeaderLock(client, key=f"{namespace}:leader", owner=self.owner, ttl_ms=ttl)
        self.logger = logging.getLogger(f"scheduler.{type(self).__name__}")
        self.is_leader = False
        self._renew_every = ttl / 3 / 1000
        self._poll_every = min(ttl / 10 / 1000, 0.5)
        self._renewed_at = 0.0
        self._last_handled: dict[str, datetime] = {}
        self._stopping = False
        #: When (clock time) a send that failed may be tried again.
        self._retry_at: datetime | None = None
        self._unwritten: list[tuple[str, datetime, str]] = []

        # APScheduler's own INFO lines (job added, scheduler started) say nothing an operator needs.
        jobs_logger = logging.getLogger("scheduler.jobs")
        jobs_logger.setLevel(logging.WARNING)
        self.jobs = _JobRegistry(timezone=UTC, logger=jobs_logger)
        now = self.clock.now()
        for schedule in self.schedules.values():
            self.jobs.add_job(
                _noop,
                trigger=schedule.trigger,
                id=schedule.actor_name,
                name=schedule.actor_name,
                next_run_time=schedule.trigger.get_next_fire_time(None, now),
                coalesce=True,
                misfire_grace_time=None,
                max_instances=1,
            )
        self.jobs.start()

    # The loop.

    def run(self) -> None:
        """Turn until ``stop()``; releases the lock on the way out so a standby takes over at once."""
        self.logger.info("Scheduler %s starting with %d schedule(s).", self.owner, len(self.schedules))
        try:
            while not self._stopping:
                try:
                    wait = self.step()
                except Exception:
                    self.logger.exception("Scheduler turn failed; trying again.")
                    wait = self._poll_every
                if not self._stopping:
                    self.clock.sleep(wait)
        finally:
            self.close()

    def stop(self) -> None:
        """Ask ``run()`` to return after the current turn."""
        self._stopping = True
        wake = getattr(self.clock, "wake", None)
        if callable(wake):
            wake()

    def close(self) -> None:
        """Give the lock up and stop the job registry."""
        if self.is_leader:
            try:
                self.lock.release()
            except redis.RedisError:
                self.logger.warning("Could not release the leader lock; it expires on its own.")
            self._set_leader(False)
        if self.jobs.state != STATE_STOPPED:
            self.jobs.shutdown(wait=False)

    def step(self) -> float:
        """One turn: keep or seek the lock, fire what is due; returns the seconds to wait."""
        monotonic = time.monotonic()
        if self.is_leader and monotonic - self._renewed_at >= self._renew_every:
            try:
                renewed = self.lock.renew()
            except redis.RedisError as error:
                self._lose_leadership(f"Redis did not answer ({error!r})")
                raise
            if renewed:
                self._renewed_at = monotonic
            else:
                self._lose_leadership("the lock expired or was taken")
        try:
            wait = self._turn(monotonic)
        finally:
            self._write_state()
        # Measured after the state was written, so a slow database does not make the next fire late.
        return self._wait_seconds() if wait is None else wait

    def _turn(self, monotonic: float) -> float | None:
        if not self.is_leader:
            if not self.lock.acquire():
                # Wake right as a dead leader's lock runs out, so takeover takes no longer than its TTL.
                return min(self._poll_every, self.lock.held_elsewhere_for + 0.001)
            self._renewed_at = monotonic
            self._set_leader(True)
            self._catch_up(self.clock.now())
        if self._retry_at is not None:
            left = (self._retry_at - self.clock.now()).total_seconds()
            if left > 0:
                return min(self._renew_every, left)
            self._retry_at = None
        if self.is_leader:
            self._fire_due(self.clock.now())
        if not self.is_leader:
            return self._poll_every
        if self._retry_at is not None:
            return min(self._renew_every, max((self._retry_at - self.clock.now()).total_seconds(), 0.0))
        return None

    def _wait_seconds(self) -> float:
        upcoming = [job.next_run_time for job in self.jobs.get_jobs() if job.next_run_time is not None]
        wait = self._renew_every
        if upcoming:
            wait = min(wait, (min(upcoming) - self.clock.now()).total_seconds())
        return max(wait, 0.0)

    def _set_leader(self, leader: bool) -> None:
        self.is_leader = leader
        self.metrics.is_leader.set(1 if leader else 0)
        if leader:
            self.logger.info("Scheduler %s is the leader.", self.owner)

    def _lose_leadership(self, why: str) -> None:
        self.logger.warning(
            "Scheduler %s stopped firing: %s (lock last renewed %.2fs ago).",
            self.owner,
            why,
            time.monotonic() - self._renewed_at,
        )
        self._set_leader(False)

    # Firing.

    def _catch_up(self, now: datetime) -> None:
        """On becoming leader: send once what was missed since the last recorded tick, resync the jobs."""
        state: dict[str, ScheduleRecord] = {}
        if self.persist:
            try:
                state = load_state()
            except Exception:
                self.logger.exception("Could not read schedule_state; missed runs are not caught up.")
        for name, schedule in self.schedules.items():
            record = state.get(name)
            last = record.last_fire_at if record else None
            known = self._last_handled.get(name)
            if known is not None and (last is None or known > last):
                last = known
            tick = latest_tick(schedule.trigger, after=last, now=now) if last and schedule.enabled else None
            if tick is not None:
                try:
                    handled = self._handle(schedule, tick, now, catch_up=True)
                except Exception:
                    # Left due: the next turns retry it like any due tick, while within its grace.
                    self.logger.exception("%s: sending the missed run of %s failed; retrying.", name, tick)
                    self.jobs.modify_job(name, next_run_time=tick)
                    self._retry_at = self.clock.now() + timedelta(seconds=RETRY_SEND_AFTER)
                    continue
                if not handled:
                    return
            self.jobs.modify_job(name, next_run_time=schedule.trigger.get_next_fire_time(None, now))

    def _fire_due(self, now: datetime) -> None:
        for job in self.jobs.get_jobs():
            first = job.next_run_time
            if first is None or first > now:
                continue
            schedule = self.schedules[job.id]
            tick = first
            coalesced = 0
            while True:
                following = schedule.trigger.get_next_fire_time(tick, tick)
                if following is None or following > now:
                    break
                tick, coalesced = following, coalesced + 1
            if coalesced:
                self.logger.info(
                    "%s: %d tick(s) before %s coalesced into one run.",
                    schedule.actor_name,
                    coalesced,
                    tick.isoformat(),
                )
            try:
                handled = self._handle(schedule, tick, now, catch_up=False)
            except Exception:
                self.logger.exception("%s: sending the run of %s failed; retrying.", job.id, tick.isoformat())
                self.jobs.modify_job(job.id, next_run_time=tick)
                self._retry_at = self.clock.now() + timedelta(seconds=RETRY_SEND_AFTER)
                return
            if not handled:
                return
            self.jobs.modify_job(job.id, next_run_time=schedule.trigger.get_next_fire_time(tick, tick))

    def _handle(self, schedule: Schedule, tick: datetime, now: datetime, *, catch_up: bool) -> bool:
        """Decide and send one tick; False when the lock was lost (stop firing)."""
        name = schedule.actor_name
        tick = tick.astimezone(UTC)
        known = self._last_handled.get(name)
        if known is not None and tick <= known:
            return True
        if not schedule.enabled:
            self.logger.debug("%s: tick %s not sent, schedule disabled.", name, tick.isoformat())
            self.metrics.skipped.labels(name, DISABLED).inc()
            self._remember(name, tick, DISABLED)
            return True
        late = now - tick
        if late > timedelta(milliseconds=schedule.grace_ms):
            self.logger.warning(
                "%s: tick %s skipped, %.0fs late is beyond its grace of %.0fs.",
                name,
                tick.isoformat(),
                late.total_seconds(),
                schedule.grace_ms / 1000,
            )
            self.metrics.skipped.labels(name, BEYOND_GRACE).inc()
            self._remember(name, tick, BEYOND_GRACE)
            return True
        fire_key = f"{self.namespace}:fired:{name}:{tick.isoformat()}"
        claimed = self.lock.claim(fire_key, schedule.grace_ms + 60_000)
        if claimed < 0:
            self._lose_leadership(f"the lock was gone before sending {name} at {tick.isoformat()}")
            return False
        if claimed == 0:
            self.logger.info("%s: tick %s was sent already; not sending again.", name, tick.isoformat())
            self._last_handled[name] = tick
            return True
        try:
            message_id = self.sender(schedule, tick)
        except Exception:
            # Give the claim back so the retry (or another leader) may send this tick.
            self.lock.client.delete(fire_key)
            raise
        sent_at = self.clock.now()
        self.metrics.fire_delay.labels(name).observe(max((sent_at - tick).total_seconds(), 0.0))
        outcome = MISFIRED if catch_up else FIRED
        (self.metrics.misfires if catch_up else self.metrics.fires).labels(name).inc()
        self.logger.info(
            "%s: %s run of %s as message %s.",
            name,
            "sent late" if catch_up else "sent",
            tick.isoformat(),
            message_id,
        )
        self._remember(name, tick, outcome)
        return True

    def _remember(self, name: str, tick: datetime, outcome: str) -> None:
        self._last_handled[name] = tick
        if self.persist:
            self._unwritten.append((name, tick, outcome))

    def _write_state(self) -> None:
        # Written once per turn, after every due run of the turn was sent, so that the database's
        # latency never delays the next send.
        if not self._unwritten:
            return
        records, self._unwritten = self._unwritten, []
        try:
            record_states(records)
        except Exception:
            # The fire keys still stop a second send; only the catch-up after a restart is weaker.
            self.logger.exception("Could not record %d tick(s) in schedule_state.", len(records))


def format_listing(schedules: Sequence[Schedule], state: dict[str, ScheduleRecord], now: datetime) -> str:
    """The ``--list`` table: actor, cron, timezone, enabled, last fire (outcome), next fire."""
    header = ("actor", "queue", "cron", "timezone", "enabled", "last fire", "next fire")
    rows = [header]
    for schedule in schedules:
        record = state.get(schedule.actor_name)
        if record and record.last_fire_at is not None:
            last = f"{record.last_fire_at.isoformat()} ({record.last_outcome})"
        else:
            last = "never"
        upcoming = schedule.trigger.get_next_fire_time(None, now)
        rows.append(
            (
                schedule.actor_name,
                schedule.queue_name,
                schedule.cron,
                schedule.timezone,
                "yes" if schedule.enabled else "no",
                last,
                upcoming.isoformat() if upcoming and schedule.enabled else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


# -- the command ---------------------------------------------------------------------------------------


def leader_client(broker: Any) -> redis.Redis:
    """The broker's Redis (or ``REDIS_URL`` beside RabbitMQ): the leader lock lives there."""
    from broker import redis_client_for

    client = redis_client_for(broker)
    if client is None:
        raise ScheduleError("the scheduler keeps its leader lock in Redis: set REDIS_URL")
    return client


def load_declarations(modules: Sequence[str] = ()) -> tuple[Any, list[Schedule]]:
    """Import ``actors`` (and ``modules``) and return the broker and its schedules."""
    import dramatiq

    importlib.import_module("actors")
    for module in modules:
        importlib.import_module(module)
    broker = dramatiq.get_broker()
    return broker, schedules_from_actors(broker.actors.values())


def keep_metrics_in_memory() -> None:
    """The scheduler is one process: its series live in its own registry, not in the workers' directory.

    A ``PROMETHEUS_MULTIPROC_DIR`` inherited from a worker's environment would otherwise make
    prometheus-client write the scheduler's series there too, and the workers' endpoint would serve them.
    """
    from prometheus_client import values

    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    values.ValueClass = values.MutexValue


def make_argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scheduler.py",
        description="Fire the actors declared periodic=cron(...); run any number of copies, one leads.",
    )
    parser.add_argument("modules", nargs="*", help="more modules to import after the actors package")
    parser.add_argument("--list", action="store_true", help="print each schedule and exit")
    parser.add_argument("--verbose", "-v", action="count", default=0, help="more log output")
    return parser


def main(argv: Sequence[str] | None = None, *, clock: Clock | None = None) -> int:
    """``python scheduler.py``: returns the process's exit status."""
    args = make_argument_parser().parse_args(argv)
    keep_metrics_in_memory()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else (logging.WARNING if args.list else logging.INFO),
        format="[%(asctime)s] [PID %(process)d] [%(threadName)s] [%(name)s] [%(levelname)s] %(message)s",
    )
    from broker import ConfigurationError

    try:
        broker, schedules = load_declarations(args.modules)
        client = leader_client(broker)
    except (ScheduleError, ConfigurationError) as exc:
        print(f"scheduler: {exc}", file=sys.stderr)
        return 2

    from storage.db import migrate

    migrate()
    clock = clock or SystemClock()
    if args.list:
        print(format_listing(schedules, load_state(), clock.now()))
        return 0
    if not schedules:
        logger.error("No periodic actor to schedule.")
        return 1

    scheduler = Scheduler(schedules, client=client, clock=clock)
    if settings.scheduler_metrics_port:
        start_http_server(
            settings.scheduler_metrics_port, addr=settings.metrics_host, registry=scheduler.metrics.registry
        )

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("Stopping on signal %d.", signum)
        scheduler.stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    scheduler.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
