"""Trends: which key phrases are mentioned more than usual now, and where each is in its life.

Inputs are phrase mentions (phrase, item, source, time): one per phrase of every sighting of an item,
so a story that two sources carry counts twice. For each phrase, over the last ``lookback_hours``:

- ``c`` mentions in the current window (the last ``window_ms``), ``p`` in the window before it;
- ``mu`` and ``sigma``: mean and standard deviation of the per-window counts of the rest of the lookback
  (the rolling baseline);
- ``z = (c - mu) / (sigma + 1)``: the burst, in baseline deviations (the +1 keeps a phrase never seen
  before finite: its z is its count);
- ``decayed = sum over its mentions of ((age_hours + 2) / 2) ** -gravity``: Hacker News' time decay
  (gravity 1.8), scaled so a mention of this instant weighs 1;
- ``score = decayed * (1 + max(z, 0))``: what trends are ranked by.

States, from what each run sees (``raw``): *hot* is ``z >= z_threshold`` and ``c >= min_mentions``;
a hot phrase is ``rising`` when ``c > p``, else ``peaking``; one that is not hot is ``declining``.
A phrase enters as ``emerging`` the first time it is hot, and moves ``emerging → rising → peaking →
declining`` (and ``declining → rising`` for a second wave) only after ``hysteresis_runs`` consecutive
runs agree on the move, so one noisy window does not flip it. A declining phrase is dropped once its
mentions in the lookback fall under ``min_mentions``.

Phrases inside a longer trending phrase with as many mentions ("quantum" inside "quantum battery")
are dropped as the same trend. Trends whose items overlap (Jaccard ≥ ``topic_overlap``) form one topic,
named after its best phrase. docs/trends.md has the same, with the settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

STATES = ("emerging", "rising", "peaking", "declining")

# Moves each state may make, given what a run saw.
_MOVES: dict[str, dict[str, str]] = {
    "emerging": {"rising": "rising", "peaking": "peaking", "declining": "declining"},
    "rising": {"peaking": "peaking", "declining": "declining"},
    "peaking": {"declining": "declining"},
    "declining": {"rising": "rising"},
}


@dataclass(frozen=True)
class TrendParams:
    window_ms: int = 3_600_000
    lookback_hours: float = 24.0
    z_threshold: float = 2.0
    min_mentions: int = 3
    hysteresis_runs: int = 2
    gravity: float = 1.8
    max_trends: int = 200
    topic_overlap: float = 0.5


@dataclass
class Mentions:
    """Columns of phrase mentions: indexes into ``phrases`` and ``sources``, Unix seconds, item ids.

    ``source`` and ``item`` may be None (and ``sources`` empty): ranking needs only phrases and times.
    """

    phrases: Sequence[str]
    sources: Sequence[str]
    phrase: Any  # numpy int array
    source: Any  # numpy int array
    item: Any  # numpy int array
    ts: Any  # numpy float array

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[str, str, int, float]]) -> Mentions:
        """From ``(phrase, source, item_id, unix_seconds)`` tuples (tests, small inputs)."""
        import numpy as np

        phrases: dict[str, int] = {}
        sources: dict[str, int] = {}
        p = [phrases.setdefault(r[0], len(phrases)) for r in rows]
        s = [sources.setdefault(r[1], len(sources)) for r in rows]
        return cls(
            phrases=list(phrases),
            sources=list(sources),
            phrase=np.asarray(p, dtype=np.int64),
            source=np.asarray(s, dtype=np.int64),
            item=np.asarray([r[2] for r in rows], dtype=np.int64),
            ts=np.asarray([r[3] for r in rows], dtype=np.float64),
        )


@dataclass
class TrendState:
    """What a phrase carries from one run to the next."""

    state: str
    since: float  # Unix seconds of the last change
    pending: str | None = None
    streak: int = 0


@dataclass
class Trend:
    phrase: str
    state: str
    score: float
    z: float
    current: int  # mentions in the current window
    previous: int  # mentions in the window before
    total: int  # mentions in the lookback
    items: int
    sources: list[str]
    since: float
    pending: str | None = None
    streak: int = 0
    topic: str = ""
    related: list[str] = field(default_factory=list)


def raw_state(z: float, current: int, previous: int, params: TrendParams) -> str:
    """What one run sees, before hysteresis."""
    if z >= params.z_threshold and current >= params.min_mentions:
        return "rising" if current > previous else "peaking"
    return "declining"


def advance(previous: TrendState | None, raw: str, *, now: float, hysteresis_runs: int) -> TrendState | None:
    """The phrase's state after this run; None while it has never been hot."""
    if previous is None:
        return TrendState("emerging", now) if raw != "declining" else None
    target = _MOVES.get(previous.state, {}).get(raw, previous.state)
    if target == previous.state:
        return TrendState(previous.state, previous.since)
    streak = previous.streak + 1 if previous.pending == target else 1
    if streak >= hysteresis_runs:
        return TrendState(target, now)
    return TrendState(previous.state, previous.since, pending=target, streak=streak)


def _contains(longer: str, shorter: str) -> bool:
    return f" {shorter} " in f" {longer} "


def score_trends(
    mentions: Mentions,
    *,
    now: float,
    params: TrendParams | None = None,
    previous: Mapping[str, TrendState] | None = None,
) -> list[Trend]:
    """The trends at ``now``, best first (see the module's docstring for the formulas)."""
    params = params or TrendParams()
    trends = rank_trends(mentions, now=now, params=params, previous=previous)
    describe_trends(trends, mentions, now=now, params=params)
    return trends


def _window(mentions: Mentions, now: float, params: TrendParams) -> tuple[float, int, Any, Any]:
    """Window in hours, buckets of the lookback, ages in hours, and which mentions fall in the lookback."""
    import numpy as np

    window_h = params.window_ms / 3_600_000
    buckets = max(2, int(np.ceil(params.lookback_hours / window_h)))
    age_h = (now - mentions.ts) / 3600.0
    keep = (age_h >= 0) & (age_h < buckets * window_h)
    return window_h, buckets, age_h, keep


def rank_trends(
    mentions: Mentions,
    *,
    now: float,
    params: TrendParams | None = None,
    previous: Mapping[str, TrendState] | None = None,
) -> list[Trend]:
    """The trends at ``now``, best first, from phrases and times alone: ``items``, ``sources``, ``topic``
    and ``related`` are left for ``describe_trends``, which needs the mentions of these phrases only."""
    import numpy as np

    params = params or TrendParams()
    previous = previous or {}
    count_p = len(mentions.phrases)
    if count_p == 0 or len(mentions.ts) == 0:
        return []
    window_h, buckets, age_h, keep = _window(mentions, now, params)
    phrase = mentions.phrase[keep]
    age = age_h[keep]
    bucket = (age // window_h).astype(np.int64)
    counts = np.bincount(phrase * buckets + bucket, minlength=count_p * buckets).reshape(count_p, buckets)
    total = counts.sum(axis=1)
    current, before = counts[:, 0], counts[:, 1]
    baseline = counts[:, 1:]
    mu = baseline.mean(axis=1)
    sigma = baseline.std(axis=1)
    z = (current - mu) / (sigma + 1.0)
    decayed = np.bincount(phrase, weights=((age + 2.0) / 2.0) ** -params.gravity, minlength=count_p)
    score = decayed * (1.0 + np.maximum(z, 0.0))

    index = {name: i for i, name in enumerate(mentions.phrases)}
    known = np.zeros(count_p, dtype=bool)
    for name in previous:
        if name in index:
            known[index[name]] = True
    # A phrase that has never been hot can only enter when it is hot now.
    hot = (z >= params.z_threshold) & (current >= params.min_mentions)
    candidates = np.flatnonzero(hot | known)
    if not len(candidates):
        return []
    # The longest phrases first, so a shorter one is checked against every longer one kept with as many
    # mentions (looked up by that count, so the check stays cheap with thousands of candidates).
    order = sorted((int(i) for i in candidates), key=lambda i: (-mentions.phrases[i].count(" "), -float(score[i])))
    kept: list[int] = []
    by_total: dict[int, list[str]] = {}
    for i in order:
        name = mentions.phrases[i]
        same = by_total.get(int(total[i]), [])
        if name not in previous and any(_contains(longer, name) for longer in same):
            continue
        kept.append(i)
        same.append(name)
        by_total[int(total[i])] = same

    trends: list[Trend] = []
    for i in kept:
        name = mentions.phrases[i]
        raw = raw_state(float(z[i]), int(current[i]), int(before[i]), params)
        state = advance(previous.get(name), raw, now=now, hysteresis_runs=params.hysteresis_runs)
        if state is None:
            continue
        if state.state == "declining" and total[i] < params.min_mentions:
            continue
        trends.append(
            Trend(
                phrase=name,
                state=state.state,
                score=round(float(score[i]), 6),
                z=round(float(z[i]), 4),
                current=int(current[i]),
                previous=int(before[i]),
                total=int(total[i]),
                items=0,
                sources=[],
                since=state.since,
                pending=state.pending,
                streak=state.streak,
            )
        )
    trends.sort(key=lambda t: (-t.score, t.phrase))
    return trends[: params.max_trends]


def describe_trends(trends: list[Trend], mentions: Mentions, *, now: float, params: TrendParams | None = None) -> None:
    """Fill in each trend's items, sources, topic and related phrases from ``mentions`` (which need hold
    only the mentions of these trends' phrases; the lookback is applied as ``rank_trends`` applies it)."""
    import numpy as np

    params = params or TrendParams()
    items_of: dict[str, Any] = {}
    sources_of: dict[str, set[str]] = {}
    index = {name: i for i, name in enumerate(mentions.phrases)}
    chosen = np.asarray([index[t.phrase] for t in trends if t.phrase in index], dtype=np.int64)
    if len(chosen) and len(mentions.ts):
        _, _, _, keep = _window(mentions, now, params)
        phrase = mentions.phrase[keep]
        mask = np.isin(phrase, chosen)
        p_kept, i_kept, s_kept = phrase[mask], mentions.item[keep][mask], mentions.source[keep][mask]
        # Distinct (phrase, item) and (phrase, source) pairs as single integers: one sort each.
        item_span = int(i_kept.max()) + 1 if len(i_kept) else 1
        item_pairs = np.unique(p_kept * item_span + i_kept)
        source_span = max(len(mentions.sources), 1)
        source_pairs = np.unique(p_kept * source_span + s_kept)
        item_owner, source_owner = item_pairs // item_span, source_pairs // source_span
        for p in chosen.tolist():
            name = mentions.phrases[p]
            lo, hi = np.searchsorted(item_owner, [p, p + 1])
            items_of[name] = item_pairs[lo:hi] % item_span
            lo, hi = np.searchsorted(source_owner, [p, p + 1])
            sources_of[name] = {mentions.sources[int(x)] for x in source_pairs[lo:hi] % source_span}
    for trend in trends:
        trend.items = len(items_of.get(trend.phrase, ()))
        trend.sources = sorted(sources_of.get(trend.phrase, set()))
    _group_topics(trends, items_of, params.topic_overlap)


def _group_topics(trends: list[Trend], items: Mapping[str, Any], overlap: float) -> None:
    """Name each trend's topic: the best trend whose items overlap its own enough, or itself."""
    topics: list[tuple[str, set[int], list[str]]] = []
    for trend in trends:
        mine = set(items[trend.phrase].tolist()) if trend.phrase in items else set()
        for label, members, phrases in topics:
            union = len(mine | members)
            if union and len(mine & members) / union >= overlap:
                trend.topic = label
                phrases.append(trend.phrase)
                members |= mine
                break
        else:
            trend.topic = trend.phrase
            topics.append((trend.phrase, set(mine), [trend.phrase]))
    related = {label: phrases for label, _, phrases in topics}
    for trend in trends:
        trend.related = [p for p in related.get(trend.topic, []) if p != trend.phrase][:5]
