"""A local HTTP server that speaks the Anthropic Messages API (``POST /v1/messages``) and OpenAI chat
completions (``POST /v1/chat/completions``), so the real SDK clients run against it.

Replies follow a plan (``plan(...)``): each planned step is a status, headers, a reply text and an optional
delay; when the plan is empty the server answers with the offline rules' JSON for the prompt it got, so
replies are valid and depend on the input. Every request is logged (path, headers, body).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass
class Step:
    status: int = 200
    text: str | None = None  # the reply's text; None: the default answer
    headers: dict[str, str] = field(default_factory=dict)
    message: str = ""  # an error's message
    code: str | None = None  # an error's machine-readable code
    delay: float = 0.0  # seconds before answering
    wait_for: threading.Event | None = None  # answer only once this is set
    input_tokens: int = 100
    output_tokens: int = 50


def default_answer(body: dict[str, Any]) -> str:
    """What the offline rules answer to the prompt in ``body`` (either wire format)."""
    from processing.llm.prompts import TEXT_END, TEXT_START
    from processing.llm.providers.offline import extract_strategy_by_rules

    texts = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        else:
            texts += [part.get("text", "") for part in content if isinstance(part, dict)]
    prompt = "\n".join(texts)
    if TEXT_START in prompt:
        source = prompt.split(TEXT_START, 1)[1].rsplit(TEXT_END, 1)[0]
        return json.dumps(extract_strategy_by_rules(source))
    return json.dumps(
        {"trend": "up", "support_levels": [1.0], "resistance_levels": [2.0], "patterns": [], "indicators": ["RSI"]}
    )


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    # Fifty clients connect at once in the benchmark; the default backlog of 5 would refuse some.
    request_queue_size = 256

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that went away (a killed worker, a timeout) is part of the tests


class LLMServer:
    """Serves both wire formats on 127.0.0.1 at a free port until ``close()``."""

    def __init__(self, answer: Callable[[dict[str, Any]], str] = default_answer, *, latency: float = 0.0) -> None:
        self.answer = answer
        # Seconds every unplanned reply waits, like a model generating its answer.
        self.latency = latency
        self.steps: list[Step] = []
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.hold = threading.Event()
        self.hold.set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with server.lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    step = server.steps.pop(0) if server.steps else Step(delay=server.latency)
                server.hold.wait(60)
                if step.wait_for is not None:
                    step.wait_for.wait(120)
                if step.delay:
                    time.sleep(step.delay)
                if self.path.startswith("/v1/messages"):
                    status, payload = server._anthropic(step, body)
                elif self.path.startswith("/v1/chat/completions"):
                    status, payload = server._openai(step, body)
                else:
                    status, payload = 404, {"error": {"message": f"no route {self.path}"}}
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("request-id", f"req_{uuid.uuid4().hex[:12]}")
                    for name, value in step.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def plan(self, *steps: Step) -> None:
        with self.lock:
            self.steps.extend(steps)

    def count(self, path: str | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.requests if path is None or r["path"].startswith(path))

    def close(self) -> None:
        self.hold.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _text(self, step: Step, body: dict[str, Any]) -> str:
        return step.text if step.text is not None else self.answer(body)

    def _anthropic(self, step: Step, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if step.status != 200:
            error_type = ERROR_TYPES.get(step.status, "api_error")
            error: dict[str, Any] = {"type": error_type, "message": step.message or error_type}
            if step.code:
                error["details"] = {"error_code": step.code}
            return step.status, {"type": "error", "error": error}
        return 200, {
            "id": f"msg_{uuid.uuid4().hex[:20]}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "claude-test"),
            "content": [{"type": "text", "text": self._text(step, body)}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": step.input_tokens,
                "output_tokens": step.output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }

    def _openai(self, step: Step, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if step.status != 200:
            return step.status, {
                "error": {"message": step.message or "error", "type": ERROR_TYPES.get(step.status), "code": step.code}
            }
        return 200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:20]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "gpt-test"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self._text(step, body)},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": step.input_tokens,
                "completion_tokens": step.output_tokens,
                "total_tokens": step.input_tokens + step.output_tokens,
            },
        }


def run_forever() -> None:
    """``python -m tests.llm.llm_server PORTFILE [LATENCY_S]``: serve until killed (the benchmark runs it in
    a process of its own, so the server's threads compete with neither path it measures)."""
    import sys

    server = LLMServer(latency=float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)
    with open(sys.argv[1], "w") as handle:
        handle.write(str(server.port))
    server.thread.join()


if __name__ == "__main__":
    run_forever()
