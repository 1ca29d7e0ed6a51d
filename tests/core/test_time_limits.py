"""Soft and hard time limits, through a real worker."""

from __future__ import annotations

import uuid

import pytest

from tests.support import wait_for_job, wait_until


@pytest.fixture
def key() -> str:
    return f"test:{uuid.uuid4().hex}"


def test_the_soft_limit_raises_inside_the_actor_so_it_can_clean_up(worker, redis_client, key):
    from tests.core.sample_actors import cleans_up_at_soft_limit

    message = cleans_up_at_soft_limit.send(key)

    row = wait_for_job(message.message_id, timeout=60)
    assert row.state == "dead"
    assert row.error_type == "SoftTimeLimitExceeded"
    assert redis_client.get(f"{key}:cleaned") == b"1"


def test_the_hard_limit_stops_an_actor_blocked_on_a_subprocess_and_the_worker_serves_the_next(
    worker, redis_client, key
):
    from tests.core.sample_actors import counts, ignores_soft_limit_in_subprocess

    # Given an actor waiting on `sleep 60` (the soft limit cannot interrupt a wait in C)
    message = ignores_soft_limit_in_subprocess.send(key)
    wait_until(lambda: redis_client.get(f"{key}:started"), timeout=60)

    # Then the hard limit ends it well before the subprocess would have
    row = wait_for_job(message.message_id, timeout=60)
    assert row.state == "dead"
    assert row.error_type == "HardTimeLimitExceeded"
    assert redis_client.get(f"{key}:returned") is None
    # And the worker serves the next message
    after = counts.send(key, "next")
    assert wait_for_job(after.message_id, timeout=60).state == "succeeded"


def test_the_hard_limit_stops_an_actor_blocked_inside_a_c_call(worker, redis_client, key):
    from tests.core.sample_actors import blocked_in_c_call, counts

    message = blocked_in_c_call.send(key)

    row = wait_for_job(message.message_id, timeout=60)
    assert row.state == "dead"
    assert row.error_type == "HardTimeLimitExceeded"
    assert redis_client.get(f"{key}:returned") is None
    after = counts.send(key, "next")
    assert wait_for_job(after.message_id, timeout=60).state == "succeeded"


def test_a_thread_that_will_not_stop_is_abandoned_and_replaced(worker, redis_client, key):
    from tests.core.sample_actors import counts, stuck_in_uninterruptible_sleep

    # Given a worker with four threads, all of them stuck in a sleep that resumes after signals
    stuck = [stuck_in_uninterruptible_sleep.send(f"{key}:{index}") for index in range(4)]

    # Then each attempt is ended about two seconds after its hard limit
    for message in stuck:
        row = wait_for_job(message.message_id, timeout=60)
        assert row.state == "dead"
        assert row.error_type == "HardTimeLimitExceeded"
        assert "abandoned" in (row.error_message or "")
    # And fresh threads serve new work while the stuck ones are still asleep
    after = counts.send(key, "next")
    assert wait_for_job(after.message_id, timeout=60).state == "succeeded"
    assert redis_client.get(f"{key}:0:returned") is None
