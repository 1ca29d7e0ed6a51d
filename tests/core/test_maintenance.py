"""Maintenance actors: cache cleanup, stuck jobs, pruning, health, queue watch, backups, summary."""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from datetime import UTC, datetime, timedelta

from tests.conftest import redis_broker_only
from tests.support import job, wait_for_job, wait_until


def test_cleanup_cache_deletes_only_files_older_than_the_retention(worker):
    from actors.maintenance import cleanup_cache
    from settings import settings

    # Given one old and one fresh file in the cache
    old = settings.cache_dir / "downloads" / "old.bin"
    fresh = settings.cache_dir / "downloads" / "fresh.bin"
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_bytes(b"x" * 100)
    fresh.write_bytes(b"y" * 10)
    eight_days_ago = time.time() - 8 * 86400
    os.utime(old, (eight_days_ago, eight_days_ago))

    # When the cleanup runs
    row = wait_for_job(cleanup_cache.send().message_id)

    # Then only the old file is gone
    assert row.state == "succeeded"
    assert json.loads(row.result or "{}")["files"] >= 1
    assert not old.exists() and fresh.exists()


def test_the_media_download_cache_is_pruned_by_the_media_queue_and_left_alone_by_the_general_cleanup(worker):
    from actors.maintenance import cleanup_cache
    from actors.media import cleanup_media_cache
    from settings import settings
    from storage.media import cached_download, remember_download

    # Given an old and a fresh download in the media cache, each with its cache entry
    key = uuid.uuid4().hex
    old = settings.cache_dir / "media" / f"old-{key}" / "audio.m4a"
    fresh = settings.cache_dir / "media" / f"fresh-{key}" / "audio.m4a"
    for path in (old, fresh):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"a" * 50)
        remember_download(path.parent.name, url=f"https://example.org/{path.parent.name}", path=path)
    eight_days_ago = time.time() - 8 * 86400
    os.utime(old, (eight_days_ago, eight_days_ago))

    # When the general cleanup runs (the maintenance queue, where no download lives in a deployment)
    assert wait_for_job(cleanup_cache.send().message_id).state == "succeeded"

    # Then it leaves the media cache to the media workers
    assert old.exists() and fresh.exists()

    # When the media cache cleanup runs, on the media queue
    assert cleanup_media_cache.queue_name == "media"
    row = wait_for_job(cleanup_media_cache.send().message_id)

    # Then the old download is gone with its entry, and the fresh one is still served from the cache
    assert row.state == "succeeded"
    assert json.loads(row.result or "{}")["cache_entries_forgotten"] >= 1
    assert not old.exists() and fresh.exists()
    assert cached_download(f"old-{key}") is None
    assert cached_download(f"fresh-{key}") == fresh


@redis_broker_only  # reads the Redis broker's own keys; with RabbitMQ the reaper cannot see messages
def test_the_reaper_fails_a_job_stuck_running_and_sends_it_again(worker, redis_client):
    from actors.maintenance import reap_stuck_jobs
    from middleware.job_status import flush, writer
    from tests.core.sample_actors import flaky

    # Given a job row of an actor with retries, left "running" an hour ago, that no worker holds
    key = f"test:{uuid.uuid4().hex}"
    job_id = str(uuid.uuid4())
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    writer.record(
        {
            "id": job_id,
            "seq": 11,
            "state": "running",
            "actor": flaky.actor_name,
            "queue": "default",
            "args": json.dumps({"args": [key, 0], "kwargs": {}}),
            "attempts": 1,
            "enqueued_at": an_hour_ago,
            "started_at": an_hour_ago,
            "updated_at": an_hour_ago,
        }
    )
    flush()
    # When the reaper runs
    row = wait_for_job(reap_stuck_jobs.send().message_id)

    # Then it reaped and resent the job, which ran to completion with its original arguments
    assert job_id in json.loads(row.result or "{}")["resent"]
    assert wait_for_job(job_id, states=frozenset({"succeeded"})).attempts == 2
    assert redis_client.llen(f"{key}:attempts") == 1


def _backdate_running(job_id: str, actor: str, args: list[object], attempts: int = 1) -> None:
    """Make a job's row look as if its attempt began an hour ago and never ended."""
    from middleware.job_status import flush, writer

    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    writer.record(
        {
            "id": job_id,
            "seq": attempts * 10 + 1,
            "state": "running",
            "actor": actor,
            "queue": "default",
            "args": json.dumps({"args": args, "kwargs": {}}),
            "attempts": attempts,
            "enqueued_at": an_hour_ago,
            "started_at": an_hour_ago,
            "updated_at": an_hour_ago,
        }
    )
    flush()


def _copies_in_broker(redis_client, message_id: str) -> int:
    return sum(
        json.loads(data)["message_id"] == message_id
        for name in ("default", "default.DQ")
        for data in redis_client.hvals(f"dramatiq:{name}.msgs")
    )


@redis_broker_only  # reads the Redis broker's own keys; with RabbitMQ the reaper cannot see messages
def test_the_reaper_never_resends_a_job_whose_message_waits_in_the_delay_queue(worker, redis_client):
    from actors.maintenance import reap_stuck_jobs
    from tests.core.sample_actors import slow_records

    # Given a job whose message waits in the delay queue (as a rate-limited one does) while its row
    # says it has been running for an hour
    key = f"test:{uuid.uuid4().hex}"
    message = slow_records.send_with_options(args=(key, 0), delay=600_000)
    _backdate_running(message.message_id, slow_records.actor_name, [key, 0])

    # When the reaper runs
    row = wait_for_job(reap_stuck_jobs.send().message_id)

    # Then it leaves the job alone: not failed, not sent again
    result = json.loads(row.result or "{}")
    assert message.message_id not in result["reaped"] + result["resent"]
    assert message.message_id in result["still_in_broker"]
    assert job(message.message_id).state == "running"  # type: ignore[union-attr]
    assert _copies_in_broker(redis_client, message.message_id) == 1
    assert redis_client.llen(f"{key}:runs") == 0


def test_the_reaper_never_resends_a_job_a_live_worker_is_running(worker, redis_client):
    from actors.maintenance import reap_stuck_jobs
    from tests.core.sample_actors import slow_records

    # Given a job a live worker holds and runs, whose row looks stuck for an hour
    key = f"test:{uuid.uuid4().hex}"
    message = slow_records.send(key, 3.0)
    wait_until(lambda: redis_client.llen(f"{key}:runs") == 1, timeout=30)
    _backdate_running(message.message_id, slow_records.actor_name, [key, 3.0])

    # When the reaper runs while the job is still running
    row = wait_for_job(reap_stuck_jobs.send().message_id)
    result = json.loads(row.result or "{}")
    assert message.message_id not in result["reaped"] + result["resent"]
    assert message.message_id in result["still_in_broker"]

    # Then the job ends as its one attempt did, and it ran once
    finished = wait_for_job(message.message_id, timeout=30)
    assert (finished.state, finished.attempts) == ("succeeded", 1)
    assert redis_client.llen(f"{key}:runs") == 1


def test_prune_old_data_removes_finished_jobs_past_the_retention(worker):
    from actors.maintenance import prune_old_data
    from middleware.job_status import flush, writer
    from storage.jobs import get_job

    old_id, recent_id = str(uuid.uuid4()), str(uuid.uuid4())
    long_ago = datetime.now(UTC) - timedelta(days=40)
    for job_id, finished in ((old_id, long_ago), (recent_id, datetime.now(UTC))):
        writer.record(
            {"id": job_id, "seq": 13, "state": "succeeded", "actor": "x", "queue": "default",
             "finished_at": finished, "updated_at": finished}
        )  # fmt: skip
    flush()

    row = wait_for_job(prune_old_data.send().message_id)

    assert row.state == "succeeded"
    assert get_job(old_id) is None
    assert get_job(recent_id) is not None


def test_health_check_records_broker_database_and_disk(worker):
    from sqlalchemy import select

    from actors.maintenance import health_check
    from storage.db import session_scope
    from storage.models import HealthCheck

    row = wait_for_job(health_check.send().message_id)

    result = json.loads(row.result or "{}")
    assert result["healthy"] is True
    assert result["broker"] == "ok" and result["database"] == "ok"
    assert 0 < result["disk_free"] <= 1
    with session_scope() as session:
        latest = session.scalars(select(HealthCheck).order_by(HealthCheck.id.desc())).first()
    assert latest is not None and latest.healthy == 1


def test_monitor_queues_reports_depths_and_warns_past_the_threshold(worker, broker, caplog):
    from actors.maintenance import monitor_queues

    row = wait_for_job(monitor_queues.send().message_id)

    result = json.loads(row.result or "{}")
    assert set(result["queues"]) >= {"default", "documents", "media", "priority"}
    assert result["queues"]["default"].keys() == {"ready", "delayed", "dead"}


def test_backup_database_makes_a_readable_copy_and_keeps_the_newest(worker):
    from actors.maintenance import backup_database
    from settings import settings

    rows = [wait_for_job(backup_database.send().message_id) for _ in range(2)]

    assert all(row.state == "succeeded" for row in rows), rows[-1].error_message
    result = json.loads(rows[-1].result or "{}")
    if os.environ["DATABASE_URL"].startswith("sqlite"):
        # SQLite's online backup: a database that opens and holds the job table
        copy = sqlite3.connect(result["backup"])
        try:
            assert copy.execute("SELECT count(*) FROM jobs").fetchone()[0] >= 1
        finally:
            copy.close()
        assert len(list(settings.backups_dir.glob("*.db"))) <= settings.backups_keep
    else:
        # pg_dump's custom format starts with its magic bytes
        with open(result["backup"], "rb") as dump:
            assert dump.read(5) == b"PGDMP"
        assert len(list(settings.backups_dir.glob("postgres-*.dump"))) <= settings.backups_keep


def test_daily_summary_counts_jobs_by_outcome(worker):
    from actors.maintenance import daily_summary
    from tests.core.sample_actors import counts

    wait_for_job(counts.send("summary", "a").message_id)

    row = wait_for_job(daily_summary.send().message_id)

    result = json.loads(row.result or "{}")
    assert result["by_actor"]["counts"]["succeeded"] >= 1
    assert result["totals"]["succeeded"] >= 1


def test_actors_run_in_process_when_called_directly(broker):
    from actors.maintenance import monitor_queues

    # The seeds' eager mode: calling an actor runs its function here, with no broker round trip.
    result = monitor_queues()

    assert "default" in result["queues"]


def test_an_urgent_message_goes_through_the_priority_queue(worker):
    from pipelines import send_urgent
    from tests.core.sample_actors import counts

    message = send_urgent(counts, "urgent", "now")

    row = wait_for_job(message.message_id)
    assert row.state == "succeeded"
    assert row.queue == "priority"


def test_an_urgent_message_runs_before_messages_a_busy_worker_already_holds(broker, redis_client):
    import dramatiq

    from broker import queue_depths
    from pipelines import send_urgent
    from tests.conftest import stop_worker
    from tests.core.sample_actors import holds_until_released, records_order

    key = f"test:{uuid.uuid4().hex}"
    broker.flush_all()
    # Given a one-thread worker busy with a slow job, and ordinary messages waiting behind it
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        blocker = holds_until_released.send(f"{key}:blocker")
        wait_until(lambda: redis_client.get(f"{key}:blocker:holding"), timeout=60)
        ordinary = [records_order.send(key, f"ordinary-{index}") for index in range(4)]
        # (the worker has fetched at least one of them into its own work queue)
        wait_until(lambda: queue_depths(broker)["default"][0] < len(ordinary), timeout=60)
        # When an urgent message arrives, and only after the worker took it is the thread free
        urgent = send_urgent(records_order, key, "urgent")
        wait_until(lambda: queue_depths(broker)["priority"][0] == 0, timeout=60)
        redis_client.rpush(f"{key}:blocker:release", 1)

        # Then it runs as soon as the thread is free, before the ordinary ones that were waiting
        for message in [blocker, *ordinary, urgent]:
            wait_for_job(message.message_id)
    finally:
        stop_worker(broker, worker)
    order = [value.decode() for value in redis_client.lrange(key, 0, -1)]
    assert order[0] == "urgent", order
