"""Sources against a local HTTP server that answers in the real formats: RSS 2.0, Atom 1.0, the Hacker
News Firebase API, Reddit listing JSON, and a folder of JSON/CSV files."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from feed_server import FeedServer, atom, reddit_listing, rss

from processing.errors import CorruptInput
from processing.fetch import USER_AGENT, FetchError
from processing.sources import FetchLimits, SourceConfig, kinds, make_source, parse_config
from processing.sources.feeds import FeedSource
from processing.sources.folder import FolderSource
from processing.sources.hackernews import HackerNewsSource
from processing.sources.reddit import RedditSource
from processing.sources.timing import MAX_BACKOFF_MS, backoff_interval, next_interval

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_an_rss_feed_yields_its_items_with_dates_and_ttl_and_a_second_fetch_is_a_304(feed_server: FeedServer) -> None:
    # Given an RSS 2.0 feed with a <ttl> and an ETag
    body = rss(
        [
            {
                "guid": "a1",
                "title": "First <b>story</b>",
                "url": "https://x.example/1",
                "summary": "<p>Hello &amp; welcome</p>",
                "published_at": NOW,
            },
            {
                "guid": "a2",
                "title": "Second story",
                "url": "https://x.example/2",
                "published_at": NOW - timedelta(hours=1),
            },
        ],
        ttl=90,
    )
    url = feed_server.route("/rss.xml", body=body, headers={"ETag": '"v1"', "Content-Type": "application/rss+xml"})
    source = FeedSource(name="rss", url=url)

    # When it is fetched twice, the second time with the state the first returned
    first = source.fetch({})
    second = source.fetch(first.state)

    # Then the items come with clean text, dates and the feed's ttl, and the second fetch is "nothing new"
    assert [i.guid for i in first.items] == ["a1", "a2"]
    assert first.items[0].title == "First story" and first.items[0].summary == "Hello & welcome"
    assert first.items[0].published_at == NOW
    assert first.ttl_ms == 90 * 60_000
    assert second.not_modified and second.items == []
    assert feed_server.hits("/rss.xml")[1].headers["if-none-match"] == '"v1"'
    assert feed_server.hits("/rss.xml")[0].headers["user-agent"] == USER_AGENT


def test_an_atom_feed_yields_its_entries_and_if_modified_since_is_sent_back(feed_server: FeedServer) -> None:
    # Given an Atom 1.0 feed answering with Last-Modified and a Cache-Control max-age
    body = atom([{"guid": "urn:e:1", "title": "Atom entry", "url": "https://a.example/e1", "published_at": NOW}])
    modified = "Sun, 01 Mar 2026 12:00:00 GMT"
    url = feed_server.route(
        "/atom.xml", body=body, headers={"Last-Modified": modified, "Cache-Control": "public, max-age=7200"}
    )
    source = FeedSource(name="atom", url=url)

    # When it is fetched twice
    first = source.fetch({})
    source.fetch(first.state)

    # Then the entry is read, max-age is reported, and the second request is conditional
    assert [(i.guid, i.title, i.url) for i in first.items] == [("urn:e:1", "Atom entry", "https://a.example/e1")]
    assert first.max_age_ms == 7_200_000
    assert feed_server.hits("/atom.xml")[1].headers["if-modified-since"] == modified


def test_hacker_news_reads_top_stories_then_items_skipping_nulls_and_keeping_ask_hn_text(
    feed_server: FeedServer,
) -> None:
    # Given the Firebase API: three top stories, one deleted (null), one Ask HN without a url
    feed_server.route("/v0/topstories.json", body=json.dumps([101, 102, 103]).encode())
    feed_server.route(
        "/v0/item/101.json",
        body=json.dumps(
            {
                "id": 101,
                "type": "story",
                "title": "Show HN: A thing",
                "url": "https://thing.example",
                "time": int(NOW.timestamp()),
                "score": 50,
                "by": "a",
            }
        ).encode(),
    )
    feed_server.route("/v0/item/102.json", body=b"null")
    feed_server.route(
        "/v0/item/103.json",
        body=json.dumps(
            {
                "id": 103,
                "type": "story",
                "title": "Ask HN: How do you test?",
                "text": "I wonder <i>how</i>.",
                "time": int(NOW.timestamp()),
                "by": "b",
            }
        ).encode(),
    )
    source = HackerNewsSource(name="hn", url=feed_server.url + "/v0")

    # When it is fetched, then fetched again with the cursor it returned
    first = source.fetch({})
    second = source.fetch(first.state)

    # Then the null item is skipped, Ask HN has its text and no url, and the cursor asks for no item twice
    assert [(i.guid, i.url) for i in first.items] == [("hn:101", "https://thing.example"), ("hn:103", None)]
    assert first.items[1].summary == "I wonder how ."
    assert first.items[0].published_at == NOW
    assert second.items == [] and len(feed_server.hits("/v0/item/101.json")) == 1


def test_reddit_reads_t3_posts_with_self_posts_and_sends_a_descriptive_user_agent(feed_server: FeedServer) -> None:
    # Given a listing with a link post, a self post and a comment
    listing = reddit_listing(
        [
            {"id": "p1", "title": "A link", "url": "https://link.example/x", "published_at": NOW},
            {"id": "p2", "title": "A question", "is_self": True, "selftext": "Body text", "published_at": NOW},
        ]
    )
    url = feed_server.route(
        "/r/test/hot.json", body=json.dumps(listing).encode(), headers={"Content-Type": "application/json"}
    )

    # When it is fetched
    result = RedditSource(name="reddit", url=url).fetch({})

    # Then the posts (not the comment) are items; the self post links its comments page and has its text
    assert [(i.guid, i.url) for i in result.items] == [
        ("t3_p1", "https://link.example/x"),
        ("t3_p2", "https://www.reddit.com/r/test/comments/p2/x/"),
    ]
    assert result.items[1].summary == "Body text"
    agent = feed_server.hits("/r/test/hot.json")[0].headers["user-agent"]
    assert agent.startswith("python:taskforge-collector:") and "by /u/" in agent


def test_a_folder_source_reads_json_and_csv_files_once_until_they_change(tmp_path: Path) -> None:
    # Given a folder with a JSON and a CSV file under the root
    folder = tmp_path / "imports"
    folder.mkdir()
    (folder / "a.json").write_text(
        json.dumps([{"guid": "j1", "title": "From JSON", "published_at": "2026-03-01T12:00:00Z"}])
    )
    (folder / "b.csv").write_text("guid,title,url,summary\nc1,From CSV,https://c.example/1,text\n")
    source = FolderSource(name="files", url="imports", options={"root": str(tmp_path)})

    # When it is fetched, fetched again, and fetched after a new file appears
    first = source.fetch({})
    unchanged = source.fetch(first.state)
    (folder / "c.json").write_text(json.dumps({"items": [{"id": "j2", "title": "Later"}]}))
    later = source.fetch(unchanged.state)

    # Then each file's items are read once
    assert [(i.guid, i.title) for i in first.items] == [("j1", "From JSON"), ("c1", "From CSV")]
    assert first.items[0].published_at == NOW
    assert unchanged.not_modified and unchanged.items == []
    assert [i.guid for i in later.items] == ["j2"]


def test_a_folder_source_refuses_a_path_outside_the_root_and_a_broken_file(tmp_path: Path) -> None:
    from processing.errors import OutsideStorageRoot

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.json").write_text("{not json")

    with pytest.raises(OutsideStorageRoot):
        FolderSource(name="f", url="../../etc", options={"root": str(tmp_path)}).fetch({})
    with pytest.raises(CorruptInput, match=r"bad\.json is not valid JSON"):
        FolderSource(name="f", url="in", options={"root": str(tmp_path)}).fetch({})


def test_the_next_check_is_the_largest_of_interval_ttl_max_age_and_retry_after() -> None:
    assert next_interval(3_600_000) == 3_600_000
    assert next_interval(3_600_000, ttl_ms=7_200_000, max_age_ms=60_000) == 7_200_000
    assert next_interval(600_000, max_age_ms=1_800_000, retry_after_ms=900_000) == 1_800_000


def test_backoff_multiplies_the_interval_by_the_errors_with_jitter_and_a_seven_day_cap() -> None:
    import random

    rng = random.Random(7)
    waits = [backoff_interval(3_600_000, n, rng=rng, jitter=0.1) for n in (1, 2, 3, 10)]

    for wait, errors in zip(waits, (1, 2, 3, 10), strict=True):
        assert 0.9 * 3_600_000 * errors <= wait <= 1.1 * 3_600_000 * errors
    assert len({w / e for w, e in zip(waits, (1, 2, 3, 10), strict=True)}) > 1  # jittered, not exact
    assert max(backoff_interval(3_600_000, 1_000, rng=rng) for _ in range(50)) <= MAX_BACKOFF_MS
    assert backoff_interval(60_000, 1, retry_after_ms=5_000_000, jitter=0) == 5_000_000


def test_http_errors_carry_a_reason_and_retry_after(feed_server: FeedServer) -> None:
    from processing.fetch import fetch

    feed_server.route("/busy", status=429, body=b"slow down", headers={"Retry-After": "120"})
    feed_server.route("/gone", status=410)
    feed_server.route("/boom", status=500, body=b"oops")

    with pytest.raises(FetchError) as busy:
        fetch(feed_server.url + "/busy")
    with pytest.raises(FetchError) as gone:
        fetch(feed_server.url + "/gone")
    with pytest.raises(FetchError) as boom:
        fetch(feed_server.url + "/boom")
    with pytest.raises(FetchError) as missing:
        fetch(feed_server.url + "/nothing-here")

    assert (busy.value.reason, busy.value.retry_after_ms) == ("rate_limited", 120_000)
    assert gone.value.gone and gone.value.reason == "gone"
    assert boom.value.reason == "server_error" and "HTTP 500" in str(boom.value)
    assert missing.value.reason == "not_found"


def test_sources_toml_is_parsed_and_checked(tmp_path: Path) -> None:
    # Given a configuration with one good source
    text = textwrap.dedent(
        """
        [[source]]
        name = "news"
        kind = "rss"
        url = "https://news.example/rss"
        interval_minutes = 30
        high_frequency = true
        """
    )

    # Then it parses, and the shipped file parses too
    [config] = parse_config(text)
    assert (config.name, config.kind, config.interval_ms, config.enabled, config.high_frequency) == (
        "news", "rss", 1_800_000, True, True,
    )  # fmt: skip
    shipped = parse_config((Path(__file__).resolve().parents[2] / "sources.toml").read_text())
    assert {c.kind for c in shipped} >= {"hackernews", "reddit", "rss", "atom", "folder"}
    # and mistakes are named
    from processing.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="unknown kind 'nntp'"):
        parse_config('[[source]]\nname = "x"\nkind = "nntp"\nurl = "u"\n')
    with pytest.raises(InvalidArgument, match="used twice"):
        parse_config(
            '[[source]]\nname = "x"\nkind = "rss"\nurl = "u"\n[[source]]\nname = "x"\nkind = "rss"\nurl = "u"\n'
        )


def test_a_plugin_from_the_entry_point_group_is_a_source_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an installed distribution whose entry point registers a source kind
    package = tmp_path / "sitepkgs"
    (package / "echo_plugin").mkdir(parents=True)
    (package / "echo_plugin" / "__init__.py").write_text(
        "from processing.sources import FetchResult, Item, Source\n"
        "class EchoSource(Source):\n"
        "    kind = 'echo'\n"
        "    description = 'returns its url as one item'\n"
        "    def fetch(self, state):\n"
        "        return FetchResult([Item(guid=self.url, title='echo ' + self.url)], {'n': state.get('n', 0) + 1})\n"
    )
    info = package / "echo_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[taskforge.sources]\necho = echo_plugin:EchoSource\n")
    monkeypatch.syspath_prepend(str(package))

    # When the kinds are listed and a configured source of that kind is made and fetched
    found = kinds()
    source = make_source(SourceConfig("mine", "echo", "hello"), limits=FetchLimits())
    result = source.fetch({})

    # Then the plugin is there beside the built-ins and works like one
    assert {"echo", "rss", "atom", "hackernews", "reddit", "folder"} <= set(found)
    assert [i.title for i in result.items] == ["echo hello"] and result.state == {"n": 1}
