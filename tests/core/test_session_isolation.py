"""Two test sessions on one machine (a local run beside a CI run) never share a Redis database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]
SESSION = "import os, sys, tests.conftest; print(os.environ['REDIS_URL'], flush=True); sys.stdin.read()"


def _session() -> subprocess.Popen[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("TEST_REDIS_URL", "TEST_REDIS_LEASE")}
    return subprocess.Popen(
        [sys.executable, "-c", SESSION],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_second_session_leases_another_database_and_the_lease_ends_with_the_session() -> None:
    from tests.conftest import _LEASE_KEY

    # Given a session that holds a database
    first = _session()
    second = None
    try:
        assert first.stdout is not None
        first_url = first.stdout.readline().strip()
        # When a second one starts beside it
        second = _session()
        assert second.stdout is not None
        second_url = second.stdout.readline().strip()
        # Then it gets another database, and each holds its lease
        assert first_url.startswith("redis://127.0.0.1:6379/") and second_url.startswith("redis://127.0.0.1:6379/")
        assert first_url != second_url
        assert redis.Redis.from_url(first_url).exists(_LEASE_KEY)
        assert redis.Redis.from_url(second_url).exists(_LEASE_KEY)
    finally:
        for process in (first, second):
            if process is not None:
                process.communicate("", timeout=30)
    # And a session that ended gives its database back
    assert not redis.Redis.from_url(first_url).exists(_LEASE_KEY)
    assert not redis.Redis.from_url(second_url).exists(_LEASE_KEY)
