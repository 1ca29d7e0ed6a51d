"""The LLM actors on a real worker: offline end to end, provider failures, the cache, usage and metrics."""

from __future__ import annotations

import dataclasses
import json
import uuid

import pytest

from tests.llm.conftest import PLANTED_KEY
from tests.llm.llm_server import Step
from tests.support import wait_for_job, wait_until

TEXT = "Buy when RSI(14) falls below 30 on the 4h chart. Exit when RSI(14) rises above 70. Stop-loss at 2%."


@pytest.fixture
def use_settings(monkeypatch):  # type: ignore[no-untyped-def]
    """Replace the LLM settings the actors and the ledger read (the settings object is frozen)."""
    import actors.llm
    import middleware.llm_usage
    from settings import settings

    def apply(**changes: object) -> None:
        changed = dataclasses.replace(settings, **changes)
        monkeypatch.setattr(actors.llm, "settings", changed)
        monkeypatch.setattr(middleware.llm_usage, "settings", changed)

    return apply


@pytest.fixture
def anthropic_server(llm_server, use_settings):  # type: ignore[no-untyped-def]
    use_settings(
        llm_provider="anthropic",
        llm_api_key=PLANTED_KEY,
        llm_base_url=llm_server.url,
        llm_timeout=1_500,
        llm_cache_ttl=0,
        llm_requests_per_minute=0,
        llm_tokens_per_minute=0,
    )
    return llm_server


def _unique(text: str) -> str:
    # A fresh request each test: the cache and the limits live in Redis across tests.
    return f"{text} (ref {uuid.uuid4().hex[:8]})"


def test_the_offline_provider_extracts_and_stores_a_strategy_end_to_end(worker, use_settings):
    from storage.llm import get_strategy, job_usage

    use_settings(llm_provider="offline", llm_api_key="")
    # Given a strategy text sent to the actor with no key configured
    message = __import__("actors.llm", fromlist=["x"]).extract_trading_strategy.send(_unique(TEXT))

    # When a worker runs it
    job = wait_for_job(message.message_id)

    # Then the job succeeded and the stored strategy says it came from the offline provider
    assert job.state == "succeeded", job.error_message
    strategy = get_strategy(job_id=message.message_id)
    assert strategy is not None and strategy["provider"] == "offline" and strategy["source_kind"] == "text"
    assert strategy["timeframe"] == "4h" and strategy["indicators"] == [{"name": "RSI", "parameters": {"period": 14}}]
    assert json.loads(job.result)["provider"] == "offline"
    assert job_usage(message.message_id).outcomes == {"ok": 1}


def test_a_429_with_retry_after_delays_the_job_without_counting_an_attempt(worker, anthropic_server):
    from actors.llm import extract_trading_strategy
    from storage.llm import calls_of

    # Given a provider that answers 429 with Retry-After: 2, then succeeds
    anthropic_server.plan(Step(status=429, headers={"retry-after": "2"}, message="rate limited"), Step())
    stamps: list[float] = []
    original = anthropic_server.hold.wait

    def stamp(timeout: float | None = None) -> bool:
        import time

        stamps.append(time.time())
        return original(timeout)

    anthropic_server.hold.wait = stamp  # type: ignore[method-assign]

    # When the job runs
    message = extract_trading_strategy.send(_unique(TEXT))
    job = wait_for_job(message.message_id)

    # Then it succeeded on its first counted attempt, the second call came no sooner than asked
    assert job.state == "succeeded", job.error_message
    assert job.attempts == 1
    assert stamps[1] - stamps[0] >= 2.0
    assert [call["outcome"] for call in calls_of(message.message_id)] == ["rate_limited", "ok"]


def test_a_500_is_retried_by_the_platform_and_counted(worker, anthropic_server):
    from actors.llm import extract_trading_strategy
    from storage.llm import calls_of

    # Given a 500, then a success
    anthropic_server.plan(Step(status=500, message="internal"), Step())

    # When the job runs with a short backoff
    message = extract_trading_strategy.send_with_options(args=(_unique(TEXT),), min_backoff=100)
    job = wait_for_job(message.message_id)

    # Then the platform retried it once (one failed attempt), the SDK never retried on its own
    assert job.state == "succeeded", job.error_message
    assert job.attempts == 2
    assert anthropic_server.count() == 2
    assert [call["outcome"] for call in calls_of(message.message_id)] == ["transient", "ok"]


def test_a_reply_that_keeps_breaking_the_schema_fails_the_job_and_keeps_the_raw_reply(worker, anthropic_server):
    from actors.llm import extract_trading_strategy
    from storage.llm import calls_of, job_usage

    # Given three replies that miss required fields
    bad = json.dumps({"name": "half", "market": "stocks"})
    anthropic_server.plan(Step(text=bad), Step(text=bad), Step(text=bad))

    # When the job runs
    message = extract_trading_strategy.send(_unique(TEXT))
    job = wait_for_job(message.message_id)

    # Then it failed with the reason, at once, with every billed call and the raw reply kept
    assert job.state == "failed" and job.attempts == 1
    assert job.error_type == "InvalidReply" and "after 2 re-asks" in job.error_message
    calls = calls_of(message.message_id)
    assert [call["outcome"] for call in calls] == ["invalid"] * 3 and calls[-1]["raw_reply"] == bad
    usage = job_usage(message.message_id)
    assert (usage.input_tokens, usage.output_tokens) == (300, 150) and usage.cost_usd > 0


def test_a_401_fails_with_the_providers_message_and_the_key_appears_nowhere(worker, anthropic_server, caplog):
    from actors.llm import extract_trading_strategy
    from middleware.metrics import render_metrics
    from settings import settings
    from storage.llm import calls_of

    caplog.set_level("DEBUG")
    # Given a provider that rejects the key and echoes it in its message
    anthropic_server.plan(Step(status=401, message=f"invalid x-api-key: {PLANTED_KEY}"))

    # When the job runs
    message = extract_trading_strategy.send(_unique(TEXT))
    job = wait_for_job(message.message_id)

    # Then it failed at once with the provider's message
    assert job.state == "failed" and job.attempts == 1
    assert job.error_type == "ProviderRejected" and "anthropic 401: invalid x-api-key" in job.error_message
    # and the key is in no job column, no call row, no log line and no metric
    row_text = json.dumps({c: getattr(job, c) for c in ("args", "error_message", "traceback", "result")})
    assert PLANTED_KEY not in row_text
    assert PLANTED_KEY not in json.dumps(calls_of(message.message_id), default=str)
    assert all(PLANTED_KEY not in record.getMessage() for record in caplog.records)
    assert PLANTED_KEY not in repr(__import__("actors.llm", fromlist=["x"]).settings)
    assert PLANTED_KEY.encode() not in render_metrics(str(settings.metrics_dir), None)


def test_identical_requests_are_answered_from_the_cache(worker, anthropic_server, use_settings):
    from actors.llm import extract_trading_strategy
    from storage.llm import calls_of

    use_settings(
        llm_provider="anthropic",
        llm_api_key=PLANTED_KEY,
        llm_base_url=anthropic_server.url,
        llm_cache_ttl=60_000,
        llm_requests_per_minute=0,
        llm_tokens_per_minute=0,
    )
    text = _unique(TEXT)
    # Given one job that ran
    first = extract_trading_strategy.send(text)
    assert wait_for_job(first.message_id).state == "succeeded"

    # When a second job sends the same text
    second = extract_trading_strategy.send(text)
    job = wait_for_job(second.message_id)

    # Then the provider was asked once, and the second job's call is a cache hit that billed nothing
    assert job.state == "succeeded"
    assert anthropic_server.count() == 1
    (call,) = calls_of(second.message_id)
    assert (call["outcome"], call["input_tokens"], call["cost_usd"]) == ("cached", 0, 0.0)


def test_llm_metrics_count_requests_tokens_and_cost(worker, anthropic_server):
    from actors.llm import extract_trading_strategy
    from middleware.metrics import render_metrics
    from settings import settings
    from tests.core.test_metrics import _value

    def scrape() -> str:
        return render_metrics(str(settings.metrics_dir), None).decode()

    labels = {"provider": "anthropic", "model": "claude-sonnet-4-6"}
    before = scrape()
    # Given two succeeding jobs of 100 input and 50 output tokens each
    for _ in range(2):
        assert wait_for_job(extract_trading_strategy.send(_unique(TEXT)).message_id).state == "succeeded"

    # When the metrics are read
    def moved() -> str | None:
        text = scrape()
        delta = _value(text, "llm_requests_total", outcome="ok", **labels) - _value(
            before, "llm_requests_total", outcome="ok", **labels
        )
        return text if delta >= 2 else None

    text = wait_until(moved, timeout=10, interval=0.2)

    # Then requests, tokens by kind, cost and latency moved by those calls
    def delta(name: str, **extra: str) -> float:
        return _value(text, name, **labels, **extra) - _value(before, name, **labels, **extra)

    assert delta("llm_requests_total", outcome="ok") == 2
    assert delta("llm_tokens_total", kind="input") == 200 and delta("llm_tokens_total", kind="output") == 100
    assert delta("llm_cost_total") == pytest.approx(2 * (100 * 3.0 + 50 * 15.0) / 1e6)
    assert delta("llm_request_duration_seconds_count") == 2


def test_bad_sources_fail_with_one_readable_line(worker):
    from actors.llm import analyze_chart_image, extract_trading_strategy

    # Given a missing document, a malformed video id, empty text and a chart path that does not exist
    cases = [
        (extract_trading_strategy.send("document:999999"), "document 999999 does not exist"),
        (extract_trading_strategy.send("video:abc"), "video id must be a number"),
        (extract_trading_strategy.send("   "), "no text to extract"),
        (analyze_chart_image.send("charts/missing.png"), "missing.png"),
        (analyze_chart_image.send("asset:NOPE"), "asset 'NOPE' does not exist"),
    ]
    # Then each job fails at once with its reason
    for message, reason in cases:
        job = wait_for_job(message.message_id)
        assert job.state == "failed" and job.attempts == 1, (job.state, job.error_message)
        assert reason in job.error_message and "\n" not in job.error_message


@pytest.mark.parametrize("mode", ["fail", "wait"])
def test_over_the_daily_token_budget_jobs_fail_or_wait_per_the_setting(
    worker, anthropic_server, use_settings, redis_client, mode
):
    from actors.llm import extract_trading_strategy
    from storage.llm import calls_of
    from tests.support import job

    for key in redis_client.scan_iter("llm:limits:*"):
        redis_client.delete(key)
    use_settings(
        llm_provider="anthropic",
        llm_api_key=PLANTED_KEY,
        llm_base_url=anthropic_server.url,
        llm_cache_ttl=0,
        llm_requests_per_minute=0,
        llm_tokens_per_minute=0,
        llm_daily_token_budget=100,
        llm_budget_mode=mode,
    )
    # Given a first job that spent the day's budget (150 tokens billed of 100)
    assert wait_for_job(extract_trading_strategy.send(_unique(TEXT)).message_id).state == "succeeded"

    # When another job comes
    message = extract_trading_strategy.send(_unique(TEXT))

    # Then the provider is not asked again, and the job fails with the reason or waits for tomorrow
    if mode == "fail":
        row = wait_for_job(message.message_id)
        assert row.state == "failed" and row.error_type == "BudgetExhausted"
        assert "daily token budget of 100 for anthropic is spent" in row.error_message
    else:
        wait_until(lambda: redis_client.hlen("dramatiq:llm.DQ.msgs") == 1, timeout=30)
        from datetime import UTC, datetime, timedelta

        (raw,) = redis_client.hvals("dramatiq:llm.DQ.msgs")
        midnight = datetime.combine(datetime.now(UTC).date() + timedelta(days=1), datetime.min.time(), UTC)
        assert json.loads(raw)["options"]["eta"] >= midnight.timestamp() * 1000
        row = job(message.message_id)
        assert row is not None and row.state not in ("failed", "succeeded") and row.attempts <= 1
    assert anthropic_server.count() == 1
    assert calls_of(message.message_id) == []
