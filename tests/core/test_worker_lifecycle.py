"""What a `dramatiq` worker command does when it stops: every outcome written, the embedded Redis released."""

from __future__ import annotations

import uuid

import redis

from tests.core.process_support import (
    embedded_env,
    job_rows,
    kill,
    port_answers,
    process_gone,
    registry,
    send_counts,
    start_worker,
    stop,
)
from tests.support import wait_until


def test_a_sigterm_worker_command_writes_every_outcome_and_stops_the_embedded_redis(tmp_path):
    # Given a `dramatiq` command of two worker processes on an embedded Redis, whose job rows are
    # written only at shutdown (the batch interval is longer than the test)
    env = embedded_env(tmp_path, JOB_FLUSH_INTERVAL_MS="600000")
    worker = start_worker(env, tmp_path / "worker.log", "-p", "2", "-t", "2", "-Q", "default")
    try:
        state = wait_until(lambda: (found := registry(env)) and len(found.get("users", [])) >= 2 and found, 60)
        port, pid = state["port"], state["pid"]
        # And 20 jobs that it has run, their outcomes still in the worker processes' memory
        key = f"test:{uuid.uuid4().hex}"
        ids = send_counts(env, key, 20)
        client = redis.Redis(port=port)
        wait_until(lambda: client.scard(key) == 20, 60)
        assert all(state != "succeeded" for state, _ in job_rows(env, ids).values())

        # When the command is stopped the way an operator or a supervisor stops it
        stop(worker)
    finally:
        kill(worker)

    # Then every outcome is in the job table
    assert job_rows(env, ids) == dict.fromkeys(ids, ("succeeded", 1)), (tmp_path / "worker.log").read_text()[-3000:]
    # And the embedded Redis stopped with its last user
    wait_until(lambda: process_gone(pid), 30)
    assert not port_answers(port)
    assert registry(env).get("users", []) == []
