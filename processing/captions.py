"""Caption files into timed segments: YouTube's ``json3`` and WebVTT (as YouTube and others serve it).

YouTube's automatic captions repeat themselves: in VTT every cue shows the previous line again above
the new one (and a 10 ms cue shows the finished line alone); in json3 each line's event lasts until
the line scrolls away, overlapping the next. Both parsers undo that, so a segment holds each spoken
line once, with word times when the file carries them.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

from processing.errors import CorruptInput, UnsupportedFormat
from processing.transcription import Segment, Word

#: Caption formats we parse, best first (json3 carries word times; VTT is the common fallback).
SUPPORTED_FORMATS = ("json3", "vtt")

_TIMING = re.compile(
    r"^\s*(?P<start>(?:\d+:)?\d{1,2}:\d{2}[.,]\d{1,3})\s+-->\s+(?P<end>(?:\d+:)?\d{1,2}:\d{2}[.,]\d{1,3})"
)
_INLINE_TIME = re.compile(r"<((?:\d+:)?\d{1,2}:\d{2}[.,]\d{1,3})>")
_TAG = re.compile(r"</?[^>]+>")


def parse_captions(text: str, fmt: str) -> list[Segment]:
    """Parse caption text in ``fmt`` (``json3`` or ``vtt``) into segments in time order."""
    fmt = fmt.lower().lstrip(".")
    if fmt == "json3":
        return parse_json3(text)
    if fmt in {"vtt", "webvtt"}:
        return parse_vtt(text)
    raise UnsupportedFormat(f"caption format {fmt!r} is not supported (supported: json3, vtt)")


def parse_json3(text: str) -> list[Segment]:
    """Parse YouTube's ``json3`` timed text (``{"events": [{"tStartMs", "dDurationMs", "segs"}]}``)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorruptInput(f"json3 captions are not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        raise CorruptInput("json3 captions hold no 'events' list")

    lines: list[tuple[int, int | None, list[tuple[int, str]]]] = []
    for event in data["events"]:
        if not isinstance(event, dict) or not event.get("segs"):
            continue
        start_ms = int(event.get("tStartMs") or 0)
        duration = event.get("dDurationMs")
        pieces: list[tuple[int, str]] = []
        for seg in event["segs"]:
            piece = str(seg.get("utf8") or "")
            if piece.strip() == "":
                if pieces and piece:
                    pieces[-1] = (pieces[-1][0], pieces[-1][1] + " ")
                continue
            pieces.append((start_ms + int(seg.get("tOffsetMs") or 0), piece.replace("\n", " ")))
        if not pieces:
            continue
        lines.append((start_ms, start_ms + int(duration) if duration is not None else None, pieces))

    lines.sort(key=lambda line: line[0])
    segments: list[Segment] = []
    for i, (start_ms, end_ms, pieces) in enumerate(lines):
        next_start = lines[i + 1][0] if i + 1 < len(lines) else None
        if end_ms is None:
            end_ms = next_start if next_start is not None else start_ms
        if next_start is not None and next_start > start_ms:
            end_ms = min(end_ms, next_start)
        end_ms = max(end_ms, start_ms)
        words = _json3_words(pieces, end_ms) if len(pieces) > 1 else ()
        text_out = _clean(" ".join(p for _, p in pieces))
        if text_out:
            segments.append(Segment(start=start_ms / 1000, end=end_ms / 1000, text=text_out, words=words))
    return segments


def _json3_words(pieces: list[tuple[int, str]], end_ms: int) -> tuple[Word, ...]:
    words = []
    for j, (at_ms, piece) in enumerate(pieces):
        word_end = pieces[j + 1][0] if j + 1 < len(pieces) else end_ms
        word = _clean(piece)
        if word:
            words.append(Word(start=at_ms / 1000, end=max(at_ms, word_end) / 1000, text=word))
    return tuple(words)


def _seconds(stamp: str) -> float:
    parts = stamp.replace(",", ".").split(":")
    total = 0.0
    for part in parts:
        total = total * 60 + float(part)
    return total


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(_TAG.sub("", text))).strip()


def parse_vtt(text: str) -> list[Segment]:
    """Parse WebVTT into segments, folding YouTube's rolling repeats of the previous line."""
    body = text.lstrip("\ufeff")
    if not body.lstrip().startswith("WEBVTT"):
        raise CorruptInput("caption file is not WebVTT (it does not start with 'WEBVTT')")
    cues: list[tuple[float, float, list[str]]] = []
    # Cues end at an empty line; YouTube's cues hold lines of a single space, which are not empty.
    for block in re.split(r"\r?\n(?:\r?\n)+", body):
        rows = block.splitlines()
        timing_at = next((k for k, row in enumerate(rows) if _TIMING.match(row)), None)
        if timing_at is None:
            continue  # header, NOTE, STYLE or REGION block
        match = _TIMING.match(rows[timing_at])
        assert match is not None
        cue_lines = [row for row in rows[timing_at + 1 :] if row.strip()]
        cues.append((_seconds(match["start"]), _seconds(match["end"]), cue_lines))

    segments: list[Segment] = []
    previous: list[str] = []
    for start, end, raw_lines in cues:
        cleaned = [_clean(line) for line in raw_lines]
        fresh = [(raw, line) for raw, line in zip(raw_lines, cleaned, strict=True) if line and line not in previous]
        previous = [line for line in cleaned if line]
        if not fresh:
            continue
        text_out = " ".join(line for _, line in fresh)
        words: tuple[Word, ...] = ()
        if any(_INLINE_TIME.search(raw) for raw, _ in fresh):
            words = _vtt_words(" ".join(raw for raw, _ in fresh), start, end)
        segments.append(Segment(start=start, end=max(start, end), text=text_out, words=words))
    segments.sort(key=lambda s: s.start)
    return segments


def _vtt_words(raw: str, start: float, end: float) -> tuple[Word, ...]:
    """Words of a cue line with inline ``<hh:mm:ss.mmm>`` stamps: each stamp starts the words after it."""
    timed: list[tuple[float, str]] = []
    at = start
    position = 0
    for match in _INLINE_TIME.finditer(raw):
        timed.extend((at, w) for w in _clean(raw[position : match.start()]).split())
        at = _seconds(match.group(1))
        position = match.end()
    timed.extend((at, w) for w in _clean(raw[position:]).split())
    words = []
    for k, (word_start, word) in enumerate(timed):
        word_end = timed[k + 1][0] if k + 1 < len(timed) else end
        words.append(Word(start=word_start, end=max(word_start, word_end), text=word))
    return tuple(words)


def caption_text(segments: list[Segment]) -> str:
    """All segment texts joined by spaces."""
    return " ".join(segment.text for segment in segments)


def as_dict(segment: Segment) -> dict[str, Any]:
    """A segment as plain JSON-ready data."""
    return {
        "start": segment.start,
        "end": segment.end,
        "text": segment.text,
        "words": [{"start": w.start, "end": w.end, "text": w.text} for w in segment.words],
    }
