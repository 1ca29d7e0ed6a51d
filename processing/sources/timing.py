"""When to look at a source again.

After a success the next check is the largest of what everyone asks for (the approach Miniflux takes):
the source's configured interval, the feed's ``<ttl>``, ``Cache-Control: max-age`` and ``Retry-After``.
After a failure the interval is multiplied by the number of consecutive errors, capped at seven days,
with ±``jitter`` so a hundred sources that failed together do not come back together (as NewsBlur does);
a ``Retry-After`` longer than that wins. Durations are ms.
"""

from __future__ import annotations

import random

#: The longest a failing source waits before its next try.
MAX_BACKOFF_MS = 7 * 24 * 3_600_000


def next_interval(
    interval_ms: int, *, ttl_ms: int | None = None, max_age_ms: int | None = None, retry_after_ms: int | None = None
) -> int:
    """The wait after a success (or a 304): the largest of the four."""
    return max(interval_ms, ttl_ms or 0, max_age_ms or 0, retry_after_ms or 0)


def backoff_interval(
    interval_ms: int,
    errors: int,
    *,
    retry_after_ms: int | None = None,
    cap_ms: int = MAX_BACKOFF_MS,
    jitter: float = 0.1,
    rng: random.Random | None = None,
) -> int:
    """The wait after the ``errors``-th consecutive failure: interval × errors, capped, jittered."""
    base = min(interval_ms * max(1, errors), cap_ms)
    spread = (rng or random).uniform(-jitter, jitter) if jitter else 0.0
    wait = min(int(base * (1 + spread)), cap_ms)
    return max(wait, retry_after_ms or 0)
