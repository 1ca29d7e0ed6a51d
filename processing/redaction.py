"""Credentials out of everything the platform prints or stores.

A connection URL (``postgresql://user:secret@host/db``, ``redis://:secret@host``, ``amqp://u:p@host``)
may carry a password. Nothing that reaches a log line, a job row, an error message or a metric label may
show it, so every such URL goes through ``redact_url`` first, and free text that might quote one (a
subprocess's error output, an exception message) through ``redact_text``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"

# scheme://user:password@  (the password is everything up to the last "@" before the host)
_CREDENTIALS = re.compile(r"(?P<prefix>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]*:)(?P<secret>[^\s@/]+)(?=@)")


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``; the user, host and path stay readable."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = f"{user}:{MASK}@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def url_password(url: str) -> str | None:
    """The (unquoted) password of ``url``, or ``None``."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password is not None else None


def without_password(url: str) -> str:
    """``url`` with no password at all, for a tool that takes the password from elsewhere."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    user = f"{parts.username}@" if parts.username else ""
    netloc = user + host + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact_text(text: str, *secrets: str | None) -> str:
    """``text`` with every URL password and each of ``secrets`` replaced by ``***``."""
    if "://" in text:  # a substring test is far cheaper than the pattern on a long text without URLs
        text = _CREDENTIALS.sub(lambda match: match.group("prefix") + MASK, text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


#: Names of arguments (and of keys inside them) whose values are secrets: a job row, the console and the
#: log show ``***`` in their place. An actor names others with its ``secret_args`` option.
SECRET_NAME = re.compile(r"pass(word|wd|phrase)|secret|token|api_?key|credential|private_?key|authorization", re.I)


def mask_secrets(value: Any, secret: Callable[[str], bool] = lambda name: bool(SECRET_NAME.search(name))) -> Any:
    """``value`` with the value of every dict key ``secret`` accepts replaced by ``***``, at any depth."""
    if isinstance(value, dict):
        return {
            key: MASK if isinstance(key, str) and secret(key) and item is not None else mask_secrets(item, secret)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_secrets(item, secret) for item in value]
    return value


def mask_arguments(
    args: Sequence[Any], kwargs: dict[str, Any], names: Sequence[str] = (), secret_args: Collection[str] = ()
) -> tuple[list[Any], dict[str, Any]]:
    """A call's arguments as they may be shown: every secret one (by its parameter name, from ``names``
    for positional ones, or listed in ``secret_args``) and every secret key inside them masked."""
    extra = frozenset(secret_args)

    def secret(name: str) -> bool:
        return name in extra or bool(SECRET_NAME.search(name))

    shown_args = [
        MASK if index < len(names) and secret(names[index]) and arg is not None else mask_secrets(arg, secret)
        for index, arg in enumerate(args)
    ]
    return shown_args, mask_secrets(dict(kwargs), secret)
