"""Messages a worker hands back, or loses with a dead worker, go to the head of their queue at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from bench.chaos import children
from tests.core.process_support import kill, start_worker, stop
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]
DRAMATIQ = str(Path(sys.executable).parent / "dramatiq")


def _queued_members(redis_client, queue: str = "default") -> list[int]:
    """The ``member`` argument of every message waiting in ``queue``, head first."""
    ids = redis_client.lrange(f"dramatiq:{queue}", 0, -1)
    bodies = redis_client.hmget(f"dramatiq:{queue}.msgs", ids) if ids else []
    return [int(json.loads(body)["args"][1]) for body in bodies if body is not None]


def _held_by_acks(redis_client) -> int:
    return sum(redis_client.scard(key) for key in redis_client.scan_iter("dramatiq:__acks__.*"))


def test_a_graceful_stop_hands_every_prefetched_message_back_to_the_head_in_order(broker, redis_client):
    from tests.core.sample_actors import slow_counts

    broker.flush_all()
    key = f"test:{uuid.uuid4().hex}"
    # Given 40 slow jobs, in order, and a worker with 4 threads that prefetches several of them
    for index in range(40):
        slow_counts.send(key, str(index), 0.3)
    worker = subprocess.Popen(
        [DRAMATIQ, "actors", "tests.core.sample_actors", "-p", "1", "-t", "4", "-Q", "default"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: redis_client.scard(key) >= 1, timeout=90)
        # When it is stopped gracefully (SIGTERM to the parent, as `kill` or `docker stop` sends it):
        # running jobs finish, the rest is handed back
        os.kill(worker.pid, signal.SIGTERM)
        worker.wait(60)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)

    # Then no message is left in the stopped process's ack set (nothing waits for a heartbeat timeout)
    assert _held_by_acks(redis_client) == 0
    # And every job not done is back in the queue, at the head, in the order it was sent
    done = {int(member) for member in redis_client.smembers(key)}
    waiting = _queued_members(redis_client)
    assert set(waiting) == set(range(40)) - done
    assert waiting == sorted(waiting)
    broker.flush_all()


def test_a_dead_workers_messages_go_back_ahead_of_the_queue(broker, redis_client):
    from broker import PlatformRedisBroker
    from settings import settings
    from tests.core.sample_actors import slow_counts

    broker.flush_all()
    key = f"test:{uuid.uuid4().hex}"
    # Given a worker that fetched the first 3 of 10 messages and then died (no heartbeat since)
    for index in range(10):
        slow_counts.send(key, str(index), 0)
    dead = PlatformRedisBroker(url=os.environ["REDIS_URL"], middleware=[], namespace="dramatiq")
    fetched = dead.do_fetch("default", 3)
    assert len(fetched) == 3
    redis_client.zadd("dramatiq:__heartbeats__", {dead.broker_id: 1})
    assert _queued_members(redis_client) == list(range(3, 10))

    # When a live broker runs queue maintenance on that queue
    live = PlatformRedisBroker(
        url=os.environ["REDIS_URL"],
        middleware=[],
        namespace="dramatiq",
        heartbeat_timeout=settings.heartbeat_timeout,
        maintenance_interval=0,
    )
    live.do_qsize("default")

    # Then the dead worker's messages are at the head of the queue, before those nobody had taken
    waiting = _queued_members(redis_client)
    assert sorted(waiting[:3]) == [0, 1, 2]
    assert waiting[3:] == list(range(3, 10))
    assert _held_by_acks(redis_client) == 0
    dead.client.close()
    live.client.close()
    broker.flush_all()


def test_the_broker_refuses_a_dramatiq_whose_private_parts_it_does_not_know():
    # Given a Dramatiq that claims another version / When broker.py is imported
    code = "import dramatiq; dramatiq.__version__ = '9.9.9'; import broker"
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )

    # Then the import fails and says which version it was written for
    assert completed.returncode != 0
    assert "2.2.1" in completed.stderr and "9.9.9" in completed.stderr


def test_a_message_left_in_a_live_workers_ack_set_goes_back_without_a_restart(broker, redis_client, tmp_path):
    from tests.core.sample_actors import counts, holds_until_released

    broker.flush_all()
    key = f"test:{uuid.uuid4().hex}"
    # Given a live worker process busy with one job, which it holds in its ack set
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MAINTENANCE_INTERVAL_MS": "500"}
    worker = start_worker(env, tmp_path / "worker.log", "-p", "1", "-t", "2", "-Q", "default")
    try:
        holds_until_released.send(key)
        wait_until(lambda: redis_client.get(f"{key}:holding"), timeout=90)
        redis_client.delete(f"{key}:holding")
        # (the registry also lists this session's earlier workers, kept an hour after they are gone)
        (worker_id,) = [
            member.decode()
            for member, info in redis_client.hgetall("dramatiq:__workers__").items()
            if json.loads(info)["pid"] in children(worker.pid)
        ]
        acks = f"dramatiq:__acks__.{worker_id}.default"
        held = redis_client.smembers(acks)
        assert len(held) == 1
        # And a message in that ack set the process never received: what a fetch leaves whose reply a
        # lost connection swallowed, or an acknowledgement a killed Redis had not yet written to disk
        orphan = counts.message(key, "orphan")
        orphan = orphan.copy(options={**orphan.options, "redis_message_id": orphan.message_id})
        redis_client.hset("dramatiq:default.msgs", orphan.message_id, orphan.encode())
        redis_client.sadd(acks, orphan.message_id)

        # When the worker goes on (no restart, no heartbeat timeout)
        # Then the orphan runs in it, and the job the process still holds is neither handed back nor run again
        wait_until(lambda: redis_client.sismember(key, "orphan"), timeout=30)
        assert redis_client.smembers(acks) == held
        assert redis_client.llen("dramatiq:default") == 0
        redis_client.set(f"{key}:release", 1)
        wait_until(lambda: redis_client.scard(acks) == 0, timeout=30)
        assert redis_client.get(f"{key}:holding") is None
        assert worker.poll() is None
    finally:
        try:
            stop(worker, timeout=60)
        except subprocess.TimeoutExpired:
            kill(worker)
    broker.flush_all()


def test_two_workers_on_one_broker_never_take_each_others_messages_for_orphans(worker, broker, redis_client):
    import dramatiq

    from tests.conftest import stop_worker
    from tests.core.sample_actors import records_order

    key = f"test:{uuid.uuid4().hex}"
    # Given a second worker on the same broker in this process (one ack set per queue, two consumers
    # fetching into it), started while the first holds delayed messages, and the orphan check made to
    # run at every refill
    for index in range(300, 320):
        records_order.send_with_options(args=(key, str(index)), delay=1_500)
    wait_until(lambda: redis_client.llen("dramatiq:default.DQ") == 0, timeout=30)
    second = dramatiq.Worker(broker, worker_threads=4, worker_timeout=50)
    interval, broker.maintenance_interval = broker.maintenance_interval, 0
    second.start()
    try:
        # When 300 jobs run across both, and the delayed ones come due
        for index in range(300):
            records_order.send(key, str(index))
        wait_until(lambda: redis_client.llen(key) >= 320, timeout=120)
        worker.join()
        second.join()
    finally:
        broker.maintenance_interval = interval
        stop_worker(broker, second)

    # Then each ran once: neither consumer handed back what the other had just fetched
    ran = redis_client.lrange(key, 0, -1)
    assert sorted(int(label) for label in ran) == list(range(320))
    redis_client.delete(key)
