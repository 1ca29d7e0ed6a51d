"""``python scheduler.py``: the ``--list`` table, and refusing bad declarations at start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import redis
from sched_support import text, utc, wait_for

from scheduler import FIRED, record_state

pytestmark = pytest.mark.usefixtures("schedule_db")

ROOT = Path(__file__).resolve().parents[2]


def run_scheduler(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scheduler.py", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def row_of(output: str, actor: str) -> list[str]:
    line = next(line for line in output.splitlines() if line.startswith(actor + " "))
    return line.split()


def test_list_prints_each_periodic_actor_with_cron_timezone_state_and_next_fire() -> None:
    # Given declared schedules (Paris weekdays, a disabled one, a six-field one) and a recorded last fire
    record_state("sched_test_listed_morning_report", utc("2026-01-05 08:00:00"), FIRED)

    # When the schedules are listed
    result = run_scheduler("--list", "tests.scheduler.sched_actors_listed")

    # Then each actor is a row with its queue, cron, timezone, enabled flag, last and next fire
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0].split()
    assert header[:5] == ["actor", "queue", "cron", "timezone", "enabled"]
    morning = row_of(result.stdout, "sched_test_listed_morning_report")
    assert morning[1:8] == ["default", "0", "9", "*", "*", "1-5", "Europe/Paris"]
    assert morning[8] == "yes"
    assert morning[9:11] == ["2026-01-05T08:00:00+00:00", "(fired)"]
    assert morning[11].endswith(("T09:00:00+01:00", "T09:00:00+02:00"))  # next weekday 09:00 in Paris
    disabled = row_of(result.stdout, "sched_test_listed_disabled_digest")
    assert disabled[1] == "market"
    assert disabled[-3:] == ["no", "never", "-"]
    heartbeat = row_of(result.stdout, "sched_test_listed_heartbeat")
    assert heartbeat[2:8] == ["*/10", "*", "*", "*", "*", "*"]
    # And the platform's own maintenance schedules are there too
    assert row_of(result.stdout, "health_check")[2:7] == ["*/5", "*", "*", "*", "*"]


def test_an_invalid_cron_expression_fails_at_start_naming_the_actor() -> None:
    # Given an actor declared with minute 61
    # When the scheduler starts (to run, and to list)
    running = run_scheduler("tests.scheduler.sched_actors_bad_cron")
    listing = run_scheduler("--list", "tests.scheduler.sched_actors_bad_cron")

    # Then both stop at once with an error naming the actor and the expression
    for result in (running, listing):
        assert result.returncode == 2
        assert "sched_test_bad_cron_cleanup" in result.stderr
        assert "invalid cron expression '61 * * * *'" in result.stderr


def test_an_unknown_timezone_fails_at_start_naming_the_actor() -> None:
    # Given an actor scheduled in a timezone that does not exist
    # When the scheduler starts
    result = run_scheduler("tests.scheduler.sched_actors_bad_timezone")

    # Then it stops with an error naming the actor and the timezone
    assert result.returncode == 2
    assert "sched_test_bad_timezone_report" in result.stderr
    assert "unknown timezone 'Mars/Olympus_Mons'" in result.stderr


def test_an_unknown_default_timezone_setting_fails_at_start_naming_an_actor() -> None:
    # Given SCHEDULER_TIMEZONE set to a zone that does not exist
    # When the scheduler starts
    result = run_scheduler("--list", env={"SCHEDULER_TIMEZONE": "Nowhere/Atlantis"})

    # Then it stops with an error naming an actor that uses it, and the zone
    assert result.returncode == 2
    assert "unknown timezone 'Nowhere/Atlantis'" in result.stderr
    assert "actor '" in result.stderr


def test_the_scheduler_leads_serves_its_metrics_and_gives_the_lock_back_on_sigterm(
    redis_client: redis.Redis,
) -> None:
    # Given the scheduler started as an operator starts it
    port = os.environ["SCHEDULER_METRICS_PORT"]
    process = subprocess.Popen(
        [sys.executable, "scheduler.py"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        # When it has started
        def metrics() -> str:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:
                    return str(response.read().decode())
            except OSError:
                return ""

        wait_for(lambda: "scheduler_is_leader 1.0" in metrics(), timeout=60)

        # Then it holds the leader lock and serves its series
        holder = text(redis_client.get("scheduler:leader") or b"")
        assert holder.split(":")[1] == str(process.pid)
        assert "# TYPE scheduler_fires_total counter" in metrics()

        # And on SIGTERM it exits cleanly and frees the lock for a standby
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert redis_client.get("scheduler:leader") is None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
