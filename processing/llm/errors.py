"""How a provider call can fail, sorted by what should follow.

- ``ProviderBusy`` (a ``TryLater``): 429, or 529 with a ``Retry-After``; the job waits that long and the
  wait is not a failed attempt.
- ``ProviderUnavailable``: 5xx, a timeout, a lost connection; the platform's retries take it.
- ``ProviderRejected`` (a ``PermanentError``): 400, 401, 403, 404, 413, 422; never retried, the job fails
  with the provider's own message.
- ``InvalidReply`` (a ``PermanentError``): the reply broke the schema after every re-ask; the raw reply
  is kept on the error and in the ledger.
- ``BudgetExhausted`` (a ``PermanentError``): the daily token budget is spent and ``LLM_BUDGET_MODE`` is
  ``fail``.

Every message is built by this package from the status and the provider's text, with any secret the
provider was given replaced (``redact``), so a key cannot ride along into a job row or a log line.
"""

from __future__ import annotations

import logging
import threading

from processing.errors import PermanentError, TryLater

REDACTED = "[redacted]"


class ProviderBusy(TryLater):
    """The provider asked us to wait (rate limited or overloaded, with a time to wait)."""


class ProviderUnavailable(Exception):
    """A transient failure: 5xx, timeout, connection error. Retried with backoff."""


class ProviderRejected(PermanentError):
    """The provider refused the request for good (bad request, bad key, no permission)."""


class InvalidReply(PermanentError):
    """The replies did not parse as JSON or did not keep the schema, after every re-ask."""

    def __init__(self, message: str, *, raw_reply: str) -> None:
        super().__init__(message)
        self.raw_reply = raw_reply


class BudgetExhausted(PermanentError):
    """The daily token budget is spent and the budget mode is ``fail``."""


_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(secret: str) -> None:
    """Remember a key so ``redact`` and the log filter hide it wherever it shows up."""
    if secret and len(secret) >= 4:
        with _secrets_lock:
            _secrets.add(secret)
        _install_log_filter()


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``[redacted]``."""
    for secret in tuple(_secrets):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactSecrets(logging.Filter):
    """Rewrites a record whose message would show a registered secret (the SDKs and httpx log at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_filter = RedactSecrets()
_FILTERED_LOGGERS = ("anthropic", "openai", "httpx", "httpx2", "httpcore")


def _install_log_filter() -> None:
    for name in _FILTERED_LOGGERS:
        logger = logging.getLogger(name)
        if _filter not in logger.filters:
            logger.addFilter(_filter)
    root = logging.getLogger()
    for handler in root.handlers:
        if _filter not in handler.filters:
            handler.addFilter(_filter)
