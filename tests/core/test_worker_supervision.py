"""Attempts that will not stop, and the supervisor that replaces worker processes (`python -m worker`).

A thread blocked in ``time.sleep``, a socket read or a C wait resumes after every signal, so the hard limit
cannot end it. Its worker process retires instead: the other jobs finish, the stuck attempt is recorded
failed (and retried per its rules), the process exits with ``EXIT_STUCK`` and the supervisor starts
another. Everything runs through the real command in a subprocess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support import wait_for_job, wait_until

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]


def _children(pid: int) -> set[int]:
    try:
        return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waiting for its (dead) parent to reap it is gone for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


@pytest.fixture
def key() -> str:
    return f"test:{uuid.uuid4().hex}"


@pytest.fixture
def supervised(broker, tmp_path):  # type: ignore[no-untyped-def]
    """`python -m worker` with one worker process of two threads; yields (process, log path)."""
    broker.flush_all()
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", "tests.core.sample_actors", "-p", "1", "-t", "2", "-Q", "default"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "STUCK_EXIT_GRACE_MS": "20000"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process, log
    finally:
        pids = {process.pid, *_children(process.pid)}
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait(30)
        broker.flush_all()


@pytest.mark.parametrize("how", ["sleep", "socket", "c-call"])
def test_an_attempt_that_will_not_stop_retires_its_process_which_is_replaced_and_never_runs_twice_at_once(
    supervised, redis_client, key, how
):
    from tests.core.sample_actors import counts, records_run, will_not_stop

    process, log = supervised
    # Given a job blocked where its hard limit cannot reach (one retry allowed), and a slow job beside it
    stuck = will_not_stop.send(key, how)
    wait_until(lambda: redis_client.llen(f"{key}:starts"), timeout=60)
    beside = records_run.send(f"{key}:beside", 3.0)

    # When each attempt runs past its hard limit and the grace after it
    # Then the job ran twice (its one retry), each time in a new process, never while another still ran
    wait_until(lambda: redis_client.llen(f"{key}:starts") == 2, timeout=120)
    first, second = (int(entry.split()[0]) for entry in redis_client.lrange(f"{key}:starts", 0, -1))
    assert first != second
    # And both processes are gone, replaced: the next job is served by a fresh one (which also records
    # the outcome the last one left in Redis as it went)
    wait_until(lambda: not _alive(first) and not _alive(second), timeout=120)
    after = counts.send(key, "after")
    assert wait_for_job(after.message_id, timeout=120).state == "succeeded"
    row = wait_for_job(stuck.message_id, timeout=120)
    assert (row.state, row.attempts, row.error_type) == ("dead", 2, "HardTimeLimitExceeded")
    assert "worker process was replaced" in (row.error_message or "")
    assert redis_client.lrange(f"{key}:overlaps", 0, -1) == []
    assert redis_client.lrange(f"{key}:ends", 0, -1) == []  # no stuck thread lived on to return
    # And the job beside it finished in the grace period, once
    assert wait_for_job(beside.message_id, timeout=60).state == "succeeded"
    runs = [entry.split()[0] for entry in redis_client.lrange(f"{key}:beside", 0, -1)]
    assert runs == [b"start", b"end"]
    # And the command is still up; the retirements are in its log with their exit code
    assert process.poll() is None
    assert log.read_text().count("exited with code 75") == 2


def test_a_killed_worker_process_is_replaced_and_the_command_keeps_serving(supervised, key):
    from tests.core.sample_actors import counts

    process, _ = supervised
    first = counts.send(key, "first")
    assert wait_for_job(first.message_id, timeout=120).state == "succeeded"

    # (both children: the fork starts only once the worker process has booted, and the first job can be
    # done before that; counting too early made the replacement check below wait for the wrong number)
    def both_children() -> set[int] | None:
        children = _children(process.pid)
        return children if len(children) >= 2 else None

    workers = wait_until(both_children, timeout=30)

    # When a worker process is SIGKILLed
    victim = max(workers)  # the fork (metrics) starts after the worker; either kind must come back
    os.kill(victim, signal.SIGKILL)

    # Then another takes its place and serves
    wait_until(lambda: victim not in _children(process.pid) and len(_children(process.pid)) == len(workers), 30)
    for pid in set(workers) - {victim}:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: len(_children(process.pid) - set(workers)) == len(workers), timeout=30)
    after = counts.send(key, "after")
    assert wait_for_job(after.message_id, timeout=120).state == "succeeded"
    assert process.poll() is None


def test_children_stop_when_their_parent_is_killed(supervised, key):
    from tests.core.sample_actors import counts

    process, _ = supervised
    ready = counts.send(key, "ready")
    assert wait_for_job(ready.message_id, timeout=120).state == "succeeded"
    children = wait_until(lambda: _children(process.pid) if len(_children(process.pid)) >= 2 else None, 30)

    # When the supervisor itself is SIGKILLed
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)

    # Then its worker and metrics processes stop by themselves
    wait_until(lambda: not any(_alive(pid) for pid in children), timeout=30)
