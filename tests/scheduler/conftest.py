"""Fixtures of the scheduler tests: Redis keys under a fresh namespace, the SQL schema.

``redis_client`` is the project's (tests/conftest.py): the broker's Redis, real.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis


@pytest.fixture
def namespace(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix no other test shares; its keys are removed afterwards."""
    name = f"test-scheduler-{uuid.uuid4().hex[:8]}"
    yield name
    keys = list(redis_client.scan_iter(f"{name}*"))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
def schedule_db() -> Iterator[None]:
    """The schema migrated; rows written by the test (actor names start with ``sched_test_``) removed."""
    from storage.db import migrate, session_scope
    from storage.models import ScheduleState

    migrate()
    yield
    with session_scope() as session:
        session.query(ScheduleState).filter(ScheduleState.actor.like("sched_test_%")).delete(synchronize_session=False)
