"""The prompts: what each task asks, and the re-ask that sends a validation error back."""

from __future__ import annotations

import json
from typing import Any

from processing.llm.schemas import CHART_SCHEMA, STRATEGY_SCHEMA
from processing.llm.types import Image, Message, Request

STRATEGY_SYSTEM = (
    "You extract trading strategies from text (articles, PDF pages, video transcripts). Report only what "
    "the text says: the strategy's name, the market and timeframe it trades, its entry rules, exit rules "
    "and risk management as short imperative sentences, and each indicator with its parameters "
    "(for example RSI with period 14). Use null for a market or timeframe the text does not name and "
    "empty lists for rules it does not give. Answer with one JSON object that matches the schema."
)

CHART_SYSTEM = (
    "You analyse price charts. Report the trend (up, down or sideways), support and resistance levels as "
    "prices read from the axis, chart patterns you can see, and the indicators drawn on the chart. "
    "Answer with one JSON object that matches the schema."
)

#: Marks where the source text starts and ends in a strategy prompt.
TEXT_START, TEXT_END = "<<<TEXT", "TEXT>>>"


def strategy_request(text: str, *, part: int = 1, parts: int = 1, max_tokens: int = 4096) -> Request:
    where = f" This is part {part} of {parts} of a longer text." if parts > 1 else ""
    prompt = (
        f"Extract the trading strategy described in the text below.{where}\n"
        f"JSON schema:\n{json.dumps(STRATEGY_SCHEMA)}\n\n{TEXT_START}\n{text}\n{TEXT_END}"
    )
    return Request(
        system=STRATEGY_SYSTEM,
        messages=(Message("user", prompt),),
        schema=STRATEGY_SCHEMA,
        schema_name="trading_strategy",
        max_tokens=max_tokens,
    )


def chart_request(image: Image, *, context: dict[str, Any] | None = None, max_tokens: int = 2048) -> Request:
    facts = f"\nWhat is known about the chart: {json.dumps(context, sort_keys=True)}" if context else ""
    prompt = f"Analyse this chart.{facts}\nJSON schema:\n{json.dumps(CHART_SCHEMA)}"
    return Request(
        system=CHART_SYSTEM,
        messages=(Message("user", prompt, images=(image,)),),
        schema=CHART_SCHEMA,
        schema_name="chart_analysis",
        max_tokens=max_tokens,
    )


def reask(request: Request, raw_reply: str, problem: str) -> Request:
    """The same request with the bad reply and what was wrong with it appended (the ``instructor``
    pattern): the model sees its own answer and the validation error, and answers again."""
    correction = (
        f"Your reply could not be used: {problem}. Answer again with only the JSON object, matching the schema exactly."
    )
    return Request(
        system=request.system,
        messages=(*request.messages, Message("assistant", raw_reply), Message("user", correction)),
        schema=request.schema,
        schema_name=request.schema_name,
        max_tokens=request.max_tokens,
    )
