"""Outcomes on their way to the job table: adopted only from workers that stopped, bounded in an outage."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.core.process_support import ROOT, kill, start_worker, stop
from tests.support import job, wait_for_job, wait_until


@pytest.fixture
def key() -> str:
    return f"test:{uuid.uuid4().hex}"


def _outcome_hashes(redis_client, ignore: frozenset[str] = frozenset()) -> dict[str, int]:
    """Rows per writer hash that hold outcomes on their way to the table (but those in ``ignore``)."""
    from middleware.job_status import FINISHED_PREFIX

    return {
        name.decode(): redis_client.hlen(name)
        for name in redis_client.scan_iter(f"{FINISHED_PREFIX}*", count=1000)
        if redis_client.type(name) == b"hash" and name.decode() not in ignore
    }


def _forget_other_tests_outcomes(redis_client) -> None:
    """Drop what workers killed by earlier tests left in Redis, so this test sees only its own workers."""
    from middleware.job_status import FINISHED_PREFIX, WRITERS_KEY

    stale = list(redis_client.scan_iter(f"{FINISHED_PREFIX}*", count=1000))
    redis_client.delete(WRITERS_KEY, *stale)


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "METRICS_ENABLED": "false", **extra}


def test_only_the_rows_of_a_writer_that_stopped_beating_are_adopted(broker, redis_client, caplog):
    from middleware.job_status import FINISHED_PREFIX, WRITERS_KEY, _encode_row, adopt_orphans

    # Given an outcome row in the Redis hash of a writer that beat a moment ago
    job_id = str(uuid.uuid4())
    writer_id = f"elsewhere:{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    row = {"id": job_id, "seq": 13, "state": "succeeded", "actor": "counts", "queue": "default", "attempts": 1,
           "finished_at": now, "updated_at": now}  # fmt: skip
    redis_client.hset(f"{FINISHED_PREFIX}.{writer_id}", f"{job_id}/13", _encode_row(row))
    redis_client.zadd(WRITERS_KEY, {writer_id: int(time.time() * 1000)})

    # When another worker looks for orphans, it leaves the live writer's row alone
    with caplog.at_level(logging.WARNING, logger="middleware.job_status"):
        assert adopt_orphans(redis_client) == 0
    assert "stopped before writing" not in caplog.text
    assert job(job_id) is None

    # Then once the writer has been silent past the heartbeat timeout, its row is recorded, and said so
    redis_client.zadd(WRITERS_KEY, {writer_id: int(time.time() * 1000) - 3_600_000})
    with caplog.at_level(logging.WARNING, logger="middleware.job_status"):
        assert adopt_orphans(redis_client) == 1
    expected = f"Recorded 1 job outcomes left by worker {writer_id} (silent for 60 min), which stopped before"
    assert expected in caplog.text
    assert job(job_id).state == "succeeded"  # type: ignore[union-attr]
    assert not redis_client.exists(f"{FINISHED_PREFIX}.{writer_id}")
    assert redis_client.zscore(WRITERS_KEY, writer_id) is None


def test_a_writer_is_listed_before_any_of_its_rows_reaches_redis(broker, redis_client):
    from middleware.job_status import FINISHED_PREFIX, WRITERS_KEY, JobWriter, adopt_orphans

    # Given a worker process whose threads acknowledge two jobs at the same moment, and a kill that
    # lands before the first thread's round trip runs: only the second's row and acknowledgement land
    writer = JobWriter(interval=1.0, max_rows=100, orphan_age=10.0)
    writer.redis = redis_client
    now = time.time()
    rows = [
        {"id": str(uuid.uuid4()), "seq": 13, "state": "succeeded", "actor": "counts", "queue": "default",
         "attempts": 1, "finished_at": now, "updated_at": now}
        for _ in range(2)
    ]  # fmt: skip
    for row in rows:
        row["fields"] = [f"{row['id']}/13"]
    killed_before_its_round_trip = redis_client.pipeline(transaction=False)
    writer.persist(rows[0], killed_before_its_round_trip)
    landed = redis_client.pipeline(transaction=False)
    writer.persist(rows[1], landed)
    landed.execute()
    writer.retire()
    writer.beat_thread.join(5)  # type: ignore[union-attr]
    try:
        # Then the hash that holds the settled job's row is one other workers look at
        assert redis_client.zscore(WRITERS_KEY, writer.writer_id) is not None
        # And once the writer has been silent past the heartbeat timeout, its row reaches the table
        redis_client.zadd(WRITERS_KEY, {writer.writer_id: int(time.time() * 1000) - 3_600_000})
        assert adopt_orphans(redis_client) == 1
        assert job(rows[1]["id"]).state == "succeeded"  # type: ignore[union-attr]
    finally:
        redis_client.zrem(WRITERS_KEY, writer.writer_id)
        redis_client.delete(f"{FINISHED_PREFIX}.{writer.writer_id}")


def test_a_stopped_writer_of_another_job_table_is_left_to_its_own_workers(broker, redis_client):
    from middleware.job_status import FINISHED_PREFIX, WRITERS_KEY, _encode_row, adopt_orphans, job_table_tag

    # Given a writer of another deployment's job table, sharing this Redis, silent for an hour
    other_table = f"dramatiq:__finished_writers__.{job_table_tag('postgresql://taskforge@elsewhere/other')}"
    assert other_table != WRITERS_KEY
    job_id = str(uuid.uuid4())
    writer_id = f"elsewhere:{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    row = {"id": job_id, "seq": 13, "state": "succeeded", "actor": "counts", "queue": "default", "attempts": 1,
           "finished_at": now, "updated_at": now}  # fmt: skip
    redis_client.hset(f"{FINISHED_PREFIX}.{writer_id}", f"{job_id}/13", _encode_row(row))
    redis_client.zadd(other_table, {writer_id: int(time.time() * 1000) - 3_600_000})
    try:
        # When a worker of this table looks for orphans
        assert adopt_orphans(redis_client) == 0
        # Then the row stays in Redis for a worker of its own table, and never lands in this one
        assert job(job_id) is None
        assert redis_client.hexists(f"{FINISHED_PREFIX}.{writer_id}", f"{job_id}/13")
    finally:
        redis_client.delete(other_table, f"{FINISHED_PREFIX}.{writer_id}")


def test_the_job_table_tag_ignores_the_password_and_the_working_directory(tmp_path, monkeypatch):
    from middleware.job_status import job_table_tag

    monkeypatch.chdir(tmp_path)
    assert job_table_tag("postgresql://app:old@db/jobs") == job_table_tag("postgresql://app:new@db/jobs")
    assert job_table_tag("postgresql://app@db/jobs") != job_table_tag("postgresql://app@db/other")
    assert job_table_tag("sqlite:///var/jobs.db") == job_table_tag(f"sqlite:///{tmp_path / 'var' / 'jobs.db'}")


def test_a_silent_writer_whose_process_still_runs_here_is_slow_not_stopped(broker, redis_client, caplog):
    import socket
    import subprocess
    import sys

    from middleware.job_status import ALIVE_GRACE_FACTOR, FINISHED_PREFIX, WRITERS_KEY, _encode_row, adopt_orphans
    from middleware.job_status import writer as this_writer

    # Given a writer on this machine whose process runs, silent past the heartbeat timeout (its beat thread
    # starved by a long C call, say), with an outcome row in its hash
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        job_id = str(uuid.uuid4())
        writer_id = f"{socket.gethostname()}:{process.pid}:{uuid.uuid4().hex[:8]}"
        now = datetime.now(UTC)
        row = {"id": job_id, "seq": 13, "state": "succeeded", "actor": "counts", "attempts": 1, "updated_at": now}
        redis_client.hset(f"{FINISHED_PREFIX}.{writer_id}", f"{job_id}/13", _encode_row(row))
        silent_ms = int((this_writer.orphan_age + 5) * 1000)
        redis_client.zadd(WRITERS_KEY, {writer_id: int(time.time() * 1000) - silent_ms})

        # When a worker looks for orphans, it leaves the row to its writer and says nothing
        with caplog.at_level(logging.WARNING, logger="middleware.job_status"):
            assert adopt_orphans(redis_client) == 0
        assert "stopped before writing" not in caplog.text
        assert job(job_id) is None
    finally:
        process.kill()
        process.wait()

    # Then once that process has stopped, the row is recorded and said so
    with caplog.at_level(logging.WARNING, logger="middleware.job_status"):
        assert adopt_orphans(redis_client) == 1
    assert f"Recorded 1 job outcomes left by worker {writer_id} (silent for " in caplog.text
    assert job(job_id).state == "succeeded"  # type: ignore[union-attr]

    # And a pid that runs but has been silent far too long (a reused pid) does not keep rows from adoption
    other = str(uuid.uuid4())
    writer_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    row = {"id": other, "seq": 13, "state": "succeeded", "actor": "counts", "attempts": 1, "updated_at": now}
    redis_client.hset(f"{FINISHED_PREFIX}.{writer_id}", f"{other}/13", _encode_row(row))
    ancient_ms = int((this_writer.orphan_age * ALIVE_GRACE_FACTOR + 5) * 1000)
    redis_client.zadd(WRITERS_KEY, {writer_id: int(time.time() * 1000) - ancient_ms})
    assert adopt_orphans(redis_client) == 1


def test_a_stopped_writers_many_rows_are_all_adopted_in_batches(broker, redis_client):
    from middleware.job_status import FINISHED_PREFIX, WRITERS_KEY, _encode_row, adopt_orphans
    from storage.db import session_scope
    from storage.models import Job

    # Given a writer that stopped an hour ago with 1,200 outcomes in its hash (more than one read's worth)
    writer_id = f"gone:{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    ids = [str(uuid.uuid4()) for _ in range(1_200)]
    pipe = redis_client.pipeline(transaction=False)
    for job_id in ids:
        row = {"id": job_id, "seq": 13, "state": "succeeded", "actor": "counts", "attempts": 1, "updated_at": now}
        pipe.hset(f"{FINISHED_PREFIX}.{writer_id}", f"{job_id}/13", _encode_row(row))
    pipe.zadd(WRITERS_KEY, {writer_id: int(time.time() * 1000) - 3_600_000})
    pipe.execute()

    # When a worker adopts them
    assert adopt_orphans(redis_client) == 1_200

    # Then every one is in the table and nothing of that writer is left in Redis
    with session_scope() as session:
        assert session.query(Job).filter(Job.id.in_(ids), Job.state == "succeeded").count() == 1_200
    assert not redis_client.exists(f"{FINISHED_PREFIX}.{writer_id}")
    assert redis_client.zscore(WRITERS_KEY, writer_id) is None


def test_a_worker_says_it_recorded_left_outcomes_only_when_a_worker_stopped(
    broker, redis_client, tmp_path, key, monkeypatch
):
    from middleware.job_status import outcome_waiting, writer
    from tests.core.sample_actors import counts_elsewhere, with_callbacks

    monkeypatch.setattr(writer, "adopting", False, raising=False)  # this process must not adopt for them
    broker.flush_all()
    _forget_other_tests_outcomes(redis_client)
    # Given a worker on `default` whose rows are flushed as often as possible (its writer races each
    # ack), and one on `collection` whose rows wait in memory (a batch interval longer than the test)
    log = tmp_path / "survivor.log"
    survivor = start_worker(
        _env(JOB_FLUSH_INTERVAL_MS="1", HEARTBEAT_TIMEOUT_MS="2000"), log, "-p", "1", "-t", "4", "-Q", "default"
    )
    doomed = start_worker(_env(JOB_FLUSH_INTERVAL_MS="600000"), tmp_path / "doomed.log", "-p", "1", "-Q", "collection")
    try:
        # When the first runs 300 jobs and both stay up
        mine = [with_callbacks.send(key, False) for _ in range(300)]
        for message in mine:
            assert wait_for_job(message.message_id, timeout=120).state == "succeeded"
        # Then none of its outcomes is left behind in Redis once they are in the table
        wait_until(lambda: sum(_outcome_hashes(redis_client).values()) == 0, timeout=5)
        # And through ten rounds of looking for orphans (every 2 s here), it never claims to have recorded
        # outcomes of a stopped worker (the old code, looking every 10 s, took a live worker's row by then)
        time.sleep(21)
        assert "stopped before writing them" not in log.read_text()

        # When the second worker runs 5 jobs and is killed before writing their outcomes
        lost = [counts_elsewhere.send(key, str(index)) for index in range(5)]
        # Killed once every outcome is stored with its ack: the actor's own mark comes a moment before
        # that, and a job killed in between is not acknowledged (it waits in its queue, which only the
        # killed worker serves), so it has no outcome to record.
        wait_until(lambda: all(outcome_waiting(redis_client, m.message_id) for m in lost), timeout=60)
        assert redis_client.scard(key) == 5
        stop(doomed, signal.SIGKILL)
        # Then the first records them, and says so once, with their number
        for message in lost:
            assert wait_for_job(message.message_id, timeout=60).state == "succeeded"
        wait_until(lambda: "stopped before writing them" in log.read_text(), timeout=30)
        lines = [line for line in log.read_text().splitlines() if "stopped before writing them" in line]
        assert len(lines) == 1 and "Recorded 5 job outcomes" in lines[0], lines
    finally:
        kill(doomed)
        stop(survivor)
        kill(survivor)


@contextlib.contextmanager
def database_outage() -> Iterator[None]:
    """Make the job table unwritable for every process: SQLite locked by another writer, or a PostgreSQL
    database that refuses connections and has its sessions ended."""
    from settings import settings

    url = settings.database_url
    if url.startswith("sqlite"):
        import sqlite3

        connection = sqlite3.connect(url.split("///", 1)[1], isolation_level=None, timeout=60)
        connection.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")
            connection.close()
        return
    import sqlalchemy

    name = url.rsplit("/", 1)[1]
    admin = sqlalchemy.create_engine(os.environ["TEST_DATABASE_URL"], isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        connection.execute(
            sqlalchemy.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
            {"name": name},
        )
        try:
            yield
        finally:
            connection.execute(sqlalchemy.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
    admin.dispose()


def test_a_database_outage_keeps_waiting_outcomes_bounded_and_loses_none(broker, redis_client, tmp_path, key):
    from middleware.job_status import ERROR_MAX_CHARS
    from tests.core.sample_actors import fails_with_a_long_message, records_order

    broker.flush_all()
    # Outcomes other tests' killed workers left are not this test's to count
    before = frozenset(_outcome_hashes(redis_client))
    cap, threads = 5, 2
    worker = start_worker(
        _env(JOB_BUFFER_MAX_ROWS=str(cap)), tmp_path / "worker.log", "-p", "1", "-t", str(threads), "-Q", "default"
    )
    try:
        warm = records_order.send(key, "warm")
        assert wait_for_job(warm.message_id, timeout=60).state == "succeeded"
        # Given a database nobody can write to
        with database_outage():
            # When 30 jobs are sent meanwhile, one of them failing with a 100 KB message
            failing = fails_with_a_long_message.send(key)
            messages = [records_order.send(key, str(index)) for index in range(30)]
            # Then the worker runs jobs until `cap` outcomes wait for the table, and takes no more
            wait_until(lambda: sum(_outcome_hashes(redis_client, before).values()) >= cap, timeout=60)
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                assert sum(_outcome_hashes(redis_client, before).values()) <= cap + threads
                assert redis_client.llen(key) <= 1 + cap + threads
                time.sleep(0.1)
            assert redis_client.llen(key) < 1 + 31
            # And what waits in Redis is the row the table keeps, not the whole 100 KB
            stored = [value for name in _outcome_hashes(redis_client, before) for value in redis_client.hvals(name)]
            assert stored and max(len(value) for value in stored) < 12_000
        # When the database is back, every outcome reaches the table, each job having run once
        for message in messages:
            row = wait_for_job(message.message_id, timeout=120)
            assert (row.state, row.attempts) == ("succeeded", 1)
        failed = wait_for_job(failing.message_id, timeout=60)
        assert failed.state == "failed" and len(failed.error_message or "") <= ERROR_MAX_CHARS
        runs = [value.decode() for value in redis_client.lrange(key, 0, -1)]
        assert sorted(runs) == sorted(["warm", "long", *[str(index) for index in range(30)]])
        # And nothing is left waiting in Redis
        wait_until(lambda: sum(_outcome_hashes(redis_client, before).values()) == 0, timeout=30)
    finally:
        stop(worker)
        kill(worker)
    assert "taking no new message" in (tmp_path / "worker.log").read_text()
    json.dumps(runs)
