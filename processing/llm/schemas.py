"""The JSON schemas replies must keep, and the check of a reply against one."""

from __future__ import annotations

import json
import re
from typing import Any

_TEXT_LIST: dict[str, Any] = {"type": "array", "items": {"type": "string"}}

STRATEGY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "market", "timeframe", "entry_rules", "exit_rules", "risk_management", "indicators"],
    "properties": {
        "name": {"type": "string", "description": "a short name for the strategy"},
        "market": {"type": ["string", "null"], "description": "what it trades: stocks, forex, crypto, a symbol"},
        "timeframe": {"type": ["string", "null"], "description": "bar timeframe: 1m, 15m, 1h, 4h, 1d, 1w"},
        "entry_rules": _TEXT_LIST,
        "exit_rules": _TEXT_LIST,
        "risk_management": _TEXT_LIST,
        "indicators": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "parameters"],
                "properties": {
                    "name": {"type": "string"},
                    "parameters": {
                        "type": "object",
                        "additionalProperties": {"type": ["number", "string"]},
                    },
                },
            },
        },
    },
}

CHART_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["trend", "support_levels", "resistance_levels", "patterns", "indicators"],
    "properties": {
        "trend": {"type": "string", "enum": ["up", "down", "sideways"]},
        "support_levels": {"type": "array", "items": {"type": "number"}},
        "resistance_levels": {"type": "array", "items": {"type": "number"}},
        "patterns": _TEXT_LIST,
        "indicators": _TEXT_LIST,
        "summary": {"type": "string"},
    },
}

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


_validators: dict[str, Any] = {}


def _validator(schema: dict[str, Any]) -> Any:
    from jsonschema import Draft202012Validator

    key = json.dumps(schema, sort_keys=True)
    validator = _validators.get(key)
    if validator is None:
        validator = _validators[key] = Draft202012Validator(schema)
    return validator


def problems(data: Any, schema: dict[str, Any], limit: int = 5) -> list[str]:
    """What is wrong with ``data`` under ``schema``, one line each (empty when it is valid)."""
    validator = _validator(schema)
    found = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        found.append(f"{where}: {error.message}")
        if len(found) >= limit:
            break
    return found


def parse_reply(text: str, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """The reply's JSON and ``None``, or ``None`` and what is wrong with it (to send back to the model)."""
    match = _FENCE.match(text)
    body = match.group(1) if match else text.strip()
    try:
        data = json.loads(body)
    except ValueError as error:
        return None, f"the reply is not valid JSON ({error})"
    found = problems(data, schema)
    if found:
        return None, "the reply does not match the schema: " + "; ".join(found)
    return data, None
