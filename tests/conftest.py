"""Test set-up: a private var dir, storage root and database per session, real Redis, real workers.

The environment is set here, before anything imports ``settings``, so the whole session reads it.
``TEST_REDIS_URL`` picks the Redis (default: a database of the local server that no other session holds,
or an embedded server when none answers); ``TEST_DATABASE_URL`` picks PostgreSQL instead of a fresh SQLite file.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_ROOT = Path(tempfile.mkdtemp(prefix="platform-tests-"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _local_redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.25):
            return True
    except OSError:
        return False


def _postgres_test_database(base_url: str) -> str:
    """A fresh database on the server of ``base_url``, dropped when the session ends."""
    import atexit

    import sqlalchemy

    name = f"platform_test_{os.getpid()}"
    admin = sqlalchemy.create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        from storage.db import get_engine

        get_engine().dispose()
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    atexit.register(drop)
    return base_url.rsplit("/", 1)[0] + f"/{name}"


os.environ["VAR_DIR"] = str(_ROOT / "var")
os.environ["STORAGE_ROOT"] = str(_ROOT / "storage")
os.environ["CACHE_DIR"] = str(_ROOT / "var" / "cache")
os.environ["BACKUPS_DIR"] = str(_ROOT / "var" / "backups")
os.environ["METRICS_DIR"] = str(_ROOT / "var" / "metrics")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_ROOT / "var" / "metrics")
os.environ["METRICS_PORT"] = str(_free_port())
os.environ["SCHEDULER_METRICS_PORT"] = str(_free_port())
os.environ["JOB_FLUSH_INTERVAL_MS"] = "20"
# TEST_BROKER_URL=amqp://... runs the session on RabbitMQ (Redis still holds cancels, rate limits, results
# and the worker registry); `make test` runs the middleware suite that way too.
if os.environ.get("TEST_BROKER_URL"):
    os.environ["BROKER_URL"] = os.environ["TEST_BROKER_URL"]
else:
    os.environ.pop("BROKER_URL", None)
#: Databases of the local Redis a session may lease (the benchmarks use 13 and 14, the demo 0).
_LEASABLE_REDIS_DATABASES = (15, 12, 11, 10, 9, 8, 7, 6)
_LEASE_KEY = "taskforge:test-session"
_LEASE_TTL_S = 4 * 3600


def _lease_redis_database() -> str:
    """A database of the local Redis no other test session is using, held until this one exits.

    Two sessions on one database (a local run beside a CI run) empty each other's queues, take each
    other's messages and adopt each other's job outcomes into the wrong table.
    """
    import atexit

    import redis

    owner = f"{socket.gethostname()}:{os.getpid()}:{_ROOT.name}"
    for number in _LEASABLE_REDIS_DATABASES:
        client = redis.Redis(host="127.0.0.1", port=6379, db=number)
        if client.set(_LEASE_KEY, owner, nx=True, ex=_LEASE_TTL_S):

            def release(client: redis.Redis = client) -> None:
                if client.get(_LEASE_KEY) == owner.encode():
                    client.delete(_LEASE_KEY)

            atexit.register(release)
            os.environ["TEST_REDIS_LEASE"] = owner
            return f"redis://127.0.0.1:6379/{number}"
    raise RuntimeError(
        f"every test database of the local Redis ({_LEASABLE_REDIS_DATABASES}) is leased by another "
        f"session (key {_LEASE_KEY!r}); set TEST_REDIS_URL to pick one"
    )


if os.environ.get("TEST_REDIS_URL"):
    os.environ["REDIS_URL"] = os.environ["TEST_REDIS_URL"]
elif _local_redis_answers():
    os.environ["REDIS_URL"] = _lease_redis_database()
else:
    os.environ["REDIS_URL"] = "embedded"
if os.environ.get("TEST_DATABASE_URL"):
    os.environ["DATABASE_URL"] = _postgres_test_database(os.environ["TEST_DATABASE_URL"])
else:
    os.environ["DATABASE_URL"] = f"sqlite:///{_ROOT / 'var' / 'test.db'}"
for _path in ("storage", "var/cache", "var/metrics"):
    (_ROOT / _path).mkdir(parents=True, exist_ok=True)


#: For tests of the Redis broker's own keys and scripts, skipped in a session on RabbitMQ.
redis_broker_only = pytest.mark.skipif(
    bool(os.environ.get("BROKER_URL")), reason="reads or writes the Redis broker's own keys"
)


@pytest.fixture(scope="session")
def broker():  # type: ignore[no-untyped-def]
    """The project's broker (Redis, or RabbitMQ with TEST_BROKER_URL), with every actor registered and the
    schema migrated; queues and the test Redis database are emptied first."""
    from broker import redis_client_for
    from storage.db import migrate

    client_url = os.environ["REDIS_URL"]
    import actors

    client = redis_client_for(actors.broker)
    assert client is not None, client_url
    client.flushdb()
    if os.environ.get("TEST_REDIS_LEASE"):
        client.set(_LEASE_KEY, os.environ["TEST_REDIS_LEASE"], ex=_LEASE_TTL_S)  # the flush took it
    actors.broker.flush_all()
    migrate()
    return actors.broker


@pytest.fixture
def redis_client(broker):  # type: ignore[no-untyped-def]
    from broker import redis_client_for

    return redis_client_for(broker)


@pytest.fixture
def storage_root() -> Path:
    from settings import settings

    settings.storage_root.mkdir(parents=True, exist_ok=True)
    return settings.storage_root


@pytest.fixture
def loopback_allowed() -> Iterator[None]:
    """Let user-given URLs (media, webhooks) reach 127.0.0.0/8, where the tests' servers listen; the
    outbound policy refuses loopback by default."""
    from processing import netguard

    previous = netguard.current_policy()
    netguard.set_policy(netguard.OutboundPolicy.parse("127.0.0.0/8"))
    try:
        yield
    finally:
        netguard.set_policy(previous)


@pytest.fixture
def worker(broker) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """A real Dramatiq worker on every queue, in this process; queues are emptied before and after."""
    import dramatiq

    from middleware.job_status import flush

    broker.flush_all()
    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=50)
    worker.start()
    try:
        yield worker
    finally:
        stop_worker(broker, worker)
        flush()
        broker.flush_all()


def stop_worker(broker, worker) -> None:  # type: ignore[no-untyped-def]
    """Stop a worker and take its hook out of the broker, which outlives it in this session."""
    from dramatiq.worker import _WorkerMiddleware

    worker.stop(timeout=10_000)
    broker.middleware[:] = [m for m in broker.middleware if not isinstance(m, _WorkerMiddleware)]


@pytest.fixture(scope="session", autouse=True)
def _remove_session_files() -> Iterator[None]:
    yield
    shutil.rmtree(_ROOT, ignore_errors=True)
