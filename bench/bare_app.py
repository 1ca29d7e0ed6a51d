"""Bare Dramatiq for the throughput baseline: Redis broker with Dramatiq's default middleware only."""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ["BENCH_REDIS_URL"], namespace="bare")
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="default", max_retries=0)
def noop(payload: str | None = None) -> None:
    return None


@dramatiq.actor(queue_name="default", max_retries=0)
def record_latency(sent_at: float) -> None:
    broker.client.rpush("bench:latency", time.time() - sent_at)
