"""SDK errors to this package's errors, the same way for both SDKs (they share one error shape)."""

from __future__ import annotations

import email.utils
import time
from typing import Any

from processing.llm.errors import ProviderBusy, ProviderRejected, ProviderUnavailable, redact

#: Status codes that are worth another try later (besides 429 and 5xx).
_TRANSIENT_STATUS = {408, 409}


def retry_after_ms(headers: Any) -> int | None:
    """Milliseconds a response asks us to wait: ``retry-after-ms``, else ``retry-after`` (seconds or a date)."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(int(float(raw_ms)), 0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(int(float(raw) * 1000), 0)
    except ValueError:
        pass
    parsed = email.utils.parsedate_to_datetime(raw) if raw else None
    if parsed is None:
        return None
    return max(int((parsed.timestamp() - time.time()) * 1000), 0)


def _provider_message(error: Any) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(getattr(error, "message", "") or error)


def _error_code(error: Any) -> str | None:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            details = inner.get("details")
            code = details.get("error_code") if isinstance(details, dict) else inner.get("code")
            return str(code) if code else None
    return None


def translate(
    error: Exception,
    *,
    provider: str,
    timeout_ms: int,
    default_wait_ms: int,
    status_error: type[Exception],
    timeout_error: type[Exception],
    connection_error: type[Exception],
) -> Exception:
    """The error to raise for an SDK error; its text names the provider and status, never the key."""
    if isinstance(error, timeout_error):
        return ProviderUnavailable(f"{provider}: no reply within {timeout_ms} ms")
    if isinstance(error, connection_error):
        return ProviderUnavailable(redact(f"{provider}: connection failed: {error}"))
    if not isinstance(error, status_error):
        return error
    status = int(getattr(error, "status_code", 0) or 0)
    message = redact(_provider_message(error))[:1000]
    text = f"{provider} {status}: {message}"
    wait = retry_after_ms(getattr(getattr(error, "response", None), "headers", None))
    if status == 429:
        if _error_code(error) in ("enforced_spend_limit_reached", "insufficient_quota"):
            # A spend cap does not lift by waiting a minute: say so instead of retrying all month.
            return ProviderRejected(text)
        delay = wait if wait is not None else default_wait_ms
        return ProviderBusy(f"{text} (waiting {delay} ms)", delay_ms=delay)
    if status == 529 and wait is not None:
        return ProviderBusy(f"{text} (waiting {wait} ms)", delay_ms=wait)
    if status >= 500 or status in _TRANSIENT_STATUS:
        return ProviderUnavailable(text)
    return ProviderRejected(text)
