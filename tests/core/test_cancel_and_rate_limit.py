"""Cancelling queued and running jobs, and rate limits shared by all workers."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import redis_broker_only
from tests.support import job, recording_enqueues, wait_for_job, wait_until


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
    wait_until(lambda: job(message.message_id), timeout=30)

    # When it is cancelled (only the request is recorded: no worker has said anything yet) and a worker
    # then starts
    assert cancel(message.message_id) == "cancelling"
    requested = job(message.message_id)
    assert requested is not None and requested.state == "queued" and requested.cancel_requested_at is not None
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=50)
    worker.start()
    try:
        later = counts.send(key, "later")
        wait_for_job(later.message_id)
    finally:
        from tests.conftest import stop_worker

        stop_worker(broker, worker)

    # Then the worker skipped it: it never ran and ended cancelled
    row = wait_for_job(message.message_id)
    assert (row.state, row.error_message) == ("cancelled", "cancelled before it ran")
    assert not redis_client.sismember(key, "never")
    assert redis_client.sismember(key, "later")


def test_a_running_job_stops_at_its_next_progress_check_point(worker, redis_client, key):
    from pipelines import cancel
    from tests.core.sample_actors import reports_progress

    # Given a job that reports progress over 400 steps (20 s: the cancel lands long before its end)
    message = reports_progress.send(key, 400, 0.05)
    wait_until(lambda: redis_client.get(f"{key}:step"), timeout=60)

    # When it is cancelled while running
    assert cancel(message.message_id) == "cancelling"

    # Then it ends cancelled before finishing its steps
    row = wait_for_job(message.message_id, timeout=60)
    assert row.state == "cancelled"
    assert row.error_type == "JobCancelled"
    assert int(redis_client.get(f"{key}:step") or 0) < 400


def test_cancelling_a_finished_or_unknown_job_says_so(worker, key):
    from pipelines import cancel
    from tests.core.sample_actors import counts

    message = counts.send(key, "done")
    wait_for_job(message.message_id)

    assert cancel(message.message_id) == "succeeded"
    with pytest.raises(LookupError):
        cancel("no-such-job")


def test_a_rate_limit_delays_messages_over_it_and_loses_none(worker, broker, redis_client, key):
    from tests.core.sample_actors import rate_limited

    # Given an actor limited to 3 messages per 2 seconds across all workers
    with recording_enqueues(broker) as recorder:
        # When 7 are sent at once
        messages = [rate_limited.send(key, str(index)) for index in range(7)]

        # Then all succeed and none failed
        for message in messages:
            assert wait_for_job(message.message_id, timeout=60).state == "succeeded"
    assert redis_client.llen(f"{key}:starts") == 7
    # And they did not all start at once: those over the limit were put back with a delay of at least
    # a window's share (2 s / 3). That is what the middleware decided, whatever the machine's load.
    delayed = recorder.delayed(rate_limited.actor_name)
    assert delayed
    assert all(delay >= 2_000 // 3 for _, delay in delayed)


def _delayed_ids(redis_client) -> set[str]:
    import json

    return {json.loads(data)["message_id"] for data in redis_client.hvals("dramatiq:default.DQ.msgs")}


@redis_broker_only  # a rate-limited delivery is put back through the Redis broker's delay queue
def test_a_rate_limited_delivery_shows_queued_not_running(worker, redis_client, key):
    from tests.core.sample_actors import rate_limited_slowly

    # Given an actor allowed one message a minute
    # When three are sent at once
    messages = [rate_limited_slowly.send(key, str(index)) for index in range(3)]
    ids = {message.message_id for message in messages}

    # Then at most one runs, and the others are put back in the delay queue
    wait_until(lambda: len(ids & _delayed_ids(redis_client)) + redis_client.llen(f"{key}:runs") == 3, timeout=30)
    delayed = ids & _delayed_ids(redis_client)
    assert len(delayed) >= 2
    # And their rows say queued: no attempt has begun
    for message_id in delayed:
        row = job(message_id)
        assert row is not None
        assert (row.state, row.attempts, row.started_at) == ("queued", 0, None)


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
