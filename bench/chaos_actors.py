"""The chaos benchmark's actor: each execution that finishes adds one to its job's count in Redis, so a
lost job (count 0) and one that ran twice (count 2) are counted exactly."""

from __future__ import annotations

import time

import dramatiq

import actors
from bench.chaos_keys import hold_key, runs_key, starts_key
from broker import redis_client_for

broker = actors.broker


# A held job goes on after this long even if the scenario never releases it: a stuck run gets slow, not hung.
HOLD_AT_MOST_S = 15.0


def _wait_while_held(client, run: str, index: int) -> None:
    deadline = time.monotonic() + HOLD_AT_MOST_S
    while time.monotonic() < deadline:
        hold = client.get(hold_key(run))
        if hold is None or index < int(hold):
            return
        time.sleep(0.02)


# Retries cover a Redis outage while the job records itself; the backoff is short so a run ends soon.
@dramatiq.actor(queue_name="default", max_retries=20, min_backoff=200, max_backoff=2_000)
def record_execution(run: str, index: int, seconds: float = 0.0) -> int:
    client = redis_client_for(broker)
    assert client is not None
    _wait_while_held(client, run, index)
    if seconds:
        client.hincrby(starts_key(run), str(index), 1)
        time.sleep(seconds)
    return int(client.hincrby(runs_key(run), str(index), 1))
