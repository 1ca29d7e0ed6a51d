"""Cluster-wide limits per provider, counted in Redis so every worker process shares them.

Requests and tokens per minute are fixed one-minute windows: a call is admitted when both still have room
(an empty window always admits one call, however large, or it could never run), and the tokens counted
are first the estimate, then corrected to what the provider billed. The daily token budget counts billed
tokens per UTC day; past it a call either waits for the next day or fails, per ``budget_mode``.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from processing.llm.errors import BudgetExhausted, ProviderBusy

_ADMIT = """
local budget = tonumber(ARGV[4])
if budget > 0 and tonumber(redis.call('GET', KEYS[3]) or '0') >= budget then return -2 end
local rpm, tpm, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local requests = tonumber(redis.call('GET', KEYS[1]) or '0')
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if rpm > 0 and requests + 1 > rpm then return -1 end
if tpm > 0 and used > 0 and used + tokens > tpm then return -1 end
redis.call('INCR', KEYS[1]); redis.call('PEXPIRE', KEYS[1], 120000)
redis.call('INCRBY', KEYS[2], tokens); redis.call('PEXPIRE', KEYS[2], 120000)
return 0
"""


class Admission:
    """What ``admit`` let through, so ``settle`` corrects the same window."""

    __slots__ = ("estimate", "minute", "provider")

    def __init__(self, provider: str, minute: int, estimate: int) -> None:
        self.provider, self.minute, self.estimate = provider, minute, estimate


class RedisLimits:
    """Requests/min, tokens/min and a daily token budget per provider (0 switches one off)."""

    def __init__(
        self,
        client: Any,
        *,
        requests_per_minute: int,
        tokens_per_minute: int,
        daily_token_budget: int = 0,
        budget_mode: str = "wait",
        namespace: str = "llm",
    ) -> None:
        if budget_mode not in ("wait", "fail"):
            raise ValueError(f"budget mode must be 'wait' or 'fail', not {budget_mode!r}")
        self.client = client
        self.rpm, self.tpm = requests_per_minute, tokens_per_minute
        self.budget, self.budget_mode = daily_token_budget, budget_mode
        self.namespace = namespace
        self._script = client.register_script(_ADMIT)

    def _keys(self, provider: str, minute: int, day: str) -> list[str]:
        base = f"{self.namespace}:limits:{provider}"
        return [f"{base}:requests:{minute}", f"{base}:tokens:{minute}", f"{base}:budget:{day}"]

    def admit(self, provider: str, tokens: int) -> Admission:
        """Count one call of about ``tokens`` tokens, or raise ``ProviderBusy`` / ``BudgetExhausted``."""
        now = time.time()
        minute = int(now // 60)
        day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
        verdict = int(
            self._script(keys=self._keys(provider, minute, day), args=[self.rpm, self.tpm, tokens, self.budget])
        )
        if verdict == -1:
            # Into the next window, spread over a second so waiting workers do not all return at once.
            delay = int(((minute + 1) * 60 - now) * 1000) + random.randint(0, 1000)
            raise ProviderBusy(f"{provider} is over its per-minute limit; waiting {delay} ms", delay_ms=delay)
        if verdict == -2:
            if self.budget_mode == "fail":
                raise BudgetExhausted(f"the daily token budget of {self.budget} for {provider} is spent ({day} UTC)")
            tomorrow = datetime.fromtimestamp(now, UTC).date() + timedelta(days=1)
            midnight = datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=UTC).timestamp()
            delay = int((midnight - now) * 1000) + random.randint(0, 5000)
            raise ProviderBusy(
                f"the daily token budget of {self.budget} for {provider} is spent; waiting until 00:00 UTC",
                delay_ms=delay,
            )
        return Admission(provider, minute, tokens)

    def settle(self, admission: Admission, billed_tokens: int, pipe: Any = None) -> None:
        """Replace the estimate by what was billed, and add it to today's budget (on ``pipe`` when
        given, so it rides in the caller's round trip)."""
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        _, tokens, budget = self._keys(admission.provider, admission.minute, day)
        own = pipe is None
        if own:
            pipe = self.client.pipeline(transaction=False)
        if billed_tokens != admission.estimate:
            pipe.incrby(tokens, billed_tokens - admission.estimate)
        if billed_tokens:
            pipe.incrby(budget, billed_tokens)
            pipe.expire(budget, 2 * 86400)
        if own:
            pipe.execute()

    def used_today(self, provider: str) -> int:
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        return int(self.client.get(self._keys(provider, 0, day)[2]) or 0)


class RedisCache:
    """Replies to identical requests (same provider, model, prompt, schema, images), kept ``ttl_ms``."""

    def __init__(self, client: Any, *, ttl_ms: int, namespace: str = "llm") -> None:
        self.client, self.ttl_ms, self.namespace = client, ttl_ms, namespace

    @property
    def enabled(self) -> bool:
        return self.ttl_ms > 0

    def key(self, request_key: str) -> str:
        return f"{self.namespace}:cache:{request_key}"

    def get(self, key: str) -> str | None:
        if self.ttl_ms <= 0:
            return None
        value = self.client.get(self.key(key))
        return value.decode() if isinstance(value, bytes) else value

    def put(self, key: str, reply_json: str, pipe: Any = None) -> None:
        if self.ttl_ms > 0:
            (pipe or self.client).set(self.key(key), reply_json, px=self.ttl_ms)
