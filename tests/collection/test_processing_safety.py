"""Untrusted documents: no entity expansion, no external entity or DTD, no connection or file read from a
document; caps on size, time and redirects; HTML and garbage refused with a reason."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from feed_server import FeedServer, rss

from processing.errors import CorruptInput
from processing.fetch import FetchError, fetch
from processing.sources import FetchLimits
from processing.sources.feeds import FeedSource, parse_feed
from processing.sources.safexml import UnsafeDocument

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE rss [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<rss version="2.0"><channel><title>bomb</title><item><title>&lol9;</title><guid>b1</guid></item></channel></rss>
"""


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A port that records whether anything connected to it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def connections(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def test_a_billion_laughs_document_is_refused_without_expanding_anything() -> None:
    with pytest.raises(UnsafeDocument, match="entities"):
        parse_feed(BILLION_LAUGHS, name="bomb")


def test_external_entities_to_a_file_and_to_a_port_are_refused_and_nothing_is_read_or_connected(
    tmp_path: Path, listener: socket.socket
) -> None:
    # Given a secret file, a port that listens, and feeds whose entities point at both
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    port = listener.getsockname()[1]
    to_file = f"""<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY xxe SYSTEM "file://{secret}">]>
<rss version="2.0"><channel><title>t</title><item><title>&xxe;</title><guid>x1</guid></item></channel></rss>""".encode()
    to_port = f"""<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY net SYSTEM "http://127.0.0.1:{port}/steal">]>
<rss version="2.0"><channel><title>t</title><item><title>&net;</title><guid>x2</guid></item></channel></rss>""".encode()
    parameter = f"""<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY % remote SYSTEM "http://127.0.0.1:{port}/evil.dtd"> %remote;]>
<rss version="2.0"><channel><title>t</title></channel></rss>""".encode()

    # When each is parsed, Then each is refused
    for document in (to_file, to_port, parameter):
        with pytest.raises(UnsafeDocument):
            parse_feed(document, name="xxe")

    # and nothing connected to the port
    assert connections(listener) == 0


def test_an_external_dtd_is_never_loaded_and_the_feed_is_still_read(listener: socket.socket) -> None:
    # Given a feed that names an external DTD on a listening port (and declares no entity)
    port = listener.getsockname()[1]
    document = f"""<?xml version="1.0"?>
<!DOCTYPE rss SYSTEM "http://127.0.0.1:{port}/rss.dtd">
<rss version="2.0"><channel><title>t</title><item><title>Kept</title><guid>k1</guid></item></channel></rss>""".encode()

    # When it is parsed
    items, _ = parse_feed(document, name="dtd")

    # Then its items are read, and the DTD's port was never contacted
    assert [i.title for i in items] == ["Kept"]
    assert connections(listener) == 0


def test_html_where_a_feed_was_expected_and_garbage_fail_with_a_reason() -> None:
    with pytest.raises(CorruptInput, match="HTML page"):
        parse_feed(b"<!DOCTYPE html><html><body>Login</body></html>", name="site")
    with pytest.raises(CorruptInput, match="not an RSS or Atom feed"):
        parse_feed(b"\x00\x01garbage<<<>>>", name="junk")
    with pytest.raises(CorruptInput, match="empty"):
        parse_feed(b"   ", name="nothing")


def test_a_feed_with_an_unescaped_ampersand_is_read_leniently() -> None:
    items, _ = parse_feed(
        b'<rss version="2.0"><channel><title>t</title><item><title>Salt & pepper</title><guid>s1</guid></item>'
        b"</channel></rss>",
        name="sloppy",
    )
    assert [i.title for i in items] == ["Salt & pepper"]


def test_a_body_over_the_cap_and_a_gzip_bomb_fail_the_fetch(feed_server: FeedServer) -> None:
    feed_server.route("/big", body=b"x" * (2 * 1024 * 1024))
    feed_server.route("/bomb", body=b"\0" * (50 * 1024 * 1024), gzip=True)

    with pytest.raises(FetchError) as big:
        fetch(feed_server.url + "/big", max_bytes=1024 * 1024)
    with pytest.raises(FetchError) as bomb:
        fetch(feed_server.url + "/bomb", max_bytes=1024 * 1024)

    assert big.value.reason == "too_large" and bomb.value.reason == "too_large"


def test_a_server_that_does_not_answer_or_trickles_times_out(feed_server: FeedServer) -> None:
    feed_server.route("/slow", body=rss([]), delay_s=5)
    feed_server.route("/trickle", body=b"x" * 4096, trickle_s=0.05)

    with pytest.raises(FetchError) as slow:
        fetch(feed_server.url + "/slow", timeout_ms=500)
    with pytest.raises(FetchError) as trickle:
        fetch(feed_server.url + "/trickle", timeout_ms=500)

    assert slow.value.reason == "timeout" and trickle.value.reason == "timeout"


def test_redirects_are_followed_up_to_the_limit(feed_server: FeedServer) -> None:
    for n in range(10):
        feed_server.route(f"/hop{n}", status=302, headers={"Location": f"/hop{n + 1}"})
    feed_server.route("/hop10", body=rss([{"guid": "r1", "title": "Arrived"}]))
    feed_server.route("/loop", status=301, headers={"Location": "/loop"})

    with pytest.raises(FetchError) as loop:
        fetch(feed_server.url + "/loop", max_redirects=5)
    arrived = FeedSource(name="r", url=feed_server.url + "/hop6", limits=FetchLimits(max_redirects=5)).fetch({})

    assert loop.value.reason == "redirects"
    assert [i.title for i in arrived.items] == ["Arrived"]
