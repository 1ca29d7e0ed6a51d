"""yt-dlp's own metadata and download path against a local HTTP server; local files the same way."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from processing import media
from processing.errors import CorruptInput, InvalidArgument, OutsideStorageRoot, TooLarge, UnsupportedFormat
from tests.media.conftest import CLIP_SECONDS
from tests.media.media_server import MediaServer

RSS_FEED = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd">
<channel><title>Trading desk videos</title>
{items}
</channel></rss>
"""
RSS_ITEM = (
    '<item><title>{title}</title><guid>{guid}</guid><enclosure url="{url}" type="video/mp4"/>'
    "<itunes:duration>{duration}</itunes:duration></item>"
)


def serve_clip(server: MediaServer, clip: Path, name: str = "clip.mp4") -> str:
    shutil.copyfile(clip, server.root / name)
    return server.url(name)


def test_a_direct_media_url_is_described_without_downloading_it(
    media_server: MediaServer, speech_clip: Path, storage_root: Path
) -> None:
    # Given a clip served at a direct URL
    url = serve_clip(media_server, speech_clip)
    # When its metadata is read
    info = media.fetch_metadata(url, storage_root=storage_root, with_video=True)
    # Then yt-dlp's generic extractor names it and ffprobe's header read gives duration and size
    assert info.extractor == "generic"
    assert info.id == "clip"
    assert info.duration == pytest.approx(CLIP_SECONDS, abs=0.1)
    assert info.filesize == speech_clip.stat().st_size
    assert info.has_video is True
    assert not info.is_local


def test_yt_dlp_downloads_the_clip_with_progress(
    media_server: MediaServer, speech_clip: Path, storage_root: Path, tmp_path: Path
) -> None:
    # Given a served clip and its metadata
    url = serve_clip(media_server, speech_clip)
    info = media.fetch_metadata(url, storage_root=storage_root, with_video=True)
    progress: list[float] = []
    # When yt-dlp downloads it
    path = media.download_media(
        info, tmp_path / "dl", with_video=True, on_progress=lambda pct, note: progress.append(pct)
    )
    # Then the file is the served clip, byte for byte, and progress climbed to 100
    assert path.read_bytes() == speech_clip.read_bytes()
    assert path.parent == tmp_path / "dl"
    assert progress == sorted(progress) and progress[-1] == 100.0
    # And the server saw yt-dlp's requests
    assert any(method == "GET" and p == "/clip.mp4" for method, p, _ in media_server.requests)


def test_an_rss_feed_is_expanded_into_a_playlist(media_server: MediaServer, speech_clip: Path) -> None:
    # Given a feed listing three videos
    items = "".join(
        RSS_ITEM.format(title=f"Video {n}", guid=f"v{n}", url=media_server.url(f"v{n}.mp4"), duration=8)
        for n in (1, 2, 3)
    )
    (media_server.root / "feed.xml").write_text(RSS_FEED.format(items=items))
    # When it is expanded
    playlist = media.expand_playlist(media_server.url("feed.xml"))
    # Then its videos come in order, with titles, durations and plain URLs
    assert playlist.title == "Trading desk videos"
    assert [e.url for e in playlist.entries] == [media_server.url(f"v{n}.mp4") for n in (1, 2, 3)]
    assert [e.title for e in playlist.entries] == ["Video 1", "Video 2", "Video 3"]
    assert [e.position for e in playlist.entries] == [1, 2, 3]
    assert all(e.duration == 8 for e in playlist.entries)


def test_a_playlist_url_submitted_as_a_video_is_refused(media_server: MediaServer, storage_root: Path) -> None:
    # Given a feed
    item = RSS_ITEM.format(title="One", guid="one", url=media_server.url("one.mp4"), duration=8)
    (media_server.root / "feed.xml").write_text(RSS_FEED.format(items=item))
    # When it is read as one video
    # Then the caller is told to submit it as a playlist
    with pytest.raises(InvalidArgument, match="playlist"):
        media.fetch_metadata(media_server.url("feed.xml"), storage_root=storage_root)


def test_a_local_file_takes_the_same_path_in_place(speech_clip: Path, in_storage: Path, storage_root: Path) -> None:
    # Given a clip under the storage root, named by its relative path
    target = in_storage / "local.mp4"
    shutil.copyfile(speech_clip, target)
    relative = str(target.relative_to(storage_root))
    # When its metadata is read and it is "downloaded"
    info = media.fetch_metadata(relative, storage_root=storage_root, with_video=True)
    path = media.download_media(info, in_storage / "unused", with_video=True)
    # Then it is probed locally and used where it lies
    assert info.extractor == "local"
    assert info.duration == pytest.approx(CLIP_SECONDS, abs=0.1)
    assert path == target.resolve()
    assert not (in_storage / "unused").exists()


def test_a_path_outside_the_storage_root_is_refused(speech_clip: Path, storage_root: Path) -> None:
    # Given a clip outside the storage root
    # When it is submitted
    # Then it is refused
    with pytest.raises(OutsideStorageRoot):
        media.fetch_metadata(str(speech_clip), storage_root=storage_root)


def test_an_unreachable_url_is_refused_as_unreachable(closed_port: int, storage_root: Path) -> None:
    # Given a URL on a port nothing listens on
    url = f"http://127.0.0.1:{closed_port}/video.mp4"
    # When its metadata is read
    # Then the error says the host cannot be reached (bad input: not retried)
    with pytest.raises(media.SourceUnreachable, match="connection refused"):
        media.fetch_metadata(url, storage_root=storage_root)


def test_a_missing_page_is_refused_with_its_http_status(media_server: MediaServer, storage_root: Path) -> None:
    # Given a URL the server does not have
    # When its metadata is read
    # Then the error names the status
    with pytest.raises(media.SourceUnreachable, match="HTTP 404"):
        media.fetch_metadata(media_server.url("gone.mp4"), storage_root=storage_root)


def test_a_served_file_that_is_not_media_is_refused_before_download(
    media_server: MediaServer, storage_root: Path
) -> None:
    # Given a text file served as if it were a video
    (media_server.root / "notes.mp4").write_text("no video here\n" * 200)
    media_server.content_types["notes.mp4"] = "video/mp4"
    # When its metadata is read
    # Then it is refused as not media
    with pytest.raises(UnsupportedFormat, match="not an audio or video file"):
        media.fetch_metadata(media_server.url("notes.mp4"), storage_root=storage_root)


def test_media_over_the_duration_cap_is_refused_before_download(
    media_server: MediaServer, speech_clip: Path, storage_root: Path
) -> None:
    # Given an 8-second clip and a 5-second cap
    info = media.fetch_metadata(serve_clip(media_server, speech_clip), storage_root=storage_root)
    # When the limits are checked
    # Then it is refused, naming the duration and the cap
    with pytest.raises(TooLarge, match=r"lasts 0:00:08, over the limit of 0:00:05"):
        media.check_limits(info, max_seconds=5, max_bytes=10**9)
    with pytest.raises(TooLarge, match="MB, over the limit"):
        media.check_limits(info, max_seconds=3600, max_bytes=1000)
    media.check_limits(info, max_seconds=3600, max_bytes=10**9)


def test_a_download_over_the_size_cap_stops_and_leaves_nothing(
    media_server: MediaServer, speech_clip: Path, storage_root: Path, tmp_path: Path
) -> None:
    # Given a served clip whose size is not checked up front
    info = media.fetch_metadata(serve_clip(media_server, speech_clip), storage_root=storage_root)
    info.filesize = None
    # When it is downloaded with a 10 kB cap
    # Then the download stops as too large and its folder is gone
    with pytest.raises(TooLarge, match="download limit"):
        media.download_media(info, tmp_path / "dl", max_bytes=10_000)
    assert not (tmp_path / "dl").exists()


def test_a_truncated_download_is_refused_and_removed(
    media_server: MediaServer, speech_clip: Path, storage_root: Path, tmp_path: Path
) -> None:
    # Given a served MP4 cut in half (its index is at the front, so its header still reads)
    data = speech_clip.read_bytes()
    (media_server.root / "cut.mp4").write_bytes(data[: len(data) // 2])
    info = media.fetch_metadata(media_server.url("cut.mp4"), storage_root=storage_root)
    # When it is downloaded
    # Then it is refused as truncated and nothing is left
    with pytest.raises(CorruptInput, match="truncated"):
        media.download_media(info, tmp_path / "dl")
    assert not (tmp_path / "dl").exists()


def test_only_http_urls_and_paths_are_accepted(storage_root: Path) -> None:
    # Given a file:// URL, an ftp URL and an empty source
    # When they are submitted
    # Then each is refused as an invalid argument
    for source in ("file:///etc/passwd", "ftp://127.0.0.1/a.mp4", "  "):
        with pytest.raises(InvalidArgument):
            media.fetch_metadata(source, storage_root=storage_root)
