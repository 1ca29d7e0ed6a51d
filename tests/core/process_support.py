"""Helpers for tests that run the real `dramatiq` command and other processes on an embedded Redis."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DRAMATIQ = str(Path(sys.executable).parent / "dramatiq")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.25):
            return True
    except OSError:
        return False


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited (an unreaped zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def embedded_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment of its own: embedded Redis, a SQLite file and metrics under ``tmp_path``."""
    var = tmp_path / "var"
    env = {
        **os.environ,
        "REDIS_URL": "embedded",
        "VAR_DIR": str(var),
        "DATABASE_URL": f"sqlite:///{var / 'platform.db'}",
        "METRICS_DIR": str(var / "metrics"),
        "PROMETHEUS_MULTIPROC_DIR": str(var / "metrics"),
        "METRICS_PORT": str(free_port()),
        "PYTHONPATH": str(ROOT),
    }
    env.update(extra)
    return env


def registry(env: dict[str, str]) -> dict[str, Any]:
    """The embedded Redis registry (port, pid, users) of this environment, or {} before there is one."""
    path = Path(env["VAR_DIR"]) / "embedded-redis" / "registry.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def start_worker(env: dict[str, str], log: Path, *options: str) -> subprocess.Popen[bytes]:
    """`dramatiq actors tests.core.sample_actors` with ``options``, in a process group of its own."""
    with open(log, "ab") as output:
        return subprocess.Popen(
            [DRAMATIQ, "actors", "tests.core.sample_actors", *options],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 90) -> int:
    """Signal the command and wait for it to exit; returns its exit code.

    A SIGTERM goes to the parent only, as `kill PID`, `docker stop` and systemd's KillMode=mixed send
    it: Dramatiq's worker processes take a second SIGTERM (the group's, then the parent's relay) as
    "kill now", and a killed process runs none of its shutdown hooks. Other signals go to the group.
    """
    try:
        if sig == signal.SIGTERM:
            os.kill(process.pid, sig)
        else:
            os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
    return process.wait(timeout)


def kill(process: subprocess.Popen[bytes]) -> None:
    """Make sure nothing of a started command is left running."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(30)


def run_python(env: dict[str, str], code: str, *args: str, timeout: float = 120) -> str:
    """Run a Python snippet in a fresh process of ``env``; returns its stdout, fails on a non-zero exit."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


SEND = """
    import json, sys
    from tests.core.sample_actors import counts
    key, count = sys.argv[1], int(sys.argv[2])
    delay = int(sys.argv[3]) if len(sys.argv) > 3 else None
    ids = [counts.send_with_options(args=(key, str(i)), delay=delay).message_id for i in range(count)]
    print(json.dumps(ids))
"""


def send_counts(env: dict[str, str], key: str, count: int, delay: int | None = None) -> list[str]:
    """Send ``count`` ``counts`` jobs from a process of their own (a producer); returns their ids."""
    args = [key, str(count)] + ([str(delay)] if delay is not None else [])
    return list(json.loads(run_python(env, SEND, *args).strip().splitlines()[-1]))


def job_rows(env: dict[str, str], ids: list[str]) -> dict[str, tuple[str, int]]:
    """(state, attempts) of each job id found in the environment's SQLite job table."""
    database = env["DATABASE_URL"].split("///", 1)[1]
    with sqlite3.connect(database, timeout=30) as connection:
        marks = ",".join("?" for _ in ids)
        found = connection.execute(f"SELECT id, state, attempts FROM jobs WHERE id IN ({marks})", ids).fetchall()
    return {job_id: (state, attempts) for job_id, state, attempts in found}
