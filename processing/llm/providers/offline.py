"""A deterministic, rule-based provider: no network, no key, the same answer for the same input.

Strategies: indicators with their parameters, timeframes, markets, and entry, exit and risk sentences are
found with regular expressions. Charts: the close line (the darkest thin line of the price panel) is read
from the image's pixels; trend, swing highs and lows, support and resistance come from it, and the
indicators from the colours drawn. Every reply says ``provider: offline``; token counts are estimates
(four characters a token) and cost nothing.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections import Counter
from typing import Any

from processing.errors import CorruptInput, InvalidArgument
from processing.llm.prompts import TEXT_END, TEXT_START
from processing.llm.types import Image, Reply, Request, Usage

NAME = "offline"

_NUM = r"(\d+(?:\.\d+)?)"
#: name, pattern, parameter names (filled from the pattern's groups, in order)
_INDICATORS: tuple[tuple[str, re.Pattern[str], tuple[str, ...]], ...] = (
    (
        "RSI",
        re.compile(rf"\bRSI\b(?:\s*\(\s*{_NUM}\s*\)|[\s-]*(?:period\s*(?:of\s*)?)?{_NUM}\b)?", re.I),
        ("period", "period"),
    ),
    ("RSI", re.compile(rf"\b{_NUM}[- ](?:period|day|bar)\s+RSI\b", re.I), ("period",)),
    (
        "MACD",
        re.compile(rf"\bMACD\b(?:\s*\(\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*\))?", re.I),
        ("fast", "slow", "signal"),
    ),
    ("SMA", re.compile(rf"\b{_NUM}[- ](?:period|day|bar)?\s*(?:SMA|simple moving average)\b", re.I), ("period",)),
    ("SMA", re.compile(rf"\bSMA\s*\(?\s*{_NUM}\b", re.I), ("period",)),
    ("EMA", re.compile(rf"\b{_NUM}[- ](?:period|day|bar)?\s*(?:EMA|exponential moving average)\b", re.I), ("period",)),
    ("EMA", re.compile(rf"\bEMA\s*\(?\s*{_NUM}\b", re.I), ("period",)),
    ("SMA", re.compile(rf"\b{_NUM}[- ](?:period|day|bar)\s+moving average\b", re.I), ("period",)),
    (
        "Bollinger Bands",
        re.compile(rf"\bBollinger Bands?\b(?:\s*\(\s*{_NUM}\s*,\s*{_NUM}\s*\))?", re.I),
        ("period", "std_dev"),
    ),
    (
        "ATR",
        re.compile(rf"\b(?:ATR|average true range)\b(?:\s*\(\s*{_NUM}\s*\)|\s+{_NUM}\b)?", re.I),
        ("period", "period"),
    ),
    (
        "Stochastic",
        re.compile(rf"\bstochastic(?: oscillator)?\b(?:\s*\(\s*{_NUM}\s*,\s*{_NUM}\s*\))?", re.I),
        ("k", "d"),
    ),
    ("VWAP", re.compile(r"\bVWAP\b", re.I), ()),
    ("Volume", re.compile(r"\bvolume\b", re.I), ()),
)

_TIMEFRAMES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(1|5|15|30)[- ]?(?:minute|min)s?\b|\b(1|5|15|30)m\b", re.I), "{}m"),
    (re.compile(r"\b(1|2|4|12)[- ]?(?:hour|hr)s?\b|\b(1|2|4|12)h\b", re.I), "{}h"),
    (re.compile(r"\bhourly\b", re.I), "1h"),
    (re.compile(r"\bdaily\b|\bday chart\b|\b1d\b|\bdaily bars?\b", re.I), "1d"),
    (re.compile(r"\bweekly\b|\b1w\b", re.I), "1w"),
)

_MARKETS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(?:crypto(?:currency|currencies)?|bitcoin|BTC|ETH|ethereum)\b", re.I), "crypto"),
    (re.compile(r"\b(?:forex|FX|currency pairs?|[A-Z]{3}/[A-Z]{3})\b"), "forex"),
    (re.compile(r"\b(?:futures|commodit(?:y|ies)|gold|crude oil)\b", re.I), "futures"),
    (re.compile(r"\b(?:stocks?|shares|equit(?:y|ies)|S&P 500|Nasdaq|ETFs?)\b", re.I), "stocks"),
)

_RISK = re.compile(
    r"\b(?:stop[- ]?loss|stop at|risk(?:ing)?|position siz(?:e|ing)|% of (?:the |your )?(?:account|capital|equity)"
    r"|drawdown|leverage|trailing stop)\b",
    re.I,
)
_EXIT = re.compile(r"\b(?:exit|take[- ]profit|close (?:the |your )?(?:position|trade)|sell when|target|cover)\b", re.I)
_ENTRY = re.compile(r"\b(?:buy|go long|enter|entry|long when|short when|sell short|open a (?:long|short))\b", re.I)
_NAME = re.compile(r"(?:^|\n)\s*(?:strategy|name)\s*[:\-]\s*(.{3,80})", re.I)
_NAMED = re.compile(r"\b((?:[A-Z][\w/&+-]*\s){1,5})[Ss]trategy\b")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def _tokens(chars: int) -> int:
    return max(1, chars // 4)


class OfflineProvider:
    """Answers the platform's two tasks (``trading_strategy``, ``chart_analysis``) by rules."""

    name = NAME

    def __init__(self, model: str = "rules-v1") -> None:
        self.model = model

    def complete(self, request: Request) -> Reply:
        started = time.perf_counter()
        if request.schema_name == "trading_strategy":
            data: dict[str, Any] = extract_strategy_by_rules(_source_text(request))
        elif request.schema_name == "chart_analysis":
            images = [image for message in request.messages for image in message.images]
            if not images:
                raise InvalidArgument("a chart analysis needs an image")
            data = analyze_chart_by_pixels(images[-1], _context(request))
        elif request.schema_name == "file_metadata":
            data = _file_metadata(request)
        else:
            raise InvalidArgument(f"the offline provider has no rules for {request.schema_name!r}")
        text = json.dumps(data)
        return Reply(
            text=text,
            usage=Usage(_tokens(request.prompt_chars()), _tokens(len(text))),
            model=self.model,
            provider=NAME,
            latency_ms=(time.perf_counter() - started) * 1000,
            data=data,
        )


def _source_text(request: Request) -> str:
    for message in request.messages:
        if message.role == "user" and TEXT_START in message.text:
            return message.text.split(TEXT_START, 1)[1].rsplit(TEXT_END, 1)[0]
    return request.messages[0].text if request.messages else ""


def _file_metadata(request: Request) -> dict[str, Any]:
    """The file drive's description of an upload, from the ``File name:`` / ``Type:`` lines and the text."""
    from processing.files import metadata_by_rules

    head = request.messages[0].text.split(TEXT_START, 1)[0] if request.messages else ""
    fields = dict(line.split(": ", 1) for line in head.splitlines() if ": " in line)
    return metadata_by_rules(fields.get("File name", "file"), fields.get("Type", "unknown"), _source_text(request))


def _context(request: Request) -> dict[str, Any]:
    for message in request.messages:
        marker = "What is known about the chart: "
        if marker in message.text:
            line = message.text.split(marker, 1)[1].split("\n", 1)[0]
            try:
                value = json.loads(line)
            except ValueError:
                return {}
            return value if isinstance(value, dict) else {}
    return {}


# ----------------------------------------------------------------------------------------------------
# Strategies
# ----------------------------------------------------------------------------------------------------


def _number(text: str) -> float | int:
    value = float(text)
    return int(value) if value.is_integer() else value


def find_indicators(text: str) -> list[dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for name, pattern, params in _INDICATORS:
        for match in pattern.finditer(text):
            values = {}
            for param, group in zip(params, match.groups(), strict=False):
                if group is not None and param not in values:
                    values[param] = _number(group)
            key = name if name not in ("SMA", "EMA") else f"{name}{values.get('period', '')}"
            if key not in found:
                found[key] = {"name": name, "parameters": values}
                order.append(key)
            else:
                for param, value in values.items():
                    found[key]["parameters"].setdefault(param, value)
    # An SMA without a period when one with a period exists says nothing new.
    for base in ("SMA", "EMA"):
        if base in found and any(key.startswith(base) and key != base for key in found):
            order.remove(base)
            del found[base]
    return [found[key] for key in order]


def _first(patterns: tuple[tuple[re.Pattern[str], str], ...], text: str) -> str | None:
    hits: Counter[str] = Counter()
    first_seen: dict[str, int] = {}
    for pattern, label in patterns:
        for match in pattern.finditer(text):
            number = next((g for g in match.groups() if g), None) if match.groups() else None
            value = label.format(number) if "{}" in label else label
            hits[value] += 1
            first_seen.setdefault(value, match.start())
    if not hits:
        return None
    return max(hits, key=lambda value: (hits[value], -first_seen[value]))


def _clean(sentence: str) -> str:
    return " ".join(sentence.strip(" -•*\t").split())


def extract_strategy_by_rules(text: str) -> dict[str, Any]:
    """A strategy (the shape of ``STRATEGY_SCHEMA``) from what the text literally says."""
    entries, exits, risks = [], [], []
    for raw in _SENTENCE.split(text):
        sentence = _clean(raw)
        if len(sentence) < 8:
            continue
        if _RISK.search(sentence):
            risks.append(sentence)
        elif _EXIT.search(sentence):
            exits.append(sentence)
        elif _ENTRY.search(sentence):
            entries.append(sentence)
    indicators = find_indicators(text)
    name_match = _NAME.search(text)
    if name_match:
        name = _clean(name_match.group(1).split(".")[0])
    else:
        named = _NAMED.search(text)
        if named:
            name = _clean(named.group(1)) + " strategy"
        elif indicators:
            name = " + ".join(dict.fromkeys(i["name"] for i in indicators[:3])) + " strategy"
        else:
            name = "Unnamed strategy"
    return {
        "name": name,
        "market": _first(_MARKETS, text),
        "timeframe": _first(_TIMEFRAMES, text),
        "entry_rules": list(dict.fromkeys(entries)),
        "exit_rules": list(dict.fromkeys(exits)),
        "risk_management": list(dict.fromkeys(risks)),
        "indicators": indicators,
    }


# ----------------------------------------------------------------------------------------------------
# Charts
# ----------------------------------------------------------------------------------------------------

#: matplotlib's tab colours, as the market charts draw them, and what each one is there.
_COLOURS = {
    "Bollinger Bands": (31, 119, 180),
    "moving averages": (255, 127, 14),
    "RSI": (148, 103, 189),
}


def _dark(pixel: tuple[int, ...]) -> bool:
    return sum(pixel[:3]) < 150


def _panel(pixels: Any, width: int, height: int) -> tuple[int, int, int, int]:
    """Left, top, right, bottom of the first plot panel, inside its dark frame when it has one."""
    rows = [y for y in range(height) if sum(_dark(pixels[x, y]) for x in range(0, width, 4)) > width / 4 * 0.6]
    top, bottom = int(height * 0.06), int(height * 0.6)
    if len(rows) >= 2:
        first = rows[0]
        below = [y for y in rows if y > first + height * 0.1]
        if below:
            top, bottom = first + 2, below[0] - 2
    columns = [
        x for x in range(width) if sum(_dark(pixels[x, y]) for y in range(top, bottom, 2)) > (bottom - top) / 2 * 0.8
    ]
    left, right = int(width * 0.07), int(width * 0.97)
    if len(columns) >= 2 and columns[-1] - columns[0] > width * 0.3:
        left, right = columns[0] + 2, columns[-1] - 2
    return left, top, right, bottom


def _close_line(pixels: Any, width: int, height: int) -> list[tuple[int, float]]:
    """(x, y) of the dark line in the first panel, one point per column, followed from the right edge
    (where legends rarely sit) to the left, always taking the dark run nearest the last point."""
    left, top, right, bottom = _panel(pixels, width, height)
    points: list[tuple[int, float]] = []
    previous: float | None = None
    for x in range(right - 1, left - 1, -1):
        runs: list[list[int]] = []
        for y in range(top, bottom):
            if _dark(pixels[x, y]):
                if runs and runs[-1][-1] == y - 1:
                    runs[-1].append(y)
                else:
                    runs.append([y])
        if not runs:
            continue
        centres = [sum(run) / len(run) for run in runs]
        if previous is None:
            chosen = centres[0] if len(centres) == 1 else min(centres, key=lambda c: abs(c - (top + bottom) / 2))
        else:
            chosen = min(centres, key=lambda c: abs(c - previous))  # type: ignore[operator]
            if abs(chosen - previous) > (bottom - top) * 0.25:
                continue
        previous = chosen
        points.append((x, chosen))
    points.reverse()
    return points


def _swings(values: list[float], window: int) -> tuple[list[int], list[int]]:
    """Indexes of local maxima and minima of ``values`` over ``window`` points either side."""
    highs, lows = [], []
    for index in range(window, len(values) - window):
        around = values[index - window : index + window + 1]
        if values[index] == max(around) and values[index] > min(around):
            highs.append(index)
        elif values[index] == min(around) and values[index] < max(around):
            lows.append(index)
    return highs, lows


def analyze_chart_by_pixels(image: Image, context: dict[str, Any] | None = None) -> dict[str, Any]:
    """Trend, support, resistance, patterns and indicators of a line chart, read from its pixels.

    Levels are prices when ``context`` gives the close line's range (``close_min``, ``close_max``), and
    otherwise positions from 0 (the line's low) to 1 (its high).
    """
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    context = context or {}
    try:
        with PILImage.open(io.BytesIO(image.data)) as opened:
            picture = opened.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise CorruptInput(f"the chart is not a readable image: {error}") from None
    if picture.width > 1600:
        picture = picture.resize((1600, int(picture.height * 1600 / picture.width)))
    width, height = picture.size
    if width < 50 or height < 50:
        raise InvalidArgument(f"the chart image is too small to read ({width}x{height} px)")
    pixels = picture.load()
    line = _close_line(pixels, width, height)
    if len(line) < 10:
        raise InvalidArgument("no price line could be found in the chart image")
    ys = [y for _, y in line]
    low_y, high_y = max(ys), min(ys)  # pixel rows grow downwards
    spread = max(low_y - high_y, 1.0)
    lo, hi = context.get("close_min"), context.get("close_max")
    scaled = isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and hi > lo

    def price(y: float) -> float:
        fraction = (low_y - y) / spread
        return round(lo + fraction * (hi - lo), 4) if scaled else round(fraction, 4)  # type: ignore[operator]

    values = [price(y) for y in ys]
    count = len(values)
    mean_x = (count - 1) / 2
    mean_v = sum(values) / count
    slope = sum((i - mean_x) * (v - mean_v) for i, v in enumerate(values)) / sum(
        (i - mean_x) ** 2 for i in range(count)
    )
    full = (max(values) - min(values)) or 1.0
    change = slope * count / full
    trend = "up" if change > 0.25 else "down" if change < -0.25 else "sideways"

    highs, lows = _swings(values, max(count // 25, 3))
    last = values[-1]
    resistance = sorted({values[i] for i in highs if values[i] > last})[:3]
    support = sorted({values[i] for i in lows if values[i] < last}, reverse=True)[:3]
    patterns = []
    if len(highs) >= 2 and len(lows) >= 2:
        if values[highs[-1]] > values[highs[-2]] and values[lows[-1]] > values[lows[-2]]:
            patterns.append("higher highs and higher lows")
        elif values[highs[-1]] < values[highs[-2]] and values[lows[-1]] < values[lows[-2]]:
            patterns.append("lower highs and lower lows")
    if trend == "sideways":
        patterns.append("range")
    if highs and last > max(values[i] for i in highs):
        patterns.append("breakout above the last swing high")
    if lows and last < min(values[i] for i in lows):
        patterns.append("breakdown below the last swing low")

    colours: Counter[Any] = Counter(picture.get_flattened_data())

    def near(colour: Any, rgb: tuple[int, int, int]) -> bool:
        return all(abs(int(a) - b) <= 20 for a, b in zip(colour, rgb, strict=True))

    total = width * height
    indicators = [
        name
        for name, rgb in _COLOURS.items()
        if sum(n for colour, n in colours.items() if near(colour, rgb)) > total * 0.0002
    ]
    unit = "" if scaled else " (0 = the line's low, 1 = its high)"
    return {
        "trend": trend,
        "support_levels": support,
        "resistance_levels": resistance,
        "patterns": patterns,
        "indicators": indicators,
        "summary": f"{trend} trend over {count} columns of the price line; last at {last}{unit}",
    }
