"""One structured call, with everything around it: reuse, limits, the call, validation, re-asks, records.

A ``Ledger`` is what the caller plugs in: it knows which completions this job already paid for (and the
cache), admits calls under the rate limits, and records every call (a failed one too). ``MemoryLedger``
keeps it all in memory for a notebook or a script; workers use one backed by the job's SQL rows and Redis.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from processing.llm.cost import cost_of
from processing.llm.errors import InvalidReply, ProviderBusy, ProviderRejected, ProviderUnavailable, redact
from processing.llm.prompts import reask
from processing.llm.providers.base import Provider
from processing.llm.schemas import parse_reply
from processing.llm.types import Call, Reply, Request, Usage

#: Rough tokens of one image in a prompt, for the rate limiter's estimate before the call.
IMAGE_TOKENS = 1_600


class Ledger(Protocol):
    def reuse(self, key: str) -> Reply | None:
        """A reply this job already paid for, or one from the cache; ``None`` to call the provider."""

    def admit(self, provider: str, estimate: int) -> Any:
        """Count a call against the limits (may raise ``ProviderBusy`` or ``BudgetExhausted``)."""

    def record(self, call: Call, admission: Any, reply: Reply | None) -> None:
        """Keep a record of one call; ``reply`` is set when it may be reused."""


@dataclass
class MemoryLedger:
    """Every call in a list, completions reusable within this object, no limits."""

    calls: list[Call] = field(default_factory=list)
    completions: dict[str, Reply] = field(default_factory=dict)

    def reuse(self, key: str) -> Reply | None:
        return self.completions.get(key)

    def admit(self, provider: str, estimate: int) -> Any:
        return None

    def record(self, call: Call, admission: Any, reply: Reply | None) -> None:
        self.calls.append(call)
        if reply is not None:
            self.completions[call.key] = reply


def estimate_tokens(request: Request) -> int:
    images = sum(len(message.images) for message in request.messages)
    return request.prompt_chars() // 4 + images * IMAGE_TOKENS + 1


def complete(
    provider: Provider,
    request: Request,
    *,
    ledger: Ledger,
    prices: Mapping[str, tuple[float, float, float]],
    max_reasks: int = 2,
) -> Reply:
    """The provider's reply to ``request`` with ``data`` parsed and valid under the request's schema.

    A reply that is not JSON or breaks the schema is sent back with the problem, up to ``max_reasks``
    times; then ``InvalidReply`` carries the last raw reply. Provider errors propagate after the call is
    recorded (``ProviderBusy``, ``ProviderUnavailable``, ``ProviderRejected``).
    """
    current = request
    problem, raw = "", ""
    for _ in range(max_reasks + 1):
        key = current.key(provider.name, provider.model)
        reply = ledger.reuse(key)
        if reply is None:
            reply, data, found = _call(provider, current, key, ledger, prices)
        else:
            data, found = parse_reply(reply.text, current.schema)
        if found is None:
            return replace(reply, data=data)
        problem, raw = found, reply.text
        current = reask(current, reply.text, found)
    raise InvalidReply(
        f"{provider.name} {provider.model}: no valid reply after {max_reasks} re-asks: {problem}"[:2000],
        raw_reply=raw,
    )


def _call(
    provider: Provider,
    request: Request,
    key: str,
    ledger: Ledger,
    prices: Mapping[str, tuple[float, float, float]],
) -> tuple[Reply, Any, str | None]:
    admission = ledger.admit(provider.name, estimate_tokens(request))

    def failed(outcome: str, error: Exception) -> Call:
        return Call(key=key, provider=provider.name, model=provider.model, outcome=outcome, error=redact(str(error)))

    try:
        reply = provider.complete(request)
    except ProviderBusy as error:
        ledger.record(failed("rate_limited", error), admission, None)
        raise
    except ProviderUnavailable as error:
        ledger.record(failed("transient", error), admission, None)
        raise
    except ProviderRejected as error:
        ledger.record(failed("rejected", error), admission, None)
        raise
    data, problem = parse_reply(reply.text, request.schema)
    call = Call(
        key=key,
        provider=reply.provider,
        model=reply.model or provider.model,
        outcome="ok" if problem is None else "invalid",
        usage=reply.usage,
        cost_usd=cost_of(reply.model or provider.model, reply.usage, prices),
        latency_ms=reply.latency_ms,
        raw_reply=reply.text,
        error=problem,
    )
    ledger.record(call, admission, reply if problem is None else None)
    return reply, data, problem


def total_usage(calls: list[Call]) -> tuple[Usage, float]:
    """Tokens and cost of the calls that were billed (cached and reused ones cost nothing)."""
    billed = [call for call in calls if call.outcome in ("ok", "invalid")]
    usage = Usage(
        sum(call.usage.input_tokens for call in billed),
        sum(call.usage.output_tokens for call in billed),
        sum(call.usage.cached_tokens for call in billed),
    )
    return usage, round(sum(call.cost_usd for call in billed), 8)
