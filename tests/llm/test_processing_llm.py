"""Providers, prompts, schemas and the re-ask loop, with the real SDKs against a local server."""

from __future__ import annotations

import json

import pytest

from processing.llm.complete import MemoryLedger, complete
from processing.llm.cost import DEFAULT_PRICES, cost_of
from processing.llm.errors import InvalidReply, ProviderBusy, ProviderRejected, ProviderUnavailable
from processing.llm.prompts import chart_request, strategy_request
from processing.llm.providers.offline import OfflineProvider
from processing.llm.tasks import analyze_chart, extract_strategy, split_text
from processing.llm.types import Image, Usage
from tests.llm.conftest import PLANTED_KEY
from tests.llm.llm_server import Step

STRATEGY_TEXT = """Strategy: Golden Cross Momentum
Trade large-cap stocks on the daily chart. Buy when the 50-day SMA crosses above the 200-day SMA and RSI(14)
is above 50. Exit when the price closes below the 50-day SMA. Take profit at 3 times the ATR(14).
Place a stop-loss 2 ATR below the entry and risk at most 1% of the account per trade."""

VALID = json.dumps(
    {
        "name": "x",
        "market": None,
        "timeframe": "1h",
        "entry_rules": ["buy"],
        "exit_rules": [],
        "risk_management": [],
        "indicators": [{"name": "RSI", "parameters": {"period": 14}}],
    }
)


def test_the_offline_provider_finds_rules_indicators_and_parameters():
    # Given the offline provider and a text describing a strategy
    provider = OfflineProvider()

    # When the strategy is extracted
    analysis = extract_strategy(STRATEGY_TEXT, provider=provider, ledger=MemoryLedger(), prices=DEFAULT_PRICES)

    # Then every part of the schema is filled from the text, and the result says it is offline
    data = analysis.data
    assert analysis.provider == "offline"
    assert data["name"] == "Golden Cross Momentum"
    assert (data["market"], data["timeframe"]) == ("stocks", "1d")
    assert data["entry_rules"][0].startswith("Buy when the 50-day SMA crosses above")
    assert any("Take profit" in rule for rule in data["exit_rules"])
    assert any("stop-loss" in rule for rule in data["risk_management"])
    assert {"name": "RSI", "parameters": {"period": 14}} in data["indicators"]
    assert {"name": "SMA", "parameters": {"period": 200}} in data["indicators"]


def test_a_long_text_is_split_and_the_parts_are_merged():
    # Given a text three times longer than a part, with rules in different parts
    filler = "Markets move in cycles and patience matters a great deal here. " * 30
    text = f"Buy when RSI(14) falls below 30 on the 4h chart. {filler}\n\n{filler}\n\nExit when the 20-day EMA is lost."
    ledger = MemoryLedger()

    # When it is extracted with parts of 2,000 characters
    analysis = extract_strategy(text, provider=OfflineProvider(), ledger=ledger, prices={}, chunk_chars=2_000)

    # Then one call per part was made and the merged strategy holds the rules of the first and last parts
    assert len(split_text(text, 2_000)) == len(ledger.calls) >= 3
    assert analysis.data["entry_rules"] == ["Buy when RSI(14) falls below 30 on the 4h chart."]
    assert analysis.data["exit_rules"] == ["Exit when the 20-day EMA is lost."]
    assert {i["name"] for i in analysis.data["indicators"]} == {"RSI", "EMA"}


def test_the_offline_provider_reads_the_trend_from_a_rendered_chart(tmp_path):
    # Given a chart drawn by the market family of a series that rises with swings
    import math

    import pandas as pd

    from processing.charts import render_chart
    from processing.indicators import IndicatorParams, compute_indicators

    index = pd.date_range("2026-01-01", periods=160, freq="D", tz="UTC")
    close = [100 + i * 0.5 + 6 * math.sin(i / 6) for i in range(160)]
    bars = pd.DataFrame(
        {"open": close, "high": [c + 1 for c in close], "low": [c - 1 for c in close], "close": close, "volume": 1e6},
        index=index,
    )
    indicators = compute_indicators(bars, IndicatorParams())
    path = render_chart(bars.iloc[-120:], indicators.iloc[-120:], [], tmp_path / "chart.png", title="TEST (1d)")
    shown = close[-120:]

    # When the offline provider analyses it, told the close line's range
    analysis = analyze_chart(
        Image(path.read_bytes()),
        provider=OfflineProvider(),
        ledger=MemoryLedger(),
        prices={},
        context={"close_min": min(shown), "close_max": max(shown)},
    )

    # Then it sees an up trend, levels inside the price range, and the indicators drawn
    data = analysis.data
    assert data["trend"] == "up"
    assert all(
        min(shown) - 1 <= level <= max(shown) + 1 for level in data["support_levels"] + data["resistance_levels"]
    )
    assert data["support_levels"], data
    assert {"Bollinger Bands", "RSI"} <= set(data["indicators"])


def test_an_sdk_provider_returns_the_parsed_reply_and_its_usage(sdk_provider, llm_server):
    # Given the local server answering with 1,200 input and 300 output tokens
    llm_server.plan(Step(text=VALID, input_tokens=1_200, output_tokens=300))
    ledger = MemoryLedger()

    # When a strategy request goes through the real SDK
    reply = complete(sdk_provider, strategy_request("Buy when RSI(14) < 30."), ledger=ledger, prices=DEFAULT_PRICES)

    # Then the reply is parsed and the call recorded with its tokens and cost
    assert reply.data["indicators"] == [{"name": "RSI", "parameters": {"period": 14}}]
    (call,) = ledger.calls
    assert (call.outcome, call.usage.input_tokens, call.usage.output_tokens) == ("ok", 1_200, 300)
    assert call.cost_usd == cost_of(sdk_provider.model, Usage(1_200, 300), DEFAULT_PRICES) > 0
    # and the wire format carried the schema the way each API expects it
    body = llm_server.requests[0]["body"]
    if sdk_provider.name == "anthropic":
        assert llm_server.requests[0]["path"] == "/v1/messages"
        assert body["output_config"]["format"]["type"] == "json_schema"
        assert body["system"].startswith("You extract trading strategies")
    else:
        assert llm_server.requests[0]["path"] == "/v1/chat/completions"
        assert body["response_format"]["json_schema"]["name"] == "trading_strategy"


def test_an_image_goes_as_base64_in_each_wire_format(sdk_provider, llm_server):
    # Given a small PNG
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 64

    # When a chart request is sent
    complete(sdk_provider, chart_request(Image(png)), ledger=MemoryLedger(), prices={})

    # Then the image travels as base64 in the shape of each API
    messages = llm_server.requests[0]["body"]["messages"]
    content = messages[0 if sdk_provider.name == "anthropic" else 1]["content"]
    if sdk_provider.name == "anthropic":
        assert content[0]["type"] == "image" and content[0]["source"]["media_type"] == "image/png"
        assert content[0]["source"]["type"] == "base64"
    else:
        assert content[0]["image_url"]["url"].startswith("data:image/png;base64,")


@pytest.mark.parametrize(
    ("step", "error", "delay"),
    [
        (Step(status=429, headers={"retry-after": "7"}), ProviderBusy, 7_000),
        (Step(status=429, headers={"retry-after-ms": "1500"}), ProviderBusy, 1_500),
        (Step(status=429), ProviderBusy, 9_000),
        (Step(status=529, headers={"retry-after": "3"}), ProviderBusy, 3_000),
        (Step(status=529), ProviderUnavailable, None),
        (Step(status=500), ProviderUnavailable, None),
        (Step(delay=4.0), ProviderUnavailable, None),
        (Step(status=401, message="invalid x-api-key"), ProviderRejected, None),
        (Step(status=400, message="max_tokens: too large"), ProviderRejected, None),
        (Step(status=429, message="spend cap reached", code="enforced_spend_limit_reached"), ProviderRejected, None),
        (Step(status=408), ProviderUnavailable, None),
    ],
    ids=["429-seconds", "429-ms", "429-no-header", "529-wait", "529", "500", "timeout", "401", "400", "429-cap", "408"],
)
def test_provider_errors_are_sorted_by_what_should_follow(sdk_provider, llm_server, step, error, delay):
    # Given the server failing the call in one way
    llm_server.plan(step)
    ledger = MemoryLedger()

    # When the call is made
    with pytest.raises(error) as raised:
        complete(sdk_provider, strategy_request("Buy when RSI(14) < 30."), ledger=ledger, prices={})

    # Then it is one error of the right kind, recorded, with the wait asked for and never the key
    assert getattr(raised.value, "delay_ms", None) == delay
    assert len(ledger.calls) == 1 and ledger.calls[0].outcome in ("rate_limited", "transient", "rejected")
    assert llm_server.count() == 1, "the SDK must not retry on its own"
    assert PLANTED_KEY not in str(raised.value) and PLANTED_KEY not in repr(sdk_provider)
    if step.message:
        assert step.message in str(raised.value) and str(step.status) in str(raised.value)


def test_a_reply_that_is_not_json_is_asked_again_with_the_error(sdk_provider, llm_server):
    # Given a first reply that is not JSON, then a valid one
    llm_server.plan(Step(text="Sure! Here is the strategy: {name: x"), Step(text=VALID))
    ledger = MemoryLedger()

    # When the call is made
    reply = complete(sdk_provider, strategy_request("Buy when RSI(14) < 30."), ledger=ledger, prices=DEFAULT_PRICES)

    # Then the second request carried the bad reply and the parse error, and its answer was used
    assert reply.data["timeframe"] == "1h"
    assert [call.outcome for call in ledger.calls] == ["invalid", "ok"]
    second = json.dumps(llm_server.requests[1]["body"]["messages"])
    assert "Sure! Here is the strategy" in second and "not valid JSON" in second
    # and both calls were billed
    assert all(call.usage.output_tokens == 50 for call in ledger.calls)


def test_a_reply_that_breaks_the_schema_three_times_fails_and_keeps_the_raw_reply(sdk_provider, llm_server):
    # Given replies that are JSON but miss required fields, three times
    bad = json.dumps({"name": "half a strategy", "market": "stocks"})
    llm_server.plan(Step(text=bad), Step(text=bad), Step(text=bad))
    ledger = MemoryLedger()

    # When the call is made
    with pytest.raises(InvalidReply) as raised:
        complete(sdk_provider, strategy_request("Buy."), ledger=ledger, prices={}, max_reasks=2)

    # Then it asked once and re-asked twice, each time naming what is missing, and kept the raw reply
    assert llm_server.count() == 3
    assert "'entry_rules' is a required property" in json.dumps(llm_server.requests[2]["body"]["messages"])
    assert raised.value.raw_reply == bad
    assert "after 2 re-asks" in str(raised.value)
    assert [call.outcome for call in ledger.calls] == ["invalid"] * 3
    assert all(call.raw_reply == bad for call in ledger.calls)


def test_the_key_is_not_in_any_log_line_of_a_failing_call(sdk_provider, llm_server, caplog):
    # Given every logger at DEBUG (the SDKs log requests there) and a server that echoes the key back
    caplog.set_level("DEBUG")
    llm_server.plan(Step(status=401, message=f"invalid x-api-key {PLANTED_KEY}"))

    # When the call fails
    with pytest.raises(ProviderRejected) as raised:
        complete(sdk_provider, strategy_request("Buy."), ledger=MemoryLedger(), prices={})

    # Then neither the error nor any log line shows the key
    assert PLANTED_KEY not in str(raised.value) and "[redacted]" in str(raised.value)
    assert caplog.records, "the SDK logged nothing at DEBUG"
    assert all(PLANTED_KEY not in record.getMessage() for record in caplog.records)


def test_tokens_per_minute_count_what_was_billed_across_callers(redis_client):
    import uuid

    from processing.llm.limits import RedisLimits

    # Given a limit of 1,000 tokens a minute, in a namespace of this test's own
    namespace = f"llm-test-{uuid.uuid4().hex[:8]}"
    one = RedisLimits(redis_client, requests_per_minute=0, tokens_per_minute=1_000, namespace=namespace)
    other = RedisLimits(redis_client, requests_per_minute=0, tokens_per_minute=1_000, namespace=namespace)
    try:
        # When one caller is admitted on an estimate of 600 tokens and the provider billed 900
        admission = one.admit("anthropic", 600)
        one.settle(admission, 900)

        # Then another caller's call of 200 more waits for the next minute, and a call of 100 still fits
        with pytest.raises(ProviderBusy) as raised:
            other.admit("anthropic", 200)
        assert 0 < raised.value.delay_ms <= 61_000
        other.admit("anthropic", 100)
        # and the day's budget counted what was billed
        assert one.used_today("anthropic") == 900
    finally:
        for key in redis_client.scan_iter(f"{namespace}:*"):
            redis_client.delete(key)
