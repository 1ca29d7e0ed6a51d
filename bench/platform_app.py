"""The platform's full stack for the throughput benchmark: every project middleware, job table, metrics."""

from __future__ import annotations

import time

import dramatiq

import actors
from broker import redis_client_for

broker = actors.broker


@dramatiq.actor(queue_name="default", max_retries=0)
def noop(payload: str | None = None) -> None:
    return None


@dramatiq.actor(queue_name="default", max_retries=0)
def record_latency(sent_at: float) -> None:
    client = redis_client_for(broker)
    assert client is not None
    client.rpush("bench:latency", time.time() - sent_at)

import os as _os

_disabled = set(filter(None, _os.environ.get("BENCH_DISABLE", "").split(",")))
if _disabled:
    broker.middleware[:] = [m for m in broker.middleware if type(m).__name__ not in _disabled]
    import logging as _logging
    if "Lifecycle" in _disabled:
        _logging.getLogger("lifecycle").setLevel(_logging.WARNING)
