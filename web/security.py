"""Who may do what: the bearer token, the console's session cookie and CSRF tokens, the body cap.

Writes always need the token: ``Authorization: Bearer <API_TOKEN>`` on the API, or a console session
(made by signing in with the token) plus the form's CSRF token. Reads are open on a loopback bind and need
the same credentials on any other; a server off loopback refuses to start without a token.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import secrets
from pathlib import Path
from typing import Any

from settings import settings

SESSION_COOKIE = "taskforge_session"
CSRF_FIELD = "csrf_token"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_file() -> Path:
    return settings.var_dir / "api-token"


def resolve_token(host: str) -> str:
    """The token in force: ``API_TOKEN``, else (loopback only) one kept in ``var/api-token``."""
    if settings.api_token:
        return settings.api_token
    if not is_loopback(host):
        raise SystemExit(f"refusing to serve on {host}: a non-loopback address needs API_TOKEN")
    path = token_file()
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


class Guard:
    """Checks credentials against one token; made once per app."""

    def __init__(self, token: str, *, open_reads: bool) -> None:
        self.token = token
        self.open_reads = open_reads
        self._key = hashlib.sha256(b"taskforge-console:" + token.encode()).digest()

    def bearer_ok(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode(), self.token.encode())

    def token_ok(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.strip().encode(), self.token.encode())

    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    def new_session(self) -> str:
        nonce = secrets.token_urlsafe(16)
        return f"{nonce}.{self._sign('session', nonce)}"

    def session_ok(self, cookie: str | None) -> bool:
        if not cookie or "." not in cookie:
            return False
        nonce, signature = cookie.rsplit(".", 1)
        return hmac.compare_digest(signature, self._sign("session", nonce))

    def csrf_for(self, cookie: str | None) -> str:
        """The CSRF token of a session: forms carry it, a cross-site page cannot read it."""
        return self._sign("csrf", cookie or "")

    def csrf_ok(self, cookie: str | None, candidate: str | None) -> bool:
        return bool(cookie and candidate) and hmac.compare_digest(self.csrf_for(cookie), candidate or "")


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 before the app parses it. The upload
    paths take up to ``upload_max_bytes`` (a file plus its multipart framing)."""

    def __init__(
        self, app: Any, *, max_bytes: int, upload_paths: frozenset[str] = frozenset(), upload_max_bytes: int = 0
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_paths = upload_paths
        self.upload_max_bytes = upload_max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope.get("path") in self.upload_paths
        limit, setting = (self.upload_max_bytes, "MAX_FILE_BYTES") if upload else (self.max_bytes, "API_MAX_BODY_BYTES")
        declared = dict(scope.get("headers") or []).get(b"content-length")
        try:
            too_big = declared is not None and int(declared) > limit
        except ValueError:
            too_big = True
        if too_big:
            await _refuse(send, limit, setting)
            return
        received = 0
        refused = False

        async def counted() -> Any:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Answer now; to the app the client has gone, and what it answers is dropped.
                    refused = True
                    await _refuse(send, limit, setting)
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Any) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not refused:
                raise


async def _refuse(send: Any, max_bytes: int, setting: str) -> None:
    body = json.dumps({"detail": f"request body is over the {max_bytes}-byte limit ({setting})"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
