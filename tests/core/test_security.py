"""Credentials never leave the process: not on a command line, not in an error, a log line or a row."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PLANTED = "planted-Secret-4711"


def _postgres_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return True
    except OSError:
        return False


def test_redact_url_masks_only_the_password():
    from processing.redaction import redact_url

    # Given URLs of every kind the platform is configured with
    cases = {
        f"postgresql+psycopg2://app:{PLANTED}@db.internal:5432/jobs": "postgresql+psycopg2://app:***@db.internal:5432/jobs",
        f"redis://:{PLANTED}@127.0.0.1:6379/0": "redis://:***@127.0.0.1:6379/0",
        f"amqp://guest:{PLANTED}@[::1]:5672/": "amqp://guest:***@[::1]:5672/",
        "sqlite:///var/platform.db": "sqlite:///var/platform.db",
        "redis://127.0.0.1:6379/15": "redis://127.0.0.1:6379/15",
    }

    # When each is redacted / Then the password is gone and the rest is unchanged
    for url, expected in cases.items():
        assert redact_url(url) == expected


def test_redact_text_masks_urls_quoted_inside_free_text_and_named_secrets():
    from processing.redaction import redact_text

    # Given an error message that quotes a DSN, and a bare secret
    text = f'could not connect to "postgresql://app:{PLANTED}@db/jobs"; token {PLANTED} refused'

    # When it is redacted
    redacted = redact_text(text, PLANTED)

    # Then no trace of the secret is left, and the message still reads
    assert PLANTED not in redacted
    assert "postgresql://app:***@db/jobs" in redacted


def test_pg_dump_gets_the_password_from_its_environment_never_from_its_command_line(tmp_path):
    from processing.housekeeping import pg_dump_invocation

    # Given a database URL with a password
    url = f"postgresql+psycopg2://postgres:{PLANTED}@127.0.0.1:5432/test"

    # When the pg_dump invocation is built
    command, env = pg_dump_invocation(url, tmp_path / "x.dump")

    # Then the password is only in PGPASSWORD: /proc/<pid>/cmdline shows the command line to every user
    assert not any(PLANTED in part for part in command)
    assert env["PGPASSWORD"] == PLANTED
    assert command[-1] == "postgresql://postgres@127.0.0.1:5432/test"


@pytest.mark.skipif(not _postgres_answers(), reason="no PostgreSQL on 127.0.0.1:5432")
def test_a_failed_pg_dump_says_why_in_one_line_without_the_password(tmp_path):
    from processing.housekeeping import BackupFailed, backup_postgres

    # Given a URL with a password to a database that does not exist
    url = f"postgresql://postgres:{PLANTED}@127.0.0.1:5432/no_such_database_for_backup"

    # When the real pg_dump runs against it
    with pytest.raises(BackupFailed) as caught:
        backup_postgres(url, tmp_path)

    # Then the error names the database and pg_dump's reason, never the password, and leaves no file
    message = str(caught.value)
    assert "no_such_database_for_backup" in message and "does not exist" in message
    assert PLANTED not in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(
    os.environ.get("DATABASE_URL", "").startswith("sqlite"),
    reason="the job table is SQLite in this run: pg_dump has no password to leak (the PostgreSQL run has one)",
)
def test_a_backup_through_the_worker_leaves_the_password_in_no_row_log_or_redis_key(worker, redis_client, caplog):
    import logging

    from sqlalchemy import select

    from actors.maintenance import backup_database
    from settings import settings
    from storage.db import session_scope
    from storage.models import Job
    from tests.support import wait_for_job

    # Given a password in the database URL (the PostgreSQL run of the suite plants one; trust auth ignores it)
    password = settings.database_url.split("@", 1)[0].rsplit(":", 1)[-1]
    assert password and "//" not in password, "the PostgreSQL test URL is expected to carry a password"
    caplog.set_level(logging.DEBUG)

    # When the backup runs through a real worker
    row = wait_for_job(backup_database.send().message_id)

    # Then it succeeded, and the password is in no job row, no log record and no Redis key or value
    assert row.state == "succeeded", row.error_message
    with session_scope() as session:
        for job in session.scalars(select(Job)):
            assert password not in repr([getattr(job, c.key) for c in Job.__table__.columns])
    assert password not in caplog.text
    for key in redis_client.scan_iter(count=1000):
        assert password.encode() not in key
        kind = redis_client.type(key)
        if kind == b"string":
            assert password.encode() not in (redis_client.get(key) or b"")
        elif kind == b"hash":
            assert all(password.encode() not in value for value in redis_client.hvals(key))
        elif kind == b"list":
            assert all(password.encode() not in value for value in redis_client.lrange(key, 0, -1))


def test_the_demo_prints_its_database_url_without_the_password(tmp_path):
    # Given a database URL with a password, and a Redis that is not there
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql+psycopg2://postgres:{PLANTED}@127.0.0.1:1/none",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "VAR_DIR": str(tmp_path),
    }

    # When the demo starts (and stops at once: nothing answers)
    completed = subprocess.run(
        [sys.executable, "-m", "cli", "demo", "--timeout", "1", "--no-linger"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )

    # Then whatever it printed, the password was not part of it
    assert "postgres:***@127.0.0.1:1/none" in completed.stdout
    assert PLANTED not in completed.stdout + completed.stderr


def test_secret_arguments_reach_the_actor_but_no_job_row_and_a_failed_one_is_not_retried_with_masks(
    worker, redis_client
):
    import uuid

    from pipelines.ops import Conflict, retry
    from tests.core.sample_actors import signs_in
    from tests.support import wait_for_job

    key = f"test:{uuid.uuid4().hex}"
    # Given a job whose arguments carry a password (by name), a pin (the actor's secret_args), an API key
    # inside a dict and a database URL with a password
    options = {"api_key": "planted-key", "dsn": "postgresql://app:planted-url-pw@db/app", "fail": True}
    message = signs_in.send(key, "planted-secret", "4321", options=options)

    # When a real worker runs it
    row = wait_for_job(message.message_id)

    # Then the actor received every secret as sent
    assert redis_client.get(key) == b"1"
    assert row.state == "failed"
    # And the job row shows the arguments with each secret masked and the rest readable
    for secret in ("planted-secret", "4321", "planted-key", "planted-url-pw"):
        assert secret not in (row.args or "")
    assert key in row.args and "app@db/app" in row.args.replace(":***", "")
    # And retrying it from its row refuses to send the masks in place of the secrets
    with pytest.raises(Conflict, match="secret arguments"):
        retry(message.message_id)
