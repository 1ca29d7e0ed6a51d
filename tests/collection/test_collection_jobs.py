"""Collection jobs through a real worker on real Redis and a real database, against a local server that
answers in the real formats: collecting, dedupe across runs and sources, runs over every source, bad
sources, trends from planted phrases, the cli tables and the metrics."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from feed_server import FeedServer, atom, reddit_listing, rss

from tests.support import wait_for_job, wait_until


@pytest.fixture
def coll(broker: Any) -> Any:
    from actors import collection

    return collection


def tag() -> str:
    return uuid.uuid4().hex[:8]


def register(*configs: Any) -> str:
    """Add sources under an origin of their own (sources.toml's sources are never touched)."""
    from storage.collection import sync_sources

    origin = f"test-{tag()}"
    sync_sources(configs, origin=origin)
    return origin


def config(name: str, kind: str, url: str, **options: Any) -> Any:
    from processing.sources import SourceConfig

    return SourceConfig(name, kind, url, 3_600_000, options=options)


def wipe() -> None:
    """Forget every collected item and trend (tests of trends count everything in the database)."""
    from sqlalchemy import delete

    from storage import collection as store
    from storage.db import session_scope

    with session_scope() as session:
        for model in (store.PhraseMentionRow, store.TrendRow, store.MentionRow, store.PhraseRow, store.ItemRow):
            session.execute(delete(model))


def failed_reason(message_id: str) -> str:
    job = wait_for_job(message_id, timeout=60)
    assert job.state == "failed", (job.state, job.error_message)
    return str(job.error_message)


# --------------------------------------------------------------------------------------------------
# Collecting
# --------------------------------------------------------------------------------------------------


def test_every_source_kind_is_collected_and_a_story_from_two_sources_is_one_item_with_two_mentions(
    coll: Any, worker: Any, feed_server: FeedServer, storage_root: Path
) -> None:
    from storage import collection as store

    # Given an RSS feed, an Atom feed, Hacker News, Reddit and a folder; HN carries the RSS feed's first
    # story under a tracking-parameter spelling of its URL
    t = tag()
    now = datetime.now(UTC).replace(microsecond=0)
    story = f"https://story.example/{t}/one"
    feed_server.route(
        "/rss.xml",
        body=rss([{"guid": f"r{t}", "title": f"Story one {t}", "url": story, "published_at": now}]),
        headers={"ETag": f'"{t}"'},
    )
    feed_server.route(
        "/atom.xml",
        body=atom([{"guid": f"a{t}", "title": f"Atom two {t}", "url": f"{story}/atom", "published_at": now}]),
    )
    feed_server.route("/v0/topstories.json", body=json.dumps([1, 2]).encode())
    feed_server.route(
        "/v0/item/1.json",
        body=json.dumps(
            {
                "id": 1,
                "type": "story",
                "title": f"Story one {t} on HN",
                "url": f"{story}?utm_source=hn",
                "time": int(now.timestamp()),
            }
        ).encode(),
    )
    feed_server.route("/v0/item/2.json", body=b"null")
    listing = reddit_listing(
        [{"id": f"x{t}", "title": f"Reddit three {t}", "url": f"{story}/reddit", "published_at": now}]
    )
    feed_server.route("/r/test/hot.json", body=json.dumps(listing).encode())
    folder = storage_root / "collection" / t
    folder.mkdir(parents=True)
    (folder / "rows.csv").write_text(f"guid,title,url\nf{t},Folder four {t},{story}/folder\n")
    names = {k: f"{k}-{t}" for k in ("rss", "atom", "hn", "reddit", "folder")}
    origin = register(
        config(names["rss"], "rss", feed_server.url + "/rss.xml"),
        config(names["atom"], "atom", feed_server.url + "/atom.xml"),
        config(names["hn"], "hackernews", feed_server.url + "/v0"),
        config(names["reddit"], "reddit", feed_server.url + "/r/test/hot.json"),
        config(names["folder"], "folder", f"collection/{t}"),
    )

    # When every source of that origin is collected as one run, twice
    first = wait_for_job(coll.collect_all_sources.send(force=True, origin=origin).message_id, timeout=60)
    run = wait_until(lambda: _closed(first), timeout=90)
    second = wait_for_job(coll.collect_all_sources.send(force=True, origin=origin).message_id, timeout=60)
    again = wait_until(lambda: _closed(second), timeout=90)

    # Then the run recorded each source's new items, the story HN shares with RSS is one item with two
    # mentions, and the second run stored nothing new
    assert run["outcome"] == "succeeded" and run["total"] == 5
    assert run["items_by_source"] == {name: 1 for name in names.values()}
    [shared] = [i for i in store.items_of(names["rss"])]
    assert shared["canonical_url"] == story
    assert store.mentions_of(shared["id"]) == sorted([names["rss"], names["hn"]])
    assert store.items_of(names["hn"])[0]["id"] == shared["id"]
    assert again["outcome"] == "succeeded" and again["new_items"] == 0
    rss_source = store.get_source(names["rss"])
    assert rss_source is not None and rss_source.runs_succeeded == 2 and rss_source.items_total == 1
    assert feed_server.hits("/rss.xml")[-1].headers.get("if-none-match") == f'"{t}"'


def _closed(job: Any) -> Any:
    from storage import collection as store

    run_id = store.run_for_message(job.id)
    run = store.get_run(run_id) if run_id is not None else None
    return run if run is not None and run["finished_at"] is not None else None


def test_a_run_with_a_failing_source_closes_with_every_outcome_and_the_failure_reason(
    coll: Any, worker: Any, feed_server: FeedServer
) -> None:
    # Given two good feeds and one that answers HTTP 500
    t = tag()
    feed_server.route(
        "/good1", body=rss([{"guid": f"g1{t}", "title": f"Good one {t}", "url": f"https://g.example/{t}/1"}])
    )
    feed_server.route(
        "/good2", body=rss([{"guid": f"g2{t}", "title": f"Good two {t}", "url": f"https://g.example/{t}/2"}])
    )
    feed_server.route("/bad", status=500, body=b"internal error")
    origin = register(
        config(f"good1-{t}", "rss", feed_server.url + "/good1"),
        config(f"good2-{t}", "rss", feed_server.url + "/good2"),
        config(f"bad-{t}", "rss", feed_server.url + "/bad"),
    )

    # When the run goes out
    fan = wait_for_job(coll.collect_all_sources.send(force=True, origin=origin).message_id, timeout=60)
    run = wait_until(lambda: _closed(fan), timeout=90)

    # Then the run closed although a member failed, with items per source and the failure's reason
    assert (run["outcome"], run["succeeded"], run["failed"]) == ("partial", 2, 1)
    assert run["items_by_source"] == {f"bad-{t}": 0, f"good1-{t}": 1, f"good2-{t}": 1}
    assert "HTTP 500" in run["failures"][f"bad-{t}"] and "server_error" in run["failures"][f"bad-{t}"]
    assert fan.state == "succeeded"


def test_collect_all_returns_a_run_whose_wait_gives_the_closed_run_or_raises_a_sources_error(
    worker: Any, feed_server: FeedServer
) -> None:
    from pipelines import Run, RunFailed
    from pipelines.collection import collect_all, run_for

    # Given two good feeds under one origin, and under another a good feed and one that answers HTTP 500
    t = tag()
    for n in (1, 2):
        feed_server.route(
            f"/ok{n}", body=rss([{"guid": f"o{n}{t}", "title": f"Fine {n} {t}", "url": f"https://o.example/{t}/{n}"}])
        )
    feed_server.route("/broken", status=500, body=b"internal error")
    good = register(*(config(f"ok{n}-{t}", "rss", feed_server.url + f"/ok{n}") for n in (1, 2)))
    mixed = register(
        config(f"ok3-{t}", "rss", feed_server.url + "/ok1"), config(f"broken-{t}", "rss", feed_server.url + "/broken")
    )

    # When each origin is collected and its run waited for
    run = collect_all(force=True, origin=good)
    closed = run.wait(90)
    failing = collect_all(force=True, origin=mixed)
    with pytest.raises(RunFailed) as failed:
        failing.wait(90)

    # Then the first wait returned the closed collection run, every source's job a child of the run
    assert isinstance(run, Run) and closed == run_for(run.id)
    assert (closed["outcome"], closed["total"]) == ("succeeded", 2)
    assert closed["items_by_source"] == {f"ok1-{t}": 1, f"ok2-{t}": 1}
    assert run.status().children == {"succeeded": 2}
    # And the second raised the failing source's error, in one line
    assert failed.value.state == "failed" and failed.value.job_id != failing.id
    assert f"source 'broken-{t}' failed" in str(failed.value) and "HTTP 500" in str(failed.value)
    assert "\n" not in str(failed.value)


def test_collect_returns_a_run_whose_wait_gives_what_the_fetch_stored(worker: Any, feed_server: FeedServer) -> None:
    from pipelines import RunFailed
    from pipelines.collection import collect

    # Given a feed of two stories and a source the configuration does not know
    t = tag()
    stories = [{"guid": f"c{n}{t}", "title": f"Kept {n} {t}", "url": f"https://c.example/{t}/{n}"} for n in (1, 2)]
    feed_server.route("/two", body=rss(stories))
    register(config(f"two-{t}", "rss", feed_server.url + "/two"))

    # When the source is collected (then processed and scored) and its run waited for
    run = collect(f"two-{t}")
    fetched = run.wait(120)

    # Then the wait returned what the fetch stored, once its three steps ended
    assert (fetched["source"], fetched["fetched"], fetched["new_items"]) == (f"two-{t}", 2, 2)
    assert run.status().children == {"succeeded": 3}

    # And an unknown source raises its name from the wait
    with pytest.raises(RunFailed) as failed:
        collect(f"nothing-{t}").wait(60)
    assert f"no source named 'nothing-{t}'" in str(failed.value)


# --------------------------------------------------------------------------------------------------
# Bad sources
# --------------------------------------------------------------------------------------------------


def test_bad_sources_end_with_a_reason_back_off_and_never_stop_the_worker(
    coll: Any, worker: Any, feed_server: FeedServer, tmp_path: Path
) -> None:
    from storage import collection as store

    # Given sources that fail in every way, and one good source
    t = tag()
    secret = tmp_path / "secret.txt"
    secret.write_text(f"SECRET-{t}")
    xxe = (
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY x SYSTEM "file://{secret}">]>'
        f'<rss version="2.0"><channel><title>t</title><item><title>&x;</title><guid>x{t}</guid></item></channel></rss>'
    )
    cases = {
        "missing": (dict(status=404), "not_found", "HTTP 404"),
        "broken": (dict(status=500, body=b"oops"), "server_error", "HTTP 500"),
        "busy": (dict(status=429, headers={"Retry-After": "7200"}), "rate_limited", "HTTP 429"),
        "html": (
            dict(body=b"<!DOCTYPE html><html><body>Sign in</body></html>", headers={"Content-Type": "text/html"}),
            "html",
            "HTML page",
        ),
        "malformed": (dict(body=b"\x00garbage<<<"), "malformed", "not an RSS or Atom feed"),
        "bomb": (dict(body=_bomb()), "unsafe_document", "entities"),
        "xxe": (dict(body=xxe.encode()), "unsafe_document", "entities"),
        "slow": (dict(body=rss([]), delay_s=3), "timeout", "did not answer within"),
        "jsonhtml": (
            dict(body=b"<html><body>oops</body></html>", headers={"Content-Type": "text/html"}),
            "html",
            "HTML page",
        ),
    }
    configs = []
    for key, (route, _, _) in cases.items():
        feed_server.route(f"/{key}", **route)
        kind = "reddit" if key == "jsonhtml" else "rss"
        configs.append(config(f"{key}-{t}", kind, feed_server.url + f"/{key}", timeout_ms=1_000))
    feed_server.route("/ok", body=rss([{"guid": f"ok{t}", "title": f"Fine {t}", "url": f"https://ok.example/{t}"}]))
    configs.append(config(f"ok-{t}", "rss", feed_server.url + "/ok"))
    register(*configs)

    # When each bad source is collected, then the good one on the same worker
    before = store.utcnow()
    reasons = {key: failed_reason(coll.collect_from_source.send(f"{key}-{t}").message_id) for key in cases}
    ok = wait_for_job(coll.collect_from_source.send(f"ok-{t}").message_id, timeout=60)

    # Then each job failed with one readable line naming the reason, and the source shows it
    for key, (_, reason, words) in cases.items():
        assert reason in reasons[key] and words in reasons[key], (key, reasons[key])
        assert "\n" not in reasons[key]
        source = store.get_source(f"{key}-{t}")
        assert source is not None and source.status == "unhealthy" and source.consecutive_errors == 1
        assert source.last_error_reason == reason and source.errors_by_reason == {reason: 1}
        assert source.next_check_at is not None and source.next_check_at > before + timedelta(minutes=50)
        assert store.count_items(f"{key}-{t}") == 0
    # a 429's Retry-After (2 h) beats the 1 h interval
    busy = store.get_source(f"busy-{t}")
    assert busy is not None and busy.next_check_at is not None and busy.next_check_at >= before + timedelta(hours=2)
    # nothing of the file an entity pointed at was stored anywhere
    from sqlalchemy import select

    from storage.db import session_scope

    with session_scope() as session:
        titles = session.scalars(select(store.ItemRow.title)).all()
    assert not any(f"SECRET-{t}" in title for title in titles)
    # and the worker kept going
    assert ok.state == "succeeded" and json.loads(ok.result)["new_items"] == 1


def waits_started(source: Any) -> Any:
    """The time of the source's first recorded failure is no later than its last one."""
    return source.last_error_at - timedelta(minutes=5)


def _bomb() -> bytes:
    from test_processing_safety import BILLION_LAUGHS

    return BILLION_LAUGHS


def test_consecutive_errors_multiply_the_interval_and_a_success_resets_them(
    coll: Any, worker: Any, feed_server: FeedServer
) -> None:
    from storage import collection as store

    # Given a feed that fails twice, then works
    t = tag()
    feed_server.route("/flaky", status=503)
    register(config(f"flaky-{t}", "rss", feed_server.url + "/flaky"))

    # When it is collected three times
    waits = []
    for _ in range(2):
        started = store.utcnow()
        failed_reason(coll.collect_from_source.send(f"flaky-{t}").message_id)
        source = store.get_source(f"flaky-{t}")
        assert source is not None and source.next_check_at is not None
        waits.append((source.next_check_at - started).total_seconds())
    failing = store.get_source(f"flaky-{t}")
    # (an hour into the streak, as far as the health check can tell)
    from sqlalchemy import update

    from storage.db import session_scope

    with session_scope() as session:
        session.execute(
            update(store.SourceRow)
            .where(store.SourceRow.name == f"flaky-{t}")
            .values(failing_since=store.utcnow() - timedelta(hours=2))
        )
    health = json.loads(wait_for_job(coll.update_source_health.send().message_id, timeout=60).result)
    feed_server.route("/flaky", body=rss([{"guid": f"f{t}", "title": f"Back {t}", "url": f"https://f.example/{t}"}]))
    wait_for_job(coll.collect_from_source.send(f"flaky-{t}").message_id, timeout=60)

    # Then the second wait is about twice the first (±10% jitter each), and success clears the errors
    assert 0.9 * 3600 <= waits[0] <= 1.1 * 3600 + 5
    assert 0.9 * 7200 <= waits[1] <= 1.1 * 7200 + 5
    source = store.get_source(f"flaky-{t}")
    assert source is not None and source.status == "healthy" and source.consecutive_errors == 0
    assert source.runs_total == 3 and source.runs_succeeded == 1 and source.success_rate == pytest.approx(1 / 3)
    assert source.last_error is not None  # the last error stays visible after recovery
    # and while it failed, the streak's start was kept, and the health check named it after an hour
    assert failing is not None and failing.failing_since is not None and failing.failing_since >= waits_started(failing)
    assert f"flaky-{t}" in health["failing_for_an_hour"]
    assert source.failing_since is None


def test_http_410_disables_a_source_and_cli_sources_reset_brings_it_back(
    coll: Any, worker: Any, feed_server: FeedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    import cli
    from storage import collection as store

    # Given a feed that answers 410 Gone
    t = tag()
    feed_server.route("/gone", status=410)
    register(config(f"gone-{t}", "rss", feed_server.url + "/gone"))

    # When it is collected, collected again, reset with the cli, and collected once it is back
    gone = failed_reason(coll.collect_from_source.send(f"gone-{t}").message_id)
    refused = failed_reason(coll.collect_from_source.send(f"gone-{t}").message_id)
    disabled = store.get_source(f"gone-{t}")
    code = cli.main(["sources", "reset", f"gone-{t}"])
    feed_server.route("/gone", body=rss([{"guid": f"b{t}", "title": f"Returned {t}", "url": f"https://b.example/{t}"}]))
    back = wait_for_job(coll.collect_from_source.send(f"gone-{t}").message_id, timeout=60)

    # Then it was disabled (still listed, with the reason), refused while disabled, and works after the reset
    assert "gone" in gone and "disabled" in gone
    assert "is disabled" in refused
    assert disabled is not None and disabled.status == "disabled" and "HTTP 410" in (disabled.disabled_reason or "")
    assert code == 0 and f"source gone-{t} reset" in capsys.readouterr().out
    assert back.state == "succeeded"
    restored = store.get_source(f"gone-{t}")
    assert restored is not None and restored.status == "healthy"


def test_a_20000_item_feed_is_capped_with_a_warning_and_a_second_run_adds_no_duplicates(
    coll: Any, worker: Any, feed_server: FeedServer
) -> None:
    from settings import settings
    from storage import collection as store

    # Given a feed of 20,000 items (about 2 MB, no ETag so both fetches read it all)
    t = tag()
    items = [
        {"guid": f"{t}-{n}", "title": f"Item {n} of {t}", "url": f"https://big.example/{t}/{n}"} for n in range(20_000)
    ]
    feed_server.route("/big", body=rss(items))
    register(config(f"big-{t}", "rss", feed_server.url + "/big"))

    # When it is collected twice
    first = wait_for_job(coll.collect_from_source.send(f"big-{t}").message_id, timeout=240)
    second = wait_for_job(coll.collect_from_source.send(f"big-{t}").message_id, timeout=240)

    # Then the first run kept the configured cap and said so, and the second stored nothing new
    cap = settings.collection_max_items
    one, two = json.loads(first.result), json.loads(second.result)
    assert (one["fetched"], one["new_items"]) == (cap, cap)
    assert one["warnings"] == [f"big-{t} listed 20000 items; kept the first {cap}"]
    assert (two["new_items"], two["new_mentions"], two["duplicates"]) == (0, 0, cap)
    assert store.count_items(f"big-{t}") == cap


def test_a_dry_run_returns_sample_items_and_stores_nothing(coll: Any, worker: Any, feed_server: FeedServer) -> None:
    from storage import collection as store

    t = tag()
    items = [{"guid": f"{t}-{n}", "title": f"Dry {n} {t}", "url": f"https://dry.example/{t}/{n}"} for n in range(8)]
    feed_server.route("/dry", body=rss(items))
    register(config(f"dry-{t}", "rss", feed_server.url + "/dry"))

    job = wait_for_job(coll.test_source.send(f"dry-{t}").message_id, timeout=60)

    result = json.loads(job.result)
    assert job.state == "succeeded" and result["items"] == 8 and len(result["sample"]) == 5
    assert result["sample"][0]["title"] == f"Dry 0 {t}"
    source = store.get_source(f"dry-{t}")
    assert source is not None and source.runs_total == 0 and store.count_items(f"dry-{t}") == 0


def test_an_unknown_source_fails_the_job_with_its_name(coll: Any, worker: Any) -> None:
    reason = failed_reason(coll.collect_from_source.send("no-such-source").message_id)

    assert "no source named 'no-such-source'" in reason


# --------------------------------------------------------------------------------------------------
# Trends
# --------------------------------------------------------------------------------------------------


FILLER = (
    "bram cort dax elm fenn gist holt isk jorn kell lusk mott nib orm pell quill rusk sorn tamb ulm vell wex yarn zeb"
)


def _filler(index: int) -> str:
    words = FILLER.split()
    # Two words per item, never the same pair or word twice in three items: no phrase beyond 2 items.
    return f"{words[index % len(words)]}{index} {words[(index * 7 + 3) % len(words)]}x{index}"


def test_planted_phrases_across_four_source_kinds_trend_in_order_of_their_mentions(
    coll: Any, worker: Any, feed_server: FeedServer, storage_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import cli
    from storage import collection as store

    # Given 5 items from each of four source kinds (RSS, Hacker News, Reddit, folder) in the last hour:
    # "quantum battery" in 6 of them (every kind), "rust compiler" in 4, "solar sail" in 3, nothing
    # else in more than 2
    wipe()
    t = tag()
    now = datetime.now(UTC).replace(microsecond=0)
    plan = {
        "rss": ["Quantum battery", "Quantum batteries", "Rust compiler", "Solar sail", ""],
        "hn": ["Quantum battery", "Quantum battery", "Rust compiler", "", ""],
        "reddit": ["Quantum battery", "Rust compiler", "Solar sail", "", ""],
        "folder": ["Quantum battery", "Rust compiler", "Solar sail", "", ""],
    }
    assert sum(row.count("Rust compiler") for row in plan.values()) == 4
    n = 0
    built: dict[str, list[dict[str, Any]]] = {}
    for kind, planted in plan.items():
        built[kind] = []
        for phrase in planted:
            n += 1
            title = f"{phrase} {_filler(n)}".strip()
            built[kind].append(
                {
                    "guid": f"{kind}{n}{t}",
                    "id": f"{n}{t}",
                    "title": title,
                    "url": f"https://p.example/{t}/{n}",
                    "published_at": now - timedelta(minutes=n),
                }
            )
    feed_server.route("/rss.xml", body=rss(built["rss"]))
    ids = list(range(1, 6))
    feed_server.route("/v0/topstories.json", body=json.dumps(ids).encode())
    for i, item in zip(ids, built["hn"], strict=True):
        feed_server.route(
            f"/v0/item/{i}.json",
            body=json.dumps(
                {
                    "id": i,
                    "type": "story",
                    "title": item["title"],
                    "url": item["url"],
                    "time": int(item["published_at"].timestamp()),
                }
            ).encode(),
        )
    feed_server.route("/r/test/hot.json", body=json.dumps(reddit_listing(built["reddit"])).encode())
    folder = storage_root / "collection" / f"planted-{t}"
    folder.mkdir(parents=True)
    (folder / "items.json").write_text(
        json.dumps([{**i, "published_at": i["published_at"].isoformat()} for i in built["folder"]])
    )
    names = [f"{k}-{t}" for k in plan]
    origin = register(
        config(names[0], "rss", feed_server.url + "/rss.xml"),
        config(names[1], "hackernews", feed_server.url + "/v0"),
        config(names[2], "reddit", feed_server.url + "/r/test/hot.json"),
        config(names[3], "folder", f"collection/planted-{t}"),
    )

    # When the sources are collected as one run that then processes the items and scores the trends
    fan = wait_for_job(coll.collect_all_sources.send(force=True, origin=origin, process_after=True).message_id, 60)
    run = wait_until(lambda: _closed(fan), timeout=90)
    followup = wait_until(lambda: (store.get_run(run["id"]) or {}).get("followup_id"), timeout=30)
    scored = wait_for_job(followup, timeout=90)

    # Then exactly the planted phrases trend, ranked by their mentions, all emerging, with their sources
    trends = store.list_trends()
    assert scored.state == "succeeded"
    assert [t_["phrase"] for t_ in trends] == ["quantum battery", "rust compiler", "solar sail"]
    assert [t_["state"] for t_ in trends] == ["emerging"] * 3
    assert [t_["current"] for t_ in trends] == [6, 4, 3]
    assert trends[0]["sources"] == sorted(names)
    # and the cli prints them
    assert cli.main(["trends"]) == 0
    out = capsys.readouterr().out
    assert out.index("quantum battery") < out.index("rust compiler") < out.index("solar sail")
    assert "emerging" in out and "6/0/6" in out

    # When the same mentions are scored again an hour later, with the newest quantum battery burst going on
    later = (now + timedelta(hours=1, minutes=5)).timestamp()
    wait_for_job(coll.score_trends.send(now=later).message_id, timeout=60)

    # Then nothing was mentioned in the new window: the trends wait for a second run before declining
    states = {t_["phrase"]: (t_["state"], t_["pending"]) for t_ in store.list_trends()}
    assert states["quantum battery"] == ("emerging", "declining")


def test_scoring_reads_items_and_sources_of_the_kept_trends_only_and_stores_what_reading_everything_gives(
    coll: Any,
) -> None:
    from sqlalchemy import insert, select

    from processing.trends import score_trends
    from storage import collection as store
    from storage.db import session_scope

    # Given stored mentions: a hot phrase from three sources, one sharing most of its items, a phrase
    # inside a longer one, steady fillers (one a known trend), one mention from the future and one older
    # than the lookback
    wipe()
    hour = 3600.0
    now = 1_000 * hour
    names = ["quantum battery", "battery recall", "quantum"] + [f"filler {k}" for k in range(7)]
    with session_scope() as session:
        session.execute(insert(store.PhraseRow), [{"phrase": name} for name in names])
        session.execute(
            insert(store.ItemRow),
            [
                {"content_hash": f"score-{n}", "title": f"item {n}", "summary": "", "first_seen_at": store.utcnow()}
                for n in range(60)
            ],
        )
        ids = dict(session.execute(select(store.PhraseRow.phrase, store.PhraseRow.id)).all())
        items = sorted(session.scalars(select(store.ItemRow.id)))
    rows: list[tuple[str, int, str, float]] = []
    for i in range(8):
        rows.append(("quantum battery", items[i], ["rss", "hn", "reddit"][i % 3], now - 60 * (i + 1)))
        rows.append(("battery recall", items[i if i < 6 else 20 + i], "rss", now - 90 * (i + 1)))
        rows.append(("quantum", items[i], "rss", now - 60 * (i + 1)))
    rows += [(f"filler {k % 7}", items[30 + k % 25], f"src{k // 25}", now - (k % 24) * hour - 30) for k in range(40)]
    rows += [("quantum battery", items[50], "rss", now + 60), ("quantum battery", items[51], "hn", now - 25 * hour)]
    with session_scope() as session:
        session.execute(
            insert(store.PhraseMentionRow),
            [{"phrase_id": ids[p], "item_id": i, "source": s, "ts": ts} for p, i, s, ts in rows],
        )
        session.add(
            store.TrendRow(
                phrase="filler 3", state="rising", score=1.0, z=0.0, current=0, previous=0, total=0, items=0,
                sources="[]", topic="filler 3", related="[]", since=0.0, pending=None, streak=0,
                updated_at=store.utcnow(),
            )
        )  # fmt: skip
    since = now - 24 * hour

    # Then the times read for ranking are those of every mention since then, and the mentions read for the
    # kept trends are those of their phrases only
    everything = store.load_mentions(since)
    times = store.load_mention_times(since)
    assert times.item is None and times.source is None
    assert sorted((times.phrases[p], t) for p, t in zip(times.phrase.tolist(), times.ts.tolist(), strict=True)) == (
        sorted((r[0], r[3]) for r in rows if r[3] >= since)
    )
    only = store.load_mentions(since, ["quantum battery", "battery recall"])
    assert sorted(
        (only.phrases[p], i, only.sources[s], t)
        for p, i, s, t in zip(
            only.phrase.tolist(), only.item.tolist(), only.source.tolist(), only.ts.tolist(), strict=True
        )
    ) == sorted(r for r in rows if r[3] >= since and r[0] in ("quantum battery", "battery recall"))
    assert len(store.load_mentions(since, []).ts) == 0

    # When the actor scores them
    expected = score_trends(everything, now=now, params=coll.trend_params(24), previous=store.trend_states())
    coll.score_trends(24, now=now)

    # Then it stores exactly what scoring every column of every mention gives
    fields = ("phrase", "state", "score", "z", "current", "previous", "total", "items", "sources", "topic", "related")
    assert [{f: t_[f] for f in fields} for t_ in store.list_trends()] == [
        {f: getattr(t_, f) for f in fields} for t_ in expected
    ]
    assert expected[0].phrase == "quantum battery" and expected[0].sources == ["hn", "reddit", "rss"]
    assert {t_.phrase for t_ in expected} >= {"battery recall", "filler 3"}


# --------------------------------------------------------------------------------------------------
# Surfaces: cli sources, metrics, schedules, housekeeping
# --------------------------------------------------------------------------------------------------


def test_cli_sources_and_the_metrics_show_each_sources_health(
    coll: Any, worker: Any, feed_server: FeedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    import cli
    from middleware.metrics import render_metrics
    from settings import settings

    # Given a healthy source and a failing one
    t = tag()
    feed_server.route("/fine", body=rss([{"guid": f"m{t}", "title": f"Metric {t}", "url": f"https://m.example/{t}"}]))
    feed_server.route("/down", status=502)
    register(
        config(f"fine-{t}", "rss", feed_server.url + "/fine"), config(f"down-{t}", "rss", feed_server.url + "/down")
    )
    wait_for_job(coll.collect_from_source.send(f"fine-{t}").message_id, timeout=60)
    failed_reason(coll.collect_from_source.send(f"down-{t}").message_id)

    # When the cli lists the sources and Prometheus scrapes
    assert cli.main(["sources"]) == 0
    table = capsys.readouterr().out
    text = render_metrics(str(settings.metrics_dir), None).decode()

    # Then the table shows status, success rate, items and the last error
    fine_line = next(line for line in table.splitlines() if line.startswith(f"fine-{t}"))
    down_line = next(line for line in table.splitlines() if line.startswith(f"down-{t}"))
    assert "healthy" in fine_line and "100%" in fine_line
    assert "unhealthy" in down_line and "0%" in down_line and "HTTP 502" in down_line
    # and the metrics carry items, errors by reason, latency, health and trends by state
    assert f'collection_items_collected_total{{source="fine-{t}"}} 1.0' in text
    assert f'collection_fetch_errors_total{{reason="server_error",source="down-{t}"}} 1.0' in text
    assert f'collection_fetch_latency_seconds_count{{source="fine-{t}"}} 1.0' in text
    assert f'collection_source_healthy{{source="down-{t}"}} 0.0' in text
    assert f'collection_source_healthy{{source="fine-{t}"}} 1.0' in text
    assert 'collection_trends{state="emerging"}' in text


def test_the_schedules_are_declared_and_collection_from_the_network_is_off_by_default(coll: Any) -> None:
    from scheduler import schedules_from_actors

    actors = [
        coll.collect_all_sources,
        coll.collect_high_frequency,
        coll.process_pending_items,
        coll.score_trends,
        coll.update_source_health,
        coll.cleanup_old_items,
    ]
    schedules = {s.actor_name: s for s in schedules_from_actors(actors)}

    assert {name: s.cron for name, s in schedules.items()} == {
        "collect_all_sources": "0 * * * *",
        "collect_high_frequency": "*/15 * * * *",
        "process_pending_items": "*/30 * * * *",
        "score_trends": "5,35 * * * *",
        "update_source_health": "*/5 * * * *",
        "cleanup_old_items": "0 3 * * *",
    }
    assert not schedules["collect_all_sources"].enabled and not schedules["collect_high_frequency"].enabled
    assert schedules["process_pending_items"].enabled and schedules["update_source_health"].enabled


def test_health_analytics_and_cleanup_jobs_report_what_they_did(coll: Any, worker: Any) -> None:
    health = json.loads(wait_for_job(coll.update_source_health.send().message_id, timeout=60).result)
    analytics = json.loads(wait_for_job(coll.generate_analytics.send().message_id, timeout=60).result)
    cleanup = json.loads(wait_for_job(coll.cleanup_old_items.send(3650).message_id, timeout=60).result)
    bad = wait_for_job(coll.cleanup_old_items.send(0).message_id, timeout=60)

    assert health["sources"] >= 1 and "unhealthy" in health
    assert "mentions_by_source" in analytics and "trends_by_state" in analytics
    assert cleanup == {"deleted_items": 0, "days": 3650}
    assert bad.state == "failed" and "days must be at least 1" in (bad.error_message or "")


def test_collect_and_process_collects_then_processes_then_scores(
    coll: Any, worker: Any, feed_server: FeedServer
) -> None:
    from storage import collection as store

    # Given a feed whose three stories share a phrase
    wipe()
    t = tag()
    now = datetime.now(UTC)
    items = [
        {
            "guid": f"{t}{n}",
            "title": f"Graphene membrane filter {n}x{t}",
            "url": f"https://gm.example/{t}/{n}",
            "published_at": now - timedelta(minutes=n),
        }
        for n in range(3)
    ]
    feed_server.route("/gm", body=rss(items))
    register(config(f"gm-{t}", "rss", feed_server.url + "/gm"))

    # When collect_and_process runs
    job = wait_for_job(coll.collect_and_process.send(f"gm-{t}").message_id, timeout=60)
    steps = json.loads(job.result)["messages"]
    finished = [wait_for_job(message_id, timeout=90) for message_id in steps]

    # Then its three jobs ran in order, each succeeding, and the phrase is a trend
    assert [j.actor for j in finished] == ["collect_from_source", "process_pending_items", "score_trends"]
    assert all(j.state == "succeeded" for j in finished)
    assert finished[0].started_at < finished[1].started_at < finished[2].started_at
    assert "graphene membrane filter" in [t_["phrase"] for t_ in store.list_trends()]


def test_due_sources_follow_next_checks_switches_and_high_frequency(coll: Any) -> None:
    from processing.sources import SourceConfig
    from storage import collection as store

    # Given four sources: never checked, checked with a next check in an hour, high-frequency, switched off
    t = tag()
    origin = register(
        config(f"never-{t}", "rss", "http://127.0.0.1:9/never"),
        config(f"later-{t}", "rss", "http://127.0.0.1:9/later"),
        SourceConfig(f"fast-{t}", "rss", "http://127.0.0.1:9/fast", 900_000, high_frequency=True),
        SourceConfig(f"off-{t}", "rss", "http://127.0.0.1:9/off", 900_000, enabled=False),
    )
    store.record_success(
        f"later-{t}", [], fetch_state={}, latency_ms=1.0, next_check_at=store.utcnow() + timedelta(hours=1)
    )

    # Then each selection holds what it should
    assert store.due_sources(origin=origin) == sorted([f"never-{t}", f"fast-{t}"])
    assert store.due_sources(origin=origin, force=True) == sorted([f"never-{t}", f"later-{t}", f"fast-{t}"])
    assert store.due_sources(origin=origin, high_frequency=True) == [f"fast-{t}"]


def test_the_demo_serves_its_fixtures_and_collects_every_kind_into_trends(
    coll: Any, worker: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.collection import demo_report
    from pipelines import collection as pipeline

    # Given the shipped fixtures, served by the demo's local server
    wipe()

    # When the demo is sent and its run (with processing and scoring) has ended
    [handle] = pipeline.demo()
    run = handle.wait(120)
    demo_report()
    out = capsys.readouterr().out

    # Then every demo source succeeded, HN's copy of the RSS story became a mention, and trends were printed
    assert run["outcome"] == "succeeded" and run["total"] == 5
    assert set(run["items_by_source"]) == {"demo-rss", "demo-atom", "demo-hn", "demo-reddit", "demo-folder"}
    assert all(count > 0 for count in run["items_by_source"].values())
    phrases = [t["phrase"] for t in pipeline.trends()]
    assert {"rust compiler", "open-weight model", "solid-state battery"} <= set(phrases)
    assert "phrase" in out and "rust compiler" in out and "demo-hn" in out and "healthy" in out


def test_item_embeddings_reuse_the_documents_model(coll: Any, feed_server: FeedServer) -> None:
    from sqlalchemy import select

    from settings import settings
    from storage import collection as store
    from storage.db import session_scope

    # Given two stored items
    t = tag()
    feed_server.route(
        "/emb",
        body=rss(
            [
                {"guid": f"e{n}{t}", "title": f"Embedding story {n} {t}", "url": f"https://emb.example/{t}/{n}"}
                for n in range(2)
            ]
        ),
    )
    register(config(f"emb-{t}", "rss", feed_server.url + "/emb"))
    coll.collect_from_source(f"emb-{t}")

    # When the embedding job runs (in this process)
    result = coll.generate_item_embeddings(limit=10_000)

    # Then every item has a vector of the model's size, from the documents' model
    from processing.embeddings import dimensions

    assert result["embedded"] >= 2 and result["model"] == settings.embedding_model
    ids = [i["id"] for i in store.items_of(f"emb-{t}")]
    with session_scope() as session:
        rows = session.execute(
            select(store.ItemRow.embedding, store.ItemRow.embedding_model).where(store.ItemRow.id.in_(ids))
        ).all()
    assert all(len(vector) == 4 * dimensions(settings.embedding_model) for vector, _ in rows)
    assert {model for _, model in rows} == {settings.embedding_model}


def test_a_real_dramatiq_worker_keeps_serving_after_bombs_timeouts_and_gone_sources(
    broker: Any, feed_server: FeedServer
) -> None:
    import os
    import signal
    import subprocess
    import sys

    from actors import collection as coll
    from storage import collection as store

    # Given a `dramatiq` worker process on the collection queue, and sources that are each bad in a way
    t = tag()
    from test_processing_safety import BILLION_LAUGHS

    feed_server.route("/bomb", body=BILLION_LAUGHS)
    feed_server.route("/slow", body=rss([]), delay_s=3)
    feed_server.route("/gone", status=410)
    feed_server.route("/html", body=b"<html><body>503 Service Unavailable</body></html>")
    feed_server.route(
        "/good", body=rss([{"guid": f"w{t}", "title": f"Worker alive {t}", "url": f"https://w.example/{t}"}])
    )
    register(
        *(
            config(f"{k}-{t}", "rss", f"{feed_server.url}/{k}", timeout_ms=1_000)
            for k in ("bomb", "slow", "gone", "html", "good")
        )
    )
    root = Path(__file__).resolve().parents[2]
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "dramatiq"), "actors", "-p", "1", "-t", "2", "-Q", "collection"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # When the bad sources are collected, then the good one
        reasons = [
            failed_reason_slow(coll.collect_from_source.send(f"{k}-{t}").message_id)
            for k in ("bomb", "slow", "gone", "html")
        ]
        good = wait_for_job(coll.collect_from_source.send(f"good-{t}").message_id, timeout=120)

        # Then each bad one failed with its reason, the process never died, and the good one was stored
        assert [
            "unsafe_document" in reasons[0],
            "timeout" in reasons[1],
            "gone" in reasons[2],
            "html" in reasons[3],
        ] == [True] * 4
        assert worker.poll() is None
        assert good.state == "succeeded" and store.count_items(f"good-{t}") == 1
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)


def failed_reason_slow(message_id: str) -> str:
    job = wait_for_job(message_id, timeout=120)
    assert job.state == "failed", (job.state, job.error_message)
    return str(job.error_message)
