"""Actors the core tests drive through real workers. They record what happened in Redis."""

from __future__ import annotations

import ctypes
import json
import subprocess
import time
from typing import Any

import dramatiq

import actors
from broker import redis_client_for
from middleware.job_status import report_progress
from middleware.time_limit import SoftTimeLimitExceeded
from processing.errors import InvalidArgument

QUEUE = "default"


def _redis() -> Any:
    client = redis_client_for(actors.broker)
    assert client is not None
    return client


@dramatiq.actor(queue_name=QUEUE, max_retries=3, min_backoff=200, max_backoff=5_000)
def flaky(key: str, failures: int) -> str:
    client = _redis()
    client.rpush(f"{key}:attempts", time.time())
    if client.llen(f"{key}:attempts") <= failures:
        raise ConnectionError(f"transient failure {client.llen(f'{key}:attempts')}")
    return "recovered"


@dramatiq.actor(queue_name=QUEUE, max_retries=2, min_backoff=100, max_backoff=1_000)
def always_fails(key: str) -> None:
    _redis().rpush(f"{key}:attempts", time.time())
    raise RuntimeError("this actor always fails")


@dramatiq.actor(queue_name=QUEUE, max_retries=3, min_backoff=100)
def rejects_input(key: str) -> None:
    _redis().rpush(f"{key}:attempts", time.time())
    raise InvalidArgument("the file is not a PDF")


@dramatiq.actor(queue_name=QUEUE, max_retries=3, min_backoff=100, retry_on=(ConnectionError,))
def retries_only_connection_errors(key: str) -> None:
    _redis().rpush(f"{key}:attempts", time.time())
    raise ValueError("not a connection error")


@dramatiq.actor(queue_name=QUEUE, max_retries=0, soft_time_limit=300, time_limit=5_000)
def cleans_up_at_soft_limit(key: str) -> str:
    try:
        while True:
            time.sleep(0.01)
    except SoftTimeLimitExceeded:
        _redis().set(f"{key}:cleaned", 1)
        raise


@dramatiq.actor(queue_name=QUEUE, max_retries=0, soft_time_limit=200, time_limit=600)
def ignores_soft_limit_in_subprocess(key: str) -> None:
    _redis().set(f"{key}:started", 1)
    subprocess.run(["sleep", "60"], check=False)
    _redis().set(f"{key}:returned", 1)


@dramatiq.actor(queue_name=QUEUE, max_retries=0, soft_time_limit=200, time_limit=600)
def blocked_in_c_call(key: str) -> None:
    _redis().set(f"{key}:started", 1)
    ctypes.CDLL(None).sleep(60)
    _redis().set(f"{key}:returned", 1)


@dramatiq.actor(queue_name=QUEUE, max_retries=0, soft_time_limit=200, time_limit=600)
def stuck_in_uninterruptible_sleep(key: str) -> None:
    # time.sleep resumes after a signal, so only abandoning the thread ends this attempt.
    _redis().set(f"{key}:started", 1)
    time.sleep(8)
    _redis().set(f"{key}:returned", 1)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def counts(key: str, member: str) -> str:
    _redis().sadd(key, member)
    return member


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def records_order(key: str, label: str) -> None:
    _redis().rpush(key, label)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def slow_counts(key: str, member: str, seconds: float) -> str:
    time.sleep(seconds)
    _redis().sadd(key, member)
    return member


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def reports_progress(key: str, steps: int, pause: float) -> dict[str, int]:
    client = _redis()
    for step in range(1, steps + 1):
        time.sleep(pause)
        report_progress(step * 100 / steps, f"step {step} of {steps}")
        client.set(f"{key}:step", step)
    return {"steps": steps}


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def typed(path: str, count: int, ratio: float = 1.0, tags: list[str] | None = None) -> int:
    return count


@dramatiq.actor(queue_name=QUEUE, max_retries=0, on_success="record_callback", on_failure="record_callback")
def with_callbacks(key: str, fail: bool) -> dict[str, str]:
    if fail:
        raise InvalidArgument("asked to fail")
    return {"key": key}


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def record_callback(message: dict[str, Any], outcome: Any) -> None:
    key = message["args"][0]
    _redis().rpush(f"{key}:callbacks", json.dumps({"actor": message["actor_name"], "outcome": outcome}))


@dramatiq.actor(queue_name=QUEUE, max_retries=0, rate_limit="3/2s")
def rate_limited(key: str, member: str) -> None:
    _redis().rpush(f"{key}:starts", time.time())
