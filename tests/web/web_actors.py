"""Actors the web tests drive through a real server and real workers; the server imports them too
(``cli serve --import tests.web.web_actors``)."""

from __future__ import annotations

import time
from typing import Any

import dramatiq

import actors
from broker import redis_client_for
from middleware.job_status import report_progress
from processing.errors import InvalidArgument

QUEUE = "default"


def _redis() -> Any:
    client = redis_client_for(actors.broker)
    assert client is not None
    return client


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def add(a: int, b: int) -> dict[str, int]:
    return {"sum": a + b}


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def reject(reason: str) -> None:
    raise InvalidArgument(reason)


@dramatiq.actor(queue_name=QUEUE, max_retries=1, min_backoff=50, max_backoff=100)
def fails_until_fixed(key: str) -> str:
    """Raises until ``{key}:fixed`` is set in Redis: it goes dead, then succeeds once replayed."""
    if not _redis().get(f"{key}:fixed"):
        raise RuntimeError(f"{key} is broken")
    return "fixed"


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def steps(key: str, count: int) -> int:
    """Reports progress step by step; each step waits for the test to allow it (``{key}:go`` >= step),
    so a test sees every value without depending on timing. Gives up a step after 60 s."""
    client = _redis()
    for step in range(1, count + 1):
        deadline = time.monotonic() + 60
        while int(client.get(f"{key}:go") or 0) < step and time.monotonic() < deadline:
            time.sleep(0.02)
        report_progress(100 * step / count, f"step {step} of {count}")
    return count
