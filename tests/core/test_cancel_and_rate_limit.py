"""Cancelling queued and running jobs, and rate limits shared by all workers."""

from __future__ import annotations

import uuid

import pytest

from tests.support import job, wait_for_job, wait_until


@pytest.fixture
def key() -> str:
    return f"test:{uuid.uuid4().hex}"


def test_a_cancelled_queued_job_never_runs(broker, redis_client, key):
    import dramatiq

    from pipelines import cancel
    from tests.core.sample_actors import counts

    # Given a job waiting in the queue with no worker running
    broker.flush_all()
    message = counts.send(key, "never")
    wait_until(lambda: job(message.message_id), timeout=5)

    # When it is cancelled and a worker then starts
    assert cancel(message.message_id) == "cancelled"
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=50)
    worker.start()
    try:
        later = counts.send(key, "later")
        wait_for_job(later.message_id)
    finally:
        from tests.conftest import stop_worker

        stop_worker(broker, worker)

    # Then it never ran and stays cancelled
    row = wait_for_job(message.message_id)
    assert row.state == "cancelled"
    assert not redis_client.sismember(key, "never")
    assert redis_client.sismember(key, "later")


def test_a_running_job_stops_at_its_next_progress_check_point(worker, redis_client, key):
    from pipelines import cancel
    from tests.core.sample_actors import reports_progress

    # Given a job that reports progress over 40 steps
    message = reports_progress.send(key, 40, 0.05)
    wait_until(lambda: redis_client.get(f"{key}:step"), timeout=10)

    # When it is cancelled while running
    assert cancel(message.message_id) == "cancelling"

    # Then it ends cancelled before finishing its steps
    row = wait_for_job(message.message_id, timeout=10)
    assert row.state == "cancelled"
    assert row.error_type == "JobCancelled"
    assert int(redis_client.get(f"{key}:step") or 0) < 40


def test_cancelling_a_finished_or_unknown_job_says_so(worker, key):
    from pipelines import cancel
    from tests.core.sample_actors import counts

    message = counts.send(key, "done")
    wait_for_job(message.message_id)

    assert cancel(message.message_id) == "succeeded"
    with pytest.raises(LookupError):
        cancel("no-such-job")


def test_a_rate_limit_delays_messages_over_it_and_loses_none(worker, redis_client, key):
    from tests.core.sample_actors import rate_limited

    # Given an actor limited to 3 messages per 2 seconds across all workers
    # When 7 are sent at once
    messages = [rate_limited.send(key, str(index)) for index in range(7)]

    # Then all succeed, none failed, and they did not all start in the first window
    for message in messages:
        assert wait_for_job(message.message_id, timeout=30).state == "succeeded"
    starts = sorted(float(value) for value in redis_client.lrange(f"{key}:starts", 0, -1))
    assert len(starts) == 7
    assert starts[-1] - starts[0] >= 1.0


def test_a_malformed_rate_limit_fails_where_the_actor_is_declared(broker):
    import dramatiq

    with pytest.raises(ValueError, match="actor 'badly_limited': rate limit 'ten per minute' is not of the form"):

        @dramatiq.actor(queue_name="default", rate_limit="ten per minute")
        def badly_limited() -> None:
            pass


def test_rate_limits_parse_counts_and_windows():
    from middleware.rate_limit import parse_rate

    assert parse_rate("10/m") == (10, 60)
    assert parse_rate("5/10s") == (5, 10)
    assert parse_rate("100 / h") == (100, 3600)
