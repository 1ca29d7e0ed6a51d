"""RabbitMQ mode (``BROKER_URL=amqp://...``): depths from the broker, liveness in Redis, REDIS_URL required.

Each test runs a process of its own on RabbitMQ, as a deployment would; the middleware suite itself runs
on RabbitMQ in a session of its own (``make test-rabbitmq``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRAMATIQ = str(Path(sys.executable).parent / "dramatiq")
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def _rabbitmq_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=0.25):
            return True
    except OSError:
        return False


pytestmark = [
    pytest.mark.rabbitmq,
    pytest.mark.skipif(not _rabbitmq_answers(), reason="no RabbitMQ on 127.0.0.1:5672"),
]


def _env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {
        **os.environ,
        "BROKER_URL": RABBITMQ_URL,
        "VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'db.sqlite'}",
        "METRICS_DIR": str(tmp_path / "var" / "metrics"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "var" / "metrics"),
        "PYTHONPATH": str(ROOT),
    }
    env.update(overrides)
    return env


def test_rabbitmq_without_redis_url_stops_at_start_up_with_one_clear_line(tmp_path):
    # Given RabbitMQ selected and no REDIS_URL
    env = _env(tmp_path, REDIS_URL="")

    # When the CLI and a real worker command start
    cli = subprocess.run(
        [sys.executable, "-m", "cli", "queues"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    worker = subprocess.run(
        [DRAMATIQ, "actors", "-p", "1", "-t", "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    # Then both refuse to start, saying what to set, instead of running with cancels and rate limits off
    assert cli.returncode == 1
    assert cli.stderr.strip().splitlines() == [
        "error: BROKER_URL selects RabbitMQ, which needs REDIS_URL too (cancels, rate limits, results and "
        "worker liveness live in Redis): set REDIS_URL=redis://HOST:6379/0"
    ]
    assert worker.returncode != 0
    assert "BROKER_URL selects RabbitMQ, which needs REDIS_URL too" in worker.stdout + worker.stderr


DEPTHS_AND_LIVENESS = textwrap.dedent(
    """
    import json, os
    import dramatiq
    import actors
    from actors.maintenance import health_check, monitor_queues
    from broker import queue_depths, redis_client_for, workers_key
    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    from middleware.metrics import BrokerCollector, render_metrics, use_multiprocess_dir
    from tests.core.sample_actors import always_fails
    from tests.support import wait_for_job, wait_until

    broker = actors.broker
    assert isinstance(broker, RabbitmqBroker), type(broker)
    broker.flush_all()
    client = redis_client_for(broker)
    # Two ready messages and one delayed on a queue no worker here serves ...
    health_check.send()
    health_check.send()
    health_check.send_with_options(delay=3_600_000)
    # ... and a worker on `default` only, where a message fails until it is dead-lettered
    worker = dramatiq.Worker(broker, worker_threads=2, queues={"default"}, worker_timeout=100)
    worker.start()
    try:
        dead = always_fails.send("rabbit")
        assert wait_for_job(dead.message_id, timeout=120).state == "dead"
        wait_until(lambda: queue_depths(broker)["default"][2] == 1, timeout=60)
        mine = wait_until(lambda: client.hget(workers_key(), broker.broker_id), timeout=60)
        directory = os.environ["METRICS_DIR"]
        use_multiprocess_dir(directory)
        scrape = render_metrics(directory, BrokerCollector(client, lambda: queue_depths(broker))).decode()
        print(json.dumps({
            "depths": queue_depths(broker),
            "monitor": monitor_queues()["queues"],
            "registry": json.loads(mine),
            "scrape": [line for line in scrape.splitlines() if line.startswith(("dramatiq_queue", "dramatiq_workers"))],
        }))
    finally:
        worker.stop()
        broker.flush_all()
    """
)


def test_rabbitmq_depths_come_from_the_broker_and_worker_liveness_from_redis(tmp_path):
    # Given a process on RabbitMQ with two ready and one delayed message on `maintenance`, no worker for
    # it, and a worker on `default` that dead-letters a message
    result = subprocess.run(
        [sys.executable, "-c", DEPTHS_AND_LIVENESS],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])

    # Then the depths are RabbitMQ's own counts of `q`, `q.DQ` and `q.XQ`, in the monitor job too
    assert seen["depths"]["maintenance"] == [2, 1, 0]
    assert seen["depths"]["default"][2] == 1
    assert seen["monitor"]["maintenance"] == {"ready": 2, "delayed": 1, "dead": 0}
    # And the worker announced itself in Redis with the queues it consumes
    assert "default" in seen["registry"]["queues"] and "maintenance" not in seen["registry"]["queues"]
    # And the scrape shows both: the queue depths and the live worker on `default`
    scrape = seen["scrape"]
    assert 'dramatiq_queue_messages{queue_name="maintenance",state="ready"} 2.0' in scrape
    assert 'dramatiq_queue_messages{queue_name="maintenance",state="delayed"} 1.0' in scrape
    assert 'dramatiq_queue_messages{queue_name="default",state="dead"} 1.0' in scrape
    assert any(line.startswith('dramatiq_workers_alive{queue_name="default"} ') and not line.endswith(" 0.0")
               for line in scrape)  # fmt: skip
