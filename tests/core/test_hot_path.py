"""The shortcuts of the per-message path behave as the code they replace: signals reach exactly the
middleware that listen, in Dramatiq's order and with its error handling, and raw round trips read every
reply, raise error replies, and recover a server that lost its scripts."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
import redis
from dramatiq.middleware import Middleware, SkipMessage


class _Records(Middleware):
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.calls.append(f"before {self.name}")

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.calls.append(f"after {self.name}")


class _Breaks(Middleware):
    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        raise RuntimeError("a bug in a middleware")


class _Skips(Middleware):
    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        raise SkipMessage("not this one")


def _listeners_of(broker: Any, hook: str) -> list[Any]:
    return [middleware for middleware, _hook in broker.listeners(hook)]


def test_signals_reach_only_listeners_in_order_and_follow_edits_of_the_middleware_list(broker):
    from dramatiq.message import Message

    calls: list[str] = []
    first, second, silent = _Records("first", calls), _Records("second", calls), Middleware()
    message = Message(queue_name="default", actor_name="noop", args=(), kwargs={}, options={})

    # Given a broker that has already emitted (its listener cache is built)
    broker.emit_before("enqueue", message, None)
    # When middleware are appended to the list directly, not through add_middleware
    broker.middleware.extend([first, silent, second])
    try:
        broker.emit_before("enqueue", message, None)
        broker.emit_after("enqueue", message, None)
        # Then they are called, before-hooks in list order and after-hooks in reverse, as Dramatiq does
        assert calls == ["before first", "before second", "after second", "after first"]
        # And a middleware that only inherits the base class's no-op is not among the listeners
        assert silent not in _listeners_of(broker, "before_enqueue")
        assert first in _listeners_of(broker, "before_enqueue")
    finally:
        for middleware in (first, silent, second):
            broker.middleware.remove(middleware)
    # And once removed, they are called no more
    calls.clear()
    broker.emit_before("enqueue", message, None)
    assert calls == [] and first not in _listeners_of(broker, "before_enqueue")


def test_a_hook_set_on_an_instance_is_a_listener(broker):
    calls: list[str] = []
    patched = Middleware()
    patched.before_ack = lambda broker, message: calls.append("ack")  # type: ignore[method-assign]
    broker.middleware.append(patched)
    try:
        broker.emit_before("ack", object())
    finally:
        broker.middleware.remove(patched)
    assert calls == ["ack"]


def test_a_failing_hook_is_logged_and_the_others_still_run_but_a_middleware_error_stops_the_signal(broker):
    from dramatiq.message import Message

    calls: list[str] = []
    message = Message(queue_name="default", actor_name="noop", args=(), kwargs={}, options={})
    broken, after_broken = _Breaks(), _Records("after the broken one", calls)
    broker.middleware.extend([broken, after_broken])
    try:
        # A bug in one middleware is logged (as Dramatiq logs it) and does not stop the next
        broker.emit_before("enqueue", message, None)
        assert calls == ["before after the broken one"]
    finally:
        broker.middleware.remove(broken)
        broker.middleware.remove(after_broken)

    calls.clear()
    skips, after_skips = _Skips(), _Records("after the skipping one", calls)
    broker.middleware.extend([skips, after_skips])
    try:
        # A MiddlewareError (SkipMessage) is the middleware's decision: it reaches the caller
        with pytest.raises(SkipMessage):
            broker.emit_before("enqueue", message, None)
        assert calls == []
    finally:
        broker.middleware.remove(skips)
        broker.middleware.remove(after_skips)


def test_a_raw_round_trip_reads_every_reply_and_raises_the_first_error(broker, redis_client):
    from broker import RawRoundTrips

    round_trips = RawRoundTrips(redis_client)
    key = f"hot-path:{uuid.uuid4().hex}"
    # When the second of three commands fails
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        round_trips.send([("SET", key, "v"), ("LPUSH", key, "x"), ("APPEND", key, "w")])
    # Then the commands around it ran, and the kept connection is still in step: the next
    # command gets its own reply, not a leftover one
    assert round_trips.send([("GET", key)]) == [b"vw"]
    assert round_trips.send([("DEL", key), ("EXISTS", key)]) == [1, 0]
    assert len(round_trips.idle) == 1


def test_raw_round_trips_keep_a_bounded_number_of_connections_and_survive_a_killed_one(redis_client):
    import threading

    from broker import RawRoundTrips

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    round_trips = RawRoundTrips(client, keep=4)
    key = f"hot-path:{uuid.uuid4().hex}"
    # When 32 threads send at once, again and again
    barrier = threading.Barrier(32)

    def sends() -> None:
        barrier.wait()
        for _ in range(20):
            round_trips.send([("INCR", key)])

    threads = [threading.Thread(target=sends) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    # Then every command ran, and no more than `keep` connections wait between calls (the others
    # went back to the pool, which can lend them elsewhere)
    assert int(redis_client.get(key)) == 640
    assert len(round_trips.idle) <= 4
    assert len(client.connection_pool._in_use_connections) == len(round_trips.idle)

    # When the server drops every connection the object keeps
    for connection in round_trips.idle:
        redis_client.client_kill_filter(_id=_client_id(connection))
    # Then the next calls still get their replies (the broken connection is closed, the commands go
    # again through redis-py), and the calls after that reuse a working connection
    for _ in range(len(round_trips.idle) + 2):
        assert round_trips.send([("GET", key)]) == [b"640"]
    redis_client.delete(key)
    client.close()


def _client_id(connection: Any) -> int:
    connection.send_command("CLIENT", "ID")
    return int(connection.read_response())


def test_enqueue_fetch_and_ack_recover_when_the_server_lost_its_scripts(worker, broker, redis_client):
    from tests.core.sample_actors import counts
    from tests.support import wait_for_job

    # Given a running worker and a Redis that then forgets every script (as a restart does)
    assert wait_for_job(counts.send(f"hot-path:{uuid.uuid4().hex}", "before").message_id).state == "succeeded"
    redis_client.script_flush()
    # When a job is sent / Then it is enqueued, fetched, run and acknowledged all the same
    message = counts.send(f"hot-path:{uuid.uuid4().hex}", "after a script flush")
    assert wait_for_job(message.message_id).state == "succeeded"


@pytest.mark.parametrize(
    "value",
    [1765000000.5, 1765000000, 1765000000.9999996, 1765000000.0000004, "aware", "offset", "naive"],
)
def test_job_table_times_are_written_as_sqlalchemy_writes_them_on_sqlite(value):
    from datetime import UTC, datetime, timedelta, timezone

    from sqlalchemy.dialects.sqlite import DATETIME
    from sqlalchemy.dialects.sqlite.base import SQLiteDialect

    from middleware.job_status import _db_time

    moment = (
        {
            "aware": datetime(2026, 12, 6, 22, 1, 2, 345678, tzinfo=UTC),
            "offset": datetime(2026, 12, 6, 1, 2, 3, tzinfo=timezone(timedelta(hours=3))),
            "naive": datetime(2026, 12, 6, 1, 2, 3, 4),
        }.get(value)
        if isinstance(value, str)
        else value
    )
    as_utc = (moment if isinstance(moment, datetime) else datetime.fromtimestamp(moment, UTC)).astimezone(UTC)
    expected = DATETIME().bind_processor(SQLiteDialect())(as_utc.replace(tzinfo=None))
    assert _db_time(moment, sqlite=True) == expected
