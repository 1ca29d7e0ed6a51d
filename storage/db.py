"""The database: one engine per process, sessions, and migrations applied on start.

SQLite (the default, a file under ``var/``) runs in WAL mode with a busy timeout so that several worker
processes and the CLI can write to it at once. PostgreSQL is used when ``DATABASE_URL`` names it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from settings import settings

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class Base(DeclarativeBase):
    """Declarative base of every table."""


_engine: Engine | None = None
_engine_pid: int | None = None
_session_factory: sessionmaker[Session] | None = None
_engine_lock = threading.Lock()
_migrated: set[str] = set()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


#: A pooled connection idle longer than this (s) is pinged before it is handed out. ``pool_pre_ping``
#: pings on every checkout, a round trip more for each short read (a third of ``GET /jobs/{id}`` on
#: PostgreSQL); a connection used a moment ago is almost surely alive, and if the server went away
#: meanwhile its error invalidates the pool, so the next checkout connects afresh.
PING_AFTER_IDLE_S = 2.0


def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
    record.info["checked_in_at"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    from sqlalchemy.exc import DisconnectionError

    checked_in = record.info.get("checked_in_at")
    if checked_in is None or time.monotonic() - checked_in < PING_AFTER_IDLE_S:
        return
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
    except Exception as error:
        # The pool drops this connection and hands out a fresh one (up to three tries).
        raise DisconnectionError(str(error)) from error


def is_sqlite(url: str | None = None) -> bool:
    return (url or settings.database_url).startswith("sqlite")


def get_engine() -> Engine:
    """The process's engine, created on first use and again after a fork."""
    global _engine, _engine_pid, _session_factory
    with _engine_lock:
        if _engine is None or _engine_pid != os.getpid():
            url = settings.database_url
            if is_sqlite(url):
                db_path = url.split("///", 1)[-1]
                if db_path and db_path != ":memory:":
                    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                engine = create_engine(url, pool_size=10, max_overflow=20)
                event.listen(engine, "checkin", _note_checkin)
                event.listen(engine, "checkout", _ping_if_idle)
            _engine, _engine_pid = engine, os.getpid()
            _session_factory = sessionmaker(engine, expire_on_commit=False)
        return _engine


@contextlib.contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits when the block ends and rolls back when it raises.

    The first session of a process brings the schema up to date, so any reader (a script polling a job,
    a process that starts before any worker) finds the tables there.
    """
    if settings.database_url not in _migrated:
        migrate()
    get_engine()
    assert _session_factory is not None
    session = _session_factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextlib.contextmanager
def read_scope() -> Iterator[Session]:
    """A session for reads only, each statement in a transaction of its own (autocommit).

    It saves the BEGIN and COMMIT round trips of ``session_scope`` on PostgreSQL, two of the three of
    a one-query read such as ``GET /jobs/{id}``. Nothing written in it is kept.
    """
    if settings.database_url not in _migrated:
        migrate()
    engine = get_engine()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        session = Session(bind=connection, expire_on_commit=False)
        try:
            yield session
        finally:
            session.close()


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Serialize migrations between processes that start at the same moment."""
    if is_sqlite(str(engine.url)):
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        with open(settings.var_dir / "migrate.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    else:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(7461001)"))
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(7461001)"))
                conn.commit()


def migrate() -> None:
    """Apply every pending Alembic migration (all branches); a no-op when the schema is current."""
    url = settings.database_url
    if url in _migrated:
        return
    from alembic import command
    from alembic.config import Config

    engine = get_engine()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    with _migration_lock(engine), engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "heads")
    _migrated.add(url)
