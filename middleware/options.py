"""Message options of the wrong type refused at send, and failed at the worker before they do harm."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from dramatiq.broker import Broker
from dramatiq.middleware import Middleware, MiddlewareError

from processing.errors import InvalidArgument


class InvalidOption(InvalidArgument, MiddlewareError):
    """A message option has a value its middleware cannot use. A ``MiddlewareError`` so Dramatiq lets it
    out of ``before_enqueue`` to the caller of ``send_with_options``."""


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _positive(value: Any) -> bool:
    return _count(value) and value > 0


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _flag(value: Any) -> bool:
    return isinstance(value, bool)


#: The message options the platform's middleware read, with what each accepts. ``None`` is accepted for
#: every one of them (it means "the actor's or the default").
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "max_retries": (_count, "a whole number of retries, 0 or more"),
    "min_backoff": (_count, "milliseconds, 0 or more"),
    "max_backoff": (_count, "milliseconds, 0 or more"),
    "retries": (_count, "a whole number, 0 or more"),
    "time_limit": (_positive, "milliseconds, more than 0"),
    "soft_time_limit": (_positive, "milliseconds, more than 0"),
    "max_message_bytes": (_positive, "bytes, more than 0"),
    "eta": (_number, "epoch milliseconds"),
    "broker_priority": (_count, "a whole number, 0 or more"),
    "parent_id": (_text, "a job id"),
    "on_success": (_text, "an actor name"),
    "on_failure": (_text, "an actor name"),
    "rate_limit": (_text, 'a rate such as "10/m"'),
    "pipe_ignore": (_flag, "true or false"),
}


def check_options(actor_name: str, options: dict[str, Any]) -> None:
    """Raise ``InvalidOption`` for the first option in ``options`` that its rule refuses."""
    for name, (accepts, expected) in RULES.items():
        value = options.get(name)
        if value is not None and not accepts(value):
            raise InvalidOption(f"{actor_name}: option {name!r} must be {expected}, got {value!r:.60}")


class OptionTypes(Middleware):
    """Check the options a message carries (``send_with_options(max_retries=...)``) against ``RULES``.

    At send, a bad option raises ``InvalidOption`` to the caller and nothing is enqueued. At the worker, a
    message that carries one anyway (from another sender) fails before its actor runs, once, as bad input:
    a middleware that later read the option would otherwise raise while deciding the attempt's outcome.
    Actor options are checked by each middleware where the actor is declared.
    """

    def __init__(self) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")

    def before_enqueue(self, broker: Broker, message: Any, delay: Any) -> None:
        check_options(message.actor_name, message.options)

    def before_process_message(self, broker: Broker, message: Any) -> None:
        check_options(message.actor_name, message.options)
