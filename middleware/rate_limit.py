"""Rate limits per actor, shared by every worker through Redis."""

from __future__ import annotations

import contextlib
import logging
import random
import re
from collections.abc import Iterator
from typing import Any, NoReturn

import redis
from dramatiq.broker import Broker
from dramatiq.middleware import Middleware, MiddlewareError, SkipMessage
from dramatiq.rate_limits import WindowRateLimiter
from dramatiq.rate_limits.backends import RedisBackend

from middleware.events import SKIP_REASON_ATTRIBUTE, Event
from processing.errors import InvalidArgument, TryLater

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$")


class InvalidRateLimit(MiddlewareError, ValueError):
    """An actor declares a rate limit this middleware cannot read."""


def parse_rate(rate: str) -> tuple[int, int]:
    """``"10/m"`` → (10, 60): at most 10 messages per 60 seconds. ``"5/10s"`` is 5 per 10 seconds."""
    match = _PATTERN.match(rate)
    if not match:
        raise InvalidArgument(f"rate limit {rate!r} is not of the form '10/m', '100/h' or '5/10s'")
    limit, count, unit = int(match.group(1)), int(match.group(2) or 1), match.group(3)
    if limit <= 0:
        raise InvalidArgument(f"rate limit {rate!r} must allow at least one message")
    return limit, count * _UNITS[unit]


class RateLimit(Middleware):
    """Hold an actor to a number of messages per time window across all workers.

    A message over the limit is put back with a delay (about one window divided by the limit, with
    jitter) and the attempt is skipped: it is delayed, never failed, and its job stays ``queued``.

    Actor options:
      rate_limit(str): ``"10/m"``, ``"100/h"``, ``"5/10s"``. Default: no limit.

    Parameters:
      client(redis.Redis | None): the Redis that counts the windows; None disables rate limits.
    """

    def __init__(self, *, client: redis.Redis | None) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.backend = RedisBackend(client=client) if client is not None else None
        self.limiters: dict[tuple[str, str], tuple[WindowRateLimiter, int, int]] = {}
        self.rates: dict[str, str] = {}

    @property
    def actor_options(self) -> set[str]:
        return {"rate_limit"}

    def before_declare_actor(self, broker: Broker, actor: Any) -> None:
        rate = actor.options.get("rate_limit")
        if rate is not None:
            try:
                parse_rate(rate)
            except InvalidArgument as error:
                # Fail where the actor is declared, not at its first message.
                raise InvalidRateLimit(f"actor {actor.actor_name!r}: {error}") from None
            self.rates[actor.actor_name] = rate

    def _limiter(self, actor_name: str, rate: str) -> tuple[WindowRateLimiter, int, int]:
        key = (actor_name, rate)
        limiter = self.limiters.get(key)
        if limiter is None:
            limit, window = parse_rate(rate)
            assert self.backend is not None
            limiter = self.limiters[key] = (
                WindowRateLimiter(self.backend, f"rate-limit:{actor_name}", limit=limit, window=window),
                limit,
                window,
            )
        return limiter

    def before_process_message(self, broker: Broker, message: Any) -> None:
        if self.backend is None:
            return
        rate = message.options.get("rate_limit") or self.rates.get(message.actor_name)
        if not rate:
            return
        limiter, limit, window = self._limiter(message.actor_name, rate)
        with limiter.acquire(raise_on_failure=False) as acquired:
            if acquired:
                return
        delay = int(window * 1000 / limit * random.uniform(1.0, 2.0))
        self.logger.debug("Message %r is over its rate limit %s; delaying it %d ms.", message.message_id, rate, delay)
        setattr(message, SKIP_REASON_ATTRIBUTE, Event.RATE_LIMITED)
        broker.enqueue(message.copy(), delay=delay)
        raise SkipMessage(f"rate limit {rate} reached")


def postpone(delay: int, reason: str) -> NoReturn:
    """Put the running message back with ``delay`` ms and end this attempt as rate-limited.

    The same path as an actor over its own rate limit: the attempt is skipped, not failed, so it is not
    counted as an attempt, not retried, and the job stays in the table until the delayed copy runs. Outside
    a worker there is no message to put back, and the ``TryLater`` reaches the caller.
    """
    import dramatiq
    from dramatiq.middleware import CurrentMessage

    message = CurrentMessage.get_current_message()
    if message is None:
        raise TryLater(reason, delay_ms=delay)
    setattr(message, SKIP_REASON_ATTRIBUTE, Event.RATE_LIMITED)
    logging.getLogger(__name__).info("Message %r delayed %d ms: %s", message.message_id, delay, reason)
    dramatiq.get_broker().enqueue(message.copy(), delay=delay)
    raise SkipMessage(reason)


@contextlib.contextmanager
def delay_on_try_later() -> Iterator[None]:
    """Turn a ``processing.errors.TryLater`` raised inside the block into ``postpone``."""
    try:
        yield
    except TryLater as wait:
        postpone(wait.delay_ms, str(wait))
