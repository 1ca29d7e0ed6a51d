"""A cap on the size of a message, at send and again at the worker."""

from __future__ import annotations

import logging
from typing import Any

from dramatiq.broker import Broker
from dramatiq.middleware import Middleware, MiddlewareError

from middleware.events import ENCODED_SIZE_ATTRIBUTE, noted
from processing.errors import InvalidArgument

# A JSON-encoded character takes at most 12 bytes (a surrogate pair as two \\uXXXX escapes).
_BYTES_PER_CHAR = 12
# Container brackets, separators, quotes, a number: generous per-item overhead for the bound.
_BYTES_PER_ITEM = 32
_ENVELOPE_BYTES = 1_024


class MessageTooLarge(InvalidArgument, MiddlewareError):
    """A message is over its size cap; send large data by reference (a path under the storage root).

    A ``MiddlewareError`` so that Dramatiq lets it out of ``before_enqueue`` to the caller of ``send``
    instead of logging it and sending the message anyway."""


class InvalidMessageCap(MiddlewareError, ValueError):
    """An actor declares a ``max_message_bytes`` that is not a positive number of bytes."""


def _upper_bound(value: Any, budget: int) -> int:
    """A cheap upper bound of ``value``'s JSON size; stops counting once past ``budget``."""
    total, stack = 0, [value]
    while stack and total <= budget:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += _BYTES_PER_CHAR * len(item) + _BYTES_PER_ITEM
        elif isinstance(item, dict):
            total += _BYTES_PER_ITEM
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            total += _BYTES_PER_ITEM
            stack.extend(item)
        else:
            total += _BYTES_PER_ITEM
    return total


class MessageSize(Middleware):
    """Refuse a message over ``max_bytes`` encoded, naming its actor, its size and the cap.

    At send the caller gets a ``MessageTooLarge`` and nothing is enqueued (this middleware comes first,
    so no other records the message). At the worker, a message that got past another sender is failed
    with the same error before its actor runs: never retried, with a job row that says why. Small
    messages cost a walk of their arguments; only one whose cheap upper bound is over the cap is
    encoded to be measured.

    Parameters:
      max_bytes(int): the cap, in bytes of the encoded message. Default ``MAX_MESSAGE_BYTES`` (1 MiB).

    Actor options:
      max_message_bytes(int): this actor's own cap.
    """

    def __init__(self, *, max_bytes: int) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.max_bytes = max_bytes

    @property
    def actor_options(self) -> set[str]:
        return {"max_message_bytes"}

    def before_declare_actor(self, broker: Broker, actor: Any) -> None:
        cap = actor.options.get("max_message_bytes")
        if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap <= 0):
            # Fail where the actor is declared, not at its first message.
            raise InvalidMessageCap(f"{actor.actor_name}: max_message_bytes must be a positive int, got {cap!r}")

    def _cap(self, broker: Broker, message: Any) -> int:
        try:
            actor = broker.get_actor(message.actor_name)
        except Exception:
            return self.max_bytes
        return int(actor.options.get("max_message_bytes") or self.max_bytes)

    def _check(self, broker: Broker, message: Any) -> None:
        cap = self._cap(broker, message)
        bound = _ENVELOPE_BYTES + _upper_bound((message.args, message.kwargs, message.options), cap)
        if bound <= cap:
            return
        size = len(message.encode())
        if size > cap:
            raise self._too_large(message, size, cap)

    @staticmethod
    def _too_large(message: Any, size: int, cap: int) -> MessageTooLarge:
        return MessageTooLarge(
            f"{message.actor_name}: the message is {size / 1_048_576:.1f} MiB, over the cap of "
            f"{cap / 1_048_576:.1f} MiB; pass large data by reference (a path under the storage root)"
        )

    # A retry was accepted when it was first sent; refusing its re-enqueue (a traceback in its options
    # makes it grow) would drop a job that is already in the system. So only first sends and first
    # deliveries are measured.

    def before_enqueue(self, broker: Broker, message: Any, delay: Any) -> None:
        if "retries" not in message.options:
            self._check(broker, message)

    def before_process_message(self, broker: Broker, message: Any) -> None:
        if "retries" in message.options:
            return
        size = noted(message, ENCODED_SIZE_ATTRIBUTE)
        if size is None:
            self._check(broker, message)
        elif size > (cap := self._cap(broker, message)):
            raise self._too_large(message, size, cap)
