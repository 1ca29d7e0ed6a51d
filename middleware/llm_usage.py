"""What LLM calls cost, per job and in Prometheus; and the ledger an LLM actor hands to processing.

For an actor declared with ``llm_ledger=True`` this middleware binds a ledger to the running attempt
(``current_ledger()`` returns it). The ledger:

- reuses a reply the same job already paid for (a redelivered message after a worker died), then the
  request cache in Redis;
- admits each call under the provider's cluster-wide limits (``processing.llm.limits``);
- records every call the moment it returns (in Redis, then ``llm_calls`` when the attempt ends), with
  tokens, estimated cost and outcome, and counts it in ``llm_requests_total``, ``llm_tokens_total``,
  ``llm_cost_total`` and ``llm_request_duration_seconds``.

Actor options:
  llm_ledger(bool): bind a ledger to each attempt. Default: False.

Parameters:
  client(redis.Redis | None): Redis for the limits and the cache; None turns both off.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

from dramatiq.broker import Broker
from dramatiq.middleware import Middleware

from processing.llm.types import Call, Reply
from settings import settings

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


class _Instruments:
    """Created on first use, after the metrics middleware pointed prometheus-client at its shared
    directory, so worker processes add up like every other metric."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        labels = ["provider", "model"]
        self.requests = Counter("llm_requests", "LLM calls, by outcome.", [*labels, "outcome"], registry=None)
        self.tokens = Counter(
            "llm_tokens", "Tokens billed, by kind (input, output, cached).", [*labels, "kind"], registry=None
        )
        self.cost = Counter("llm_cost", "Estimated cost of LLM calls, in USD.", labels, registry=None)
        self.latency = Histogram(
            "llm_request_duration_seconds",
            "Time one provider call took.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=None,
        )


_instruments: _Instruments | None = None
_instruments_lock = threading.Lock()


def instruments() -> _Instruments | None:
    global _instruments
    if not settings.metrics_enabled:
        return None
    if _instruments is None:
        with _instruments_lock:
            if _instruments is None:
                _instruments = _Instruments()
    return _instruments


def count_call(call: Call) -> None:
    metrics = instruments()
    if metrics is None:
        return
    labels = (call.provider, call.model)
    metrics.requests.labels(*labels, call.outcome).inc()
    if call.outcome in ("ok", "invalid"):
        metrics.tokens.labels(*labels, "input").inc(call.usage.input_tokens)
        metrics.tokens.labels(*labels, "output").inc(call.usage.output_tokens)
        metrics.tokens.labels(*labels, "cached").inc(call.usage.cached_tokens)
        metrics.cost.labels(*labels).inc(call.cost_usd)
    if call.latency_ms:
        metrics.latency.labels(*labels).observe(call.latency_ms / 1000)


#: Per job, in Redis: the call rows not yet in SQL, and the replies this job paid for (to reuse them).
CALLS_KEY = "llm:job:{}:calls"
REPLIES_KEY = "llm:job:{}:replies"
#: How long a job's paid replies stay reusable: longer than any redelivery or retry schedule.
JOB_KEYS_TTL = 7 * 86400


class JobLedger:
    """The ledger of one attempt of one job (see the module's docstring).

    With Redis, each call's row and reusable reply are written to Redis in one round trip as the call
    returns (durable at once, for a redelivery), and the rows reach ``llm_calls`` in one transaction when
    the attempt ends, the rows a killed attempt left with them. Without Redis every row goes to SQL at once.
    """

    def __init__(self, *, job_id: str, attempt: int, client: Any | None, write_through: bool = False) -> None:
        self.job_id, self.attempt = job_id, attempt
        self.client = client
        self.write_through = write_through or client is None
        self.limits: Any = None
        self.cache: Any = None
        if client is not None:
            from processing.llm.limits import RedisCache, RedisLimits

            self.limits = RedisLimits(
                client,
                requests_per_minute=settings.llm_requests_per_minute,
                tokens_per_minute=settings.llm_tokens_per_minute,
                daily_token_budget=settings.llm_daily_token_budget,
                budget_mode=settings.llm_budget_mode,
            )
            self.cache = RedisCache(client, ttl_ms=settings.llm_cache_ttl)
        self.calls: list[Call] = []

    def reuse(self, key: str) -> Reply | None:
        stored, outcome = None, "reused"
        if self.client is None:
            from storage.llm import reusable_reply

            stored = reusable_reply(self.job_id, key)
        else:
            pipe = self.client.pipeline(transaction=False)
            pipe.hget(REPLIES_KEY.format(self.job_id), key)
            if self.cache.enabled:
                pipe.get(self.cache.key(key))
            found = pipe.execute()
            stored = found[0]
            if stored is None and len(found) > 1 and found[1] is not None:
                stored, outcome = found[1], "cached"
        if stored is None:
            return None
        reply = Reply.from_json(stored)
        self._write(Call(key=key, provider=reply.provider, model=reply.model, outcome=outcome), reply)
        return reply

    def admit(self, provider: str, estimate: int) -> Any:
        # The offline rules run here and bill nobody: no vendor limit applies to them.
        if self.limits is None or provider == "offline":
            return None
        return self.limits.admit(provider, estimate)

    def record(self, call: Call, admission: Any, reply: Reply | None) -> None:
        self._write(call, reply, admission=admission)

    def _write(self, call: Call, reply: Reply | None, *, admission: Any = None) -> None:
        self.calls.append(call)
        reply_json = reply.to_json() if reply is not None else None
        row = {
            "job_id": self.job_id,
            "attempt": self.attempt,
            "request_key": call.key,
            "provider": call.provider,
            "model": call.model,
            "outcome": call.outcome,
            "input_tokens": call.usage.input_tokens,
            "output_tokens": call.usage.output_tokens,
            "cached_tokens": call.usage.cached_tokens,
            "cost_usd": call.cost_usd,
            "latency_ms": call.latency_ms,
            "raw_reply": call.raw_reply[:100_000] if call.raw_reply else None,
            "reply": reply_json,
            "error": call.error,
            "created_at": time.time(),
        }
        if self.client is not None:
            pipe = self.client.pipeline(transaction=False)
            calls_key, replies_key = CALLS_KEY.format(self.job_id), REPLIES_KEY.format(self.job_id)
            pipe.rpush(calls_key, json.dumps(row))
            pipe.expire(calls_key, JOB_KEYS_TTL)
            if reply_json is not None and call.outcome in ("ok", "cached"):
                pipe.hset(replies_key, call.key, reply_json)
                pipe.expire(replies_key, JOB_KEYS_TTL)
                if call.outcome == "ok":
                    self.cache.put(call.key, reply_json, pipe=pipe)
            if admission is not None:
                self.limits.settle(admission, call.usage.total, pipe=pipe)
            pipe.execute()
        if self.write_through:
            self.flush(rows=[row] if self.client is None else None)
        count_call(call)

    def flush(self, rows: list[dict[str, Any]] | None = None) -> int:
        """Move the job's call rows from Redis to ``llm_calls``; returns how many were written."""
        from storage.llm import record_calls

        if rows is None:
            if self.client is None:
                return 0
            key = CALLS_KEY.format(self.job_id)
            pipe = self.client.pipeline(transaction=True)
            pipe.lrange(key, 0, -1)
            pipe.delete(key)
            raw, _ = pipe.execute()
            rows = [json.loads(item) for item in raw]
        try:
            record_calls(rows)
        except Exception:
            if self.client is not None:
                # Put them back for the next attempt's flush rather than lose what was billed.
                self.client.rpush(CALLS_KEY.format(self.job_id), *[json.dumps(row) for row in rows])
            raise
        return len(rows)


_current = threading.local()


def current_ledger() -> JobLedger:
    """The running attempt's ledger; outside a worker, one for a one-off job id (scripts, tests)."""
    ledger = getattr(_current, "ledger", None)
    if ledger is None:
        import uuid

        import dramatiq

        # The client this middleware was given, when the broker has it (a script or test outside a worker).
        client = next(
            (m.client for m in dramatiq.get_broker().middleware if isinstance(m, LlmUsage)),
            None,
        )
        ledger = JobLedger(job_id=f"local-{uuid.uuid4().hex}", attempt=1, client=client, write_through=True)
    return ledger


class LlmUsage(Middleware):
    __doc__ = __doc__

    def __init__(self, *, client: Any | None) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.client = client

    @property
    def actor_options(self) -> set[str]:
        return {"llm_ledger"}

    def before_process_message(self, broker: Broker, message: Any) -> None:
        try:
            actor = broker.get_actor(message.actor_name)
        except Exception:
            return
        if not actor.options.get("llm_ledger"):
            return
        attempt = int(message.options.get("retries", 0)) + 1
        _current.ledger = JobLedger(job_id=message.message_id, attempt=attempt, client=self.client)

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        ledger = getattr(_current, "ledger", None)
        if ledger is not None:
            _current.ledger = None
            ledger.flush()
            billed = [call for call in ledger.calls if call.outcome in ("ok", "invalid")]
            self.logger.debug(
                "Message %r made %d LLM calls (%d billed, %.6f USD) in pid %d.",
                message.message_id,
                len(ledger.calls),
                len(billed),
                sum(call.cost_usd for call in billed),
                os.getpid(),
            )

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        ledger = getattr(_current, "ledger", None)
        if ledger is not None:
            _current.ledger = None
            ledger.flush()
