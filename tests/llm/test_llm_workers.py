"""LLM jobs on real ``dramatiq`` worker processes: limits shared by two of them, no double billing
when a killed worker's message is delivered again."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.llm.conftest import PLANTED_KEY
from tests.llm.llm_server import LLMServer, Step
from tests.support import wait_for_job, wait_until

ROOT = Path(__file__).resolve().parents[2]
DRAMATIQ = str(Path(sys.executable).parent / "dramatiq")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_worker(server: LLMServer, log: Path, **env: str) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LLM_PROVIDER": "anthropic",
        "LLM_API_KEY": PLANTED_KEY,
        "LLM_BASE_URL": server.url,
        "LLM_CACHE_TTL_MS": "0",
        "LLM_TOKENS_PER_MINUTE": "0",
        "METRICS_PORT": str(_free_port()),
        **env,
    }
    handle = open(log, "wb")  # noqa: SIM115
    return subprocess.Popen(
        [DRAMATIQ, "actors", "-p", "1", "-t", "1", "-Q", "llm"],
        cwd=ROOT,
        env=environment,
        stdout=handle,
        stderr=handle,
        start_new_session=True,
    )


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def _llm_workers(redis_client, pids: set[int]) -> int:  # type: ignore[no-untyped-def]
    import json

    from broker import workers_key

    count = 0
    for raw in redis_client.hgetall(workers_key()).values():
        info = json.loads(raw)
        if "llm" in info["queues"] and info["pid"] not in pids and info["seen"] > (time.time() - 5) * 1000:
            count += 1
    return count


def test_two_worker_processes_share_one_requests_per_minute_limit(broker, redis_client, tmp_path):
    from actors.llm import extract_trading_strategy

    server = LLMServer()
    server.plan(*[Step(delay=0.3) for _ in range(20)])
    broker.flush_all()
    for key in redis_client.scan_iter("llm:limits:*"):
        redis_client.delete(key)
    before = {os.getpid()}
    # Given two worker processes allowed 3 requests a minute between them, well inside one minute window
    wait_until(lambda: time.time() % 60 < 30, timeout=40, interval=0.5)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    workers = [_start_worker(server, log, LLM_REQUESTS_PER_MINUTE="3") for log in logs]
    try:
        wait_until(lambda: _llm_workers(redis_client, before) >= 2, timeout=60, interval=0.2)

        # When 10 extraction jobs arrive
        messages = [extract_trading_strategy.send(f"Buy when RSI(14) < 30. Job {index}.") for index in range(10)]

        # Then 3 reach the provider and succeed, and the other 7 are delayed to the next window
        def settled() -> bool:
            done = [wait_for_job(m.message_id, states=frozenset({"succeeded", "running", "queued"})) for m in messages]
            return sum(job.state == "succeeded" for job in done) == 3 and redis_client.hlen("dramatiq:llm.DQ.msgs") == 7

        wait_until(settled, timeout=90, interval=0.3)
        assert server.count() == 3
        # by both processes: each put back messages it found over the shared limit
        for log in logs:
            assert "delayed" in log.read_text(errors="replace"), log.read_text(errors="replace")[-2000:]
        assert all(PLANTED_KEY not in log.read_text(errors="replace") for log in logs)
    finally:
        for worker in workers:
            _stop(worker)
        server.close()
        broker.flush_all()


def test_a_redelivered_job_reuses_the_completion_it_already_paid_for(broker, redis_client, tmp_path):
    from actors.llm import extract_trading_strategy
    from storage.llm import calls_of, get_strategy

    server = LLMServer()
    release = threading.Event()
    # The first part is answered, the second held until the worker that asked has been killed.
    server.plan(Step(), Step(wait_for=release))
    broker.flush_all()
    filler = "Markets move in cycles and patience matters a great deal to a trader. " * 20
    text = f"Buy when RSI(14) falls below 30 on the 4h chart. {filler}\n\n{filler}\n\nExit when the 20-day EMA is lost."
    env = {"LLM_CHUNK_CHARS": "2000", "LLM_REQUESTS_PER_MINUTE": "0", "HEARTBEAT_TIMEOUT_MS": "2000"}
    first = _start_worker(server, tmp_path / "first.log", **env)
    second = None
    try:
        # Given a two-part extraction whose first part was paid for when its worker was SIGKILLed
        message = extract_trading_strategy.send(text)
        wait_until(lambda: server.count() >= 2, timeout=90, interval=0.1)
        _stop(first, signal.SIGKILL)
        release.set()

        # When another worker gets the message again
        second = _start_worker(server, tmp_path / "second.log", **env)
        job = wait_for_job(message.message_id, timeout=120)

        # Then the job succeeded, and the first part was sent to the provider only once
        assert job.state == "succeeded", job.error_message
        prompts = [str(request["body"]["messages"]) for request in server.requests]
        assert sum("part 1 of 2" in prompt for prompt in prompts) == 1
        assert sum("part 2 of 2" in prompt for prompt in prompts) == 2
        outcomes = [call["outcome"] for call in calls_of(message.message_id)]
        assert outcomes == ["ok", "reused", "ok"]
        strategy = get_strategy(job_id=message.message_id)
        assert strategy is not None and strategy["parts"] == 2
        assert strategy["exit_rules"] == ["Exit when the 20-day EMA is lost."]
    finally:
        _stop(first, signal.SIGKILL)
        if second is not None:
            _stop(second)
        server.close()
        broker.flush_all()
