"""The operator's CLI, run as a real process against real Redis and the test database."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import redis_broker_only
from tests.support import wait_for_job, wait_until

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_submitting_to_an_unknown_actor_is_one_clear_line_and_a_failure_code(broker):
    result = cli("submit", "no_such_actor", "[]")

    assert result.returncode == 1
    assert result.stderr.startswith("error: unknown actor 'no_such_actor'; known actors:")
    assert len(result.stderr.strip().splitlines()) == 1


def test_submitting_invalid_json_is_one_clear_line_and_a_failure_code(broker):
    result = cli("submit", "health_check", "[1,")

    assert result.returncode == 1
    assert result.stderr.strip() == "error: arguments are not valid JSON: Expecting value at column 4"


def test_submit_wait_follows_the_job_to_its_end(worker):
    result = cli("submit", "health_check", "--wait", "--timeout", "60")

    assert result.returncode == 0, result.stderr
    job_id = result.stdout.splitlines()[0]
    assert "succeeded" in result.stdout
    assert "100.0%" in result.stderr
    assert wait_for_job(job_id).state == "succeeded"


def test_submit_wait_exits_non_zero_when_the_job_fails(worker):
    result = cli("submit", "cleanup_cache", '["many"]', "--wait", "--timeout", "60")

    assert result.returncode == 1
    assert "ArgumentMismatch: cleanup_cache: argument 'days' must be float | None, got str" in result.stdout


def test_jobs_status_and_cancel_show_the_job_table(worker):
    from tests.core.sample_actors import counts

    key = f"test:{uuid.uuid4().hex}"
    message = counts.send(key, "x")
    wait_for_job(message.message_id)

    listing = cli("jobs", "--actor", "counts", "--state", "succeeded", "--since", "1h")
    assert listing.returncode == 0
    assert message.message_id in listing.stdout
    assert listing.stdout.splitlines()[0].split()[:3] == ["id", "actor", "state"]

    status = cli("status", message.message_id)
    assert status.returncode == 0
    assert "\nstate      succeeded\n" in status.stdout

    cancel = cli("cancel", message.message_id)
    assert cancel.returncode == 0
    assert "not cancelled: the job ended succeeded" in cancel.stdout

    unknown = cli("status", "nope")
    assert unknown.returncode == 1 and unknown.stderr.strip() == "error: no job with id 'nope'"
    bad_state = cli("jobs", "--state", "exploded")
    assert bad_state.returncode == 1 and "--state must be one of" in bad_state.stderr
    bad_since = cli("jobs", "--since", "yesterday")
    expected = "error: --since must look like 30m, 2h, 7d or an ISO date, got 'yesterday'"
    assert bad_since.returncode == 1 and bad_since.stderr.strip() == expected


@redis_broker_only
def test_dead_letters_can_be_listed_replayed_and_purged(worker, redis_client):
    from tests.core.sample_actors import always_fails

    key = f"test:{uuid.uuid4().hex}"
    dead = always_fails.send(key)
    assert wait_for_job(dead.message_id, timeout=30).state == "dead"
    wait_until(lambda: redis_client.zcard("dramatiq:default.XQ") >= 1, timeout=30)

    listing = cli("dead-letters", "list", "--queue", "default")
    assert dead.message_id in listing.stdout and "always_fails" in listing.stdout

    replay = cli("dead-letters", "replay", dead.message_id)
    assert replay.returncode == 0, replay.stderr
    fresh_id = replay.stdout.strip().rsplit(" ", 1)[1]
    fresh = wait_for_job(fresh_id, timeout=30)
    assert fresh.parent_id == dead.message_id
    assert fresh.state == "dead"
    assert redis_client.llen(f"{key}:attempts") == 6

    purge = cli("dead-letters", "purge", "--queue", "default")
    assert purge.returncode == 0 and purge.stdout.startswith("purged")
    assert redis_client.zcard("dramatiq:default.XQ") == 0


def test_queues_workers_and_purge_report_the_broker(worker, broker, redis_client):
    from tests.core.sample_actors import counts

    queues = cli("queues")
    assert queues.returncode == 0
    assert [line.split()[0] for line in queues.stdout.splitlines()[2:]][:2] == ["priority", "default"]

    workers = cli("workers")
    assert workers.returncode == 0
    assert str(os.getpid()) in workers.stdout

    worker.pause()
    try:
        for index in range(3):
            counts.send("purge-test", str(index))
        purge = cli("purge", "default")
        assert purge.returncode == 0 and purge.stdout.strip() == "purged queue default"
        assert redis_client.llen("dramatiq:default") == 0
    finally:
        worker.resume()
    unknown = cli("purge", "nowhere")
    assert unknown.returncode == 1 and "unknown queue 'nowhere'" in unknown.stderr


@pytest.mark.parametrize("args", [["submit"], ["frobnicate"]])
def test_usage_errors_exit_with_code_two(args):
    result = cli(*args)
    assert result.returncode == 2
    assert "usage:" in result.stderr
