"""A real ``python -m cli serve`` on a free port, in front of the session's Redis and database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-for-the-web-suite"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    token: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, *, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def start_server(log: Path, *, host: str = "127.0.0.1", token: str | None = TOKEN, extra: list[str] = ()) -> Server:  # type: ignore[assignment]
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("API_TOKEN", None)
    if token:
        env["API_TOKEN"] = token
    handle = open(log, "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "serve",
            "--host",
            host,
            "--port",
            str(port),
            "--import",
            "tests.web.web_actors",
            *extra,
        ],
        cwd=ROOT,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/static/console.css", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_server(process)
            raise AssertionError(f"the server did not answer within 120 s: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    return Server(url, token or "", process, log)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


@pytest.fixture(scope="session")
def server(broker, tmp_path_factory) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    """The API and console served by uvicorn in its own process; the session's broker is ready."""
    import tests.web.web_actors  # noqa: F401  (the in-process workers run them too)

    running = start_server(tmp_path_factory.mktemp("web") / "server.log")
    try:
        yield running
    finally:
        stop_server(running.process)


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    """A client that carries the token."""
    with server.client(token=server.token) as client:
        yield client
