"""Actors the observability tests send through a real worker.

One succeeds and feeds the domain counters, one fails once and then succeeds (retried), one always fails
(retried, then dead-lettered), one rejects its input (failed, never retried), and two are fired by the
scheduler (one of them with its schedule disabled).
"""

from __future__ import annotations

import threading
import time

import dramatiq

import actors  # noqa: F401  (sets up the project's broker before the actors below are declared)
from processing.errors import InvalidArgument

_attempts: dict[str, int] = {}
_attempts_lock = threading.Lock()


@dramatiq.actor(
    queue_name="default",
    max_retries=0,
    result_metrics={
        "pages_ocr": "documents_pages_ocr_total",
        "audio_seconds": "media_transcribed_audio_seconds_total",
        "signals": "market_signals_emitted_total",
    },
)
def obs_succeeds(pages: int, sleep_ms: int = 0) -> dict[str, int]:
    """Pretends to OCR ``pages`` pages, transcribe 30 s of audio per page and emit a signal per 2 pages."""
    time.sleep(sleep_ms / 1000)
    return {"pages_ocr": pages, "audio_seconds": 30 * pages, "signals": pages // 2}


@dramatiq.actor(queue_name="default", max_retries=3, min_backoff=20, max_backoff=100)
def obs_flaky(key: str) -> str:
    """Fails its first attempt (a transient error), succeeds on the retry."""
    with _attempts_lock:
        attempt = _attempts[key] = _attempts.get(key, 0) + 1
    if attempt < 2:
        raise ConnectionError(f"{key}: the upstream did not answer on attempt {attempt}")
    return "ok"


@dramatiq.actor(queue_name="default", max_retries=1, min_backoff=20, max_backoff=50)
def obs_always_fails(n: int) -> None:
    """Fails every attempt: retried once, then dead-lettered."""
    raise RuntimeError(f"run {n}: the upstream keeps failing")


@dramatiq.actor(queue_name="default", max_retries=3)
def obs_rejects(value: str) -> None:
    """Bad input: fails at once, never retried."""
    raise InvalidArgument(f"value {value!r} is not accepted")


@dramatiq.actor(queue_name="default", max_retries=0)
def obs_tick() -> None:
    """Fired by the scheduler every minute."""


@dramatiq.actor(queue_name="default", max_retries=0)
def obs_tick_paused() -> None:
    """Declared with its schedule disabled: the scheduler counts its ticks as skipped."""
