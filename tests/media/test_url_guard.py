"""User-given media URLs reach public addresses only: no loopback, private or link-local targets,
checked after DNS resolution and again on every redirect, and every download is capped."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support import wait_for_job


class _Listener:
    """A TCP port on ``host`` that counts the connections made to it and answers nothing."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[_Listener]:
    server = _Listener()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redirector(listener: _Listener) -> Iterator[str]:
    """An HTTP server on 127.0.0.2 that redirects every request to the listener on 127.0.0.1."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{listener.port}/clip.mp4")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET

    server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.2:{server.server_address[1]}/clip.mp4"
    finally:
        server.shutdown()
        server.server_close()


def test_the_policy_refuses_every_kind_of_non_public_address():
    from processing.netguard import OutboundPolicy

    # Given the default policy, and one that trusts a single LAN network
    default = OutboundPolicy()
    lan = OutboundPolicy.parse("10.0.5.0/24")
    refused = ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254", "::1", "fe80::1", "fd00::1"]
    refused += ["0.0.0.0", "100.64.0.1", "224.0.0.1", "::ffff:127.0.0.1"]

    # Then loopback, private, link-local, shared, multicast and mapped addresses are all refused
    for text in refused:
        assert not default.permits(ipaddress.ip_address(text)), text
    assert default.permits(ipaddress.ip_address("93.184.216.34"))
    assert default.permits(ipaddress.ip_address("2606:4700::1111"))
    # And only the trusted network is let through beside the public ones
    assert lan.permits(ipaddress.ip_address("10.0.5.7"))
    assert not lan.permits(ipaddress.ip_address("10.0.6.7"))


def test_a_loopback_url_is_refused_before_any_connection(listener, storage_root):
    from processing.media import fetch_metadata
    from processing.netguard import AddressRefused

    # Given a URL that names this machine (through a host name, resolved like any other)
    url = f"http://localhost:{listener.port}/clip.mp4"

    # When its metadata is fetched with the default policy
    with pytest.raises(AddressRefused) as caught:
        fetch_metadata(url, storage_root=storage_root)

    # Then it is refused as a loopback address, and nothing ever connected to the port
    assert "loopback" in str(caught.value) and "localhost" in str(caught.value)
    assert listener.connections == 0


def test_a_redirect_to_a_loopback_address_is_refused(redirector, listener, storage_root):
    from processing import netguard
    from processing.media import fetch_metadata

    # Given a trusted server (127.0.0.2 is allowed) that redirects to 127.0.0.1, which is not
    previous = netguard.current_policy()
    netguard.set_policy(netguard.OutboundPolicy.parse("127.0.0.2/32"))
    try:
        # When the URL is fetched
        with pytest.raises(netguard.AddressRefused) as caught:
            fetch_metadata(redirector, storage_root=storage_root)
    finally:
        netguard.set_policy(previous)

    # Then the redirect's target is refused: resolved, checked, never connected to
    assert "127.0.0.1" in str(caught.value)
    assert listener.connections == 0


def test_a_url_for_a_program_that_connects_by_itself_is_checked_first():
    from processing.netguard import AddressRefused, check_url

    # Given URLs handed to ffprobe, which fetches them itself / Then non-public targets are refused
    with pytest.raises(AddressRefused, match="link-local"):
        check_url("http://169.254.169.254/latest/meta-data")
    with pytest.raises(AddressRefused, match="loopback"):
        check_url("http://[::1]:8080/a.mp4")


def test_a_loopback_url_fails_the_job_at_once_and_the_worker_goes_on(worker, listener, media_server, speech_clip):
    from processing import netguard
    from processing.media import fetch_metadata

    # Given the default policy (the media server fixture trusts loopback: take that back)
    netguard.set_policy(netguard.OutboundPolicy())
    from pipelines.media import process_video

    # When a job asks for a loopback URL
    job_id = process_video(f"http://127.0.0.1:{listener.port}/clip.mp4").id
    row = wait_for_job(job_id, timeout=120)

    # Then it failed once, permanently, with one readable line, and nothing connected
    assert row.state == "failed", row.state
    assert row.attempts == 1
    assert row.error_message is not None and "loopback" in row.error_message and "\n" not in row.error_message
    assert listener.connections == 0
    # And the worker still fetches what is allowed
    netguard.set_policy(netguard.OutboundPolicy.parse("127.0.0.0/8"))
    (media_server.root / "ok.mp4").write_bytes(Path(speech_clip).read_bytes())
    assert fetch_metadata(media_server.url("ok.mp4"), storage_root=Path("/nonexistent")).duration


def test_a_caption_track_over_its_cap_is_refused_not_read(media_server):
    from processing.errors import TooLarge
    from processing.media import CaptionTrack, fetch_captions

    # Given a caption track much larger than the cap
    (media_server.root / "big.vtt").write_text("WEBVTT\n\n" + "00:00.000 --> 00:01.000\nhello\n\n" * 20_000)
    track = CaptionTrack(language="en", ext="vtt", url=media_server.url("big.vtt"), automatic=False)

    # When it is fetched with a 64 KB cap / Then it is refused with the limit in the message
    with pytest.raises(TooLarge, match="captions are over the limit"):
        fetch_captions(track, max_bytes=64_000)
