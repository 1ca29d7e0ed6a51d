"""Local receivers for the notification tests: a Standard Webhooks endpoint and a LINE-shaped push API.

Each listens on 127.0.0.1 on a free port, in a thread, answers what the test scripted (``answer(...)``,
one answer per request, the last one repeated), and records every request it got. The webhook receiver
verifies each request with the ``standardwebhooks`` package, as a real receiver would.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Answer:
    """One scripted answer: a status after ``delay_s`` seconds. ``accept`` (LINE) takes the push in even
    though the status says otherwise, as when an answer is lost on its way back."""

    status: int = 200
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    accept: bool = False


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    error: str | None = None

    def header(self, name: str) -> str | None:
        return {key.lower(): value for key, value in self.headers.items()}.get(name.lower())


class _Server:
    """A threaded HTTP server that hands each POST to ``handle(path, headers, body) -> Answer``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: list[Answer] = [Answer()]
        self.received: list[Received] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = owner.handle(self.path, dict(self.headers), body)
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except OSError:
                    pass  # the client gave up waiting (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def answer(self, *answers: Answer | int) -> None:
        """Answer the next requests with these, in order; the last one is repeated."""
        with self._lock:
            self._script = [Answer(a) if isinstance(a, int) else a for a in answers] or [Answer()]

    def next_answer(self) -> Answer:
        with self._lock:
            return self._script.pop(0) if len(self._script) > 1 else self._script[0]

    def record(self, received: Received) -> None:
        with self._lock:
            self.received.append(received)

    def requests(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received if path is None or r.path == path]

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class WebhookReceiver(_Server):
    """An endpoint that verifies each request's Standard Webhooks signature under ``secret``.

    A request that does not verify is recorded with ``verified=False`` and answered 400.
    """

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret
        self.endpoint_id = 0  # the id a test registered it under

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        from standardwebhooks import Webhook, WebhookVerificationError

        try:
            Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError as error:
            self.record(Received(path, headers, body, verified=False, error=str(error)))
            return Answer(400, body=b"bad signature")
        self.record(Received(path, headers, body, verified=True))
        return self.next_answer()

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(r.body) for r in self.requests() if r.verified]


class LineReceiver(_Server):
    """Shaped like LINE's push endpoint: a Bearer token, ``{"to", "messages": [...]}``, and retry keys.

    A push whose ``X-Line-Retry-Key`` was accepted before is answered 409, with the id of the request
    that was accepted, and not delivered again. ``delivered`` holds each push taken in, once.
    """

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.accepted: dict[str, str] = {}  # retry key → request id
        self.delivered: list[dict[str, Any]] = []

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        received = Received(path, headers, body, verified=False)
        if received.header("Authorization") != f"Bearer {self.token}":
            self.record(received)
            # Quotes what it got, as some APIs do: the client must keep it out of its records.
            quoted = json.dumps({"message": f"invalid token: {received.header('Authorization')}"}).encode()
            return Answer(401, body=quoted, headers={"Content-Type": "application/json"})
        try:
            push = json.loads(body)
            assert isinstance(push["to"], str)
            assert all(m["type"] == "text" and isinstance(m["text"], str) for m in push["messages"])
        except (ValueError, KeyError, TypeError, AssertionError):
            self.record(received)
            return Answer(400, body=b'{"message":"The request body has 1 error(s)"}')
        self.record(Received(path, headers, body, verified=True))
        key = received.header("X-Line-Retry-Key") or ""
        with self._lock:
            if key and key in self.accepted:
                return Answer(
                    409,
                    headers={"x-line-accepted-request-id": self.accepted[key], "Content-Type": "application/json"},
                    body=b'{"message":"The retry key is already accepted"}',
                )
        answer = self.next_answer()
        if 200 <= answer.status < 300 or answer.accept:
            with self._lock:
                if key:
                    self.accepted[key] = str(uuid.uuid4())
                self.delivered.append(push)
        return answer

    def retry_keys(self) -> list[str | None]:
        return [r.header("X-Line-Retry-Key") for r in self.requests() if r.verified]


@contextlib.contextmanager
def webhook_receiver(secret: str) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(secret)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


@contextlib.contextmanager
def line_receiver(token: str) -> Iterator[LineReceiver]:
    receiver = LineReceiver(token)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
