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
