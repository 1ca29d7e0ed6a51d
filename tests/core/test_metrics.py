"""Metric values after N messages, scraped over HTTP from the exposition server."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

from settings import settings
from tests.support import wait_for_job, wait_until

ROOT = Path(__file__).resolve().parents[2]
DRAMATIQ = str(Path(sys.executable).parent / "dramatiq")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def _value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{label}="{value}"' in line for label, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_messages_by_outcome_and_show_queue_depth(worker, broker):
    from metrics_server import serve_metrics
    from tests.core.sample_actors import counts, rejects_input

    key = f"test:{uuid.uuid4().hex}"
    # Port 0 is a free port from the OS, never the configured one another process may hold.
    server = serve_metrics("127.0.0.1", 0, block=False)
    port = server.server_address[1]
    assert port != settings.metrics_port
    try:
        start = _scrape(port)
        base_ok = _value(start, "dramatiq_messages_total", actor_name="counts", outcome="succeeded")
        base_failed = _value(start, "dramatiq_messages_total", actor_name="rejects_input", outcome="failed")

        # Given 25 succeeding and 3 failing messages processed by a real worker
        ok = [counts.send(key, str(index)) for index in range(25)]
        bad = [rejects_input.send(key) for _ in range(3)]
        for message in ok + bad:
            wait_for_job(message.message_id)

        # When the metrics are scraped over HTTP (workers write them in half-second batches)
        def moved() -> str | None:
            text = _scrape(port)
            done = _value(text, "dramatiq_messages_total", actor_name="counts", outcome="succeeded") - base_ok
            failed = _value(text, "dramatiq_messages_total", actor_name="rejects_input", outcome="failed") - base_failed
            timed = _value(text, "dramatiq_message_duration_seconds_count", actor_name="counts")
            waited = _value(text, "dramatiq_message_queue_wait_seconds_count", actor_name="counts")
            return text if min(done, timed, waited) >= 25 and failed >= 3 else None

        text = wait_until(moved, timeout=60, interval=0.2)

        # Then the counters moved by exactly those numbers
        assert _value(text, "dramatiq_messages_total", actor_name="counts", outcome="succeeded") - base_ok == 25
        assert _value(text, "dramatiq_messages_total", actor_name="rejects_input", outcome="failed") - base_failed == 3
        assert _value(text, "dramatiq_message_duration_seconds_count", actor_name="counts") >= 25
        assert _value(text, "dramatiq_message_queue_wait_seconds_count", actor_name="counts") >= 25
        # And the broker-side gauges are there, with HELP text
        assert re.search(r'dramatiq_queue_messages\{queue_name="default",state="ready"\} \d', text)
        assert re.search(r'dramatiq_workers_alive\{queue_name="default"\} [1-9]', text)
        assert "# HELP dramatiq_messages_total Messages processed, by outcome." in text
    finally:
        server.shutdown()


def _start_worker_command(metrics_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "METRICS_DIR": str(metrics_dir),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "METRICS_PORT": str(port),
    }
    return subprocess.Popen(
        [DRAMATIQ, "actors", "tests.core.sample_actors", "-p", "2", "-t", "2", "-Q", "default"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _succeeded(port: int) -> float:
    try:
        return _value(_scrape(port), "dramatiq_messages_total", actor_name="counts", outcome="succeeded")
    except OSError:
        return -1.0


def test_each_worker_command_counts_from_zero_and_its_processes_never_wipe_each_other(broker, tmp_path):
    from tests.core.sample_actors import counts

    key = f"test:{uuid.uuid4().hex}"
    metrics_dir = tmp_path / "metrics"
    port = _free_port()
    broker.flush_all()

    # Given a metrics directory into which a first `dramatiq` command counted 3 messages
    first = _start_worker_command(metrics_dir, port)
    try:
        for message in [counts.send(key, str(index)) for index in range(3)]:
            assert wait_for_job(message.message_id, timeout=120).state == "succeeded"
        wait_until(lambda: _succeeded(port) == 3, timeout=60, interval=0.2)
    finally:
        _stop(first)
    assert list(metrics_dir.glob("*.db")), "the first command left its process files"

    # When a second command with two processes starts on the same directory and runs 2 messages
    second = _start_worker_command(metrics_dir, port)
    try:
        for message in [counts.send(key, f"again-{index}") for index in range(2)]:
            assert wait_for_job(message.message_id, timeout=120).state == "succeeded"

        # Then its counter shows those 2 alone: the first command's files were wiped at its start, and
        # neither of its own processes wiped what the other had written
        wait_until(lambda: _succeeded(port) >= 2, timeout=60, interval=0.2)
        assert _succeeded(port) == 2
    finally:
        _stop(second)
