"""Canonical URLs, dedupe keys, key phrases, and trend scores and states (pure functions)."""

from __future__ import annotations

from dataclasses import asdict

from processing.dedupe import content_hash
from processing.phrases import fold, key_phrases
from processing.trends import Mentions, TrendParams, TrendState, describe_trends, rank_trends, score_trends
from processing.urls import canonical_url

HOUR = 3600.0


def test_canonical_urls_drop_case_default_ports_fragments_and_tracking_parameters() -> None:
    assert (
        canonical_url("HTTPS://Example.COM:443/a/b/?utm_source=x&b=2&a=1&fbclid=zz#frag")
        == "https://example.com/a/b?a=1&b=2"
    )
    assert canonical_url("http://example.com:80") == "http://example.com/"
    assert canonical_url("http://example.com:8080/x?gclid=1") == "http://example.com:8080/x"
    assert canonical_url("https://example.com/%7Euser/") == "https://example.com/~user"
    assert canonical_url("mailto:someone@example.com") == "mailto:someone@example.com"
    assert canonical_url(None) is None


def test_content_hash_ignores_case_punctuation_and_spacing_but_not_words() -> None:
    assert content_hash("Rust 2.0 is out!", "Big news.") == content_hash("rust 2 0 is   OUT", "big NEWS")
    assert content_hash("Rust 2.0 is out", "") != content_hash("Rust 3.0 is out", "")


def test_key_phrases_are_folded_n_grams_between_stop_words() -> None:
    phrases = key_phrases("Quantum Batteries are coming to the GPUs of 2027", "Why the quantum battery matters.")

    assert "quantum battery" in phrases and "gpu" in phrases
    assert not any(p in phrases for p in ("the", "are", "2027", "quantum battery coming"))
    assert phrases.count("quantum battery") == 1
    assert (
        fold("batteries") == "battery"
        and fold("boxes") == "box"
        and fold("news") == "news"
        and fold("class") == "class"
    )


def _mentions(spec: list[tuple[str, str, int, float]]) -> Mentions:
    return Mentions.from_rows(spec)


def test_planted_phrases_rank_by_their_mentions_and_nothing_below_three_trends() -> None:
    # Given 24 items over four source kinds in the last hour: one phrase in 6 of them (every kind),
    # one in 4, one in 3, and every other phrase in at most 2
    now = 100 * HOUR
    kinds = ["rss", "hackernews", "reddit", "folder"]
    rows: list[tuple[str, str, int, float]] = []
    planted = {"quantum battery": 6, "rust compiler": 4, "solar sail": 3}
    item = 0
    for phrase, count in planted.items():
        for k in range(count):
            item += 1
            rows.append((phrase, kinds[k % 4], item, now - 600 - 60 * item))
    for k in range(11):
        item += 1
        rows += [
            (f"filler {k}", kinds[k % 4], item, now - 900),
            (f"filler {k}", kinds[(k + 1) % 4], item + 100, now - 950),
        ]

    # When the trends are scored
    trends = score_trends(_mentions(rows), now=now)

    # Then exactly the three planted phrases trend, in order of their counts, all emerging, with their sources
    assert [t.phrase for t in trends] == ["quantum battery", "rust compiler", "solar sail"]
    assert [t.state for t in trends] == ["emerging"] * 3
    assert [t.current for t in trends] == [6, 4, 3]
    assert trends[0].sources == sorted(kinds)


def test_a_phrase_inside_a_longer_trend_with_the_same_mentions_is_the_same_trend() -> None:
    now = 10 * HOUR
    rows = [(p, "rss", i, now - 60) for i in range(5) for p in ("quantum battery", "quantum", "battery")]
    rows += [("battery", "rss", 50 + i, now - 60) for i in range(3)]  # "battery" also alone, 3 more times

    phrases = [t.phrase for t in score_trends(_mentions(rows), now=now)]

    assert "quantum battery" in phrases and "battery" in phrases and "quantum" not in phrases


def _run(hours: list[int], hysteresis: int = 2) -> list[str]:
    """States after each hourly run, for a phrase with ``hours[h]`` mentions in hour h."""
    params = TrendParams(hysteresis_runs=hysteresis)
    rows: list[tuple[str, str, int, float]] = []
    previous: dict[str, TrendState] = {}
    states = []
    item = 0
    for h, count in enumerate(hours):
        for k in range(count):
            item += 1
            rows.append(("quantum battery", "rss", item, h * HOUR + 10 + k))
        trends = score_trends(_mentions(rows), now=(h + 1) * HOUR, params=params, previous=previous)
        previous = {t.phrase: TrendState(t.state, t.since, t.pending, t.streak) for t in trends}
        states.append(trends[0].state if trends else "-")
    return states


def test_a_burst_moves_through_emerging_rising_peaking_declining_one_agreed_step_at_a_time() -> None:
    states = _run([3, 6, 12, 20, 20, 19, 5, 2, 1])

    assert states == [
        "emerging", "emerging", "rising", "rising", "rising", "peaking", "peaking", "declining", "declining",
    ]  # fmt: skip


def test_one_noisy_hour_does_not_flip_a_rising_trend() -> None:
    # A rising phrase dips for one hour (not more than the hour before), then grows again
    states = _run([3, 6, 12, 20, 14, 26, 34])

    assert states[2:] == ["rising"] * 5


def test_without_hysteresis_the_same_noisy_hour_would_flip_it() -> None:
    states = _run([3, 6, 12, 20, 14, 26, 34], hysteresis=1)

    assert "peaking" in states[4:] or "declining" in states[4:]


def test_older_mentions_weigh_less_with_gravity() -> None:
    now = 48 * HOUR
    rows = [("fresh topic", "rss", i, now - 60) for i in range(4)]
    rows += [("stale topic", "rss", 10 + i, now - 20 * HOUR) for i in range(4)]
    # (both already known as trends, so both are scored whatever their state)
    known = {"fresh topic": TrendState("rising", 0.0), "stale topic": TrendState("rising", 0.0)}
    trends = {
        t.phrase: t
        for t in score_trends(_mentions(rows), now=now, params=TrendParams(lookback_hours=48), previous=known)
    }

    assert trends["fresh topic"].score > trends["stale topic"].score * 10


def test_ranking_on_phrases_and_times_then_describing_from_the_kept_phrases_only_is_the_same_as_scoring() -> None:
    # Given a hot phrase and a second one sharing most of its items (one topic), a phrase inside a longer
    # one, steady fillers, a mention from the future and one older than the lookback
    now = 30 * HOUR
    rows: list[tuple[str, str, int, float]] = []
    for i in range(8):
        rows.append(("quantum battery", ["rss", "hn", "reddit"][i % 3], i, now - 60 * (i + 1)))
        rows.append(("battery recall", "rss", i if i < 6 else 100 + i, now - 90 * (i + 1)))
        rows.append(("quantum", "rss", i, now - 60 * (i + 1)))
    for k in range(40):
        rows.append((f"filler {k % 7}", "folder", 200 + k, now - (k % 24) * HOUR - 30))
    rows += [("quantum battery", "rss", 900, now + 60), ("quantum battery", "hn", 901, now - 25 * HOUR)]
    known = {"filler 3": TrendState("rising", 0.0)}
    everything = _mentions(rows)

    # When ranked from phrases and times alone, then described from the mentions of the kept phrases only
    times = Mentions(everything.phrases, [], everything.phrase, None, None, everything.ts)
    ranked = rank_trends(times, now=now, previous=known)
    kept = {t.phrase for t in ranked}
    describe_trends(ranked, _mentions([r for r in rows if r[0] in kept]), now=now)

    # Then every field is what scoring every column of every mention gives
    scored = score_trends(everything, now=now, previous=known)
    assert [asdict(t) for t in ranked] == [asdict(t) for t in scored]
    assert scored[0].phrase == "quantum battery" and scored[0].sources == ["hn", "reddit", "rss"]
    assert scored[0].items == 8 and {"battery recall", "filler 3"} <= kept and "quantum" not in kept
    assert next(t for t in scored if t.phrase == "battery recall").topic == "quantum battery"
