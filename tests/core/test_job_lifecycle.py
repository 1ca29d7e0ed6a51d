"""Retries, permanent errors, dead letters, callbacks, states and progress, through a real worker."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import redis_broker_only
from tests.support import dead_letters, job, recording_enqueues, wait_for_job, wait_until


@pytest.fixture
def key() -> str:
    return f"test:{uuid.uuid4().hex}"


def test_a_transient_failure_is_retried_with_growing_backoff_until_it_succeeds(worker, broker, key):
    from tests.core.sample_actors import flaky

    # Given an actor that fails twice and then succeeds, with a 200 ms base backoff
    with recording_enqueues(broker) as recorder:
        # When it is sent
        message = flaky.send(key, 2)

        # Then it succeeds on its third attempt
        row = wait_for_job(message.message_id, timeout=60)
    assert row.state == "succeeded"
    assert row.attempts == 3
    assert row.result == json.dumps("recovered")
    # And the retries were scheduled 200 ms and then 400 ms later (±20% jitter): the delays the
    # middleware chose, not how long the busy machine took to run them
    first_delay, second_delay = recorder.delays(message.message_id)
    assert 160 <= first_delay <= 240
    assert 320 <= second_delay <= 480
    # And each failed attempt keeps its own error and traceback, though the row now shows none
    from pipelines.ops import failed_attempts

    assert row.error_type is None and row.traceback is None
    attempts = failed_attempts(row)
    assert [(a["attempt"], a["state"], a["error_message"]) for a in attempts] == [
        (1, "retrying", "transient failure 1"),
        (2, "retrying", "transient failure 2"),
    ]
    assert all("ConnectionError: transient failure" in a["traceback"] for a in attempts)


def test_a_failed_attempt_merged_in_memory_with_the_next_one_is_still_recorded() -> None:
    # Given a retrying row and its next attempt's rows recorded before the writer flushed any of them
    import time

    from middleware.job_status import writer
    from storage.jobs import attempts_of, get_job

    job_id = f"merge-{uuid.uuid4().hex}"
    now = time.time()
    base = {"id": job_id, "actor": "flaky", "queue": "default", "updated_at": now}
    failed = {"error_type": "ConnectionError", "error_message": "first", "traceback": "Traceback: first"}
    with writer.write_lock:  # the writer thread cannot flush in between
        writer.record({**base, "seq": 12, "state": "retrying", "attempts": 1, **failed})
        writer.record({**base, "seq": 21, "state": "running", "attempts": 2})
        writer.record({**base, "seq": 23, "state": "succeeded", "attempts": 2, "finished_at": now, "result": "1"})

    # When they are written as one row
    writer.flush()

    # Then the row is the second attempt's, and the first attempt's error is in job_attempts
    row = get_job(job_id)
    assert row is not None and row.state == "succeeded" and row.error_type is None
    assert [(a.attempt, a.state, a.error_message) for a in attempts_of(job_id)] == [(1, "retrying", "first")]


def test_actors_retry_a_max_number_of_times_then_the_message_is_dead_lettered(worker, broker, redis_client, key):
    from tests.core.sample_actors import always_fails

    # Given an actor that always fails and allows two retries
    # When it is sent
    message = always_fails.send(key)

    # Then it runs three times and ends dead with the error's type and message
    row = wait_for_job(message.message_id, timeout=30)
    assert row.state == "dead"
    assert row.attempts == 3
    assert row.error_type == "RuntimeError"
    assert row.error_message == "this actor always fails"
    assert "always_fails" in (row.traceback or "")
    assert redis_client.llen(f"{key}:attempts") == 3
    # And the message sits in the queue's dead-letter set
    wait_until(lambda: dead_letters(broker) >= 1, timeout=30)


def test_bad_input_is_never_retried_and_the_job_fails_with_its_reason(worker, redis_client, key):
    from tests.core.sample_actors import rejects_input

    message = rejects_input.send(key)

    row = wait_for_job(message.message_id, timeout=30)
    assert row.state == "failed"
    assert row.attempts == 1
    assert row.error_type == "InvalidArgument"
    assert row.error_message == "the file is not a PDF"
    assert redis_client.llen(f"{key}:attempts") == 1


def test_retry_on_limits_retries_to_the_named_exceptions(worker, redis_client, key):
    from tests.core.sample_actors import retries_only_connection_errors

    message = retries_only_connection_errors.send(key)

    row = wait_for_job(message.message_id, timeout=30)
    assert row.state == "failed"
    assert row.error_type == "ValueError"
    assert redis_client.llen(f"{key}:attempts") == 1


def test_a_job_moves_through_queued_running_and_succeeded_with_progress(worker, redis_client, key):
    from tests.core.sample_actors import reports_progress

    # Given a job that reports progress in five steps
    message = reports_progress.send(key, 5, 0.3)

    # Then the row shows it queued or running, then partial progress, then done at 100%
    first = wait_until(lambda: job(message.message_id), timeout=60)
    assert first.state in {"queued", "running"}
    assert first.enqueued_at is not None
    assert first.actor == "reports_progress" and first.queue == "default"
    partial = wait_until(
        lambda: (row := job(message.message_id)) is not None and 0 < (row.progress or 0) < 100 and row, timeout=60
    )
    assert partial.state == "running"
    assert partial.progress_note is not None and partial.progress_note.startswith("step ")
    done = wait_for_job(message.message_id, timeout=60)
    assert done.state == "succeeded"
    assert done.progress == 100.0
    assert json.loads(done.result or "null") == {"steps": 5}
    assert done.started_at is not None and done.finished_at is not None
    assert done.finished_at >= done.started_at
    assert json.loads(done.args or "{}") == {"args": [key, 5, 0.3], "kwargs": {}}


def test_callbacks_run_on_success_and_on_final_failure(worker, redis_client, key):
    from tests.core.sample_actors import with_callbacks

    ok = with_callbacks.send(key, False)
    bad = with_callbacks.send(key, True)

    wait_for_job(ok.message_id)
    wait_for_job(bad.message_id)
    calls = wait_until(lambda: len(values := redis_client.lrange(f"{key}:callbacks", 0, -1)) == 2 and values)
    outcomes = sorted((json.loads(value)["outcome"] for value in calls), key=str)
    assert {"key": key} in outcomes
    failure = next(outcome for outcome in outcomes if "type" in outcome)
    assert failure == {"type": "InvalidArgument", "message": "asked to fail", "state": "failed"}


def test_an_actor_called_with_wrong_argument_types_fails_naming_the_argument(worker):
    from tests.core.sample_actors import typed

    wrong_type = typed.send("/tmp/x", "three")
    missing = typed.send_with_options(args=("/tmp/x",))
    good = typed.send("/tmp/x", 3, 2, ["a"])

    row = wait_for_job(wrong_type.message_id)
    assert row.state == "failed"
    assert row.error_type == "ArgumentMismatch"
    assert "'count' must be int, got str" in (row.error_message or "")
    row = wait_for_job(missing.message_id)
    assert row.state == "failed"
    assert "missing a required argument: 'count'" in (row.error_message or "")
    assert wait_for_job(good.message_id).state == "succeeded"


def test_a_message_for_an_unknown_actor_is_dead_lettered_and_the_worker_goes_on(worker, broker, redis_client, key):
    from dramatiq import Message

    from tests.core.sample_actors import counts

    # Given a message naming an actor nobody declared
    broker.enqueue(Message(queue_name="default", actor_name="no_such_actor", args=(), kwargs={}, options={}))
    # When a good message follows it
    good = counts.send(key, "after")

    # Then the good one runs and the bad one is in the dead-letter set
    assert wait_for_job(good.message_id).state == "succeeded"
    wait_until(lambda: dead_letters(broker) >= 1, timeout=30)


@redis_broker_only
def test_a_malformed_message_pushed_raw_is_dead_lettered_and_the_worker_survives(worker, redis_client, key):
    from tests.core.sample_actors import counts

    # Given bytes that are not a message, pushed straight into the queue
    redis_client.hset("dramatiq:default.msgs", "raw-garbage", b"{not json")
    redis_client.rpush("dramatiq:default", "raw-garbage")
    redis_client.lpush("dramatiq:__notify__.default", 1)

    # When a good message follows
    good = counts.send(key, "after-garbage")

    # Then the worker survives to run it, and the garbage is dead-lettered
    assert wait_for_job(good.message_id).state == "succeeded"
    wait_until(lambda: redis_client.zscore("dramatiq:default.XQ", "raw-garbage") is not None, timeout=30)
    assert redis_client.hget("dramatiq:default.XQ.msgs", "raw-garbage") == b"{not json"


def test_job_rows_are_read_by_id_in_batches_and_unknown_ids_are_left_out(worker, key):
    from storage.jobs import get_jobs
    from tests.core.sample_actors import counts

    # Given three finished jobs
    ids = [counts.send(key, str(index)).message_id for index in range(3)]
    for message_id in ids:
        wait_for_job(message_id)

    # When they are read with more unknown ids than one batch holds
    found = get_jobs([*ids, *(str(uuid.uuid4()) for _ in range(600))])

    # Then exactly the three come back, each under its id
    assert sorted(found) == sorted(ids)
    assert {row.state for row in found.values()} == {"succeeded"}
