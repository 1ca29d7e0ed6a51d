"""Test set-up: a private var dir, storage root and database per session, real Redis, real workers.

The environment is set here, before anything imports ``settings``, so the whole session reads it.
``TEST_REDIS_URL`` picks the Redis (default: database 15 of the local server, or an embedded server when
none answers); ``TEST_DATABASE_URL`` picks PostgreSQL instead of a fresh SQLite file.
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
os.environ.pop("BROKER_URL", None)
os.environ["REDIS_URL"] = os.environ.get("TEST_REDIS_URL") or (
    "redis://127.0.0.1:6379/15" if _local_redis_answers() else "embedded"
)
if os.environ.get("TEST_DATABASE_URL"):
    os.environ["DATABASE_URL"] = _postgres_test_database(os.environ["TEST_DATABASE_URL"])
else:
    os.environ["DATABASE_URL"] = f"sqlite:///{_ROOT / 'var' / 'test.db'}"
for _path in ("storage", "var/cache", "var/metrics"):
    (_ROOT / _path).mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="session")
def broker():  # type: ignore[no-untyped-def]
    """The project's broker on real Redis, with every actor registered and the schema migrated."""
    from broker import redis_client_for
    from storage.db import migrate

    client_url = os.environ["REDIS_URL"]
    import actors

    client = redis_client_for(actors.broker)
    assert client is not None, client_url
    client.flushdb()
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
