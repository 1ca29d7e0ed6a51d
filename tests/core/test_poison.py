"""Bad options cannot hide a failure: refused at send, failed at the worker, and a middleware that
breaks while an attempt's outcome is decided dead-letters the message instead of acknowledging it."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from dramatiq.middleware import Middleware

from tests.support import wait_for_job, wait_until


def test_an_option_of_the_wrong_type_is_refused_at_send(broker, redis_client):
    from middleware.options import InvalidOption
    from tests.core.sample_actors import always_fails

    broker.flush_all()
    # When a message is sent with max_retries="many" / Then the caller is told which option and why
    with pytest.raises(InvalidOption, match="'max_retries' must be a whole number of retries"):
        always_fails.send_with_options(args=("k",), max_retries="many")
    # And nothing was enqueued
    assert redis_client.llen("dramatiq:default") == 0


def test_a_message_with_a_bad_option_from_another_sender_fails_once_and_the_worker_goes_on(worker, broker):
    from dramatiq.message import Message

    from tests.core.sample_actors import always_fails, counts

    # Given a message carrying max_retries="many", pushed past the send-time check
    key = f"poison:{uuid.uuid4().hex}"
    message = always_fails.message_with_options(args=(key,))
    message = message.copy(options={"max_retries": "many", "redis_message_id": message.message_id})
    broker.do_enqueue("default", message.message_id, Message.encode(message))

    # When the worker takes it / Then it failed once as bad input, with one line naming the option
    row = wait_for_job(message.message_id)
    assert row.state == "failed" and row.attempts == 1
    assert row.error_type == "InvalidOption" and "max_retries" in (row.error_message or "")
    # And the next job runs
    assert wait_for_job(counts.send(key, "next").message_id).state == "succeeded"


class _BreaksAfterFailures(Middleware):
    """A middleware with a bug: it raises while an attempt of ``always_fails`` is being settled."""

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if exception is not None and message.actor_name == "always_fails":
            raise RuntimeError("a bug in a middleware")


def test_a_middleware_that_raises_after_a_failure_dead_letters_the_message_instead_of_losing_it(
    worker, broker, redis_client
):
    from tests.core.sample_actors import always_fails

    # Given a middleware that breaks when a failed attempt is settled (it runs first of the after-hooks)
    broken = _BreaksAfterFailures()
    broker.middleware.append(broken)
    try:
        # When a job fails
        key = f"poison:{uuid.uuid4().hex}"
        message = always_fails.send(key)
        row = wait_for_job(message.message_id, states=frozenset({"dead"}))
    finally:
        broker.middleware.remove(broken)

    # Then the job is dead, not left running or silently acknowledged, and its message is in the
    # dead-letter queue where it can be replayed
    assert row.state == "dead" and row.attempts == 1

    def dead_letter_ids() -> set[str]:
        return {json.loads(body)["message_id"] for body in redis_client.hvals("dramatiq:default.XQ.msgs")}

    wait_until(lambda: message.message_id in dead_letter_ids(), timeout=30)


def test_a_message_for_an_unknown_actor_gets_a_dead_row_that_says_why(worker, broker, redis_client):
    from dramatiq.message import Message

    from tests.core.sample_actors import counts

    # Given a message for an actor no worker has (a typo, or a worker running older code)
    message = Message(queue_name="default", actor_name="no_such_actor", args=(1,), kwargs={}, options={})
    message = message.copy(options={"redis_message_id": message.message_id})
    broker.do_enqueue("default", message.message_id, message.encode())

    # When a worker takes it / Then its job row says it is dead and why, in one line
    row = wait_for_job(message.message_id)
    assert row.state == "dead" and row.error_type == "ActorNotFound"
    assert row.error_message and "no_such_actor" in row.error_message and "\n" not in row.error_message
    # And it waits in the dead-letter queue, and the worker goes on
    assert redis_client.hexists("dramatiq:default.XQ.msgs", message.message_id)
    assert wait_for_job(counts.send("poison", "after-unknown").message_id).state == "succeeded"


def test_an_error_that_quotes_a_url_with_a_password_is_stored_without_it(worker, broker):
    import dramatiq

    secret = "s3cret-Planted-99"

    # Given an actor whose library error quotes a connection URL, password included
    @dramatiq.actor(queue_name="default", max_retries=0, actor_name="quotes_a_dsn")
    def quotes_a_dsn() -> None:
        raise ConnectionError(f'could not connect to "postgresql://app:{secret}@db.internal/jobs"')

    # When it fails
    row = wait_for_job(quotes_a_dsn.send().message_id)

    # Then the row keeps the message, with the password masked, in the error and the traceback
    assert row.state in {"failed", "dead"}
    assert "postgresql://app:***@db.internal/jobs" in (row.error_message or "")
    assert secret not in (row.error_message or "") and secret not in (row.traceback or "")
