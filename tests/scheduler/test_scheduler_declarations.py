"""Turning periodiq declarations into APScheduler triggers, and refusing bad ones with the actor's name."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from periodiq import cron
from sched_support import utc

from scheduler import ScheduleError, build_schedule, latest_tick


def fire_times(spec: object, start: str, count: int, timezone: str = "UTC") -> list[str]:
    schedule = build_schedule("sched_test_times", spec, timezone=timezone)
    times, previous = [], None
    now = utc(start)
    for _ in range(count):
        previous = schedule.trigger.get_next_fire_time(previous, now)
        now = previous
        times.append(previous.astimezone(ZoneInfo("UTC")).strftime("%a %Y-%m-%d %H:%M:%S"))
    return times


def test_a_periodiq_cron_spec_fires_at_its_minutes() -> None:
    # Given periodiq's cron("0 3 * * *") (daily at 03:00)
    # When the next fire times are computed from 2026-01-05 12:00 UTC
    times = fire_times(cron("0 3 * * *"), "2026-01-05 12:00:00", 2)

    # Then they are 03:00 of the next two days
    assert times == ["Tue 2026-01-06 03:00:00", "Wed 2026-01-07 03:00:00"]


def test_weekday_numbers_keep_their_crontab_meaning_where_zero_is_sunday() -> None:
    # Given "0 9 * * 0" (Sunday 09:00 in crontab; Monday in APScheduler 3's own numbering)
    # When the next fire time is computed from Monday 2026-01-05
    times = fire_times(cron("0 9 * * 0"), "2026-01-05 12:00:00", 1)

    # Then it is the coming Sunday, as cron and periodiq mean it
    assert times == ["Sun 2026-01-11 09:00:00"]


def test_weekday_ranges_and_names_are_read_as_crontab_reads_them() -> None:
    # Given weekdays Monday to Friday written as numbers and as names
    by_number = fire_times(cron("30 8 * * 1-5"), "2026-01-09 12:00:00", 2)
    by_name = fire_times(cron("30 8 * * mon-fri"), "2026-01-09 12:00:00", 2)

    # Then from Friday noon the next runs are Monday and Tuesday
    assert by_number == by_name == ["Mon 2026-01-12 08:30:00", "Tue 2026-01-13 08:30:00"]


def test_day_of_month_and_weekday_both_restricted_fire_on_either_as_in_cron() -> None:
    # Given "0 0 13 * 5" (the 13th, or any Friday)
    times = fire_times(cron("0 0 13 * 5"), "2026-01-05 12:00:00", 3)

    # Then Friday the 9th, Tuesday the 13th and Friday the 16th all match
    assert times == ["Fri 2026-01-09 00:00:00", "Tue 2026-01-13 00:00:00", "Fri 2026-01-16 00:00:00"]


def test_named_specs_and_a_leading_seconds_field_are_understood() -> None:
    # Given @hourly and a six-field expression with seconds first
    hourly = fire_times(cron("@hourly"), "2026-01-05 12:00:01", 1)
    every_ten_seconds = fire_times("*/10 * * * * *", "2026-01-05 12:00:01", 3)

    # Then they fire at the top of the hour and every ten seconds
    assert hourly == ["Mon 2026-01-05 13:00:00"]
    assert every_ten_seconds == [
        "Mon 2026-01-05 12:00:10",
        "Mon 2026-01-05 12:00:20",
        "Mon 2026-01-05 12:00:30",
    ]


def test_a_schedule_follows_its_timezone_across_daylight_saving() -> None:
    # Given 09:00 every day in Europe/Paris, across the change to summer time on 2026-03-29
    times = fire_times(cron("0 9 * * *"), "2026-03-28 00:00:00", 2, timezone="Europe/Paris")

    # Then 09:00 Paris is 08:00 UTC before and 07:00 UTC after
    assert times == ["Sat 2026-03-28 08:00:00", "Sun 2026-03-29 07:00:00"]


@pytest.mark.parametrize("spec", ["61 * * * *", "0 25 * * *", "* * * *", "0 0 * * 9", "every day", "0 0 32 * *"])
def test_an_invalid_cron_expression_is_refused_with_the_actor_name(spec: str) -> None:
    # Given an actor declared with an invalid expression
    # When its schedule is built
    with pytest.raises(ScheduleError) as error:
        build_schedule("maintenance.bad_cleanup", spec, timezone="UTC")

    # Then the error names the actor and the expression
    assert "maintenance.bad_cleanup" in str(error.value)
    assert "invalid cron expression" in str(error.value)


def test_an_unknown_timezone_is_refused_with_the_actor_name() -> None:
    # Given an actor scheduled in a timezone that does not exist
    # When its schedule is built
    with pytest.raises(ScheduleError) as error:
        build_schedule("reports.daily_summary", cron("0 3 * * *"), timezone="Mars/Olympus_Mons")

    # Then the error names the actor and the timezone
    assert "reports.daily_summary" in str(error.value)
    assert "Mars/Olympus_Mons" in str(error.value)


def test_a_negative_grace_is_refused_with_the_actor_name() -> None:
    # Given an actor declared with a negative grace
    # When its schedule is built
    with pytest.raises(ScheduleError) as error:
        build_schedule("sched_test_grace", cron("* * * * *"), timezone="UTC", grace_ms=-1)

    # Then the error names the actor and the option
    assert "sched_test_grace" in str(error.value)
    assert "schedule_grace" in str(error.value)


def test_the_latest_missed_tick_is_found_after_a_long_downtime() -> None:
    # Given a schedule every second, last handled a week before now
    schedule = build_schedule("sched_test_seconds", "* * * * * *", timezone="UTC")
    now = utc("2026-01-12 12:00:00.500000")

    # When the latest tick since then is looked up
    tick = latest_tick(schedule.trigger, after=utc("2026-01-05 12:00:00"), now=now)

    # Then it is the last whole second before now, nothing is found when nothing was missed, and a
    # yearly schedule missed for years finds its last new year
    assert tick == utc("2026-01-12 12:00:00")
    assert latest_tick(schedule.trigger, after=tick, now=now) is None
    yearly = build_schedule("sched_test_yearly", cron("@yearly"), timezone="UTC")
    assert latest_tick(yearly.trigger, after=utc("2023-06-01 00:00:00"), now=now) == utc("2026-01-01 00:00:00")
