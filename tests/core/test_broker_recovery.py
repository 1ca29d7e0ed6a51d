"""The broker outside the happy path: a SIGKILLed worker, the embedded Redis, RabbitMQ."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from tests.core.process_support import start_worker
from tests.support import job, wait_until

ROOT = Path(__file__).resolve().parents[2]


def _start_worker(log: Path) -> subprocess.Popen[bytes]:
    return start_worker({**os.environ, "PYTHONPATH": str(ROOT)}, log, "-p", "1", "-t", "4", "-Q", "default")


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    process.wait(30)


def _state(message_id: str) -> str | None:
    row = job(message_id)
    return row.state if row is not None else None


def test_a_sigkilled_workers_jobs_all_complete_on_another_worker(broker, redis_client, capsys, tmp_path):
    from tests.core.sample_actors import slow_counts

    key = f"test:{uuid.uuid4().hex}"
    broker.flush_all()
    # Given 12 slow jobs and a worker process that has started on them
    messages = [slow_counts.send(key, str(index), 0.4) for index in range(12)]
    logs = {"killed": tmp_path / "killed.log", "survivor": tmp_path / "survivor.log"}
    first = _start_worker(logs["killed"])
    try:
        wait_until(lambda: redis_client.scard(key) >= 2, timeout=60)
        # When the worker is killed mid-batch, with jobs in flight and prefetched
        _stop(first, signal.SIGKILL)
        killed_at = time.monotonic()
        done_before = redis_client.scard(key)
        assert done_before < 12
        second = _start_worker(logs["survivor"])
        try:
            # Then every job completes on the other worker
            wait_until(lambda: redis_client.scard(key) == 12, timeout=120)
            recovered_after = time.monotonic() - killed_at
            # And every job row ends succeeded: outcomes the killed worker acknowledged but had not
            # written yet are adopted by the live worker
            ids = [message.message_id for message in messages]
            try:
                wait_until(lambda: all(_state(i) == "succeeded" for i in ids), timeout=120)
            except AssertionError:
                states = [(i, _state(i)) for i in ids]
                output = "\n".join(f"--- {name} worker ---\n{path.read_text()[-6000:]}" for name, path in logs.items())
                raise AssertionError(f"job rows not succeeded: {states}\n{output}") from None
        finally:
            _stop(second)
    finally:
        _stop(first, signal.SIGKILL)
    with capsys.disabled():
        print(f"\n  all 12 jobs done {recovered_after:.1f} s after the SIGKILL ({done_before} were done before it)")


def test_the_worker_registry_forgets_workers_silent_for_an_hour_and_keeps_the_recent_ones(worker, broker, redis_client):
    from dramatiq.common import current_millis

    from broker import GONE_WORKERS_KEPT_MS, workers_key

    # Given the registry of a machine whose killed workers never said goodbye: one silent for longer than
    # the registry keeps them, one gone a minute ago, and an entry no worker could have written
    now = current_millis()
    entry = {"host": "old-machine", "pid": 1, "queues": ["default"]}
    redis_client.hset(workers_key(), "long-gone", json.dumps({**entry, "seen": now - GONE_WORKERS_KEPT_MS - 60_000}))
    redis_client.hset(workers_key(), "just-gone", json.dumps({**entry, "seen": now - 60_000}))
    redis_client.hset(workers_key(), "garbage", "not json")

    # When the live worker's heartbeat thread next prunes it
    wait_until(lambda: not redis_client.hexists(workers_key(), "long-gone"), timeout=60)

    # Then the old entries are gone, the recent one stays for `cli workers --all`, and so does the live one
    assert not redis_client.hexists(workers_key(), "garbage")
    assert redis_client.hexists(workers_key(), "just-gone")
    assert redis_client.hexists(workers_key(), broker.broker_id)
    redis_client.hdel(workers_key(), "just-gone")


def _port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.25):
            return True
    except OSError:
        return False


EMBEDDED_USER = textwrap.dedent(
    """
    import sys, time
    import actors
    from broker import redis_client_for
    from actors.maintenance import health_check
    import dramatiq
    from tests.support import wait_for_job
    client = redis_client_for(actors.broker)
    print(client.connection_pool.connection_kwargs["port"], flush=True)
    if sys.argv[1] == "work":
        worker = dramatiq.Worker(actors.broker, worker_threads=1, worker_timeout=50)
        worker.start()
        message = health_check.send()
        print(wait_for_job(message.message_id).state, flush=True)
        worker.stop()
    sys.stdin.read()
    """
)


def test_an_embedded_redis_is_started_shared_and_stopped_with_its_last_user(tmp_path):
    env = {
        **os.environ,
        "REDIS_URL": "embedded",
        "VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'db.sqlite'}",
        "PYTHONPATH": str(ROOT),
    }

    def start(mode: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", EMBEDDED_USER, mode],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    # Given a process that forces the embedded Redis and runs a job through it
    first = start("work")
    assert first.stdout is not None and first.stdin is not None
    port = int(first.stdout.readline())
    assert port != 6379 and _port_answers(port)
    assert first.stdout.readline().strip() == "succeeded"
    # When a second process starts, it joins the same server
    second = start("join")
    assert second.stdout is not None and second.stdin is not None
    assert int(second.stdout.readline()) == port
    # Then the server outlives the first process and stops with the last one
    first.stdin.close()
    first.wait(30)
    assert _port_answers(port)
    second.stdin.close()
    second.wait(30)
    wait_until(lambda: not _port_answers(port), timeout=30)


@pytest.mark.rabbitmq
@pytest.mark.skipif(not _port_answers(5672), reason="no RabbitMQ on 127.0.0.1:5672")
def test_a_rabbitmq_broker_runs_jobs_through_the_same_middleware(tmp_path):
    script = textwrap.dedent(
        """
        import dramatiq
        import actors
        from dramatiq.brokers.rabbitmq import RabbitmqBroker
        from actors.maintenance import health_check
        from tests.support import wait_for_job
        assert isinstance(actors.broker, RabbitmqBroker), type(actors.broker)
        actors.broker.flush_all()
        worker = dramatiq.Worker(actors.broker, worker_threads=1, queues={"maintenance"}, worker_timeout=100)
        worker.start()
        message = health_check.send()
        row = wait_for_job(message.message_id, timeout=60)
        worker.stop()
        print(row.state, row.result)
        """
    )
    env = {
        **os.environ,
        "BROKER_URL": "amqp://guest:guest@127.0.0.1:5672/%2F",
        "VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'db.sqlite'}",
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("succeeded"), result.stdout
