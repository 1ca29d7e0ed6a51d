"""Actors the core tests drive through real workers. They record what happened in Redis."""

from __future__ import annotations

import ctypes
import json
import os
import socket
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
def holds_until_released(key: str) -> None:
    """Occupy a worker thread until the test pushes to ``{key}:release`` (or a minute passes)."""
    client = _redis()
    client.set(f"{key}:holding", 1)
    deadline = time.monotonic() + 60
    # Short polls: the broker's client has a socket timeout shorter than a long BLPOP.
    while not client.exists(f"{key}:release") and time.monotonic() < deadline:
        time.sleep(0.02)


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


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def fails_with_a_long_message(key: str) -> None:
    _redis().rpush(key, "long")
    raise InvalidArgument("this input is bad: " + "x" * 100_000)


@dramatiq.actor(queue_name="collection", max_retries=0)
def counts_elsewhere(key: str, member: str) -> str:
    # The same as `counts` on another queue, for a test that sends work to one worker of two.
    _redis().sadd(key, member)
    return member


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


@dramatiq.actor(queue_name=QUEUE, max_retries=1, rate_limit="1/m", soft_time_limit=500, time_limit=1_000)
def rate_limited_slowly(key: str, member: str) -> None:
    # One message a minute: a delivery over the limit waits 60-120 s, far past this actor's hard limit.
    _redis().rpush(f"{key}:runs", member)


@dramatiq.actor(queue_name=QUEUE, max_retries=1)
def slow_records(key: str, seconds: float) -> None:
    _redis().rpush(f"{key}:runs", time.time())
    time.sleep(seconds)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def waits_for_go(key: str) -> str:
    # A Python loop that never reports progress: only an interrupt stops it before `go`.
    client = _redis()
    client.rpush(f"{key}:events", f"start {time.time()}")
    while not client.get(f"{key}:go"):
        time.sleep(0.01)
    client.rpush(f"{key}:events", f"end {time.time()}")
    client.set(f"{key}:ran", 1)
    return "ran"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dramatiq.actor(queue_name=QUEUE, max_retries=1, min_backoff=100, max_backoff=200, soft_time_limit=300, time_limit=600)
def will_not_stop(key: str, how: str) -> None:
    """Blocks where neither limit reaches it: signals interrupt the call, but it resumes by itself."""
    client = _redis()
    # Is an earlier attempt of this job still running somewhere on this machine?
    for entry in client.lrange(f"{key}:starts", 0, -1):
        pid = int(entry.split()[0])
        if _alive(pid):
            client.rpush(f"{key}:overlaps", f"{pid} still runs as {os.getpid()} starts")
    client.rpush(f"{key}:starts", f"{os.getpid()} {time.time()}")
    try:
        if how == "sleep":
            time.sleep(120)
        elif how == "socket":
            # A local server that accepts and never answers; recv resumes after every signal.
            server = socket.create_server(("127.0.0.1", 0))
            with server, socket.create_connection(server.getsockname()) as connection:
                connection.recv(1)
        elif how == "c-call":
            # pthread_mutex_lock on a mutex this thread holds: a C wait that no signal ends.
            libc = ctypes.CDLL(None)
            mutex = ctypes.create_string_buffer(64)
            libc.pthread_mutex_lock(mutex)
            libc.pthread_mutex_lock(mutex)
    finally:
        client.rpush(f"{key}:ends", f"{os.getpid()} {time.time()}")


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def records_run(key: str, seconds: float) -> None:
    client = _redis()
    client.rpush(key, f"start {os.getpid()}")
    time.sleep(seconds)
    client.rpush(key, f"end {os.getpid()}")


@dramatiq.actor(queue_name=QUEUE, max_retries=0, soft_time_limit=100, time_limit=5_000)
def ends_at_its_soft_limit(key: str, seconds: float) -> str:
    # Python steps until about its soft limit: the limit lands inside, or just as it returns.
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.001)
    _redis().rpush(key, "returned")
    return "returned"


@dramatiq.actor(queue_name=QUEUE, max_retries=0, secret_args=("pin",))
def signs_in(key: str, password: str, pin: str, options: dict[str, Any] | None = None) -> bool:
    """Records whether it received the real secrets (the test knows them); fails when told to."""
    received = password == "planted-secret" and pin == "4321" and (options or {}).get("api_key") == "planted-key"
    _redis().set(key, int(received))
    if (options or {}).get("fail"):
        raise InvalidArgument("told to fail")
    return received


class _SlowFinalizer:
    """Busy in ``__del__`` (as a library's finalizer can be): an interrupt that lands there is dropped by
    Python unless the platform raises it again."""

    def __del__(self) -> None:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            pass


@dramatiq.actor(queue_name=QUEUE, max_retries=0, soft_time_limit=300, time_limit=30_000)
def interrupted_in_a_finalizer(key: str) -> str:
    _SlowFinalizer()  # collected at once: the soft limit fires while its __del__ runs
    _redis().set(key, "after the finalizer")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pass
    return "ran past its soft limit"
